"""Stop, stop-limit and iceberg orders (issue 16): every rule and reject code of the core."""

import msgspec
import pytest

from exchange.domain.commands import CancelAll, CancelOrder, ReplaceOrder
from exchange.domain.engine import Engine
from exchange.domain.events import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderRefreshed,
    OrderReplaced,
    OrderTriggered,
    TradeExecuted,
)
from exchange.domain.state import decode_state, encode_state, export_state, restore_state
from gateway.protocol import Place, code_for, decode_request
from tests.builders import Market, of_type, rejection
from tests.streams import mixed_stream


@pytest.fixture
def m() -> Market:
    market = Market()
    market.instrument("ACME")
    return market


def trades(events: list[Event]) -> list[tuple[int, int, int]]:
    return [(t.maker_order_id, t.price, t.qty) for t in of_type(events, TradeExecuted)]


def trade_at(m: Market, price: int, qty: int = 1) -> None:
    """Print one trade at `price` between two fresh accounts."""
    seller = m.account(units={"ACME": qty})
    m.rest(seller, "sell", qty, price)
    assert trades(m.place(m.account(), "buy", qty, price))


# --- stops: entry ----------------------------------------------------------------------


def test_a_stop_needs_a_trigger_and_only_stops_have_one(m: Market) -> None:
    a = m.account(units={"ACME": 10})
    assert rejection(m.place(a, "sell", 1, type="stop")) == "BAD_TRIGGER"
    assert rejection(m.place(a, "sell", 1, 90, type="stop_limit")) == "BAD_TRIGGER"
    assert rejection(m.place(a, "sell", 1, 90, trigger_price=95)) == "BAD_TRIGGER"


def test_a_trigger_the_last_trade_already_reached_is_refused(m: Market) -> None:
    trade_at(m, 100)
    a = m.account(units={"ACME": 10})
    assert rejection(m.place(a, "sell", 1, type="stop", trigger_price=100)) == "BAD_TRIGGER"
    assert rejection(m.place(a, "sell", 1, type="stop", trigger_price=101)) == "BAD_TRIGGER"
    too_low = m.place(a, "buy", 1, 0, type="stop", trigger_price=99, max_notional=1_000)
    assert rejection(too_low) == "BAD_TRIGGER"
    m.rest(a, "sell", 1, 0, type="stop", trigger_price=99)
    m.rest(a, "buy", 1, 0, type="stop", trigger_price=101, max_notional=1_000)


def test_stop_prices_and_budgets_are_checked(m: Market) -> None:
    a = m.account(cash=1_000, units={"ACME": 10})
    assert rejection(m.place(a, "sell", 1, 90, type="stop", trigger_price=95)) == "BAD_PRICE"
    assert rejection(m.place(a, "sell", 1, 0, type="stop_limit", trigger_price=95)) == (
        "BAD_PRICE"
    )
    assert rejection(m.place(a, "buy", 1, 0, type="stop", trigger_price=95)) == "BAD_REQUEST"
    assert rejection(
        m.place(a, "sell", 1, 0, type="stop", trigger_price=95, max_notional=5)
    ) == "BAD_REQUEST"
    assert rejection(
        m.place(a, "buy", 1, 0, type="stop", trigger_price=95, max_notional=1_001)
    ) == "INSUFFICIENT_FUNDS"
    assert rejection(m.place(a, "buy", 11, 100, type="stop_limit", trigger_price=95)) == (
        "INSUFFICIENT_FUNDS"
    )
    assert rejection(m.place(a, "sell", 11, 0, type="stop", trigger_price=95)) == (
        "INSUFFICIENT_UNITS"
    )


def test_a_stop_holds_at_entry_and_waits_off_the_book(m: Market) -> None:
    a = m.account(cash=10_000, units={"ACME": 10})
    events = m.place(a, "buy", 5, 0, type="stop", trigger_price=120, max_notional=700)
    (accepted,) = of_type(events, OrderAccepted)
    assert (accepted.type, accepted.trigger_price, accepted.status) == ("stop", 120, "open")
    m.rest(a, "buy", 3, 110, type="stop_limit", trigger_price=115)
    m.rest(a, "sell", 4, 0, type="stop", trigger_price=80)
    cash, held, _, units_held = m.engine.balances(a)
    assert (cash, held, units_held) == (10_000, 700 + 330, {"ACME": 4})
    assert m.engine.book("ACME") == ([], [])


