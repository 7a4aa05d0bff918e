"""Market phases: an instrument's status changes, its trading rules, and sequenced time.

Owns SetInstrumentStatus (halts, resumption through a re-opening auction, closing the
session), SetTradingRules (band, interruption, open_at, close_at), Uncross, and Timer: the
sequencer's command that makes everything due happen (gtd expiries, session closes, call
auctions ending). `next_deadline` tells the sequencer when the next thing is due; no clock
is read here. The auction itself is auction.py; the dynamic band's check is in matching.
"""

from heapq import heappop

from exchange.domain.auction import book_changed, enter_call
from exchange.domain.auction import uncross as uncross_book
from exchange.domain.cancel_replace import cancel_resting, cancel_waiting
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import KEEP, SetInstrumentStatus, SetTradingRules, Timer, Uncross
from exchange.domain.events import Event, InstrumentStatusChanged, TradingRulesSet
from exchange.domain.instruments import Instrument
from exchange.domain.limits import MAX_BAND_PCT, MAX_INTERRUPTION_S, NS_PER_S
from exchange.domain.market import CLOSE_SESSION, END_AUCTION, EXPIRE_ORDER, Market
from exchange.domain.market import Timer as Deadline
from exchange.domain.replies import refuse
from exchange.domain.stops import run_triggered

# Statuses in which a session is open (close_at closes it).
_IN_SESSION = ("pre_open", "trading", "halted")


