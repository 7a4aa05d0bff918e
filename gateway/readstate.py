"""The read side's state, built only from the durable records' events: books by level,
orders, fills, the trades tape, candles, balances, instruments, offerings and each
instrument's market-data seqs. No engine runs here: every event says what changed.

It reads no clock and does no I/O. `export` and `restore` turn it into a plain msgspec
Struct for the read-side snapshots (gateway/readsnapshots.py), so a restart rebuilds it
from a snapshot plus the journal's events. What it keeps of each history is bounded by
the constants below (docs/PROTOCOL.md, "What a restart keeps").
"""

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from exchange.domain.engine import Engine
from exchange.domain.events import (
    AccountCreated,
    ApiKeyAdded,
    AuctionIndicative,
    CashDeposited,
    CashWithdrawn,
    Event,
    InstrumentFeesSet,
    InstrumentListed,
    InstrumentStatusChanged,
    OfferingClosed,
    OfferingOpened,
    OfferingSubscribed,
    OfferingUnderwritten,
    OrderAccepted,
    OrderCancelled,
    OrderRefreshed,
    OrderReplaced,
    OrderTriggered,
    TradeExecuted,
    TradingRulesSet,
    UnitsAllocated,
    UnitsDeposited,
    UnitsWithdrawn,
)
from exchange.domain.fees import FEE_ACCOUNT, buy_hold
from exchange.domain.limits import DEFAULT_INTERRUPTION_S

# Recent trades kept per instrument for GET /v1/trades (the newest first).
TRADES_KEPT = 1_000
# Ended orders kept per account for GET /v1/orders?status=all and /v1/orders/{id}.
ORDER_HISTORY_PER_ACCOUNT = 10_000
# Fills kept per account for GET /v1/fills (the newest).
FILLS_PER_ACCOUNT = 10_000
# Candles kept per instrument and interval (the newest): a day of one-minute candles,
# five of 5m, fifteen of 15m, two months of 1h, four years of 1d.
CANDLES_KEPT = 1_440
MINUTE_NS = 60_000_000_000
# The intervals offered (GET /v1/candles ?interval=), each its length in ns.
CANDLE_INTERVALS = {
    "1m": MINUTE_NS,
    "5m": 5 * MINUTE_NS,
    "15m": 15 * MINUTE_NS,
    "1h": 60 * MINUTE_NS,
    "1d": 1_440 * MINUTE_NS,
}
# The read-side snapshot's layout; a snapshot of another version is not read.
READ_STATE_VERSION = 1


class OrderRecord(msgspec.Struct, gc=False, array_like=True):
    """An order as REST shows it (open ones, and recent ended ones). Strings and integers
    only, so it can be in no reference cycle: out of the cyclic collector's sight
    (gc=False). Tracked, the records of a busy hour crowded the young generation and made
    single young collections take 10-65 ms."""

    order_id: int
    account: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    tif: str
    price: int
    qty: int
    remaining: int
    status: str
    ts: int
    filled: int = 0
    notional: int = 0  # sum of price (ticks) x qty over its fills: for the average price
    resting: bool = False  # on the book (counted in its level's total)
    expire_at: int = 0  # a gtd order's (ns)
    taker_bps: int = 0  # the taker fee rate it was accepted with: a buy's hold covers it
    # Issue 16 (last: a read snapshot from before decodes): a stop's trigger, an iceberg's
    # displayed size and what it shows now (its level counts `shown`), and a waiting stop
    # buy's held budget.
    trigger_price: int = 0
    display_qty: int = 0
    shown: int = 0
    budget: int = 0
    post_only: bool = False  # last again, for the same reason (the Binance dialect's LIMIT_MAKER)

    @property
    def visible(self) -> int:
        return self.shown if self.display_qty else self.remaining