# --- stops: triggering -----------------------------------------------------------------


def test_a_sell_stop_triggers_on_a_trade_at_its_trigger_and_sells_at_market(m: Market) -> None:
    trade_at(m, 100)
    bidder = m.account()
    bid = m.rest(bidder, "buy", 5, 94)
    owner = m.account(units={"ACME": 5})
    stop = m.rest(owner, "sell", 5, 0, type="stop", trigger_price=95)
    seller = m.account(units={"ACME": 1})
    m.rest(m.account(), "buy", 1, 95)
    events = m.place(seller, "sell", 1, 95)  # prints at 95: the stop's trigger
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["OrderAccepted", "TradeExecuted", "OrderTriggered", "TradeExecuted"]
    (triggered,) = of_type(events, OrderTriggered)
    assert (triggered.order_id, triggered.type, triggered.remaining) == (stop, "market", 5)
    assert trades(events)[-1] == (bid, 94, 5)
    assert m.engine.balances(owner)[2:] == ({}, {})


def test_a_buy_stop_limit_becomes_a_limit_order_and_rests_what_is_left(m: Market) -> None:
    trade_at(m, 100)
    owner = m.account(cash=10_000)
    stop = m.rest(owner, "buy", 5, 106, type="stop_limit", trigger_price=105)
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 2, 106)
    m.rest(seller, "sell", 1, 105)
    events = m.place(m.account(), "buy", 1, 105)
    assert [type(e).__name__ for e in events][2:4] == ["OrderTriggered", "TradeExecuted"]
    assert of_type(events, OrderTriggered)[0].type == "limit"
    assert m.engine.book("ACME") == ([(106, 3)], [])
    assert m.engine.balances(owner)[:2] == (10_000 - 212, 318)
    assert [row[0] for row in m.engine.resting("ACME")] == [stop]


def test_a_trade_through_the_trigger_in_one_sweep_triggers(m: Market) -> None:
    trade_at(m, 100)
    owner = m.account(units={"ACME": 1})
    m.rest(owner, "sell", 1, 0, type="stop", trigger_price=97)
    buyer = m.account()
    m.rest(buyer, "buy", 1, 98)
    m.rest(buyer, "buy", 1, 96)
    m.rest(m.account(), "buy", 1, 90)
    events = m.place(m.account(units={"ACME": 2}), "sell", 2, 96)  # 98 then 96: through 97
    assert len(of_type(events, OrderTriggered)) == 1
    assert trades(events)[-1][1:] == (90, 1)


def test_stops_trigger_oldest_first_and_can_trigger_each_other(m: Market) -> None:
    trade_at(m, 100)
    a, b = m.account(units={"ACME": 1}), m.account(units={"ACME": 1})
    first = m.rest(a, "sell", 1, 0, type="stop", trigger_price=95)
    second = m.rest(b, "sell", 1, 0, type="stop", trigger_price=92)
    buyers = m.account()
    m.rest(buyers, "buy", 1, 95)
    m.rest(buyers, "buy", 1, 92)
    m.rest(buyers, "buy", 1, 80)
    events = m.place(m.account(units={"ACME": 1}), "sell", 1, 95)
    assert [e.order_id for e in of_type(events, OrderTriggered)] == [first, second]
    assert [t[1] for t in trades(events)] == [95, 92, 80]


def test_a_triggered_stop_buy_spends_at_most_its_budget(m: Market) -> None:
    trade_at(m, 100)
    owner = m.account(cash=10_000)
    m.rest(owner, "buy", 10, 0, type="stop", trigger_price=101, max_notional=250)
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 10, 101)
    events = m.place(m.account(), "buy", 1, 101)
    assert trades(events)[-1][1:] == (101, 2)
    assert of_type(events, OrderCancelled)[-1].reason == "expired"
    assert m.engine.balances(owner)[:2] == (10_000 - 202, 0)


