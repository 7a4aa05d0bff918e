"""What the gateway reads: a replica of the engine fed only with durable commands, and the
level-2 books and trade tapes published from it.

The sequencer's engine runs ahead of the disk, so nothing a client sees may come from it.
The replica applies each command once its record is durable (in sequence order), so every
read (books, balances, orders) shows exactly what the journal holds. Market data is
published once a durable batch: its trades, then one book update per instrument with the
net change of every level the batch touched (against the book as last published).
"""

import logging
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from exchange.domain.book import BookSide, Order
from exchange.domain.commands import ReplaceOrder
from exchange.domain.engine import Engine
from exchange.domain.events import (
    AccountCreated,
    ApiKeyAdded,
    Event,
    InstrumentListed,
    OrderAccepted,
    OrderCancelled,
    OrderReplaced,
    TradeExecuted,
)
from exchange.domain.money import format_price, parse_price, tick_size_of
from exchange.sequencer import Sequenced

log = logging.getLogger(__name__)

# Recent trades kept per instrument for GET /v1/trades (the newest first).
TRADES_KEPT = 1_000
# Levels on each side that the book checksum covers (the contract says ten).
CHECKSUM_DEPTH = 10
# Price strings cached (symbol, ticks) -> "101.25" and back; each cleared when full.
PRICE_STRINGS_CACHED = 100_000
# Ended orders kept per account for GET /v1/orders?status=all (the newest).
ORDER_HISTORY_PER_ACCOUNT = 10_000
# One-minute candles kept per instrument: a day.
CANDLES_KEPT = 1_440
MINUTE_NS = 60_000_000_000


class OrderRecord(msgspec.Struct, gc=False):
    """An order as REST shows it, kept from its events (open ones, and recent ended ones).

    Strings and integers only, so it can be in no reference cycle: out of the cyclic
    collector's sight (gc=False). Tracked, the records of a busy hour crowded the young
    generation (old records dying offset the new ones in its count) and made single
    young collections take 10-65 ms."""

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


@dataclass(slots=True)
class Candle:
    start: int  # ns of the minute's start
    open: int
    high: int
    low: int
    close: int
    volume: int


Level = tuple[str, int, int]  # side ("buy" | "sell"), price in ticks, new total


@dataclass(slots=True)
class Published:
    """What one durable batch changed in public market data, per symbol."""

    trades: dict[str, list[TradeExecuted]] = field(default_factory=dict)
    levels: dict[str, list[Level]] = field(default_factory=dict)


@dataclass(slots=True)
class Tape:
    """Per instrument: the market-data sequence of each channel and the ticker's figures."""

    book_seq: int = 0  # the last book_update's (snapshots and the ticker carry it)
    trade_seq: int = 0  # the last trade's
    last: int | None = None
    volume: int = 0
    trades: deque[TradeExecuted] = field(default_factory=lambda: deque(maxlen=TRADES_KEPT))
    candles: deque[Candle] = field(default_factory=lambda: deque(maxlen=CANDLES_KEPT))


Listener = Callable[[Sequenced], None]
MarketDataListener = Callable[[Published], None]
PublicLevels = dict[tuple[str, int], int]  # (side, price) -> total, as last published


