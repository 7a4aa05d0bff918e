"""Stops and icebergs on instruments with fees (docs/ENGINE.md, "Fees with stops and
icebergs"): a stop keeps the rates it was accepted with through its trigger, a stop-limit buy
holds a limit buy's worst-case fee, a stop buy's budget covers its fees, an iceberg pays fees
like any maker, and a waiting stop's rates survive export and restore."""

import pytest

from exchange.domain.commands import CancelOrder, ReplaceOrder, SetInstrumentFees
from exchange.domain.events import (
    Event,
    InstrumentFeesSet,
    OrderRefreshed,
    OrderTriggered,
    TradeExecuted,
)
from exchange.domain.fees import buy_hold, fee_of
from exchange.domain.state import export_state, restore_state
from tests.builders import Market, of_type, rejection


def _fees(m: Market, maker: int, taker: int) -> None:
    events = m.do(SetInstrumentFees(symbol="ACME", maker_bps=maker, taker_bps=taker))
    assert of_type(events, InstrumentFeesSet), events


@pytest.fixture
def m() -> Market:
    market = Market()
    market.instrument("ACME")
    return market


def _held(m: Market, account: str) -> int:
    return m.engine.balances(account)[1]


def test_a_stop_limit_buy_holds_its_worst_case_fee_and_releases_it(m: Market) -> None:
    _fees(m, maker=0, taker=25)
    # 10 at 10.01: 10,010 of value and a unit fee of ceil(2.5025) = 3, so 10,040 in all.
    need = buy_hold(1_001, 1, 10, 25)
    assert need == 10 * (1_001 + 3)
    short = m.account(cash=need - 1)
    assert rejection(
        m.place(short, "buy", 10, 1_001, type="stop_limit", trigger_price=1_050)
    ) == "INSUFFICIENT_FUNDS"
    buyer = m.account(cash=need)
    order_id = m.rest(buyer, "buy", 10, 1_001, type="stop_limit", trigger_price=1_050)
    assert _held(m, buyer) == need
    m.do(ReplaceOrder(account=buyer, order_id=order_id, qty=4))  # waiting: resized
    assert _held(m, buyer) == buy_hold(1_001, 1, 4, 25)
    m.do(CancelOrder(account=buyer, order_id=order_id))
    assert _held(m, buyer) == 0


def test_a_triggered_stop_limit_buy_pays_and_holds_at_its_own_rates(m: Market) -> None:
    _fees(m, maker=0, taker=25)
    buyer = m.account(cash=20_000)
    stop_id = m.rest(buyer, "buy", 10, 1_001, type="stop_limit", trigger_price=1_000)
    _fees(m, maker=0, taker=0)  # orders from here trade free; the stop keeps 25 bps
    m.rest(m.account(units={"ACME": 6}), "sell", 6, 1_001)
    events = _print_at(m, 1_000)  # reaches the trigger: the stop buys the 6 at 10.01
    assert [e.order_id for e in of_type(events, OrderTriggered)] == [stop_id]
    (fill,) = [t for t in of_type(events, TradeExecuted) if t.taker_order_id == stop_id]
    assert (fill.price, fill.qty) == (1_001, 6)
    assert fill.taker_fee == fee_of(6 * 1_001, 25) == 16
    # Its 4 left rest as a limit buy, holding a limit buy's hold at its own 25 bps.
    cash, held, positions, _ = m.engine.balances(buyer)
    assert (cash, held, positions) == (20_000 - 6_006 - 16, buy_hold(1_001, 1, 4, 25), {"ACME": 6})


def test_a_triggered_stop_buy_spends_its_budget_fees_included_at_its_own_rates(
    m: Market,
) -> None:
    _fees(m, maker=0, taker=25)
    buyer = m.account(cash=5_000)
    stop_id = m.rest(buyer, "buy", 10, 0, type="stop", trigger_price=100, max_notional=1_010)
    assert _held(m, buyer) == 1_010  # its budget, which covers its fees
    _fees(m, maker=0, taker=0)
    m.rest(m.account(units={"ACME": 10}), "sell", 10, 101)
    events = _print_at(m, 100)
    fills = [t for t in of_type(events, TradeExecuted) if t.taker_order_id == stop_id]
    # Each unit costs 101 and a fee of ceil(0.2525) = 1: the budget of 1,010 buys 9.
    assert [(t.price, t.qty, t.taker_fee) for t in fills] == [(101, 9, fee_of(909, 25))]
    assert m.engine.balances(buyer)[:2] == (5_000 - 909 - 3, 0)


def test_a_triggered_stop_sell_pays_the_taker_fee_it_was_accepted_with(m: Market) -> None:
    _fees(m, maker=0, taker=40)
    seller = m.account(cash=0, units={"ACME": 5})
    stop_id = m.rest(seller, "sell", 5, 0, type="stop", trigger_price=99)
    _fees(m, maker=0, taker=10)  # a later rate: not the stop's
    m.rest(m.account(), "buy", 5, 98)
    events = _print_at(m, 99)
    (fill,) = [t for t in of_type(events, TradeExecuted) if t.taker_order_id == stop_id]
    assert (fill.price, fill.qty, fill.taker_fee) == (98, 5, fee_of(5 * 98, 40))
    assert m.engine.balances(seller)[0] == 5 * 98 - 2


def test_an_iceberg_pays_maker_fees_on_every_fill_and_holds_for_its_hidden_part(
    m: Market,
) -> None:
    _fees(m, maker=10, taker=25)
    buyer = m.account(cash=20_000)
    iceberg = m.rest(buyer, "buy", 10, 1_001, display_qty=3)
    assert _held(m, buyer) == buy_hold(1_001, 1, 10, 25)  # hidden units included
    events = m.place(m.account(units={"ACME": 4}), "sell", 4, 1_001)
    assert [(t.qty, t.maker_fee) for t in of_type(events, TradeExecuted)] == [
        (3, fee_of(3 * 1_001, 10)),
        (1, fee_of(1 * 1_001, 10)),
    ]
    assert [r.order_id for r in of_type(events, OrderRefreshed)] == [iceberg]
    assert _held(m, buyer) == buy_hold(1_001, 1, 6, 25)
    m.do(CancelOrder(account=buyer, order_id=iceberg))
    assert _held(m, buyer) == 0


def test_a_waiting_stops_rates_survive_export_and_restore(m: Market) -> None:
    _fees(m, maker=-5, taker=25)
    buyer = m.account(cash=20_000)
    stop_id = m.rest(buyer, "buy", 10, 1_001, type="stop_limit", trigger_price=1_000)
    _fees(m, maker=0, taker=0)
    state = export_state(m.engine)
    assert [(f.key, f.maker_bps, f.taker_bps) for f in state.order_fees] == [
        (str(stop_id), -5, 25)
    ]
    restored = restore_state(state)
    assert restored.state_hash() == m.engine.state_hash()
    order = restored.accounts[buyer].open_orders[stop_id]
    assert (order.waiting, order.maker_bps, order.taker_bps) == (True, -5, 25)


def _print_at(m: Market, price: int) -> list[Event]:
    """One unit traded at `price` between two fresh accounts: the buy's events."""
    m.rest(m.account(units={"ACME": 1}), "sell", 1, price)
    events = m.place(m.account(), "buy", 1, price)
    assert of_type(events, TradeExecuted)[0].price == price
    return events
