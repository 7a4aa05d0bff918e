"""Cancel, cancel-all, replace and idempotent client order ids."""

import sys

import pytest

from exchange.domain.commands import CancelAll, CancelOrder, ReplaceOrder
from exchange.domain.events import (
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderReplaced,
    TradeExecuted,
)
from exchange.domain.state import export_state, restore_state
from tests.builders import Market, of_type, rejection


@pytest.fixture
def m() -> Market:
    market = Market()
    market.instrument("ACME")
    market.instrument("BOND", tick=5)
    return market


def test_cancel_releases_the_hold_and_leaves_the_book(m: Market) -> None:
    buyer = m.account(cash=10_000)
    order_id = m.rest(buyer, "buy", 10, 50)
    (done,) = m.do(CancelOrder(account=buyer, order_id=order_id))
    assert isinstance(done, OrderCancelled)
    assert (done.reason, done.remaining) == ("cancelled", 10)
    assert m.engine.balances(buyer)[:2] == (10_000, 0)
    assert m.engine.book("ACME") == ([], [])


def test_cancel_by_client_order_id(m: Market) -> None:
    seller = m.account(units={"ACME": 5})
    m.rest(seller, "sell", 5, 100, client_order_id="mine")
    (done,) = m.do(CancelOrder(account=seller, client_order_id="mine"))
    assert isinstance(done, OrderCancelled)
    assert m.engine.balances(seller)[3] == {}


def test_cancel_of_an_unknown_filled_or_foreign_order_is_refused(m: Market) -> None:
    owner = m.account(units={"ACME": 5})
    order_id = m.rest(owner, "sell", 5, 100, client_order_id="x")
    intruder = m.account()
    assert rejection(m.do(CancelOrder(account=intruder, order_id=order_id))) == "UNKNOWN_ORDER"
    assert rejection(m.do(CancelOrder(account=intruder, client_order_id="x"))) == "UNKNOWN_ORDER"
    assert rejection(m.do(CancelOrder(account=owner, order_id=999))) == "UNKNOWN_ORDER"
    m.place(intruder, "buy", 5, 100)
    assert rejection(m.do(CancelOrder(account=owner, order_id=order_id))) == "UNKNOWN_ORDER"
    assert rejection(m.do(CancelOrder(account=owner, client_order_id="x"))) == "UNKNOWN_ORDER"


def test_cancel_needs_an_id(m: Market) -> None:
    assert rejection(m.do(CancelOrder(account=m.account()))) == "BAD_REQUEST"


def test_cancel_all_cancels_every_open_order_in_id_order_or_one_symbol(m: Market) -> None:
    trader = m.account(cash=100_000, units={"ACME": 10, "BOND": 10})
    a = m.rest(trader, "buy", 1, 50)
    b = m.rest(trader, "sell", 1, 200, symbol="BOND")
    c = m.rest(trader, "sell", 1, 120)
    events = m.do(CancelAll(account=trader, symbol="ACME"))
    assert [e.order_id for e in of_type(events, OrderCancelled)] == [a, c]
    events = m.do(CancelAll(account=trader))
    assert [e.order_id for e in of_type(events, OrderCancelled)] == [b]
    assert m.do(CancelAll(account=trader)) == []
    assert m.engine.balances(trader)[1] == 0
    assert rejection(m.do(CancelAll(account=trader, symbol="NOPE"))) == "UNKNOWN_SYMBOL"


def test_cancel_works_while_halted(m: Market) -> None:
    from exchange.domain.commands import SetInstrumentStatus

    buyer = m.account()
    order_id = m.rest(buyer, "buy", 1, 50)
    m.do(SetInstrumentStatus(symbol="ACME", status="halted"))
    assert rejection(m.place(buyer, "buy", 1, 50)) == "NOT_IN_PHASE"
    assert rejection(m.do(ReplaceOrder(account=buyer, order_id=order_id, qty=2))) == "NOT_IN_PHASE"
    (done,) = m.do(CancelOrder(account=buyer, order_id=order_id))
    assert isinstance(done, OrderCancelled)


