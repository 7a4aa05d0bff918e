"""Rules of the book: priority, order types, time in force, post-only, self-trade prevention."""

from typing import Any

import pytest

from exchange.domain.commands import PlaceOrder
from exchange.domain.events import Event, OrderAccepted, OrderCancelled, TradeExecuted
from tests.builders import Market, of_type, rejection


@pytest.fixture
def m() -> Market:
    market = Market()
    market.instrument("ACME")
    return market


def trades(events: list[Event]) -> list[tuple[int, int, int]]:
    """(maker order id, price, qty) of each trade, in order."""
    return [(t.maker_order_id, t.price, t.qty) for t in events if isinstance(t, TradeExecuted)]


def test_better_price_trades_first_then_oldest_at_a_price(m: Market) -> None:
    seller = m.account(units={"ACME": 100})
    first_at_101 = m.rest(seller, "sell", 5, 101)
    second_at_101 = m.rest(seller, "sell", 5, 101)
    at_100 = m.rest(seller, "sell", 5, 100)
    buyer = m.account()
    events = m.place(buyer, "buy", 12, 101)
    assert trades(events) == [(at_100, 100, 5), (first_at_101, 101, 5), (second_at_101, 101, 2)]
    assert m.engine.book("ACME") == ([], [(101, 3)])


def test_trade_happens_at_the_resting_price_and_buyer_gets_the_difference_back(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 10, 95)
    buyer = m.account(cash=10_000)
    m.place(buyer, "buy", 10, 100)
    cash, held, positions, _ = m.engine.balances(buyer)
    assert (cash, held, positions) == (10_000 - 950, 0, {"ACME": 10})
    assert m.engine.balances(seller)[0] == 1_000_000 + 950


def test_limit_remainder_rests_and_holds_its_worst_case_cash(m: Market) -> None:
    buyer = m.account(cash=10_000)
    m.rest(buyer, "buy", 10, 50)
    assert m.engine.balances(buyer)[:2] == (10_000, 500)
    assert m.engine.book("ACME") == ([(50, 10)], [])


def test_sell_holds_units_and_cannot_sell_what_is_held(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 8, 120)
    assert m.engine.balances(seller)[3] == {"ACME": 8}
    assert rejection(m.place(seller, "sell", 3, 121)) == "INSUFFICIENT_UNITS"


def test_market_order_sweeps_levels_and_its_remainder_expires(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 3, 100)
    m.rest(seller, "sell", 3, 105)
    buyer = m.account()
    events = m.place(buyer, "buy", 10)
    assert [t[1:] for t in trades(events)] == [(100, 3), (105, 3)]
    (done,) = of_type(events, OrderCancelled)
    assert (done.reason, done.remaining) == ("expired", 4)
    assert m.engine.book("ACME") == ([], [])


def test_market_buy_spends_at_most_available_cash(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 10, 100)
    buyer = m.account(cash=350)
    events = m.place(buyer, "buy", 10)
    assert trades(events) == [(1, 100, 3)]
    assert m.engine.balances(buyer)[:2] == (50, 0)


@pytest.mark.parametrize(("cap", "bought"), [(250, 2), (299, 2), (300, 3), (301, 3)])
def test_market_buy_respects_max_notional(m: Market, cap: int, bought: int) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 10, 100)
    buyer = m.account(cash=100_000)
    events = m.place(buyer, "buy", 10, max_notional=cap)
    assert trades(events) == [(1, 100, bought)]
    assert m.engine.balances(buyer)[:2] == (100_000 - 100 * bought, 0)


def test_market_buy_with_no_cash_is_refused(m: Market) -> None:
    assert rejection(m.place(m.account(cash=0), "buy", 1)) == "INSUFFICIENT_FUNDS"


def test_market_sell_with_an_empty_book_expires_and_releases_units(m: Market) -> None:
    seller = m.account(units={"ACME": 5})
    events = m.place(seller, "sell", 5)
    assert [type(e).__name__ for e in events] == ["OrderAccepted", "OrderCancelled"]
    assert m.engine.balances(seller)[3] == {}


def test_ioc_trades_what_it_can_and_the_rest_expires(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 4, 100)
    buyer = m.account(cash=10_000)
    events = m.place(buyer, "buy", 10, 100, tif="ioc")
    assert trades(events) == [(1, 100, 4)]
    assert of_type(events, OrderCancelled)[0].reason == "expired"
    assert m.engine.book("ACME") == ([], [])
    assert m.engine.balances(buyer)[1] == 0


def test_fok_fills_completely_or_leaves_no_trace(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 4, 100)
    m.rest(seller, "sell", 4, 101)
    buyer = m.account(cash=10_000)
    before = m.engine.state_hash()
    events = m.place(buyer, "buy", 9, 101, tif="fok")
    assert [type(e).__name__ for e in events] == ["OrderAccepted", "OrderCancelled"]
    assert of_type(events, OrderCancelled)[0].reason == "expired"
    assert m.engine.book("ACME") == ([], [(100, 4), (101, 4)])
    assert m.engine.balances(buyer)[:2] == (10_000, 0)
    assert m.engine.state_hash() != before  # only the order id counter moved
    events = m.place(buyer, "buy", 8, 101, tif="fok")
    assert sum(t[2] for t in trades(events)) == 8
    assert m.engine.book("ACME") == ([], [])


def test_fok_counts_an_own_order_in_the_way_as_a_stop(m: Market) -> None:
    trader = m.account(units={"ACME": 10})
    m.rest(trader, "sell", 5, 100)
    other = m.account(units={"ACME": 10})
    m.rest(other, "sell", 5, 101)
    events = m.place(trader, "buy", 5, 101, tif="fok")
    assert trades(events) == []
    assert m.engine.book("ACME") == ([], [(100, 5), (101, 5)])
    events = m.place(trader, "buy", 5, 101, tif="fok", stp="cancel_oldest")
    assert trades(events) == [(2, 101, 5)]