def test_a_waiting_stop_can_be_cancelled_replaced_and_cancelled_with_all(m: Market) -> None:
    a = m.account(cash=10_000, units={"ACME": 10})
    stop = m.rest(a, "buy", 5, 110, type="stop_limit", trigger_price=105)
    replaced = m.do(ReplaceOrder(account=a, order_id=stop, qty=3, price=111))
    (event,) = of_type(replaced, OrderReplaced)
    assert (event.kept_priority, event.price, event.remaining) == (True, 111, 3)
    assert m.engine.balances(a)[1] == 333
    market_stop = m.rest(a, "sell", 2, 0, type="stop", trigger_price=90)
    assert rejection(m.do(ReplaceOrder(account=a, order_id=market_stop, price=5))) == (
        "BAD_PRICE"
    )
    assert of_type(m.do(CancelOrder(account=a, order_id=stop)), OrderCancelled)
    m.rest(a, "buy", 1, 0, type="stop", trigger_price=120, max_notional=500)
    assert len(of_type(m.do(CancelAll(account=a)), OrderCancelled)) == 2
    assert m.engine.balances(a)[1:] == (0, {"ACME": 10}, {})


def test_waiting_stops_and_the_last_price_survive_export_and_restore(m: Market) -> None:
    trade_at(m, 100)
    owner = m.account(units={"ACME": 1})
    m.rest(owner, "sell", 1, 0, type="stop", trigger_price=95)
    restored = restore_state(export_state(m.engine))
    assert restored.state_hash() == m.engine.state_hash()
    assert restored.books["ACME"].last_price == 100
    assert list(restored.books["ACME"].stops.orders) == list(m.engine.books["ACME"].stops.orders)


# --- icebergs --------------------------------------------------------------------------


def test_display_qty_is_checked(m: Market) -> None:
    a = m.account(units={"ACME": 10})
    assert rejection(m.place(a, "sell", 5, 100, display_qty=6)) == "BAD_QTY"
    assert rejection(m.place(a, "sell", 5, 100, display_qty=2, tif="ioc")) == "BAD_REQUEST"
    assert rejection(m.place(a, "sell", 5, 0, display_qty=2)) == "BAD_REQUEST"


def test_the_book_shows_only_the_displayed_part(m: Market) -> None:
    a = m.account(units={"ACME": 10})
    events = m.place(a, "sell", 10, 100, display_qty=3)
    assert of_type(events, OrderAccepted)[0].display_qty == 3
    assert m.engine.book("ACME") == ([], [(100, 3)])
    assert m.engine.resting("ACME")[0][4] == 10
    assert m.engine.balances(a)[3] == {"ACME": 10}


def test_an_iceberg_refreshes_to_the_back_of_its_level(m: Market) -> None:
    seller = m.account(units={"ACME": 20})
    ice = m.rest(seller, "sell", 10, 100, display_qty=3)
    other = m.rest(m.account(units={"ACME": 5}), "sell", 5, 100)
    assert m.engine.book("ACME") == ([], [(100, 8)])
    events = m.place(m.account(), "buy", 4, 100)
    assert trades(events) == [(ice, 100, 3), (other, 100, 1)]
    (refresh,) = of_type(events, OrderRefreshed)
    assert (refresh.order_id, refresh.shown, refresh.remaining) == (ice, 3, 7)
    assert [row[0] for row in m.engine.resting("ACME")] == [other, ice]
    assert m.engine.book("ACME") == ([], [(100, 7)])


def test_a_lone_iceberg_keeps_trading_after_each_refresh(m: Market) -> None:
    ice = m.rest(m.account(units={"ACME": 10}), "sell", 10, 100, display_qty=4)
    events = m.place(m.account(), "buy", 9, 100)
    assert trades(events) == [(ice, 100, 4), (ice, 100, 4), (ice, 100, 1)]
    assert [e.shown for e in of_type(events, OrderRefreshed)] == [4, 2]
    assert m.engine.book("ACME") == ([], [(100, 1)])


def test_fill_or_kill_counts_an_icebergs_hidden_part(m: Market) -> None:
    m.rest(m.account(units={"ACME": 10}), "sell", 10, 100, display_qty=2)
    events = m.place(m.account(), "buy", 10, 100, tif="fok")
    assert sum(t[2] for t in trades(events)) == 10


