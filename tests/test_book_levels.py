"""The book's levels: lazy deletion keeps time priority and bounds each level's memory."""

from exchange.domain.book import DEPARTED_SLACK, SPARE_LEVELS
from exchange.domain.commands import CancelOrder, ReplaceOrder
from exchange.domain.events import TradeExecuted
from tests.builders import Market


def _market() -> Market:
    market = Market()
    market.instrument("ACME")
    return market


def test_cancelled_orders_stay_out_of_priority_views_and_matching() -> None:
    m = _market()
    seller = m.account(units={"ACME": 1_000})
    ids = [m.rest(seller, "sell", 1, 100) for _ in range(6)]
    for order_id in ids[1:5]:
        m.do(CancelOrder(account=seller, order_id=order_id))
    assert [row[0] for row in m.engine.resting("ACME")] == [ids[0], ids[5]]
    assert m.engine.book("ACME") == ([], [(100, 2)])
    buyer = m.account()
    events = m.place(buyer, "buy", 2, 100)
    assert [t.maker_order_id for t in events if isinstance(t, TradeExecuted)] == [ids[0], ids[5]]
    assert m.engine.book("ACME") == ([], [])


def test_a_level_compacts_once_departed_orders_outnumber_the_live_ones() -> None:
    m = _market()
    seller = m.account(units={"ACME": 10_000})
    keep = m.rest(seller, "sell", 1, 100)
    churn = [m.rest(seller, "sell", 1, 100) for _ in range(3 * DEPARTED_SLACK)]
    for order_id in churn:
        m.do(CancelOrder(account=seller, order_id=order_id))
    level = m.engine.books["ACME"].asks.levels[100]
    assert level.live == 1
    assert len(level.queue) <= 2 * level.live + DEPARTED_SLACK
    head = level.head
    assert head is not None
    assert head.order_id == keep


def test_a_replace_that_loses_priority_leaves_no_second_entry_behind() -> None:
    m = _market()
    seller = m.account(units={"ACME": 100})
    first = m.rest(seller, "sell", 1, 100)
    second = m.rest(seller, "sell", 1, 100)
    m.do(ReplaceOrder(account=seller, order_id=first, qty=3))  # more qty: to the back
    level = m.engine.books["ACME"].asks.levels[100]
    assert [o.order_id for o in level.queue] == [second, first]
    assert [row[0] for row in m.engine.resting("ACME")] == [second, first]


def test_a_dropped_level_is_reused_empty_at_its_new_price_and_the_spares_are_bounded() -> None:
    m = _market()
    seller = m.account(units={"ACME": 10_000})
    asks = m.engine.books["ACME"].asks
    # A level left with departed entries (two cancelled behind a live head) and then emptied.
    first = m.rest(seller, "sell", 1, 100)
    for order_id in [m.rest(seller, "sell", 1, 100) for _ in range(2)]:
        m.do(CancelOrder(account=seller, order_id=order_id))
    old = asks.levels[100]
    m.do(CancelOrder(account=seller, order_id=first))
    assert asks.spare == [old]
    later = m.rest(seller, "sell", 3, 105)
    reused = asks.levels[105]
    assert reused is old
    assert (reused.price, reused.total, reused.live) == (105, 3, 1)
    assert [o.order_id for o in reused.queue] == [later]
    assert m.engine.book("ACME") == ([], [(105, 3)])
    # Emptying many levels keeps no more than SPARE_LEVELS of them.
    many = [m.rest(seller, "sell", 1, 200 + n) for n in range(3 * SPARE_LEVELS)]
    for order_id in many:
        m.do(CancelOrder(account=seller, order_id=order_id))
    assert len(asks.spare) == SPARE_LEVELS