def test_post_only_is_refused_when_it_would_take_and_rests_when_not(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 5, 100)
    buyer = m.account()
    assert rejection(m.place(buyer, "buy", 1, 100, post_only=True)) == "POST_ONLY_WOULD_TAKE"
    m.rest(buyer, "buy", 1, 99, post_only=True)
    assert m.engine.book("ACME") == ([(99, 1)], [(100, 5)])


def test_post_only_needs_a_gtc_limit_order(m: Market) -> None:
    buyer = m.account()
    assert rejection(m.place(buyer, "buy", 1, 99, post_only=True, tif="ioc")) == "BAD_REQUEST"


def test_self_trade_cancel_newest_cancels_the_incoming_order(m: Market) -> None:
    trader = m.account(units={"ACME": 10})
    resting = m.rest(trader, "sell", 5, 100)
    events = m.place(trader, "buy", 5, 100, stp="cancel_newest")
    (done,) = of_type(events, OrderCancelled)
    assert (done.order_id, done.reason) == (resting + 1, "self_trade")
    assert m.engine.book("ACME") == ([], [(100, 5)])


def test_self_trade_cancel_oldest_cancels_the_resting_order_and_goes_on(m: Market) -> None:
    trader = m.account(units={"ACME": 10})
    own = m.rest(trader, "sell", 5, 100)
    other = m.account(units={"ACME": 10})
    theirs = m.rest(other, "sell", 5, 100)
    events = m.place(trader, "buy", 5, 100, stp="cancel_oldest")
    cancelled = [(c.order_id, c.reason) for c in of_type(events, OrderCancelled)]
    assert cancelled == [(own, "self_trade")]
    assert trades(events) == [(theirs, 100, 5)]
    assert m.engine.balances(trader)[3] == {}


def test_self_trade_cancel_both(m: Market) -> None:
    trader = m.account(units={"ACME": 10})
    own = m.rest(trader, "sell", 5, 100)
    events = m.place(trader, "buy", 5, 100, stp="cancel_both")
    done = of_type(events, OrderCancelled)
    assert [(c.order_id, c.reason) for c in done] == [(own, "self_trade"), (own + 1, "self_trade")]
    assert m.engine.book("ACME") == ([], [])
    assert m.engine.balances(trader)[1:] == (0, {"ACME": 10}, {})


def test_self_trade_after_partial_fills_keeps_the_fills(m: Market) -> None:
    other = m.account(units={"ACME": 10})
    theirs = m.rest(other, "sell", 3, 100)
    trader = m.account(units={"ACME": 10})
    m.rest(trader, "sell", 5, 101)
    events = m.place(trader, "buy", 10, 101)
    assert trades(events) == [(theirs, 100, 3)]
    assert of_type(events, OrderCancelled)[0].remaining == 7


def test_accepted_comes_before_fills(m: Market) -> None:
    seller = m.account(units={"ACME": 10})
    m.rest(seller, "sell", 10, 100)
    events = m.place(m.account(), "buy", 10, 100)
    assert isinstance(events[0], OrderAccepted)
    assert isinstance(events[1], TradeExecuted)
    assert events[1].taker_remaining == 0


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"account": "A99"}, "UNKNOWN_ACCOUNT"),
        ({"symbol": "NOPE"}, "UNKNOWN_SYMBOL"),
        ({"qty": 0}, "BAD_QTY"),
        ({"qty": 10**9 + 1}, "BAD_QTY"),
        ({"price": 0, "type": "limit"}, "BAD_PRICE"),
        ({"price": 10**9 + 1}, "BAD_PRICE"),
        ({"price": 100, "type": "market"}, "BAD_PRICE"),
        ({"max_notional": 100}, "BAD_REQUEST"),
        ({"price": 0, "type": "market", "side": "sell", "max_notional": 5}, "BAD_REQUEST"),
        ({"price": 0, "type": "market", "max_notional": 10**17}, "BAD_AMOUNT"),
        ({"post_only": True, "tif": "fok"}, "BAD_REQUEST"),
        ({"price": 0, "type": "market", "post_only": True}, "BAD_REQUEST"),
        ({"qty": 1001}, "INSUFFICIENT_FUNDS"),
        ({"side": "sell"}, "INSUFFICIENT_UNITS"),
    ],
)
def test_place_refusals(m: Market, fields: dict[str, Any], code: str) -> None:
    trader = m.account(cash=100_000)
    order: dict[str, Any] = {"account": trader, "symbol": "ACME", "side": "buy", "qty": 1}
    order |= {"price": 100, **fields}
    assert rejection(m.do(PlaceOrder(**order))) == code
    assert m.engine.balances(trader)[1:] == (0, {}, {})


def test_open_orders_per_account_are_bounded(m: Market, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exchange.domain.order_entry.MAX_OPEN_ORDERS_PER_ACCOUNT", 3)
    trader = m.account()
    for price in (10, 11, 12):
        m.rest(trader, "buy", 1, price)
    assert rejection(m.place(trader, "buy", 1, 13)) == "TOO_MANY_ORDERS"
    seller = m.account(units={"ACME": 1})
    m.rest(seller, "sell", 1, 20)
    m.place(trader, "buy", 1, 20, tif="ioc")  # an order that cannot rest is not counted
    assert m.engine.book("ACME") == ([(12, 1), (11, 1), (10, 1)], [])
