"""Trading fees (docs/ENGINE.md, "Fees"): rates and their bounds, each fill's fee and its
rounding, the fee account, the buy's hold for its worst-case fee, and rates kept per order."""

import msgspec
import pytest

from exchange.domain.commands import (
    CancelOrder,
    ListInstrument,
    ReplaceOrder,
    SetInstrumentFees,
    SetInstrumentStatus,
    Uncross,
)
from exchange.domain.events import (
    AccountCreated,
    Event,
    InstrumentFeesSet,
    InstrumentListed,
    OrderCancelled,
    TradeExecuted,
)
from exchange.domain.fees import FEE_ACCOUNT, buy_hold, fee_of, unit_fee_hold
from exchange.domain.limits import MAX_TRADE_FEE_BPS
from exchange.domain.state import export_state, restore_state
from tests.builders import Market, of_type, rejection


def _fees(m: Market, maker: int, taker: int, symbol: str = "ACME") -> None:
    events = m.do(SetInstrumentFees(symbol=symbol, maker_bps=maker, taker_bps=taker))
    assert of_type(events, InstrumentFeesSet), events


def _trade(events: list[Event]) -> TradeExecuted:
    (trade,) = [e for e in events if isinstance(e, TradeExecuted)]
    return trade


def test_a_charge_rounds_up_and_a_rebate_rounds_down() -> None:
    # 10.01 (1001 minor units) at 25 bps is 2.5025 minor units.
    assert fee_of(1001, 25) == 3
    assert fee_of(1001, -25) == -2
    assert fee_of(1001, 0) == 0
    assert fee_of(400, 25) == 1  # exactly 1.0: no rounding
    assert fee_of(0, 25) == 0


def test_the_buy_hold_covers_each_unit_fee_rounded_up() -> None:
    # 100 units at 1 minor unit each, 1 bps: each one-unit fill costs a whole minor unit.
    assert unit_fee_hold(1, 1) == 1
    assert buy_hold(1, 1, 100, 1) == 200
    assert buy_hold(100, 1, 10, 0) == 1_000


def test_fees_are_charged_to_each_side_and_credited_to_the_fee_account() -> None:
    m = Market()
    m.instrument()
    _fees(m, maker=10, taker=25)
    seller = m.account(cash=0, units={"ACME": 10})
    buyer = m.account(cash=100_000)
    m.rest(seller, "sell", 10, 1_001)
    trade = _trade(m.place(buyer, "buy", 10, 1_001))
    # 10 x 10.01 = 100.10: taker 25 bps = 0.25025 -> 0.26, maker 10 bps = 0.1001 -> 0.11.
    assert (trade.maker_fee, trade.taker_fee) == (11, 26)
    assert m.engine.balances(buyer)[:2] == (100_000 - 10_010 - 26, 0)
    assert m.engine.balances(seller)[0] == 10_010 - 11
    assert m.engine.balances(FEE_ACCOUNT)[0] == 37


def test_a_maker_rebate_is_paid_from_the_fee_account() -> None:
    m = Market()
    m.instrument()
    _fees(m, maker=-10, taker=25)
    maker = m.account(cash=100_000)
    taker = m.account(cash=0, units={"ACME": 10})
    m.rest(maker, "buy", 10, 1_001)
    trade = _trade(m.place(taker, "sell", 10, 1_001))
    assert (trade.maker_fee, trade.taker_fee) == (-10, 26)  # rebate 0.1001 -> 0.10
    assert m.engine.balances(maker)[:2] == (100_000 - 10_010 + 10, 0)
    assert m.engine.balances(taker)[0] == 10_010 - 26
    assert m.engine.balances(FEE_ACCOUNT)[0] == 16