class Fill(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One side of a trade, as its account sees it; `filled`, `notional` and `remaining`
    are the order's after this fill."""

    trade_id: int
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    price: int
    qty: int
    liquidity: str
    ts: int
    filled: int
    notional: int
    remaining: int
    fee: int = 0  # cash minor units this account paid (negative: a rebate it received)


class Candle(msgspec.Struct, gc=False, array_like=True):
    start: int  # ns of the minute's start
    open: int
    high: int
    low: int
    close: int
    volume: int
    # Last, with defaults, so a read snapshot from before them decodes (their candles then
    # count from zero): the value traded (price in ticks x qty), the trades, and what
    # takers bought (the Binance dialect's klines and 24-hour ticker show them).
    notional: int = 0
    trades: int = 0
    buy_volume: int = 0
    buy_notional: int = 0


class InstrumentView(msgspec.Struct, array_like=True):
    symbol: str
    kind: str
    tick: int
    issuer: str
    status: str
    maker_bps: int = 0
    taker_bps: int = 0
    # Market phases: the trading rules, when a call auction uncrosses, and where it would
    # uncross now (while pre_open).
    band_pct: int = 0
    interruption_s: int = DEFAULT_INTERRUPTION_S
    open_at: int = 0
    close_at: int = 0
    indicative: AuctionIndicative | None = None


class OfferingView(msgspec.Struct, array_like=True):
    offering_id: int
    symbol: str
    price: int
    qty: int
    closes_at: int
    is_open: bool = True
    subscribed: int = 0
    underwriter: str = ""
    fee_bps: int = 0
    commitment: str = "best_efforts"


class Balance(msgspec.Struct, array_like=True):
    """Cash and units of one account, and what open orders and subscriptions hold."""

    account: str
    cash: int = 0
    cash_held: int = 0
    positions: dict[str, int] = msgspec.field(default_factory=dict)
    units_held: dict[str, int] = msgspec.field(default_factory=dict)


class Levels:
    """One side of a book by level: price -> total, and the prices sorted with the best
    last (`keys` holds price x sign: bids +1, asks -1), as the engine's BookSide."""

    __slots__ = ("keys", "sign", "totals")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.totals: dict[int, int] = {}
        self.keys: list[int] = []

    def add(self, price: int, qty: int) -> None:
        """Add `qty` (negative: take) to the level at `price`; a level at 0 goes."""
        totals = self.totals
        total = totals.get(price)
        if total is None:
            totals[price] = qty
            insort(self.keys, price * self.sign)
            return
        total += qty
        if total:
            totals[price] = total
            return
        del totals[price]
        keys, key = self.keys, price * self.sign
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def top(self, depth: int) -> list[tuple[int, int]]:
        """(price, total) of the best `depth` levels, best first."""
        sign, totals = self.sign, self.totals
        return [(key * sign, totals[key * sign]) for key in reversed(self.keys[-depth:])]

    def all(self) -> list[tuple[int, int]]:
        return self.top(len(self.keys)) if self.keys else []


class Book:
    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = Levels(1)
        self.asks = Levels(-1)

    def side(self, side: str) -> Levels:
        return self.bids if side == "buy" else self.asks


def _no_candles() -> dict[str, deque[Candle]]:
    return {interval: deque(maxlen=CANDLES_KEPT) for interval in CANDLE_INTERVALS}


@dataclass(slots=True)
class Tape:
    """Per instrument: the market-data sequence of each channel and the ticker's figures."""

    book_seq: int = 0  # the last book_update's (snapshots and the ticker carry it)
    trade_seq: int = 0  # the last trade's
    last: int | None = None
    volume: int = 0
    trades: deque[TradeExecuted] = field(default_factory=lambda: deque(maxlen=TRADES_KEPT))
    candles: dict[str, deque[Candle]] = field(default_factory=_no_candles)


Level = tuple[str, int, int]  # side ("buy" | "sell"), price in ticks, new total


@dataclass(slots=True)
class Published:
    """What one durable batch changed in public market data, per symbol."""

    trades: dict[str, list[TradeExecuted]] = field(default_factory=dict)
    levels: dict[str, list[Level]] = field(default_factory=dict)
    # Market phases: status changes in order, and a call auction's latest indicative (it
    # takes the book seq after the book update's).
    statuses: dict[str, list[InstrumentStatusChanged]] = field(default_factory=dict)
    auctions: dict[str, AuctionIndicative] = field(default_factory=dict)


# --- the snapshot's shape --------------------------------------------------------------------


class TapeState(msgspec.Struct, array_like=True):
    symbol: str
    book_seq: int
    trade_seq: int
    last: int | None
    volume: int
    trades: list[TradeExecuted]  # newest first
    candles: list[tuple[str, list[Candle]]]  # per interval, oldest first


class BookState(msgspec.Struct, array_like=True):
    symbol: str
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class ReadSnapshot(msgspec.Struct):
    """The whole read state after record `seq`, at the end of a durable batch."""

    version: int
    seq: int
    instruments: list[InstrumentView]
    offerings: list[OfferingView]
    balances: list[Balance]
    api_keys: list[tuple[str, str]]  # (key hash, account)
    open_orders: list[OrderRecord]  # in id order
    history: list[tuple[str, list[OrderRecord]]]  # per account, oldest first
    fills: list[tuple[str, list[Fill]]]  # per account, oldest first
    books: list[BookState]
    tapes: list[TapeState]


class ReadState:
    def __init__(self) -> None:
        self.durable_seq = 0
        self.instruments: dict[str, InstrumentView] = {}
        self.offerings: dict[int, OfferingView] = {}
        self.balances: dict[str, Balance] = {}
        self.accounts_by_key: dict[str, str] = {}
        self.books: dict[str, Book] = {}
        self.tapes: dict[str, Tape] = {}
        self.open_orders: dict[int, OrderRecord] = {}
        self.open_by_account: dict[str, dict[int, OrderRecord]] = {}
        self.history: dict[str, deque[OrderRecord]] = {}
        self.fills: dict[str, deque[Fill]] = {}
        # Of the record being applied (the hub reads them after it): the orders its
        # command placed (or a resend named), and its fills in order.
        self.record_orders: dict[int, OrderRecord] = {}
        self.record_fills: list[Fill] = []
        self._pending: list[OrderRecord] = []  # to rest at the record's end if still open
        # Of the batch: levels touched and trades, and the levels as last published.
        self._touched: dict[str, set[tuple[str, int]]] = {}
        self._trades: dict[str, list[TradeExecuted]] = {}
        self._public: dict[str, dict[tuple[str, int], int]] = {}
        self._statuses: dict[str, list[InstrumentStatusChanged]] = {}
        self._auctions: dict[str, AuctionIndicative] = {}
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            TradeExecuted: self._trade,
            OrderAccepted: self._accepted,
            OrderCancelled: self._cancelled,
            OrderReplaced: self._replaced,
            OrderTriggered: self._triggered,
            OrderRefreshed: self._refreshed,
            AccountCreated: self._account_created,
            ApiKeyAdded: self._api_key_added,
            CashDeposited: self._cash_changed,
            CashWithdrawn: self._cash_changed,
            UnitsDeposited: self._units_changed,
            UnitsWithdrawn: self._units_changed,
            InstrumentListed: self._listed,
            InstrumentStatusChanged: self._status_changed,
            OfferingOpened: self._offering_opened,
            OfferingSubscribed: self._offering_subscribed,
            UnitsAllocated: self._units_allocated,
            OfferingClosed: self._offering_closed,
            TradingRulesSet: self._rules_set,
            AuctionIndicative: self._indicative,
            InstrumentFeesSet: self._fees_set,
            OfferingUnderwritten: self._offering_underwritten,
        }

    # --- applying records -----------------------------------------------------------------

    def apply(self, seq: int, events: Iterable[Event]) -> None:
        """Apply one durable record's events (rejections change nothing)."""
        self.record_orders = {}
        self.record_fills = []
        handlers = self._handlers
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
        if self._pending:
            self._rest_pending()
        self.durable_seq = seq

    def _rest_pending(self) -> None:
        """Rest what is still open of the orders that matched: at the record's end, and
        before a triggered stop runs (the order that triggered it finished matching first)."""
        for record in self._pending:
            if record.status == "open" and record.remaining:
                record.resting = True
                if record.display_qty:
                    record.shown = min(record.display_qty, record.remaining)
                self.books[record.symbol].side(record.side).add(record.price, record.visible)
                self._touch(record.symbol, record.side, record.price)
        self._pending.clear()

    def end_batch(self) -> Published | None:
        """The batch's market data: its trades each take the next trade seq, then one
        book update per instrument, taking the next book seq, carries the net change of
        every level touched (None when nothing public changed)."""
        touched, self._touched = self._touched, {}
        trades, self._trades = self._trades, {}
        statuses, self._statuses = self._statuses, {}
        auctions, self._auctions = self._auctions, {}
        if not touched and not trades and not statuses and not auctions:
            return None
        published = Published(trades=trades, statuses=statuses, auctions=auctions)
        for symbol, levels in touched.items():
            changes = self._level_changes(symbol, levels)
            if changes:
                published.levels[symbol] = changes
        tapes = self.tapes
        for symbol, executed in trades.items():
            tape = tapes[symbol]
            tape.trade_seq += len(executed)
            _add_to_candles(tape.candles, executed)
        for symbol in published.levels:
            tapes[symbol].book_seq += 1
        for symbol in auctions:
            tapes[symbol].book_seq += 1
        return published

    def _level_changes(self, symbol: str, levels: set[tuple[str, int]]) -> list[Level]:
        """(side, price, total now) of each touched level whose total is not what was last
        published (a level added and taken again within the batch is no change), sorted
        so the update reads well; the published book takes the new totals."""
        book = self.books[symbol]
        public = self._public[symbol]
        changes: list[Level] = []
        for side, price in sorted(levels):
            total = book.side(side).totals.get(price, 0)
            if public.get((side, price), 0) != total:
                changes.append((side, price, total))
                if total:
                    public[side, price] = total
                else:
                    del public[side, price]
        return changes

    def _touch(self, symbol: str, side: str, price: int) -> None:
        touched = self._touched.get(symbol)
        if touched is None:
            touched = self._touched[symbol] = set()
        touched.add((side, price))

    # --- orders and trades ----------------------------------------------------------------

    def _accepted(self, e: OrderAccepted) -> None:
        if e.resent:  # nothing changed: the answer repeats the order's current state
            found = self.find_order(e.account, e.order_id)
            if found is not None:
                self.record_orders[e.order_id] = found
            return
        instrument = self.instruments[e.symbol]
        record = OrderRecord(
            e.order_id, e.account, e.client_order_id, e.symbol, e.side, e.type, e.tif,
            e.price, e.qty, e.remaining, "open", e.ts, expire_at=e.expire_at,
            taker_bps=instrument.taker_bps, post_only=e.post_only,
        )  # fmt: skip
        waiting = e.type in {"stop", "stop_limit"}
        if e.trigger_price or e.display_qty:
            record.trigger_price, record.display_qty = e.trigger_price, e.display_qty
        self.open_orders[e.order_id] = record
        mine = self.open_by_account.get(e.account)
        if mine is None:
            mine = self.open_by_account[e.account] = {}
        mine[e.order_id] = record
        self.record_orders[e.order_id] = record
        balance = self.balances[e.account]
        if e.side == "buy":  # a market buy (price 0) holds nothing: a budget bounds it
            balance.cash_held += buy_hold(e.price, instrument.tick, e.qty, record.taker_bps)
            if e.type == "stop":  # a waiting stop buy holds its budget (its fees included)
                record.budget = e.budget
                balance.cash_held += e.budget
        else:
            held = balance.units_held
            held[e.symbol] = held.get(e.symbol, 0) + e.qty
        if not waiting:  # a waiting stop is off the book until its trigger
            self._pending.append(record)

    def _triggered(self, e: OrderTriggered) -> None:
        self._rest_pending()
        record = self.open_orders.get(e.order_id)
        if record is None:
            return
        record.type = e.type
        if record.budget:  # a stop buy's hold becomes its budget (a market buy holds nothing)
            self.balances[e.account].cash_held -= record.budget
            record.budget = 0
        self._pending.append(record)  # it rests at the record's end if still open

    def _refreshed(self, e: OrderRefreshed) -> None:
        record = self.open_orders.get(e.order_id)
        if record is not None:
            record.shown = e.shown
        self.books[e.symbol].side(e.side).add(e.price, e.shown)
        self._touch(e.symbol, e.side, e.price)

    def _trade(self, t: TradeExecuted) -> None:
        symbol, price, q = t.symbol, t.price, t.qty
        tick = self.instruments[symbol].tick
        maker_side = "sell" if t.aggressor == "buy" else "buy"
        open_orders = self.open_orders
        maker = open_orders.get(t.maker_order_id)
        taker = open_orders.get(t.taker_order_id)
        # The maker's level: the trade's price, but an auction prints both at its own.
        level = maker.price if maker is not None else price
        cut = _shown_part(maker, q)
        if cut:  # (an iceberg's hidden part, in an uncross, is not on the level)
            self.books[symbol].side(maker_side).add(level, -cut)
            self._touch(symbol, maker_side, level)
        if taker is not None and taker.resting:  # an auction's: both orders rested
            cut = _shown_part(taker, q)
            if cut:
                self.books[symbol].side(taker.side).add(taker.price, -cut)
                self._touch(symbol, taker.side, taker.price)
        # Settlement: the buyer's hold is drawn down at its own limit (a market buy
        # held nothing), cash moves at the trade's price, units from seller to buyer.
        if t.aggressor == "buy":
            buyer, seller, buy_order = t.taker_account, t.maker_account, taker
        else:
            buyer, seller, buy_order = t.maker_account, t.taker_account, maker
        cash = price * tick * q
        buying, selling = self.balances[buyer], self.balances[seller]
        if buy_order is not None:
            buying.cash_held -= buy_hold(buy_order.price, tick, q, buy_order.taker_bps)
        else:
            buying.cash_held -= cash
        buying.cash -= cash
        selling.cash += cash
        if t.maker_fee or t.taker_fee:  # each side's fee, to the exchange's fee account
            self.balances[t.maker_account].cash -= t.maker_fee
            self.balances[t.taker_account].cash -= t.taker_fee
            self.balances[FEE_ACCOUNT].cash += t.maker_fee + t.taker_fee
        buying.positions[symbol] = buying.positions.get(symbol, 0) + q
        selling.positions[symbol] = selling.positions.get(symbol, 0) - q
        selling.units_held[symbol] = selling.units_held.get(symbol, 0) - q
        self._fill(t, maker, t.maker_order_id, t.maker_account, t.maker_remaining, "maker",
                   t.maker_fee)
        self._fill(t, taker, t.taker_order_id, t.taker_account, t.taker_remaining, "taker",
                   t.taker_fee)
        trades = self._trades.get(symbol)
        if trades is None:
            trades = self._trades[symbol] = []
        trades.append(t)
        tape = self.tapes[symbol]
        tape.last = price
        tape.volume += q
        tape.trades.appendleft(t)

    def _fill(
        self, t: TradeExecuted, record: OrderRecord | None, order_id: int, account: str,
        remaining: int, liquidity: str, fee: int,
    ) -> None:  # fmt: skip
        if record is None:  # not known here (a bug upstream): the fill still counts
            cid, side = "", ("buy" if (t.aggressor == "buy") == (liquidity == "taker") else "sell")
            filled, notional = t.qty, t.price * t.qty
        else:
            record.remaining = remaining
            if record.display_qty and record.resting:
                record.shown -= _shown_part(record, t.qty)
            record.filled += t.qty
            record.notional += t.price * t.qty
            cid, side, filled, notional = (
                record.client_order_id,
                record.side,
                record.filled,
                record.notional,
            )
            if not remaining:
                record.resting = False  # its level lost the last of it above
                self._end(record, "filled")
        fill = Fill(
            t.trade_id, order_id, cid, t.symbol, side, t.price, t.qty, liquidity, t.ts,
            filled, notional, remaining, fee,
        )  # fmt: skip
        self.record_fills.append(fill)
        kept = self.fills.get(account)
        if kept is None:
            kept = self.fills[account] = deque(maxlen=FILLS_PER_ACCOUNT)
        kept.append(fill)

    def _cancelled(self, e: OrderCancelled) -> None:
        tick = self.instruments[e.symbol].tick
        balance = self.balances[e.account]
        record = self.open_orders.get(e.order_id)
        if e.side == "buy":
            bps = record.taker_bps if record is not None else 0
            balance.cash_held -= buy_hold(e.price, tick, e.remaining, bps)
            if record is not None and record.budget:  # a waiting stop buy's budget
                balance.cash_held -= record.budget
                record.budget = 0
        else:
            balance.units_held[e.symbol] = balance.units_held.get(e.symbol, 0) - e.remaining
        if record is None:
            return
        if record.resting:
            self.books[e.symbol].side(e.side).add(record.price, -record.visible)
            self._touch(e.symbol, e.side, record.price)
            record.resting = False
        record.remaining = e.remaining
        self._end(record, e.reason)

    def _replaced(self, e: OrderReplaced) -> None:
        record = self.open_orders.get(e.order_id)
        if record is None:
            return
        tick = self.instruments[e.symbol].tick
        balance = self.balances[e.account]
        if e.side == "buy":
            bps = record.taker_bps
            balance.cash_held += buy_hold(e.price, tick, e.remaining, bps) - buy_hold(
                record.price, tick, record.remaining, bps
            )
        else:
            held = balance.units_held
            held[e.symbol] = held.get(e.symbol, 0) + e.remaining - record.remaining
        if record.resting:
            side = self.books[e.symbol].side(e.side)
            if e.kept_priority and e.remaining and record.display_qty:
                shown = min(record.shown, e.remaining)  # as the engine: no more than it has
                side.add(record.price, shown - record.shown)
                record.shown = shown
            elif e.kept_priority and e.remaining:
                side.add(record.price, e.remaining - record.remaining)
            else:  # off the book: it may trade again, and rests at the end if still open
                side.add(record.price, -record.visible)
                record.resting = False
                self._pending.append(record)
            self._touch(e.symbol, e.side, record.price)
        record.price, record.qty, record.remaining = e.price, e.qty, e.remaining

    def _end(self, record: OrderRecord, status: str) -> None:
        record.status = status
        del self.open_orders[record.order_id]
        del self.open_by_account[record.account][record.order_id]
        kept = self.history.get(record.account)
        if kept is None:
            kept = self.history[record.account] = deque(maxlen=ORDER_HISTORY_PER_ACCOUNT)
        kept.append(record)

    # --- accounts, instruments, offerings -------------------------------------------------

    def _account_created(self, e: AccountCreated) -> None:
        self.balances[e.account] = Balance(e.account)
        if e.api_key_hash:
            self.accounts_by_key[e.api_key_hash] = e.account

    def _api_key_added(self, e: ApiKeyAdded) -> None:
        self.accounts_by_key[e.api_key_hash] = e.account

    def _cash_changed(self, e: CashDeposited | CashWithdrawn) -> None:
        self.balances[e.account].cash = e.balance

    def _units_changed(self, e: UnitsDeposited | UnitsWithdrawn) -> None:
        self.balances[e.account].positions[e.symbol] = e.position

    def _listed(self, e: InstrumentListed) -> None:
        self.instruments[e.symbol] = InstrumentView(
            e.symbol, e.kind, e.tick, e.issuer, "listed", e.maker_bps, e.taker_bps
        )
        self.books[e.symbol] = Book()
        self.tapes[e.symbol] = Tape()
        self._public[e.symbol] = {}

    def _status_changed(self, e: InstrumentStatusChanged) -> None:
        instrument = self.instruments[e.symbol]
        instrument.status = e.status
        instrument.open_at = e.open_at
        if e.status != "pre_open":
            instrument.indicative = None
        if e.status == "closed":
            instrument.close_at = 0
        self._statuses.setdefault(e.symbol, []).append(e)

    def _rules_set(self, e: TradingRulesSet) -> None:
        instrument = self.instruments[e.symbol]
        instrument.band_pct, instrument.interruption_s = e.band_pct, e.interruption_s
        instrument.open_at, instrument.close_at = e.open_at, e.close_at

    def _indicative(self, e: AuctionIndicative) -> None:
        self.instruments[e.symbol].indicative = e
        self._auctions[e.symbol] = e

    def _fees_set(self, e: InstrumentFeesSet) -> None:
        instrument = self.instruments[e.symbol]
        instrument.maker_bps, instrument.taker_bps = e.maker_bps, e.taker_bps

    def _offering_opened(self, e: OfferingOpened) -> None:
        self.offerings[e.offering_id] = OfferingView(
            e.offering_id, e.symbol, e.price, e.qty, e.closes_at, underwriter=e.underwriter,
            fee_bps=e.fee_bps, commitment=e.commitment,
        )  # fmt: skip
        if e.commitment == "firm":  # the underwriter's cash for the whole issue
            tick = self.instruments[e.symbol].tick
            self.balances[e.underwriter].cash_held += e.price * tick * e.qty

    def _offering_underwritten(self, e: OfferingUnderwritten) -> None:
        offering = self.offerings[e.offering_id]
        balance = self.balances[e.account]
        balance.cash_held -= offering.price * self.instruments[offering.symbol].tick * offering.qty
        balance.cash -= e.cost
        positions = balance.positions
        positions[offering.symbol] = positions.get(offering.symbol, 0) + e.units

    def _offering_subscribed(self, e: OfferingSubscribed) -> None:
        offering = self.offerings[e.offering_id]
        offering.subscribed += e.qty
        tick = self.instruments[offering.symbol].tick
        self.balances[e.account].cash_held += offering.price * tick * e.qty

    def _units_allocated(self, e: UnitsAllocated) -> None:
        offering = self.offerings[e.offering_id]
        unit_cost = offering.price * self.instruments[offering.symbol].tick
        balance = self.balances[e.account]
        balance.cash_held -= e.requested * unit_cost
        balance.cash -= e.cost
        positions = balance.positions
        positions[offering.symbol] = positions.get(offering.symbol, 0) + e.allocated

    def _offering_closed(self, e: OfferingClosed) -> None:
        self.offerings[e.offering_id].is_open = False
        self.balances[e.issuer].cash += e.proceeds - e.fee
        if e.fee:
            self.balances[e.underwriter].cash += e.fee

    # --- reads ----------------------------------------------------------------------------

    def find_order(self, account: str, order_id: int) -> OrderRecord | None:
        """The account's order, open or among its kept ended ones."""
        record = self.open_by_account.get(account, {}).get(order_id)
        if record is not None:
            return record
        for ended in reversed(self.history.get(account, ())):  # bounded by the history
            if ended.order_id == order_id:
                return ended
        return None

    def balances_of(self, account: str) -> tuple[int, int, dict[str, int], dict[str, int]]:
        """(cash, cash_held, positions, units_held), zero entries left out."""
        b = self.balances[account]
        return (
            b.cash,
            b.cash_held,
            {s: n for s, n in b.positions.items() if n},
            {s: n for s, n in b.units_held.items() if n},
        )

    # --- snapshots ------------------------------------------------------------------------

    def export(self) -> ReadSnapshot:
        """The state as plain values; only between batches (nothing touched is pending)."""
        return ReadSnapshot(
            version=READ_STATE_VERSION,
            seq=self.durable_seq,
            instruments=list(self.instruments.values()),
            offerings=list(self.offerings.values()),
            balances=list(self.balances.values()),
            api_keys=list(self.accounts_by_key.items()),
            open_orders=sorted(self.open_orders.values(), key=lambda r: r.order_id),
            history=[(account, list(kept)) for account, kept in self.history.items()],
            fills=[(account, list(kept)) for account, kept in self.fills.items()],
            books=[
                BookState(symbol, book.bids.all(), book.asks.all())
                for symbol, book in self.books.items()
            ],
            tapes=[_tape_state(symbol, tape) for symbol, tape in self.tapes.items()],
        )

    @classmethod
    def restore(cls, snapshot: ReadSnapshot) -> "ReadState":
        if snapshot.version != READ_STATE_VERSION:
            msg = f"read state version {snapshot.version}, this build reads {READ_STATE_VERSION}"
            raise ValueError(msg)
        state = cls()
        state.durable_seq = snapshot.seq
        state.instruments = {i.symbol: i for i in snapshot.instruments}
        state.offerings = {o.offering_id: o for o in snapshot.offerings}
        state.balances = {b.account: b for b in snapshot.balances}
        state.accounts_by_key = dict(snapshot.api_keys)
        for record in snapshot.open_orders:
            state.open_orders[record.order_id] = record
            state.open_by_account.setdefault(record.account, {})[record.order_id] = record
        for account, ended in snapshot.history:
            state.history[account] = deque(ended, maxlen=ORDER_HISTORY_PER_ACCOUNT)
        for account, fills in snapshot.fills:
            state.fills[account] = deque(fills, maxlen=FILLS_PER_ACCOUNT)
        for b in snapshot.books:
            book = state.books[b.symbol] = Book()
            for price, total in b.bids:
                book.bids.add(price, total)
            for price, total in b.asks:
                book.asks.add(price, total)
        for t in snapshot.tapes:
            state.tapes[t.symbol] = Tape(
                t.book_seq, t.trade_seq, t.last, t.volume,
                deque(t.trades, maxlen=TRADES_KEPT),
                _no_candles() | {i: deque(c, maxlen=CANDLES_KEPT) for i, c in t.candles},
            )  # fmt: skip
        state._publish_all()
        return state

    @classmethod
    def from_engine(cls, engine: Engine) -> "ReadState":
        """What an engine's state tells of the read side: instruments, offerings, balances,
        keys, books and open orders; no history, tapes or seqs (it has none of them). For
        a read side that starts from an engine built elsewhere (tests, benchmarks), and
        the last resort of a restart that finds no read snapshot it can continue."""
        state = cls()
        for i in engine.instruments.values():
            state.instruments[i.symbol] = InstrumentView(
                i.symbol, i.kind, i.tick, i.issuer, i.status, i.maker_bps, i.taker_bps,
                i.band_pct, i.interruption_s, i.open_at, i.close_at,
            )
            state.books[i.symbol] = Book()
            state.tapes[i.symbol] = Tape()
        for o in engine.offerings.values():
            state.offerings[o.offering_id] = OfferingView(
                o.offering_id, o.symbol, o.price, o.qty, o.closes_at, o.is_open,
                sum(o.subscriptions.values()), o.underwriter, o.fee_bps, o.commitment,
            )  # fmt: skip
        for a in engine.accounts.values():
            state.balances[a.account_id] = Balance(
                a.account_id, a.cash, a.cash_held, dict(a.positions), dict(a.units_held)
            )
            for key in a.api_key_hashes:
                state.accounts_by_key[key] = a.account_id
            for order in a.open_orders.values():
                # What it filled before is known, not at what prices: counted at its limit.
                filled = order.qty - order.remaining
                record = OrderRecord(
                    order.order_id, a.account_id, order.client_order_id, order.symbol,
                    order.side, order.type, order.tif, order.price, order.qty, order.remaining,
                    "open", order.ts, filled, order.price * filled, resting=not order.waiting,
                    expire_at=order.expire_at, trigger_price=order.trigger_price,
                    display_qty=order.display_qty, shown=order.shown, budget=order.budget,
                    taker_bps=order.taker_bps, post_only=order.post_only,
                )  # fmt: skip
                state.open_orders[order.order_id] = record
                state.open_by_account.setdefault(a.account_id, {})[order.order_id] = record
                if record.resting:
                    state.books[order.symbol].side(order.side).add(order.price, record.visible)
        state._publish_all()
        return state

    def _publish_all(self) -> None:
        """Take the books as published (a restored state starts between batches)."""
        self._public = {
            symbol: {("buy", p): q for p, q in book.bids.totals.items()}
            | {("sell", p): q for p, q in book.asks.totals.items()}
            for symbol, book in self.books.items()
        }


