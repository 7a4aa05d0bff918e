"""Market phases, one rule a test: call auctions and their uncross, halts, session closes,
price bands and volatility interruptions, gtd and day orders, and sequenced time."""

import msgspec
import pytest

from exchange.domain.auction import clearing_price
from exchange.domain.commands import (
    CancelOrder,
    CloseOffering,
    ListInstrument,
    OpenOffering,
    ReplaceOrder,
    SetInstrumentStatus,
    SetTradingRules,
    SubscribeOffering,
    Timer,
    Uncross,
)
from exchange.domain.events import (
    AuctionIndicative,
    AuctionUncrossed,
    InstrumentStatusChanged,
    OrderCancelled,
    TradeExecuted,
    TradingRulesSet,
)
from exchange.domain.state import decode_state, encode_state, export_state, restore_state
from tests.builders import Market, of_type, rejection

SECOND = 1_000_000_000


@pytest.fixture
def m() -> Market:
    market = Market()
    market.instrument("ACME")
    return market


def ipo(m: Market, price: int = 100) -> tuple[str, str]:
    """NEW through an offering at `price`: two holders of 50 units each, left pre_open."""
    m.do(ListInstrument(symbol="NEW", kind="share", tick=1, issuer=m.issuer))
    m.do(OpenOffering(symbol="NEW", price=price, qty=100))
    a, b = m.account(), m.account()
    m.do(SubscribeOffering(account=a, offering_id=1, qty=50))
    m.do(SubscribeOffering(account=b, offering_id=1, qty=50))
    events = m.do(CloseOffering(offering_id=1))
    (status,) = of_type(events, InstrumentStatusChanged)
    assert (status.status, status.reason) == ("pre_open", "offering")
    assert m.engine.instruments["NEW"].ref == price
    return a, b


def status_of(m: Market, symbol: str = "ACME") -> str:
    return m.engine.instruments[symbol].status


# --- the clearing price -----------------------------------------------------------------------


def test_the_clearing_price_maximises_volume() -> None:
    # docs/ENGINE.md's worked example.
    bids = [(102, 30), (101, 20), (99, 50)]
    asks = [(98, 40), (100, 30), (103, 10)]
    # 99: 40 trade; 100 and 101: 50, with 20 to sell left over; 102: 30. Nearest 100.
    assert clearing_price(bids, asks, ref=100) == (100, 50, -20)


def test_equal_volume_goes_to_the_smaller_surplus() -> None:
    bids = [(100, 10), (90, 5)]
    asks = [(90, 10)]
    # 10 trade anywhere in 90..100; at 90 five bids are left over, above 90 none.
    assert clearing_price(bids, asks, ref=80) == (91, 10, 0)


def test_then_the_price_nearest_the_reference() -> None:
    bids = [(105, 10)]
    asks = [(95, 10)]
    assert clearing_price(bids, asks, ref=101) == (101, 10, 0)
    assert clearing_price(bids, asks, ref=120) == (105, 10, 0)
    assert clearing_price(bids, asks, ref=0) == (95, 10, 0)  # then the lowest


def test_a_book_that_does_not_cross_has_no_clearing_price() -> None:
    assert clearing_price([(99, 5)], [(100, 5)], ref=100) == (0, 0, 0)
    assert clearing_price([], [(100, 5)], ref=100) == (0, 0, 0)


def test_the_imbalance_is_the_unmatched_side_at_the_price() -> None:
    assert clearing_price([(101, 30)], [(100, 10)], ref=100) == (100, 10, 20)


# --- call auctions ---------------------------------------------------------------------------


def test_pre_open_orders_rest_and_publish_the_indicative_price(m: Market) -> None:
    a, b = ipo(m)
    sell = m.place(a, "sell", 20, 98, symbol="NEW")
    assert of_type(sell, AuctionIndicative) == [AuctionIndicative("NEW", 0, 0, "", 0)]
    buy = m.place(b, "buy", 30, 102, symbol="NEW")
    assert not of_type(buy, TradeExecuted)
    (indicative,) = of_type(buy, AuctionIndicative)
    assert indicative == AuctionIndicative("NEW", 100, 20, "buy", 10)
    assert m.engine.book("NEW") == ([(102, 30)], [(98, 20)])  # crossed, nothing matched


def test_market_ioc_and_fok_orders_are_not_taken_in_a_call_auction(m: Market) -> None:
    a, _ = ipo(m)
    assert rejection(m.place(a, "sell", 1, symbol="NEW")) == "NOT_IN_PHASE"
    assert rejection(m.place(a, "sell", 1, 100, symbol="NEW", tif="ioc")) == "NOT_IN_PHASE"
    assert rejection(m.place(a, "sell", 1, 100, symbol="NEW", tif="fok")) == "NOT_IN_PHASE"