def test_quantity_down_keeps_priority(m: Market) -> None:
    s1, s2 = m.account(units={"ACME": 10}), m.account(units={"ACME": 10})
    first = m.rest(s1, "sell", 10, 100)
    m.rest(s2, "sell", 10, 100)
    (replaced,) = m.do(ReplaceOrder(account=s1, order_id=first, qty=4))
    assert isinstance(replaced, OrderReplaced)
    assert (replaced.kept_priority, replaced.remaining) == (True, 4)
    assert m.engine.balances(s1)[3] == {"ACME": 4}
    events = m.place(m.account(), "buy", 4, 100)
    assert of_type(events, TradeExecuted)[0].maker_order_id == first


def test_quantity_up_loses_priority(m: Market) -> None:
    s1, s2 = m.account(units={"ACME": 10}), m.account(units={"ACME": 10})
    first = m.rest(s1, "sell", 5, 100)
    second = m.rest(s2, "sell", 5, 100)
    (replaced,) = m.do(ReplaceOrder(account=s1, order_id=first, qty=6))
    assert isinstance(replaced, OrderReplaced)
    assert not replaced.kept_priority
    events = m.place(m.account(), "buy", 5, 100)
    assert of_type(events, TradeExecuted)[0].maker_order_id == second
    assert m.engine.book("ACME") == ([], [(100, 6)])


def test_price_change_loses_priority_and_can_trade(m: Market) -> None:
    buyer = m.account(cash=10_000)
    bid = m.rest(buyer, "buy", 5, 90)
    seller = m.account(units={"ACME": 5})
    m.rest(seller, "sell", 3, 100)
    events = m.do(ReplaceOrder(account=buyer, order_id=bid, price=100))
    assert isinstance(events[0], OrderReplaced)
    (trade,) = of_type(events, TradeExecuted)
    assert (trade.taker_order_id, trade.price, trade.qty) == (bid, 100, 3)
    assert m.engine.book("ACME") == ([(100, 2)], [])
    assert m.engine.balances(buyer)[:2] == (10_000 - 300, 200)