def test_replacing_an_iceberg_down_keeps_its_place_and_shows_no_more_than_it_has(
    m: Market,
) -> None:
    a = m.account(units={"ACME": 10})
    ice = m.rest(a, "sell", 10, 100, display_qty=4)
    m.do(ReplaceOrder(account=a, order_id=ice, qty=2))
    assert m.engine.book("ACME") == ([], [(100, 2)])
    m.do(CancelOrder(account=a, order_id=ice))
    assert m.engine.book("ACME") == ([], [])
    assert m.engine.balances(a)[3] == {}


def test_icebergs_survive_export_and_restore(m: Market) -> None:
    m.rest(m.account(units={"ACME": 10}), "sell", 10, 100, display_qty=4)
    m.place(m.account(), "buy", 5, 100)
    restored = restore_state(export_state(m.engine))
    assert restored.state_hash() == m.engine.state_hash()
    assert restored.book("ACME") == m.engine.book("ACME") == ([], [(100, 3)])


BEFORE_ISSUE_16_KEYS = {
    "version", "next_account", "next_order", "next_trade", "next_offering", "accounts",
    "instruments", "offerings", "books",
}


def test_a_state_without_stops_icebergs_or_trades_encodes_as_before(m: Market) -> None:
    """The new state is left out when empty: snapshots written before restore and check."""
    m.rest(m.account(), "buy", 1, 90)
    m.rest(m.account(units={"ACME": 1}), "sell", 1, 110)
    plain = msgspec.msgpack.decode(encode_state(export_state(m.engine)))
    assert set(plain) == BEFORE_ISSUE_16_KEYS
    (book,) = plain["books"]
    assert len(book) == 2  # symbol, orders: no stop or last price fields
    assert {len(row) for row in book[1]} == {14}  # OrderState as it was
    restored = restore_state(decode_state(encode_state(export_state(m.engine))))
    assert restored.state_hash() == m.engine.state_hash()
    trade_at(m, 100)
    m.rest(m.account(units={"ACME": 1}), "sell", 1, 0, type="stop", trigger_price=95)
    m.rest(m.account(units={"ACME": 5}), "sell", 5, 120, display_qty=2)
    full = msgspec.msgpack.decode(encode_state(export_state(m.engine)))
    # The trade also set the reference price of market phases ("phases").
    assert set(full) - BEFORE_ISSUE_16_KEYS == {"stops", "last_prices", "order_extras", "phases"}
    restored = restore_state(decode_state(encode_state(export_state(m.engine))))
    assert restored.state_hash() == m.engine.state_hash()
    assert restored.book("ACME") == m.engine.book("ACME")


def test_the_shared_test_stream_triggers_stops_and_refreshes_icebergs() -> None:
    """tests/streams.py feeds the determinism, export/restore, snapshot and read-side tests:
    it must reach the new state (waiting stops, the last price, icebergs) for them to cover it."""
    engine = Engine()
    kinds: set[str] = set()
    waited = False
    for command in mixed_stream(7, 4_000):
        kinds.update(type(e).__name__ for e in engine.apply(command))
        waited = waited or any(b.stops.orders for b in engine.books.values())
    assert {"OrderTriggered", "OrderRefreshed"} <= kinds
    assert waited


# --- the edge: the WebSocket request's new fields ----------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"op":"place","symbol":"A","side":"sell","qty":1,"type":"stop","trigger_price":4.9}',
         "BAD_TRIGGER"),
        ('{"op":"place","symbol":"A","side":"sell","qty":5,"price":"1","display_qty":0}',
         "BAD_QTY"),
        ('{"op":"place","symbol":"A","side":"sell","qty":5,"price":"1","display_qty":"2"}',
         "BAD_QTY"),
    ],
)
def test_a_malformed_trigger_or_display_qty_gets_its_code(frame: str, code: str) -> None:
    with pytest.raises(msgspec.DecodeError) as error:
        decode_request(frame)
    assert code_for(error.value) == code


def test_stop_and_iceberg_fields_decode() -> None:
    frame = (
        '{"op":"place","symbol":"A","side":"buy","qty":5,"price":"1.00","type":"stop_limit",'
        '"trigger_price":"0.95","display_qty":2}'
    )
    place = decode_request(frame)
    assert isinstance(place, Place)
    assert (place.type, place.trigger_price, place.display_qty) == ("stop_limit", "0.95", 2)