def _tape_state(symbol: str, t: Tape) -> TapeState:
    return TapeState(
        symbol, t.book_seq, t.trade_seq, t.last, t.volume, list(t.trades),
        [(interval, list(kept)) for interval, kept in t.candles.items()],
    )  # fmt: skip



def _shown_part(record: OrderRecord | None, q: int) -> int:
    """What a fill of `q` takes off its order's level: all of it, but at most what a
    resting iceberg shows (an uncross fills hidden quantity too, the shown part first)."""
    if record is not None and record.display_qty and record.resting:
        return min(q, record.shown)
    return q


def _add_to_candles(candles: dict[str, deque[Candle]], trades: list[TradeExecuted]) -> None:
    """A batch's trades (oldest first) into every interval's candles: each minute's run
    of trades is summed once, then goes to each interval (every interval is whole
    minutes, so a minute's run falls in one candle of each): five candle updates a
    minute and batch, not a trade."""
    i, count = 0, len(trades)
    while i < count:  # one turn a minute's run; bounded by the batch's trades
        first = trades[i]
        minute = first.ts - first.ts % MINUTE_NS
        end_of_minute = minute + MINUTE_NS
        high = low = first.price
        volume = notional = buy_volume = buy_notional = 0
        j = i
        while j < count and trades[j].ts < end_of_minute:  # the trades of this minute
            trade = trades[j]
            price, qty = trade.price, trade.qty
            high = max(high, price)
            low = min(low, price)
            volume += qty
            notional += price * qty
            if trade.aggressor == "buy":
                buy_volume += qty
                buy_notional += price * qty
            j += 1
        close = trades[j - 1].price
        traded = j - i
        for interval, kept in candles.items():  # one candle list an interval
            length = CANDLE_INTERVALS[interval]
            start = minute - minute % length
            last = kept[-1] if kept else None
            if last is not None and last.start == start:
                last.high = max(last.high, high)
                last.low = min(last.low, low)
                last.close = close
                last.volume += volume
                last.notional += notional
                last.trades += traded
                last.buy_volume += buy_volume
                last.buy_notional += buy_notional
            else:
                kept.append(Candle(
                    start, first.price, high, low, close, volume, notional, traded, buy_volume,
                    buy_notional,
                ))  # fmt: skip
        i = j