def test_replace_below_what_is_filled_takes_the_order_out(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    ask = m.rest(seller, "sell", 10, 100)
    m.place(m.account(), "buy", 6, 100)
    events = m.do(ReplaceOrder(account=seller, order_id=ask, qty=5))
    assert [type(e).__name__ for e in events] == ["OrderReplaced", "OrderCancelled"]
    done = of_type(events, OrderCancelled)[0]
    assert (done.reason, done.remaining) == ("replaced_out", 0)
    assert m.engine.balances(seller)[2:] == ({"ACME": 4}, {})
    assert m.engine.book("ACME") == ([], [])


def test_replace_that_needs_more_cash_than_available_is_refused(m: Market) -> None:
    buyer = m.account(cash=1_000)
    bid = m.rest(buyer, "buy", 10, 90)
    code = rejection(m.do(ReplaceOrder(account=buyer, order_id=bid, price=101)))
    assert code == "INSUFFICIENT_FUNDS"
    seller = m.account(units={"ACME": 3})
    ask = m.rest(seller, "sell", 3, 120)
    code = rejection(m.do(ReplaceOrder(account=seller, order_id=ask, qty=4)))
    assert code == "INSUFFICIENT_UNITS"


def test_replace_refusals(m: Market) -> None:
    buyer = m.account()
    bid = m.rest(buyer, "buy", 10, 90, post_only=True)
    m.rest(m.account(units={"ACME": 1}), "sell", 1, 95)
    assert rejection(m.do(ReplaceOrder(account=buyer, order_id=bid))) == "BAD_REQUEST"
    assert rejection(m.do(ReplaceOrder(account=buyer, order_id=bid + 99, qty=1))) == (
        "UNKNOWN_ORDER"
    )
    assert rejection(m.do(ReplaceOrder(account="A999", order_id=bid, qty=1))) == (
        "UNKNOWN_ACCOUNT"
    )
    assert rejection(m.do(ReplaceOrder(account=buyer, order_id=bid, price=95))) == (
        "POST_ONLY_WOULD_TAKE"
    )
    assert rejection(m.do(ReplaceOrder(account=buyer, order_id=bid, qty=10**10))) == "BAD_QTY"
    assert rejection(m.do(ReplaceOrder(account=buyer, order_id=bid, price=10**10))) == (
        "BAD_PRICE"
    )


def test_resent_place_repeats_the_answer_and_changes_nothing(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 4, 100)
    buyer = m.account()
    first = m.place(buyer, "buy", 10, 100, client_order_id="b-1")
    before = m.engine.state_hash()
    (again,) = m.place(buyer, "buy", 10, 100, client_order_id="b-1")
    assert isinstance(again, OrderAccepted)
    assert again.resent
    assert again.order_id == first[0].order_id  # type: ignore[union-attr]
    assert (again.remaining, again.status) == (6, "open")
    assert m.engine.state_hash() == before


def test_resent_place_of_an_ended_order_reports_its_end(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 10, 100)
    buyer = m.account()
    m.place(buyer, "buy", 10, 100, client_order_id="b-1")
    (again,) = m.place(buyer, "buy", 10, 100, client_order_id="b-1")
    assert isinstance(again, OrderAccepted)
    assert (again.resent, again.remaining, again.status) == (True, 0, "filled")


def test_resent_rejected_place_repeats_the_rejection(m: Market) -> None:
    buyer = m.account(cash=10)
    (first,) = m.place(buyer, "buy", 10, 100, client_order_id="b-1")
    assert isinstance(first, OrderRejected)
    assert first.code == "INSUFFICIENT_FUNDS"
    assert m.place(buyer, "buy", 10, 100, client_order_id="b-1") == [first]


def test_reused_client_order_id_with_other_content_is_refused(m: Market) -> None:
    buyer = m.account()
    m.rest(buyer, "buy", 10, 100, client_order_id="b-1")
    code = rejection(m.place(buyer, "buy", 11, 100, client_order_id="b-1"))
    assert code == "DUPLICATE_CLIENT_ORDER_ID"
    other = m.account()
    m.rest(other, "buy", 11, 100, client_order_id="b-1")  # ids are per account


def test_client_order_ids_are_remembered_up_to_a_bound_open_ones_always(
    m: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("exchange.domain.client_orders.MAX_CLIENT_ORDER_IDS_PER_ACCOUNT", 3)
    trader = m.account(cash=10_000)
    m.rest(trader, "buy", 1, 10, client_order_id="open-1")
    for n in range(1, 4):
        m.place(trader, "buy", 1, 10, client_order_id=f"ioc-{n}", tif="ioc")
    remembered = m.engine.accounts[trader].client_orders
    assert list(remembered) == ["open-1", "ioc-2", "ioc-3"]
    (again,) = m.place(trader, "buy", 1, 10, client_order_id="open-1")
    assert isinstance(again, OrderAccepted)
    assert again.resent
    events = m.place(trader, "buy", 1, 10, client_order_id="ioc-1", tif="ioc")
    assert isinstance(events[0], OrderAccepted)
    assert not events[0].resent  # forgotten, so a new order
    assert list(remembered) == ["open-1", "ioc-3", "ioc-1"]
    restored_hash = restore_state(export_state(m.engine)).state_hash()
    assert restored_hash == m.engine.state_hash()


def test_client_order_id_maps_keep_their_keys_hashes_also_after_a_restore(m: Market) -> None:
    """A map of client order ids is a dict whose table keeps each key's hash (accounts.py:
    a place's look-up of a new id then reads no key strings); a dict of the same str keys
    built plainly keeps none, and is smaller by those hashes."""
    trader = m.account(cash=10**9)
    for n in range(200):
        m.place(trader, "buy", 1, 10, client_order_id=f"c-{n}", tif="ioc")
    plain = dict.fromkeys(f"c-{n}" for n in range(200))
    records = m.engine.accounts[trader].client_orders
    assert len(records) == len(plain)
    assert sys.getsizeof(records) > sys.getsizeof(plain)
    restored = restore_state(export_state(m.engine)).accounts[trader].client_orders
    assert list(restored) == list(records)
    assert sys.getsizeof(restored) == sys.getsizeof(records)