def test_the_fee_account_appears_with_the_first_non_zero_rate() -> None:
    m = Market()
    m.instrument()
    assert FEE_ACCOUNT not in m.engine.accounts
    assert of_type(m.do(SetInstrumentFees(symbol="ACME", maker_bps=0, taker_bps=0)),
                   AccountCreated) == []
    events = m.do(ListInstrument(symbol="B", kind="bond", tick=1, issuer=m.issuer,
                                 maker_bps=0, taker_bps=5))
    created, listed = events
    assert isinstance(created, AccountCreated)
    assert created.account == FEE_ACCOUNT
    assert isinstance(listed, InstrumentListed)
    assert listed.taker_bps == 5
    assert of_type(m.do(SetInstrumentFees(symbol="ACME", maker_bps=1, taker_bps=5)),
                   AccountCreated) == []


@pytest.mark.parametrize(
    ("maker", "taker"),
    [(0, -1), (0, MAX_TRADE_FEE_BPS + 1), (11, 10), (-11, 10), (-1, 0)],
)
def test_fee_rates_out_of_bounds_are_refused(maker: int, taker: int) -> None:
    m = Market()
    m.instrument()
    set_fees = SetInstrumentFees(symbol="ACME", maker_bps=maker, taker_bps=taker)
    assert rejection(m.do(set_fees)) == "BAD_FEE"
    listing = ListInstrument(symbol="B", kind="bond", tick=1, issuer=m.issuer, maker_bps=maker,
                             taker_bps=taker)
    assert rejection(m.do(listing)) == "BAD_FEE"
    assert FEE_ACCOUNT not in m.engine.accounts


def test_fees_for_an_unknown_symbol_are_refused() -> None:
    m = Market()
    assert rejection(m.do(SetInstrumentFees(symbol="NOPE", maker_bps=0, taker_bps=1))) == (
        "UNKNOWN_SYMBOL"
    )


def test_a_limit_buy_must_afford_its_worst_case_fee() -> None:
    m = Market()
    m.instrument()
    _fees(m, maker=0, taker=100)  # 1%
    buyer = m.account(cash=10_100)
    assert rejection(m.place(buyer, "buy", 10, 1_001)) == "INSUFFICIENT_FUNDS"
    m.rest(buyer, "buy", 10, 1_000)  # 100.00 plus 10 x 0.10
    assert m.engine.balances(buyer)[:2] == (10_100, 10_100)


def test_a_market_buy_spends_its_budget_fees_included() -> None:
    m = Market()
    m.instrument()
    _fees(m, maker=0, taker=100)
    seller = m.account(cash=0, units={"ACME": 10})
    m.rest(seller, "sell", 10, 1_000)
    buyer = m.account(cash=5_049)  # 5 units cost 5 x 10.10 = 50.50: only 4 fit
    events = m.place(buyer, "buy", 10)
    trade = _trade(events)
    assert (trade.qty, trade.taker_fee) == (4, 40)
    assert m.engine.balances(buyer)[0] == 5_049 - 4_000 - 40
    assert of_type(events, OrderCancelled)[0].reason == "expired"


def test_a_cancel_releases_the_fee_hold_too() -> None:
    m = Market()
    m.instrument()
    _fees(m, maker=0, taker=30)
    buyer = m.account(cash=100_000)
    order_id = m.rest(buyer, "buy", 7, 333)  # 3.33 x 30 bps = 0.00999 -> 0.01 a unit
    assert m.engine.balances(buyer)[1] == 7 * (333 + 1)
    m.do(ReplaceOrder(account=buyer, order_id=order_id, qty=9, price=0))
    assert m.engine.balances(buyer)[1] == 9 * (333 + 1)
    m.do(ReplaceOrder(account=buyer, order_id=order_id, qty=0, price=1_000))
    assert m.engine.balances(buyer)[1] == 9 * (1_000 + 3)
    m.do(CancelOrder(account=buyer, order_id=order_id))
    assert m.engine.balances(buyer)[1] == 0


def test_an_order_keeps_the_rates_it_was_accepted_with() -> None:
    m = Market()
    m.instrument()
    _fees(m, maker=0, taker=10)
    maker = m.account(cash=100_000)
    m.rest(maker, "buy", 10, 1_000)
    _fees(m, maker=10, taker=20)  # later orders pay these; the resting buy keeps 0 / 10
    assert m.engine.balances(maker)[1] == 10 * (1_000 + 1)
    seller = m.account(cash=0, units={"ACME": 10})
    trade = _trade(m.place(seller, "sell", 10, 1_000))
    assert (trade.maker_fee, trade.taker_fee) == (0, 20)
    assert m.engine.balances(maker)[:2] == (100_000 - 10_000, 0)