class ReadModel:
    def __init__(self, replica: Engine | None = None) -> None:
        self.replica = replica or Engine()
        self.tapes: dict[str, Tape] = {sym: Tape() for sym in self.replica.instruments}
        self.accounts_by_key: dict[str, str] = {
            key: account.account_id
            for account in self.replica.accounts.values()
            for key in account.api_key_hashes
        }
        self.durable_seq = 0
        self.listener_errors = 0
        self._prices: dict[tuple[str, int], str] = {}
        self._ticks: dict[tuple[str, str], int] = {}
        self._listeners: list[Listener] = []
        self._market_data_listeners: list[MarketDataListener] = []
        # Orders seen since this server started (those open before come from the replica).
        self.live_orders: dict[int, OrderRecord] = {}
        self.history: dict[str, deque[OrderRecord]] = {}
        # The books as subscribers last heard of them, and what this batch has touched.
        self._public: dict[str, PublicLevels] = {
            symbol: _levels_of(book.bids, "buy") | _levels_of(book.asks, "sell")
            for symbol, book in self.replica.books.items()
        }
        self._touched: dict[str, set[tuple[str, int]]] = {}
        self._trades: dict[str, list[TradeExecuted]] = {}

    def listen(self, listener: Listener) -> None:
        """Call `listener` with every durable record, after the replica has applied it."""
        self._listeners.append(listener)

    def listen_market_data(self, listener: MarketDataListener) -> None:
        """Call `listener` once a durable batch with what it changed in market data."""
        self._market_data_listeners.append(listener)

    def tick_size(self, symbol: str) -> Decimal:
        return tick_size_of(self.replica.instruments[symbol].tick)

    def price(self, symbol: str, ticks: int) -> str:
        """The wire string of a price; cached, as the same few levels are written again
        and again (Decimal formatting was a tenth of the gateway's time under load)."""
        key = (symbol, ticks)
        text = self._prices.get(key)
        if text is None:
            if len(self._prices) >= PRICE_STRINGS_CACHED:
                self._prices.clear()
            text = self._prices[key] = format_price(ticks, self.tick_size(symbol))
        return text

    def ticks(self, symbol: str, text: str) -> int:
        """A price string from a client as ticks of `symbol` (raises MoneyError); cached,
        as orders name the same few prices again and again. Only good prices are kept."""
        key = (symbol, text)
        ticks = self._ticks.get(key)
        if ticks is None:
            ticks = parse_price(text, self.tick_size(symbol))
            if len(self._ticks) >= PRICE_STRINGS_CACHED:
                self._ticks.clear()
            self._ticks[key] = ticks
        return ticks

    # --- the sequencer's subscriber -------------------------------------------------------

    def __call__(self, sequenced: Sequenced) -> None:
        replica = self.replica
        self._note_replaced_level(sequenced)
        events = replica.apply(sequenced.command)
        if events != sequenced.events:
            msg = f"replica diverged at seq {sequenced.seq}: {events!r} != {sequenced.events!r}"
            raise RuntimeError(msg)
        self.durable_seq = sequenced.seq
        for event in events:
            self._note(event)
        self._tell(self._listeners, sequenced)

    def end_batch(self) -> None:
        """Publish the batch's market data: trades each take the next trade seq, then one
        book update per instrument, taking the next book seq, carries the net change of
        every level touched."""
        touched, self._touched = self._touched, {}
        trades, self._trades = self._trades, {}
        if not touched and not trades:
            return
        published = Published(trades=trades)
        for symbol, levels in touched.items():
            changes = self._level_changes(symbol, levels)
            if changes:
                published.levels[symbol] = changes
        for symbol, executed in trades.items():
            self.tapes[symbol].trade_seq += len(executed)
        for symbol in published.levels:
            self.tapes[symbol].book_seq += 1
        self._tell(self._market_data_listeners, published)

    def _tell(self, listeners: list[Callable[[Any], None]], what: object) -> None:
        for listener in listeners:
            try:
                listener(what)
            except Exception:  # one listener's bug must not silence the others
                self.listener_errors += 1
                log.exception("read model listener %r failed at seq %d", listener, self.durable_seq)

    def _note_replaced_level(self, sequenced: Sequenced) -> None:
        """A replace may empty its order's level before the command: note it touched."""
        command = sequenced.command
        if isinstance(command, ReplaceOrder):
            account = self.replica.accounts.get(command.account)
            order = account.open_orders.get(command.order_id) if account else None
            if order is not None:
                self._touch(order.symbol, order.side, order.price)

    def _note(self, event: Event) -> None:
        """What the event changes in the order records, the tapes and the levels this batch
        touched (dispatched on the event's type: most records are orders and trades)."""
        kind = type(event)
        if kind is TradeExecuted:
            self._note_trade(event)  # type: ignore[arg-type]
        elif kind is OrderAccepted:
            accepted: OrderAccepted = event  # type: ignore[assignment]
            if not accepted.resent:
                self.live_orders[accepted.order_id] = OrderRecord(
                    accepted.order_id, accepted.account, accepted.client_order_id,
                    accepted.symbol, accepted.side, accepted.type, accepted.tif, accepted.price,
                    accepted.qty, accepted.remaining, "open", accepted.ts,
                )  # fmt: skip
            if accepted.price:  # a market order never rests
                self._touch(accepted.symbol, accepted.side, accepted.price)
        elif kind is OrderCancelled:
            cancelled: OrderCancelled = event  # type: ignore[assignment]
            record = self.live_orders.get(cancelled.order_id)
            if record is not None:
                record.remaining = cancelled.remaining
                self._end(record, cancelled.reason)
            if cancelled.price:
                self._touch(cancelled.symbol, cancelled.side, cancelled.price)
        elif kind is OrderReplaced:
            replaced: OrderReplaced = event  # type: ignore[assignment]
            record = self.live_orders.get(replaced.order_id)
            if record is not None:
                record.price, record.qty = replaced.price, replaced.qty
                record.remaining = replaced.remaining
            if replaced.price:
                self._touch(replaced.symbol, replaced.side, replaced.price)
        elif isinstance(event, AccountCreated | ApiKeyAdded) and event.api_key_hash:
            self.accounts_by_key[event.api_key_hash] = event.account
        elif isinstance(event, InstrumentListed):
            self.tapes.setdefault(event.symbol, Tape())
            self._public.setdefault(event.symbol, {})

    def _note_trade(self, trade: TradeExecuted) -> None:
        live = self.live_orders
        for order_id, remaining in (
            (trade.maker_order_id, trade.maker_remaining),
            (trade.taker_order_id, trade.taker_remaining),
        ):
            record = live.get(order_id)
            if record is not None:
                record.remaining = remaining
                if remaining == 0:
                    self._end(record, "filled")
        symbol = trade.symbol
        self._touch(symbol, "sell" if trade.aggressor == "buy" else "buy", trade.price)
        trades = self._trades.get(symbol)
        if trades is None:
            trades = self._trades[symbol] = []
        trades.append(trade)
        tape = self.tapes[symbol]
        tape.last = trade.price
        tape.volume += trade.qty
        tape.trades.appendleft(trade)
        _add_to_candles(tape.candles, trade)

    def _touch(self, symbol: str, side: str, price: int) -> None:
        touched = self._touched.get(symbol)
        if touched is None:
            touched = self._touched[symbol] = set()
        touched.add((side, price))

    def _end(self, record: OrderRecord, status: str) -> None:
        record.status = status
        del self.live_orders[record.order_id]
        kept = self.history.setdefault(record.account, deque(maxlen=ORDER_HISTORY_PER_ACCOUNT))
        kept.append(record)

    def ended_orders(self, account: str) -> list[OrderRecord]:
        """Ended orders since this server started, newest first (bounded per account)."""
        return list(reversed(self.history.get(account, ())))

    def _level_changes(self, symbol: str, levels: set[tuple[str, int]]) -> list[Level]:
        """(side, price, total now) of each touched level whose total is not what was last
        published (a level added and taken again within the batch is no change), sorted
        so the update reads well; the published book takes the new totals."""
        book = self.replica.books[symbol]
        public = self._public[symbol]
        changes: list[Level] = []
        for side, price in sorted(levels):
            level = (book.bids if side == "buy" else book.asks).levels.get(price)
            total = level.total if level else 0
            if public.get((side, price), 0) != total:
                changes.append((side, price, total))
                if total:
                    public[side, price] = total
                else:
                    del public[side, price]
        return changes

    # --- reads ----------------------------------------------------------------------------

    def book(self, symbol: str, depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best `depth` levels a side, best first, without touching the others."""
        book = self.replica.books[symbol]
        return _top(book.bids, depth), _top(book.asks, depth)

    def checksum(self, symbol: str) -> int:
        """CRC-32 of the ten best asks then the ten best bids, as the contract defines it."""
        bids, asks = self.book(symbol, CHECKSUM_DEPTH)
        price = self.price
        asks_text = ";".join(f"{price(symbol, p)}:{q}" for p, q in asks)
        bids_text = ";".join(f"{price(symbol, p)}:{q}" for p, q in bids)
        return zlib.crc32(f"A{asks_text}|B{bids_text}".encode())

    def open_order(self, account: str, order_id: int) -> Order | None:
        holder = self.replica.accounts.get(account)
        return holder.open_orders.get(order_id) if holder else None


def _add_to_candles(candles: deque[Candle], trade: TradeExecuted) -> None:
    start = trade.ts - trade.ts % MINUTE_NS
    last = candles[-1] if candles else None
    if last is not None and last.start == start:
        last.high = max(last.high, trade.price)
        last.low = min(last.low, trade.price)
        last.close = trade.price
        last.volume += trade.qty
    else:
        candles.append(Candle(start, trade.price, trade.price, trade.price, trade.price, trade.qty))


def _levels_of(side: BookSide, name: str) -> PublicLevels:
    return {(name, price): level.total for price, level in side.levels.items()}


def _top(side: BookSide, depth: int) -> list[tuple[int, int]]:
    """(price, total) of the best `depth` levels, best first (the side keeps best last)."""
    sign, levels = side.sign, side.levels
    return [(key * sign, levels[key * sign].total) for key in reversed(side.keys[-depth:])]
