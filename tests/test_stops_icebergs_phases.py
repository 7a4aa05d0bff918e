"""Stops and icebergs in market phases, one rule a test, each checked against the reference
model too: stops wait in call auctions and an uncross's trades trigger them, an iceberg's
hidden quantity takes part in the uncross, a triggered stop beyond the band interrupts,
halts refuse stops, gtd/day expiry ends waiting stops, and the band checks a stop-limit's
price but not its trigger (docs/ENGINE.md, "Stops and icebergs in market phases")."""

import msgspec
import pytest

from exchange.domain.commands import (
    CancelOrder,
    Command,
    SetInstrumentStatus,
    SetTradingRules,
    Timer,
    Uncross,
)
from exchange.domain.events import (
    AuctionIndicative,
    AuctionUncrossed,
    Event,
    InstrumentStatusChanged,
    OrderAccepted,
    OrderCancelled,
    OrderRefreshed,
    OrderRejected,
    OrderTriggered,
    Rejected,
    TradeExecuted,
)
from tests.builders import Market, of_type, rejection
from tests.reference_model import ReferenceModel

SECOND = 1_000_000_000


class Both(Market):
    """The engine and the reference model fed the same commands: every answer must agree
    (reject messages aside: the rule book fixes codes, not wording)."""

    def __init__(self) -> None:
        self.reference = ReferenceModel()
        super().__init__()

    def do(self, command: Command) -> list[Event]:
        self.ts += SECOND
        stamped = msgspec.structs.replace(command, ts=self.ts)
        events = self.engine.apply(stamped)
        expected = self.reference.apply(stamped)
        assert _plain(events) == _plain(expected), f"{stamped}: {events} != {expected}"
        return events


def _plain(events: list[Event]) -> list[Event]:
    return [
        msgspec.structs.replace(e, message="") if isinstance(e, OrderRejected | Rejected) else e
        for e in events
    ]


@pytest.fixture
def m() -> Both:
    market = Both()
    market.instrument("ACME")
    return market


def trade_at(m: Both, price: int) -> None:
    m.rest(m.account(units={"ACME": 1}), "sell", 1, price)
    m.place(m.account(), "buy", 1, price)
    assert m.engine.books["ACME"].last_price == price


def test_an_uncross_triggers_the_stops_its_trades_reach(m: Both) -> None:
    """Fails if the uncross's trades do not update the last price and trigger stops."""
    trade_at(m, 100)
    m.do(SetInstrumentStatus(symbol="ACME", status="pre_open"))
    stopper = m.account(units={"ACME": 5})
    accepted = m.place(stopper, "sell", 5, type="stop", trigger_price=98)  # waits in the call
    assert of_type(accepted, OrderAccepted)
    assert not of_type(accepted, AuctionIndicative)  # a waiting stop is not in the auction
    m.rest(m.account(), "buy", 5, 96)  # below the clearing price: left for the stop
    m.rest(m.account(), "buy", 10, 97)
    m.rest(m.account(units={"ACME": 10}), "sell", 10, 97)
    events = m.do(Uncross(symbol="ACME"))
    (uncrossed,) = of_type(events, AuctionUncrossed)
    assert (uncrossed.price, uncrossed.qty) == (97, 10)
    (triggered,) = of_type(events, OrderTriggered)
    assert triggered.type == "market"
    # The stop trades in continuous trading, after the status change.
    statuses = [i for i, e in enumerate(events) if isinstance(e, InstrumentStatusChanged)]
    trades = [e for e in events if isinstance(e, TradeExecuted)]
    assert events.index(triggered) > statuses[-1]
    assert (trades[-1].price, trades[-1].qty, trades[-1].taker_order_id) == (
        96, 5, triggered.order_id
    )
    assert m.engine.books["ACME"].last_price == 96


def test_an_icebergs_hidden_quantity_takes_part_in_the_uncross(m: Both) -> None:
    """Fails if the uncross (or its indicative price) counts only the shown part."""
    m.do(SetInstrumentStatus(symbol="ACME", status="pre_open"))
    m.rest(m.account(units={"ACME": 10}), "sell", 10, 100, display_qty=2)
    events = m.place(m.account(), "buy", 10, 100)
    (indicative,) = of_type(events, AuctionIndicative)
    assert (indicative.price, indicative.qty) == (100, 10)
    assert m.engine.book("ACME") == ([(100, 10)], [(100, 2)])  # market data: the shown part
    (uncrossed,) = of_type(m.do(Uncross(symbol="ACME")), AuctionUncrossed)
    assert uncrossed.qty == 10
    assert m.engine.book("ACME") == ([], [])


