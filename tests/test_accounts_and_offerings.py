"""Accounts, deposits and withdrawals, instruments and the primary market."""

import pytest

from exchange.domain.commands import (
    AddApiKey,
    CloseOffering,
    DepositCash,
    DepositUnits,
    ListInstrument,
    OpenOffering,
    SetInstrumentStatus,
    SubscribeOffering,
    Uncross,
    WithdrawCash,
    WithdrawUnits,
)
from exchange.domain.events import (
    ApiKeyAdded,
    CashWithdrawn,
    InstrumentStatusChanged,
    OfferingClosed,
    Rejected,
    UnitsAllocated,
)
from exchange.domain.instruments import allocate
from exchange.domain.limits import MAX_CASH
from tests.builders import Market, of_type, rejection


def test_accounts_get_sequential_ids_and_keys() -> None:
    m = Market()
    assert m.issuer == "A1"
    assert m.account() == "A2"
    (added,) = m.do(AddApiKey(account="A2", api_key_hash="h"))
    assert isinstance(added, ApiKeyAdded)
    assert rejection(m.do(AddApiKey(account="A9", api_key_hash="h"))) == "UNKNOWN_ACCOUNT"


def test_withdrawal_is_limited_to_available_cash() -> None:
    m = Market()
    m.instrument("ACME")
    trader = m.account(cash=1_000)
    m.rest(trader, "buy", 1, 600)
    assert rejection(m.do(WithdrawCash(account=trader, amount=401))) == "INSUFFICIENT_FUNDS"
    (done,) = m.do(WithdrawCash(account=trader, amount=400))
    assert isinstance(done, CashWithdrawn)
    assert done.balance == 600


def test_money_command_refusals() -> None:
    m = Market()
    m.instrument("ACME")
    trader = m.account(units={"ACME": 5})
    assert rejection(m.do(DepositCash(account="A99", amount=1))) == "UNKNOWN_ACCOUNT"
    assert rejection(m.do(DepositCash(account=trader, amount=0))) == "BAD_AMOUNT"
    assert rejection(m.do(DepositCash(account=trader, amount=MAX_CASH + 1))) == "BAD_AMOUNT"
    assert rejection(m.do(DepositUnits(account=trader, symbol="NOPE", qty=1))) == (
        "UNKNOWN_SYMBOL"
    )
    assert rejection(m.do(DepositUnits(account=trader, symbol="ACME", qty=0))) == "BAD_QTY"
    m.rest(trader, "sell", 3, 100)
    code = rejection(m.do(WithdrawUnits(account=trader, symbol="ACME", qty=3)))
    assert code == "INSUFFICIENT_UNITS"
    m.do(WithdrawUnits(account=trader, symbol="ACME", qty=2))
    assert m.engine.balances(trader)[2:] == ({"ACME": 3}, {"ACME": 3})


def test_rejections_name_the_command() -> None:
    m = Market()
    (event,) = m.do(WithdrawCash(account="A99", amount=1))
    assert isinstance(event, Rejected)
    assert (event.command, event.code) == ("WithdrawCash", "UNKNOWN_ACCOUNT")


def test_instrument_listing_and_status_rules() -> None:
    m = Market()
    m.instrument("ACME", trading=False)
    dup = ListInstrument(symbol="ACME", kind="share", tick=1, issuer=m.issuer)
    assert rejection(m.do(dup)) == "DUPLICATE_SYMBOL"
    orphan = ListInstrument(symbol="ORPH", kind="bond", tick=1, issuer="A99")
    assert rejection(m.do(orphan)) == "UNKNOWN_ACCOUNT"
    bad_tick = ListInstrument(symbol="TICK", kind="fund", tick=0, issuer=m.issuer)
    assert rejection(m.do(bad_tick)) == "BAD_TICK_SIZE"
    trader = m.account()
    assert rejection(m.place(trader, "buy", 1, 10)) == "NOT_TRADING"
    halt = SetInstrumentStatus(symbol="ACME", status="halted")
    assert rejection(m.do(halt)) == "BAD_STATUS"
    nope = SetInstrumentStatus(symbol="NOPE", status="trading")
    assert rejection(m.do(nope)) == "UNKNOWN_SYMBOL"
    m.do(SetInstrumentStatus(symbol="ACME", status="trading"))
    m.rest(trader, "buy", 1, 10)


@pytest.mark.parametrize(
    ("requests", "offered", "expected"),
    [
        ([10, 20], 100, [10, 20]),  # undersubscribed: everyone gets what they asked
        ([60, 40], 100, [60, 40]),  # exactly subscribed
        ([900, 600, 300], 1000, [500, 333, 167]),  # remainder to the largest fraction
        ([1, 1, 1], 2, [1, 1, 0]),  # equal fractions: earlier subscription first
        ([5, 5, 5, 5], 1, [1, 0, 0, 0]),
        ([7], 3, [3]),
    ],
)
def test_pro_rata_allocation(requests: list[int], offered: int, expected: list[int]) -> None:
    assert allocate(requests, offered) == expected


