"""Underwritten offerings (docs/ENGINE.md, "Primary market"): the underwriter's hold under a
firm commitment, its take-up of unsold units, the gross spread, and the refusals."""

import pytest

from exchange.domain.commands import (
    CloseOffering,
    Commitment,
    OpenOffering,
    SetInstrumentFees,
    SubscribeOffering,
    Uncross,
)
from exchange.domain.events import (
    AuctionIndicative,
    AuctionUncrossed,
    InstrumentStatusChanged,
    OfferingClosed,
    OfferingOpened,
    OfferingUnderwritten,
    TradeExecuted,
    UnitsAllocated,
)
from exchange.domain.fees import FEE_ACCOUNT
from exchange.domain.limits import MAX_OFFERING_FEE_BPS
from exchange.domain.state import export_state, restore_state
from tests.builders import Market, of_type, rejection


def _offering(m: Market, **fields: object) -> int:
    command = OpenOffering(symbol="IPO", price=1_000, qty=1_000, **fields)  # type: ignore[arg-type]
    events = m.do(command)
    opened = of_type(events, OfferingOpened)
    assert opened, events
    return opened[0].offering_id


def _market() -> tuple[Market, str, str, str]:
    m = Market()
    m.instrument("IPO", trading=False)
    bank = m.account(cash=2_000_000)
    alice = m.account(cash=1_000_000)
    bob = m.account(cash=1_000_000)
    return m, bank, alice, bob


def test_a_firm_underwriter_holds_the_whole_issue_from_the_opening() -> None:
    m, bank, _, _ = _market()
    _offering(m, underwriter=bank, fee_bps=700, commitment="firm")
    assert m.engine.balances(bank)[:2] == (2_000_000, 1_000_000)


def test_a_firm_offering_undersubscribed_leaves_the_rest_to_the_underwriter() -> None:
    m, bank, alice, bob = _market()
    offering_id = _offering(m, underwriter=bank, fee_bps=700, commitment="firm")
    m.do(SubscribeOffering(account=alice, offering_id=offering_id, qty=400))
    m.do(SubscribeOffering(account=bob, offering_id=offering_id, qty=200))
    events = m.do(CloseOffering(offering_id=offering_id))
    assert [type(e) for e in events] == [
        UnitsAllocated, UnitsAllocated, OfferingUnderwritten, OfferingClosed,
        InstrumentStatusChanged, AuctionIndicative,
    ]  # fmt: skip
    (opening,) = of_type(events, InstrumentStatusChanged)
    assert (opening.status, opening.reason) == ("pre_open", "offering")
    (took,) = of_type(events, OfferingUnderwritten)
    assert (took.account, took.units, took.cost) == (bank, 400, 400_000)
    (closed,) = of_type(events, OfferingClosed)
    # Gross 1,000 x 10.00 = 10,000.00; 7% = 700.00 to the bank; 9,300.00 to the issuer.
    assert (closed.issued, closed.proceeds, closed.fee, closed.underwriter) == (
        1_000, 1_000_000, 70_000, bank
    )
    assert m.engine.balances(m.issuer)[0] == 930_000
    assert m.engine.balances(bank) == (2_000_000 - 400_000 + 70_000, 0, {"IPO": 400}, {})
    assert m.engine.balances(alice) == (600_000, 0, {"IPO": 400}, {})
    assert m.engine.balances(bob) == (800_000, 0, {"IPO": 200}, {})


def test_best_efforts_issues_only_what_was_subscribed() -> None:
    m, bank, alice, _ = _market()
    offering_id = _offering(m, underwriter=bank, fee_bps=333, commitment="best_efforts")
    assert m.engine.balances(bank)[1] == 0  # nothing held
    m.do(SubscribeOffering(account=alice, offering_id=offering_id, qty=7))
    events = m.do(CloseOffering(offering_id=offering_id))
    assert of_type(events, OfferingUnderwritten) == []
    (closed,) = of_type(events, OfferingClosed)
    # 70.00 at 3.33% is 2.331: rounded up to 2.34.
    assert (closed.issued, closed.proceeds, closed.fee) == (7, 7_000, 234)
    assert m.engine.balances(m.issuer)[0] == 7_000 - 234
    assert m.engine.balances(bank) == (2_000_000 + 234, 0, {}, {})


def test_an_oversubscribed_firm_offering_costs_the_underwriter_nothing_but_pays_its_fee() -> None:
    m, bank, alice, bob = _market()
    offering_id = _offering(m, underwriter=bank, fee_bps=700, commitment="firm")
    m.do(SubscribeOffering(account=alice, offering_id=offering_id, qty=900))
    m.do(SubscribeOffering(account=bob, offering_id=offering_id, qty=600))
    events = m.do(CloseOffering(offering_id=offering_id))
    (took,) = of_type(events, OfferingUnderwritten)
    assert (took.units, took.cost) == (0, 0)
    assert [a.allocated for a in of_type(events, UnitsAllocated)] == [600, 400]
    assert m.engine.balances(bank) == (2_000_000 + 70_000, 0, {}, {})
    assert m.engine.balances(alice)[:2] == (400_000, 0)  # paid only for what it got


