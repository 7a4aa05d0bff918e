"""What the gateway reads: a replica of the engine fed only with durable commands, and the
level-2 books and trade tapes published from it.

The sequencer's engine runs ahead of the disk, so nothing a client sees may come from it.
The replica applies each command once its record is durable (in sequence order), so every
read (books, balances, orders) shows exactly what the journal holds. For each command it
also works out which price levels changed and by how much, for market data.
"""

import logging
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

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
from exchange.domain.money import format_price, tick_size_of
from exchange.sequencer import Sequenced

log = logging.getLogger(__name__)

# Recent trades kept per instrument for GET /v1/trades (the newest first).
TRADES_KEPT = 1_000
# Levels on each side that the book checksum covers (the contract says ten).
CHECKSUM_DEPTH = 10
# Price strings cached (symbol, ticks) -> "101.25"; cleared when full.
PRICE_STRINGS_CACHED = 100_000
# Ended orders kept per account for GET /v1/orders?status=all (the newest).
ORDER_HISTORY_PER_ACCOUNT = 10_000
# One-minute candles kept per instrument: a day.
CANDLES_KEPT = 1_440
MINUTE_NS = 60_000_000_000


@dataclass(slots=True)
class OrderRecord:
    """An order as REST shows it, kept from its events (open ones, and recent ended ones)."""

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
    """What one durable command changed in public market data, per symbol."""

    trades: dict[str, list[TradeExecuted]] = field(default_factory=dict)
    levels: dict[str, list[Level]] = field(default_factory=dict)


@dataclass(slots=True)
class Tape:
    """Per instrument: the market-data sequence number and the ticker's figures."""

    seq: int = 0
    last: int | None = None
    volume: int = 0
    trades: deque[TradeExecuted] = field(default_factory=lambda: deque(maxlen=TRADES_KEPT))
    candles: deque[Candle] = field(default_factory=lambda: deque(maxlen=CANDLES_KEPT))


Listener = Callable[[Sequenced, Published], None]


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
        self._listeners: list[Listener] = []
        # Orders seen since this server started (those open before come from the replica).
        self.live_orders: dict[int, OrderRecord] = {}
        self.history: dict[str, deque[OrderRecord]] = {}

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

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

    # --- the sequencer's subscriber -------------------------------------------------------

    def __call__(self, sequenced: Sequenced) -> None:
        replica = self.replica
        touched = self._levels_before(sequenced)
        events = replica.apply(sequenced.command)
        if events != sequenced.events:
            msg = f"replica diverged at seq {sequenced.seq}: {events!r} != {sequenced.events!r}"
            raise RuntimeError(msg)
        self.durable_seq = sequenced.seq
        published = Published()
        for event in events:
            self._note(event, touched, published)
        for symbol, levels in touched.items():
            changes = self._level_changes(symbol, levels)
            if changes:
                published.levels[symbol] = changes
        for symbol, trades in published.trades.items():
            tape = self.tapes[symbol]
            tape.seq += len(trades)
            for trade in trades:
                tape.last = trade.price
                tape.volume += trade.qty
                tape.trades.appendleft(trade)
                _add_to_candles(tape.candles, trade)
        for symbol in published.levels:
            self.tapes[symbol].seq += 1
        for listener in self._listeners:
            try:
                listener(sequenced, published)
            except Exception:  # one listener's bug must not silence the others
                self.listener_errors += 1
                log.exception("read model listener %r failed at seq %d", listener, sequenced.seq)

    def _levels_before(self, sequenced: Sequenced) -> dict[str, set[tuple[str, int]]]:
        """Levels a replace may empty: its order's price before the command."""
        command = sequenced.command
        touched: dict[str, set[tuple[str, int]]] = {}
        if isinstance(command, ReplaceOrder):
            account = self.replica.accounts.get(command.account)
            order = account.open_orders.get(command.order_id) if account else None
            if order is not None:
                touched.setdefault(order.symbol, set()).add((order.side, order.price))
        return touched

    def _note(
        self, event: Event, touched: dict[str, set[tuple[str, int]]], published: Published
    ) -> None:
        self._track_order(event)
        if isinstance(event, TradeExecuted):
            maker_side = "sell" if event.aggressor == "buy" else "buy"
            touched.setdefault(event.symbol, set()).add((maker_side, event.price))
            published.trades.setdefault(event.symbol, []).append(event)
        elif isinstance(event, OrderAccepted | OrderCancelled | OrderReplaced):
            if event.price:  # a market order never rests
                touched.setdefault(event.symbol, set()).add((event.side, event.price))
        elif isinstance(event, AccountCreated | ApiKeyAdded) and event.api_key_hash:
            self.accounts_by_key[event.api_key_hash] = event.account
        elif isinstance(event, InstrumentListed):
            self.tapes.setdefault(event.symbol, Tape())

    def _track_order(self, event: Event) -> None:
        live = self.live_orders
        if isinstance(event, OrderAccepted) and not event.resent:
            live[event.order_id] = OrderRecord(
                event.order_id, event.account, event.client_order_id, event.symbol, event.side,
                event.type, event.tif, event.price, event.qty, event.remaining, "open", event.ts,
            )  # fmt: skip
        elif isinstance(event, TradeExecuted):
            for order_id, remaining in (
                (event.maker_order_id, event.maker_remaining),
                (event.taker_order_id, event.taker_remaining),
            ):
                record = live.get(order_id)
                if record is not None:
                    record.remaining = remaining
                    if remaining == 0:
                        self._end(record, "filled")
        elif isinstance(event, OrderCancelled):
            record = live.get(event.order_id)
            if record is not None:
                record.remaining = event.remaining
                self._end(record, event.reason)
        elif isinstance(event, OrderReplaced):
            record = live.get(event.order_id)
            if record is not None:
                record.price, record.qty, record.remaining = event.price, event.qty, event.remaining

    def _end(self, record: OrderRecord, status: str) -> None:
        record.status = status
        del self.live_orders[record.order_id]
        kept = self.history.setdefault(record.account, deque(maxlen=ORDER_HISTORY_PER_ACCOUNT))
        kept.append(record)

    def ended_orders(self, account: str) -> list[OrderRecord]:
        """Ended orders since this server started, newest first (bounded per account)."""
        return list(reversed(self.history.get(account, ())))

    def _level_changes(self, symbol: str, levels: set[tuple[str, int]]) -> list[Level]:
        """(side, price, total now) of each touched level, sorted so the update reads well."""
        book = self.replica.books[symbol]
        changes: list[Level] = []
        for side, price in sorted(levels):
            level = (book.bids if side == "buy" else book.asks).levels.get(price)
            changes.append((side, price, level.total if level else 0))
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


def _top(side: BookSide, depth: int) -> list[tuple[int, int]]:
    """(price, total) of the best `depth` levels, best first (the side keeps best last)."""
    sign, levels = side.sign, side.levels
    return [(key * sign, levels[key * sign].total) for key in reversed(side.keys[-depth:])]