def set_status(market: Market, cmd: SetInstrumentStatus) -> list[Event]:
    instrument = market.instruments.get(cmd.symbol)
    if instrument is None:
        return refuse(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
    now, to = instrument.status, cmd.status
    if (
        now == "in_offering"
        or (now == "listed" and to in ("halted", "closed"))
        or (now == "closed" and to == "halted")
        or (now == "pre_open" and to == "pre_open")
    ):
        return refuse(cmd, Code.BAD_STATUS, f"cannot go from {now} to {to}")
    events: list[Event] = []
    if to == "closed":
        close_session(market, instrument, "", events)
    elif to == "halted":
        instrument.status = "halted"
        events.append(InstrumentStatusChanged(cmd.symbol, "halted"))
    elif now == "pre_open":  # to trading: the auction ends now
        uncross(market, instrument, cmd.ts, "", events)
    elif now == "halted" and to in ("trading", "pre_open"):  # resumption: a re-opening auction
        open_at = instrument.open_at
        if open_at <= cmd.ts:
            open_at = cmd.ts + instrument.interruption_s * NS_PER_S
        enter_call(market, instrument, open_at, "resume", events)
    elif to == "pre_open" or now == "closed":  # a call auction, ended by open_at or the admin
        enter_call(market, instrument, instrument.open_at, "", events)
    else:  # listed or trading, to trading
        instrument.status = "trading"
        events.append(InstrumentStatusChanged(cmd.symbol, "trading"))
    return events


def close_session(market: Market, instrument: Instrument, reason: str, events: list[Event]) -> None:
    """The session ends: `closed`, and every day order of the instrument expires."""
    instrument.status = "closed"
    instrument.close_at = 0
    symbol = instrument.symbol
    events.append(InstrumentStatusChanged(symbol, "closed", 0, reason))
    book = market.books[symbol]
    day_orders = [
        order
        for side in (book.bids, book.asks)
        for level in side.levels_best_first()
        for order in level.orders()
        if order.tif == "day"
    ]
    day_orders += [o for o in book.stops.orders.values() if o.tif == "day"]  # waiting stops
    for order in sorted(day_orders, key=lambda o: o.order_id):
        if order.waiting:
            cancel_waiting(market, order, "expired", events)
        else:
            cancel_resting(market, order, "expired", events)


def set_rules(market: Market, cmd: SetTradingRules) -> list[Event]:
    instrument = market.instruments.get(cmd.symbol)
    if instrument is None:
        return refuse(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
    if not KEEP <= cmd.band_pct <= MAX_BAND_PCT:
        return refuse(cmd, Code.BAD_REQUEST, "band_pct: 0 to 100")
    if not KEEP <= cmd.interruption_s <= MAX_INTERRUPTION_S:
        return refuse(cmd, Code.BAD_REQUEST, "interruption_s: 0 to 86400")
    for at in (cmd.open_at, cmd.close_at):
        if at < KEEP or 0 < at <= cmd.ts:
            return refuse(cmd, Code.BAD_EXPIRY, "open_at and close_at: 0 or in the future")
    if cmd.band_pct != KEEP:
        instrument.reprice(instrument.ref, cmd.band_pct)
    if cmd.interruption_s != KEEP:
        instrument.interruption_s = cmd.interruption_s
    symbol = instrument.symbol
    if cmd.open_at != KEEP:
        instrument.open_at = cmd.open_at
        if cmd.open_at and instrument.status == "pre_open":
            market.add_timer(cmd.open_at, END_AUCTION, 0, symbol)
    if cmd.close_at != KEEP:
        instrument.close_at = cmd.close_at
        if cmd.close_at:
            market.add_timer(cmd.close_at, CLOSE_SESSION, 0, symbol)
    return [
        TradingRulesSet(
            symbol, instrument.band_pct, instrument.interruption_s, instrument.open_at,
            instrument.close_at,
        )
    ]  # fmt: skip


def uncross_now(market: Market, cmd: Uncross) -> list[Event]:
    instrument = market.instruments.get(cmd.symbol)
    if instrument is None:
        return refuse(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
    if instrument.status != "pre_open":
        return refuse(cmd, Code.NOT_IN_PHASE, f"no call auction while {instrument.status}")
    events: list[Event] = []
    uncross(market, instrument, cmd.ts, "", events)
    return events


def uncross(
    market: Market, instrument: Instrument, ts: int, reason: str, events: list[Event]
) -> None:
    """The auction's uncross, then the stops its trades reached, in continuous trading (or
    in whatever phase their own trades lead to: a volatility interruption)."""
    start = len(events)
    uncross_book(market, instrument, ts, reason, events)
    book = market.books[instrument.symbol]
    if book.stops.orders:
        run_triggered(market, book, instrument.tick, ts, events, start)


# --- sequenced time -------------------------------------------------------------------------


def next_deadline(market: Market) -> int | None:
    """When the next thing is due (ns of sequenced time), None when nothing is: the
    sequencer sends a Timer once its clock has passed it."""
    timers = market.timers
    while timers and not _live(market, timers[0]):
        heappop(timers)
    return timers[0][0] if timers else None


def run_timers(market: Market, cmd: Timer) -> list[Event]:
    """Everything due at `ts`, earliest first; at one time: expiries, closes, then auctions."""
    events: list[Event] = []
    timers = market.timers
    while timers and timers[0][0] <= cmd.ts:  # each turn pops one entry
        deadline = heappop(timers)
        if not _live(market, deadline):
            continue
        _, kind, order_id, key = deadline
        if kind == EXPIRE_ORDER:
            order = market.accounts[key].open_orders[order_id]
            if order.waiting:  # a stop still waiting for its trigger: not on the book
                cancel_waiting(market, order, "expired", events)
            else:
                cancel_resting(market, order, "expired", events)
                book_changed(market, order.symbol, events)
        elif kind == CLOSE_SESSION:
            instrument = market.instruments[key]
            if instrument.status in _IN_SESSION:
                close_session(market, instrument, "close_at", events)
            else:  # no session is open: nothing to close
                instrument.close_at = 0
        else:
            uncross(market, market.instruments[key], cmd.ts, "open_at", events)
    return events


def _live(market: Market, deadline: Deadline) -> bool:
    """Is this entry still what its order or instrument says is due?"""
    due, kind, order_id, key = deadline
    if kind == EXPIRE_ORDER:
        order = market.accounts[key].open_orders.get(order_id)
        return order is not None and order.expire_at == due
    instrument = market.instruments[key]
    if kind == CLOSE_SESSION:
        return instrument.close_at == due
    return instrument.open_at == due and instrument.status == "pre_open"