def test_the_uncross_fills_everything_at_one_price_by_price_then_time(m: Market) -> None:
    a, b = ipo(m)
    first = m.rest(a, "sell", 10, 97, symbol="NEW")
    second = m.rest(a, "sell", 10, 99, symbol="NEW")
    m.rest(a, "sell", 10, 101, symbol="NEW")
    late = m.rest(b, "buy", 15, 100, symbol="NEW")
    events = m.do(Uncross(symbol="NEW"))
    assert of_type(events, AuctionUncrossed) == [AuctionUncrossed("NEW", 100, 15)]
    trades = [(t.price, t.qty, t.maker_order_id, t.taker_order_id, t.aggressor)
              for t in of_type(events, TradeExecuted)]  # fmt: skip
    assert trades == [(100, 10, first, late, "buy"), (100, 5, second, late, "buy")]
    assert status_of(m, "NEW") == "trading"
    assert m.engine.instruments["NEW"].ref == 100
    assert m.engine.book("NEW") == ([], [(99, 5), (101, 10)])
    # The buyer paid the clearing price, and its hold at 100 is all released.
    assert m.engine.balances(b)[1] == 0


def test_an_uncross_outside_a_call_auction_is_not_in_phase(m: Market) -> None:
    assert rejection(m.do(Uncross(symbol="ACME"))) == "NOT_IN_PHASE"
    assert rejection(m.do(Uncross(symbol="NOPE"))) == "UNKNOWN_SYMBOL"


def test_open_at_uncrosses_by_the_timer(m: Market) -> None:
    m.do(SetTradingRules(symbol="ACME", open_at=m.ts + 10 * SECOND))
    assert m.engine.next_deadline() is None  # trading: no auction to end
    m.do(SetInstrumentStatus(symbol="ACME", status="pre_open"))
    due = m.engine.next_deadline()
    assert due == m.engine.instruments["ACME"].open_at
    assert m.do(Timer()) == []  # not due yet: nothing
    m.ts = due
    events = m.do(Timer())
    assert [(e.status, e.reason) for e in of_type(events, InstrumentStatusChanged)] == [
        ("trading", "open_at")
    ]
    assert m.engine.next_deadline() is None


def test_a_replace_in_a_call_auction_rests_again_without_matching(m: Market) -> None:
    a, b = ipo(m)
    m.rest(a, "sell", 10, 101, symbol="NEW")
    bid = m.rest(b, "buy", 10, 99, symbol="NEW")
    events = m.do(ReplaceOrder(account=b, order_id=bid, price=102))
    assert not of_type(events, TradeExecuted)
    assert of_type(events, AuctionIndicative)[0].qty == 10


# --- halts and sessions ----------------------------------------------------------------------


def test_a_halt_takes_only_cancels_and_resumes_through_an_auction(m: Market) -> None:
    buyer = m.account()
    order_id = m.rest(buyer, "buy", 1, 50)
    m.do(SetTradingRules(symbol="ACME", interruption_s=30))
    m.do(SetInstrumentStatus(symbol="ACME", status="halted"))
    assert rejection(m.place(buyer, "buy", 1, 50)) == "NOT_IN_PHASE"
    replace = ReplaceOrder(account=buyer, order_id=order_id, qty=2)
    assert rejection(m.do(replace)) == "NOT_IN_PHASE"
    events = m.do(SetInstrumentStatus(symbol="ACME", status="trading"))
    (resumed,) = of_type(events, InstrumentStatusChanged)
    assert (resumed.status, resumed.reason) == ("pre_open", "resume")
    assert resumed.open_at == m.ts + 30 * SECOND
    (cancelled,) = m.do(CancelOrder(account=buyer, order_id=order_id))[:1]
    assert isinstance(cancelled, OrderCancelled)


def test_the_close_expires_day_orders_and_keeps_the_others(m: Market) -> None:
    buyer = m.account()
    day = m.rest(buyer, "buy", 1, 50, tif="day")
    gtc = m.rest(buyer, "buy", 1, 49)
    m.do(SetTradingRules(symbol="ACME", close_at=m.ts + 5 * SECOND))
    m.ts += 5 * SECOND
    events = m.do(Timer())
    assert [(e.status, e.reason) for e in of_type(events, InstrumentStatusChanged)] == [
        ("closed", "close_at")
    ]
    assert [(e.order_id, e.reason) for e in of_type(events, OrderCancelled)] == [(day, "expired")]
    assert [row[0] for row in m.engine.resting("ACME")] == [gtc]
    assert rejection(m.place(buyer, "buy", 1, 50)) == "NOT_IN_PHASE"
    assert rejection(m.do(SetInstrumentStatus(symbol="ACME", status="halted"))) == "BAD_STATUS"
    reopened = m.do(SetInstrumentStatus(symbol="ACME", status="trading"))
    assert of_type(reopened, InstrumentStatusChanged)[0].status == "pre_open"