def test_fee_rates_and_orders_rates_survive_export_and_restore() -> None:
    m = Market()
    m.instrument()
    _fees(m, maker=-5, taker=15)
    buyer = m.account(cash=100_000)
    m.rest(buyer, "buy", 10, 1_000)
    _fees(m, maker=0, taker=0)
    restored = restore_state(export_state(m.engine))
    assert restored.state_hash() == m.engine.state_hash()
    assert restored.instruments["ACME"].taker_bps == 0
    order = next(iter(restored.accounts[buyer].open_orders.values()))
    assert (order.maker_bps, order.taker_bps) == (-5, 15)


def test_a_state_without_fees_hashes_as_before_fees() -> None:
    """New state fields are left out at their defaults: snapshots from before still check."""
    m = Market()
    m.instrument()
    m.rest(m.account(), "buy", 1, 100)
    encoded = export_state(m.engine).instruments[0]
    assert msgspec.msgpack.encode(encoded) == msgspec.msgpack.encode(
        ["ACME", "share", 1, m.issuer, "trading"]
    )


def test_a_rebate_is_never_more_than_the_same_fills_taker_fee() -> None:
    m = Market()
    m.instrument()
    _fees(m, maker=-10, taker=10)
    maker = m.account(cash=100_000)
    m.rest(maker, "buy", 10, 1_000)  # accepted with a 10 bps rebate
    _fees(m, maker=0, taker=0)  # the taker comes after fees were dropped
    seller = m.account(cash=0, units={"ACME": 10})
    trade = _trade(m.place(seller, "sell", 10, 1_000))
    assert (trade.maker_fee, trade.taker_fee) == (0, 0)
    assert m.engine.balances(FEE_ACCOUNT)[0] == 0
    _fees(m, maker=-10, taker=10)
    m.rest(maker, "buy", 10, 1_000)
    _fees(m, maker=0, taker=3)  # 0.03% of 100.00 = 0.03: the rebate shrinks to it
    trade = _trade(m.place(m.account(cash=0, units={"ACME": 10}), "sell", 10, 1_000))
    assert (trade.maker_fee, trade.taker_fee) == (-3, 3)


# --- call auctions (docs/ENGINE.md, "Fees": call auctions) --------------------------------


def test_a_buy_in_a_call_auction_holds_its_taker_fee_and_pays_it_as_the_newer_order() -> None:
    m = Market()
    m.instrument(trading=False)
    m.do(SetInstrumentStatus(symbol="ACME", status="pre_open"))
    _fees(m, maker=-10, taker=25)
    seller = m.account(cash=0, units={"ACME": 10})
    # 10 x 10.01 = 100.10 and a unit fee of ceil(0.025025) = 0.03 each: 100.40 held.
    poor = m.account(cash=10_039)
    assert rejection(m.place(poor, "buy", 10, 1_001)) == "INSUFFICIENT_FUNDS"
    m.rest(seller, "sell", 10, 1_000)  # the older order: the maker
    buyer = m.account(cash=10_040)
    m.rest(buyer, "buy", 10, 1_001)
    assert m.engine.balances(buyer)[:2] == (10_040, 10_040)
    events = m.do(Uncross(symbol="ACME"))
    trade = _trade(events)
    # No reference price yet: of 10.00 and 10.01 (the same volume) the lower one.
    assert (trade.price, trade.maker_account, trade.taker_account) == (1_000, seller, buyer)
    # 100.00: the taker pays 25 bps = 0.25, the maker gets 10 bps = 0.10.
    assert (trade.maker_fee, trade.taker_fee) == (-10, 25)
    assert m.engine.balances(buyer) == (10_040 - 10_000 - 25, 0, {"ACME": 10}, {})
    assert m.engine.balances(seller)[0] == 10_000 + 10
    assert m.engine.balances(FEE_ACCOUNT)[0] == 15