def test_an_offering_without_an_underwriter_works_as_before() -> None:
    m, _, alice, _ = _market()
    offering_id = _offering(m)
    m.do(SubscribeOffering(account=alice, offering_id=offering_id, qty=10))
    (closed,) = of_type(m.do(CloseOffering(offering_id=offering_id)), OfferingClosed)
    assert (closed.issued, closed.proceeds, closed.fee, closed.underwriter) == (10, 10_000, 0, "")
    assert m.engine.balances(m.issuer)[0] == 10_000


def test_a_firm_underwriter_that_cannot_cover_the_issue_is_refused() -> None:
    m, _, _, _ = _market()
    poor = m.account(cash=999_999)
    assert rejection(m.do(OpenOffering(symbol="IPO", price=1_000, qty=1_000, underwriter=poor,
                                       commitment="firm"))) == "INSUFFICIENT_FUNDS"
    assert m.engine.instruments["IPO"].status == "listed"
    assert m.engine.balances(poor)[1] == 0


@pytest.mark.parametrize(
    ("underwriter", "fee_bps", "commitment", "code"),
    [
        ("A99", 0, "best_efforts", "UNKNOWN_ACCOUNT"),
        ("", 100, "best_efforts", "BAD_REQUEST"),
        ("", 0, "firm", "BAD_REQUEST"),
        ("A2", MAX_OFFERING_FEE_BPS + 1, "best_efforts", "BAD_FEE"),
        ("A2", -1, "best_efforts", "BAD_FEE"),
    ],
)
def test_underwriting_refusals(
    underwriter: str, fee_bps: int, commitment: Commitment, code: str
) -> None:
    m, _, _, _ = _market()
    command = OpenOffering(symbol="IPO", price=1_000, qty=10, underwriter=underwriter,
                           fee_bps=fee_bps, commitment=commitment)
    assert rejection(m.do(command)) == code


def test_underwriting_survives_export_and_restore() -> None:
    m, bank, alice, _ = _market()
    offering_id = _offering(m, underwriter=bank, fee_bps=700, commitment="firm")
    m.do(SubscribeOffering(account=alice, offering_id=offering_id, qty=10))
    restored = restore_state(export_state(m.engine))
    assert restored.state_hash() == m.engine.state_hash()
    offering = restored.offerings[offering_id]
    assert (offering.underwriter, offering.fee_bps, offering.commitment) == (bank, 700, "firm")
    # The restored engine closes the offering exactly as the original does.
    close = CloseOffering(ts=m.ts + 1, offering_id=offering_id)
    assert restored.apply(close) == m.engine.apply(close)
    assert restored.state_hash() == m.engine.state_hash()


def test_an_underwritten_offering_opens_through_an_auction_at_its_price_with_fees() -> None:
    """The close leaves the instrument pre_open with the offering price (10.00) as its
    reference; the uncross picks it among equal volumes, and its fills pay fees with the
    older order as the maker."""
    m, bank, alice, bob = _market()
    m.do(SetInstrumentFees(symbol="IPO", maker_bps=-3, taker_bps=7))
    offering_id = _offering(m, underwriter=bank, fee_bps=700, commitment="firm")
    m.do(SubscribeOffering(account=alice, offering_id=offering_id, qty=400))
    m.do(CloseOffering(offering_id=offering_id))
    assert m.engine.instruments["IPO"].status == "pre_open"
    assert m.engine.instruments["IPO"].ref == 1_000
    # bob bids first (the maker), the bank offers after (the taker): any price from 9.50
    # to 10.50 trades all 100, and 10.00 is nearest the reference.
    m.rest(bob, "buy", 100, 1_050, symbol="IPO")
    m.rest(bank, "sell", 100, 950, symbol="IPO")
    bob_cash, bank_cash = m.engine.balances(bob)[0], m.engine.balances(bank)[0]
    events = m.do(Uncross(symbol="IPO"))
    (uncrossed,) = of_type(events, AuctionUncrossed)
    assert (uncrossed.price, uncrossed.qty) == (1_000, 100)
    (trade,) = of_type(events, TradeExecuted)
    assert (trade.maker_account, trade.taker_account, trade.aggressor) == (bob, bank, "sell")
    # 100 x 10.00 = 1,000.00: the taker pays 0.07% = 0.70, the maker gets 0.03% = 0.30.
    assert (trade.maker_fee, trade.taker_fee) == (-30, 70)
    assert m.engine.balances(bob) == (bob_cash - 100_000 + 30, 0, {"IPO": 100}, {})
    assert m.engine.balances(bank)[0] == bank_cash + 100_000 - 70
    assert m.engine.balances(FEE_ACCOUNT)[0] == 40