# --- price bands -----------------------------------------------------------------------------


def banded(m: Market, pct: int = 10, interruption_s: int = 60) -> tuple[str, str]:
    """ACME with a band, its reference price 100 from a first trade."""
    buyer, seller = m.account(), m.account(units={"ACME": 1_000})
    m.do(SetTradingRules(symbol="ACME", band_pct=pct, interruption_s=interruption_s))
    m.rest(seller, "sell", 1, 100)
    m.place(buyer, "buy", 1, 100)
    assert m.engine.instruments["ACME"].ref == 100
    return buyer, seller


def test_a_limit_beyond_the_static_band_is_refused(m: Market) -> None:
    buyer, seller = banded(m)
    assert rejection(m.place(buyer, "buy", 1, 111)) == "PRICE_OUT_OF_BAND"
    assert rejection(m.place(seller, "sell", 1, 89)) == "PRICE_OUT_OF_BAND"
    m.rest(buyer, "buy", 1, 90)  # the edges are in
    order_id = m.rest(seller, "sell", 1, 110)
    assert rejection(m.do(ReplaceOrder(account=seller, order_id=order_id, price=111))) == (
        "PRICE_OUT_OF_BAND"
    )
    # A quantity change keeps a price the band has since moved past.
    m.do(SetTradingRules(symbol="ACME", band_pct=5))
    replaced = m.do(ReplaceOrder(account=seller, order_id=order_id, qty=2))
    assert not [e for e in replaced if getattr(e, "code", None)]


def test_a_print_beyond_the_dynamic_band_starts_a_volatility_interruption(m: Market) -> None:
    buyer, seller = banded(m)
    m.rest(buyer, "buy", 5, 109)
    m.do(SetTradingRules(symbol="ACME", band_pct=5))  # now 95..105: the bid at 109 is beyond
    events = m.place(seller, "sell", 8, 100)
    assert not of_type(events, TradeExecuted)
    (halt,) = of_type(events, InstrumentStatusChanged)
    assert (halt.status, halt.reason, halt.open_at) == (
        "pre_open", "volatility", m.ts + 60 * SECOND
    )
    assert of_type(events, AuctionIndicative) == [AuctionIndicative("ACME", 100, 5, "sell", 3)]
    assert m.engine.book("ACME") == ([(109, 5)], [(100, 8)])  # the remainder rests
    assert rejection(m.place(buyer, "buy", 1)) == "NOT_IN_PHASE"
    m.ts = halt.open_at
    reopened = m.do(Timer())
    assert [(t.price, t.qty) for t in of_type(reopened, TradeExecuted)] == [(100, 5)]
    assert of_type(reopened, InstrumentStatusChanged)[-1].status == "trading"


def test_a_market_order_trades_within_the_band_then_expires_and_interrupts(m: Market) -> None:
    buyer, seller = banded(m)
    m.rest(buyer, "buy", 5, 104)
    m.rest(buyer, "buy", 5, 91)
    m.do(SetTradingRules(symbol="ACME", band_pct=5))  # 95..105: the bid at 91 is beyond
    events = m.place(seller, "sell", 8)
    assert [(t.price, t.qty) for t in of_type(events, TradeExecuted)] == [(104, 5)]
    (expired,) = of_type(events, OrderCancelled)
    assert (expired.reason, expired.remaining) == ("expired", 3)
    assert of_type(events, InstrumentStatusChanged)[0].reason == "volatility"


def test_a_fok_fills_only_within_the_band_and_never_interrupts(m: Market) -> None:
    buyer, seller = banded(m)
    m.rest(buyer, "buy", 5, 104)
    m.rest(buyer, "buy", 5, 91)
    m.do(SetTradingRules(symbol="ACME", band_pct=5))
    events = m.place(seller, "sell", 8, tif="fok")
    assert not of_type(events, TradeExecuted)
    assert [e.reason for e in of_type(events, OrderCancelled)] == ["expired"]
    assert status_of(m) == "trading"


# --- gtd and day orders ----------------------------------------------------------------------


def test_gtd_needs_a_future_expiry_and_only_gtd_has_one(m: Market) -> None:
    buyer = m.account()
    assert rejection(m.place(buyer, "buy", 1, 50, tif="gtd")) == "BAD_EXPIRY"
    assert rejection(m.place(buyer, "buy", 1, 50, tif="gtd", expire_at=m.ts)) == "BAD_EXPIRY"
    assert rejection(m.place(buyer, "buy", 1, 50, expire_at=m.ts + 10 * SECOND)) == "BAD_EXPIRY"
    assert rejection(m.place(buyer, "buy", 1, tif="day")) == "BAD_REQUEST"  # a market order