def test_an_offering_from_listing_to_secondary_trading() -> None:
    m = Market()
    m.do(ListInstrument(symbol="NEW", kind="share", tick=5, issuer=m.issuer))
    (opened, status) = m.do(OpenOffering(symbol="NEW", price=200, qty=100))  # 10.00 a unit
    assert isinstance(status, InstrumentStatusChanged)
    offering_id: int = opened.offering_id  # type: ignore[union-attr]
    a, b = m.account(cash=200_000), m.account(cash=50_000)
    m.do(SubscribeOffering(account=a, offering_id=offering_id, qty=100))
    m.do(SubscribeOffering(account=b, offering_id=offering_id, qty=20))
    m.do(SubscribeOffering(account=b, offering_id=offering_id, qty=30))
    assert m.engine.balances(b)[:2] == (50_000, 50_000)
    assert rejection(m.place(a, "buy", 1, 10, symbol="NEW")) == "NOT_TRADING"
    events = m.do(CloseOffering(offering_id=offering_id))
    allocations = [
        (e.account, e.requested, e.allocated, e.cost) for e in of_type(events, UnitsAllocated)
    ]
    assert allocations == [(a, 100, 67, 67_000), (b, 50, 33, 33_000)]
    (closed,) = of_type(events, OfferingClosed)
    assert (closed.issued, closed.proceeds) == (100, 100_000)
    assert m.engine.balances(m.issuer)[0] == 100_000
    assert m.engine.balances(a) == (200_000 - 67_000, 0, {"NEW": 67}, {})
    assert m.engine.balances(b) == (50_000 - 33_000, 0, {"NEW": 33}, {})
    # The closed offering's instrument opens through a call auction.
    def phase() -> str:
        return m.engine.instruments["NEW"].status

    assert phase() == "pre_open"
    m.rest(a, "sell", 10, 210, symbol="NEW")
    m.place(b, "buy", 10, 210, symbol="NEW")
    assert m.engine.balances(b)[2] == {"NEW": 33}  # nothing matches before the uncross
    m.do(Uncross(symbol="NEW"))
    assert phase() == "trading"
    assert m.engine.balances(b)[2] == {"NEW": 43}


def test_undersubscribed_offering_issues_only_what_was_asked() -> None:
    m = Market()
    m.do(ListInstrument(symbol="NEW", kind="fund", tick=1, issuer=m.issuer))
    m.do(OpenOffering(symbol="NEW", price=100, qty=1_000))
    a = m.account()
    m.do(SubscribeOffering(account=a, offering_id=1, qty=10))
    events = m.do(CloseOffering(offering_id=1))
    (closed,) = of_type(events, OfferingClosed)
    assert (closed.issued, closed.proceeds) == (10, 1_000)


def test_offering_refusals() -> None:
    m = Market()
    m.instrument("OLD")  # already trading
    assert rejection(m.do(OpenOffering(symbol="OLD", price=1, qty=1))) == "BAD_STATUS"
    assert rejection(m.do(OpenOffering(symbol="NOPE", price=1, qty=1))) == "UNKNOWN_SYMBOL"
    m.do(ListInstrument(symbol="NEW", kind="share", tick=1, issuer=m.issuer))
    assert rejection(m.do(OpenOffering(symbol="NEW", price=0, qty=1))) == "BAD_PRICE"
    assert rejection(m.do(OpenOffering(symbol="NEW", price=1, qty=0))) == "BAD_QTY"
    m.do(OpenOffering(symbol="NEW", price=100, qty=10, closes_at=m.ts + 60_000_000_000))
    poor = m.account(cash=50)
    assert rejection(m.do(SubscribeOffering(account=poor, offering_id=1, qty=1))) == (
        "INSUFFICIENT_FUNDS"
    )
    assert rejection(m.do(SubscribeOffering(account=poor, offering_id=7, qty=1))) == (
        "UNKNOWN_OFFERING"
    )
    assert rejection(m.do(SubscribeOffering(account="A99", offering_id=1, qty=1))) == (
        "UNKNOWN_ACCOUNT"
    )
    assert rejection(m.do(SubscribeOffering(account=poor, offering_id=1, qty=0))) == "BAD_QTY"
    late = m.account()
    m.ts += 60_000_000_000  # past closes_at
    assert rejection(m.do(SubscribeOffering(account=late, offering_id=1, qty=1))) == (
        "OFFERING_CLOSED"
    )
    status = SetInstrumentStatus(symbol="NEW", status="trading")
    assert rejection(m.do(status)) == "BAD_STATUS"
    m.do(CloseOffering(offering_id=1))
    assert rejection(m.do(CloseOffering(offering_id=1))) == "OFFERING_CLOSED"
    assert rejection(m.do(CloseOffering(offering_id=9))) == "UNKNOWN_OFFERING"


@pytest.mark.parametrize("symbol", ["", "acme", "-X", "TOO-LONG-A-SYMBOL", "A B", "É"])
def test_a_symbol_outside_the_pattern_is_refused(symbol: str) -> None:
    m = Market()
    listing = ListInstrument(symbol=symbol, kind="share", tick=1, issuer=m.issuer)
    assert rejection(m.do(listing)) == "BAD_SYMBOL"