def test_a_partly_filled_iceberg_goes_back_only_when_its_shown_part_is_used(m: Both) -> None:
    m.do(SetInstrumentStatus(symbol="ACME", status="pre_open"))
    seller = m.account(units={"ACME": 30})
    first = m.rest(seller, "sell", 10, 100, display_qty=4)
    second = m.rest(m.account(units={"ACME": 5}), "sell", 5, 100)
    m.rest(m.account(), "buy", 3, 100)
    events = m.do(Uncross(symbol="ACME"))  # 3 of its 4 shown: it keeps its place, shows 1
    assert not of_type(events, OrderRefreshed)
    assert [o.order_id for o in m.engine.books["ACME"].asks.levels[100].orders()] == [
        first, second
    ]
    assert m.engine.book("ACME") == ([], [(100, 1 + 5)])
    m.do(SetInstrumentStatus(symbol="ACME", status="pre_open"))
    m.rest(m.account(), "buy", 6, 100)
    events = m.do(Uncross(symbol="ACME"))  # its last shown unit and 5 hidden: to the back
    (refreshed,) = of_type(events, OrderRefreshed)
    assert (refreshed.order_id, refreshed.shown, refreshed.remaining) == (first, 1, 1)
    assert [o.order_id for o in m.engine.books["ACME"].asks.levels[100].orders()] == [
        second, first
    ]


def test_a_triggered_stop_beyond_the_band_interrupts_and_the_next_stops_act_in_the_call(
    m: Both,
) -> None:
    buyer = m.account()
    m.rest(m.account(units={"ACME": 1}), "sell", 1, 100)
    m.rest(m.account(units={"ACME": 5}), "sell", 5, 120)  # no band yet: accepted
    first = m.place(buyer, "buy", 5, type="stop", trigger_price=100, max_notional=10_000)
    limit = m.place(buyer, "buy", 2, 101, type="stop_limit", trigger_price=100)
    market = m.place(buyer, "buy", 2, type="stop", trigger_price=100, max_notional=10_000)
    m.do(SetTradingRules(symbol="ACME", band_pct=5, interruption_s=60))
    events = m.place(m.account(), "buy", 1, 100)  # trades at 100: the reference price
    triggered = of_type(events, OrderTriggered)
    assert [t.order_id for t in triggered] == [
        of_type(x, OrderAccepted)[0].order_id for x in (first, limit, market)
    ]
    (status,) = of_type(events, InstrumentStatusChanged)
    assert (status.status, status.reason) == ("pre_open", "volatility")  # 120 beyond 105
    ended = {e.order_id: e.reason for e in of_type(events, OrderCancelled)}
    assert ended == {triggered[0].order_id: "expired", triggered[2].order_id: "expired"}
    assert m.engine.instruments["ACME"].status == "pre_open"
    assert m.engine.book("ACME")[0] == [(101, 2)]  # the stop-limit rests in the auction


def test_halted_refuses_stops_and_cancels_still_work(m: Both) -> None:
    trade_at(m, 100)
    waiting = m.place(m.account(units={"ACME": 1}), "sell", 1, type="stop", trigger_price=90)
    (accepted,) = of_type(waiting, OrderAccepted)
    m.do(SetInstrumentStatus(symbol="ACME", status="halted"))
    refused = m.place(m.account(units={"ACME": 1}), "sell", 1, type="stop", trigger_price=90)
    assert rejection(refused) == "NOT_IN_PHASE"
    (cancelled,) = of_type(
        m.do(CancelOrder(account=accepted.account, order_id=accepted.order_id)), OrderCancelled
    )
    assert cancelled.reason == "cancelled"


def test_gtd_and_day_end_waiting_stops(m: Both) -> None:
    trade_at(m, 100)
    seller = m.account(units={"ACME": 2})
    expire_at = m.ts + 5 * SECOND
    gtd = m.place(seller, "sell", 1, type="stop", trigger_price=90, tif="gtd",
                  expire_at=expire_at)  # fmt: skip
    day = m.place(seller, "sell", 1, 95, type="stop_limit", trigger_price=90, tif="day",
                  display_qty=1)  # fmt: skip
    (gtd_id,) = [e.order_id for e in of_type(gtd, OrderAccepted)]
    (day_id,) = [e.order_id for e in of_type(day, OrderAccepted)]
    assert m.engine.next_deadline() == expire_at  # a waiting stop's expiry is a deadline
    m.ts += 10 * SECOND
    expired = of_type(m.do(Timer()), OrderCancelled)
    assert [(e.order_id, e.reason) for e in expired] == [(gtd_id, "expired")]
    closed = of_type(m.do(SetInstrumentStatus(symbol="ACME", status="closed")), OrderCancelled)
    assert [(e.order_id, e.reason) for e in closed] == [(day_id, "expired")]
    assert not m.engine.books["ACME"].stops.orders


def test_the_band_checks_a_stop_limits_price_not_its_trigger(m: Both) -> None:
    m.do(SetTradingRules(symbol="ACME", band_pct=5))
    trade_at(m, 100)
    buyer = m.account()
    beyond = m.place(buyer, "buy", 1, 106, type="stop_limit", trigger_price=101)
    assert rejection(beyond) == "PRICE_OUT_OF_BAND"
    far_trigger = m.place(buyer, "buy", 1, 105, type="stop_limit", trigger_price=150)
    assert of_type(far_trigger, OrderAccepted)