def test_a_gtd_order_expires_at_its_time(m: Market) -> None:
    buyer = m.account()
    expire_at = m.ts + 10 * SECOND
    order_id = m.rest(buyer, "buy", 2, 50, tif="gtd", expire_at=expire_at)
    assert m.engine.next_deadline() == expire_at
    assert m.engine.balances(buyer)[1] == 100
    m.ts = expire_at - 2 * SECOND
    assert m.do(Timer()) == []
    m.ts = expire_at
    (expired,) = m.do(Timer())
    assert isinstance(expired, OrderCancelled)
    assert (expired.order_id, expired.reason, expired.remaining) == (order_id, "expired", 2)
    assert m.engine.balances(buyer)[1] == 0
    assert m.engine.next_deadline() is None


def test_a_cancelled_gtd_order_leaves_no_deadline(m: Market) -> None:
    buyer = m.account()
    order_id = m.rest(buyer, "buy", 2, 50, tif="gtd", expire_at=m.ts + 10 * SECOND)
    m.do(CancelOrder(account=buyer, order_id=order_id))
    assert m.engine.next_deadline() is None


# --- trading rules ---------------------------------------------------------------------------


def test_trading_rules_are_checked_and_kept(m: Market) -> None:
    assert rejection(m.do(SetTradingRules(symbol="NOPE"))) == "UNKNOWN_SYMBOL"
    assert rejection(m.do(SetTradingRules(symbol="ACME", open_at=5))) == "BAD_EXPIRY"
    assert rejection(m.do(SetTradingRules(symbol="ACME", close_at=m.ts))) == "BAD_EXPIRY"
    (rules,) = m.do(SetTradingRules(symbol="ACME", band_pct=7))
    assert rules == TradingRulesSet("ACME", 7, 120, 0, 0)
    (rules,) = m.do(SetTradingRules(symbol="ACME", interruption_s=5))
    assert rules == TradingRulesSet("ACME", 7, 5, 0, 0)


# --- the state ---------------------------------------------------------------------------------


def test_export_and_restore_keep_phases_bands_and_deadlines(m: Market) -> None:
    buyer, _ = banded(m, pct=10, interruption_s=60)
    m.rest(buyer, "buy", 2, 99, tif="gtd", expire_at=m.ts + 100 * SECOND)
    m.rest(buyer, "buy", 2, 98, tif="day")
    m.do(SetTradingRules(symbol="ACME", close_at=m.ts + 500 * SECOND))
    a, _ = ipo(m)
    open_at = m.ts + 50 * SECOND
    m.do(SetTradingRules(symbol="NEW", open_at=open_at))
    m.rest(a, "sell", 5, 99, symbol="NEW")
    restored = restore_state(decode_state(encode_state(export_state(m.engine))))
    assert restored.state_hash() == m.engine.state_hash()
    assert restored.next_deadline() == m.engine.next_deadline() == open_at
    # Both go on alike: the auction's end, the expiry and the close, each by a timer.
    fired = 0
    while (due := m.engine.next_deadline()) is not None:  # three deadlines
        assert restored.next_deadline() == due
        assert restored.apply(Timer(ts=due)) == m.engine.apply(Timer(ts=due))
        fired += 1
    assert fired == 3
    assert restored.state_hash() == m.engine.state_hash()
    assert status_of(m) == "closed"
    assert status_of(m, "NEW") == "trading"


def test_a_state_without_phase_state_hashes_as_before_phases(m: Market) -> None:
    """Phase state is kept apart and left out at its defaults (state.py): a market that
    never traded, with no rules and no gtd order, exports as it did before phases."""
    buyer = m.account()
    m.rest(buyer, "buy", 1, 100)
    state = export_state(m.engine)
    assert (state.phases, state.order_expiry) == ([], [])
    encoded = msgspec.msgpack.decode(encode_state(state))
    assert "phases" not in encoded
    assert "order_expiry" not in encoded
    assert encoded["books"][0][1][0][-1] == "open"  # an order ends with its status
    expire_at = m.ts + 100 * SECOND
    m.rest(buyer, "buy", 1, 99, tif="gtd", expire_at=expire_at)
    m.do(SetTradingRules(symbol="ACME", band_pct=7))
    state = export_state(m.engine)
    assert [(p.symbol, p.band_pct) for p in state.phases] == [("ACME", 7)]
    assert [e.expire_at for e in state.order_expiry] == [expire_at]
