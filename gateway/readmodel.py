"""What the gateway reads: the read state (gateway/readstate.py) fed with each durable
record's events, and the market data each durable batch publishes.

The sequencer's engine runs ahead of the disk, so nothing a client sees may come from it.
The read side applies each record's events once the record is durable (in sequence order),
so every read (books, balances, orders, fills) shows exactly what the journal holds; no
second engine runs here. Market data is published once a durable batch: its trades, then
one book update per instrument with the net change of every level the batch touched
(against the book as last published).
"""

import logging
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from exchange.bus import Sequenced
from exchange.domain.engine import Engine
from exchange.domain.limits import CASH_DECIMALS
from exchange.domain.money import format_price, parse_price, tick_size_of
from gateway.readstate import (
    Book,
    InstrumentView,
    OfferingView,
    OrderRecord,
    Published,
    ReadState,
    Tape,
)

__all__ = ["OrderRecord", "Published", "ReadModel"]

log = logging.getLogger(__name__)

# Levels on each side that the book checksum covers (the contract says ten).
CHECKSUM_DEPTH = 10
# Price strings cached (symbol, ticks) -> "101.25" and back; each cleared when full.
PRICE_STRINGS_CACHED = 100_000
# An average price off the tick is written with this many more decimals than the
# instrument's prices (rounded half to even; trailing zeros past the tick's dropped).
AVG_PRICE_EXTRA_DECIMALS = 4

Listener = Callable[[Sequenced], None]
MarketDataListener = Callable[[Published], None]


# The cash currency when `--currency` is not given.
DEFAULT_CURRENCY = "USD"

class ReadModel:
    def __init__(self, state: ReadState | None = None) -> None:
        self.state = state or ReadState()
        self.listener_errors = 0
        # The cash currency (`--currency`), which fees are charged in; set by the app.
        self.currency = DEFAULT_CURRENCY
        self._prices: dict[tuple[str, int], str] = {}
        self._ticks: dict[tuple[str, str], int] = {}
        self._listeners: list[Listener] = []
        self._market_data_listeners: list[MarketDataListener] = []
        self._batch_ends: list[Callable[[], None]] = []

    @classmethod
    def from_engine(cls, engine: Engine) -> "ReadModel":
        """A read side that starts from an engine's state (tests and benchmarks)."""
        return cls(ReadState.from_engine(engine))

    # --- the state's parts, by name ------------------------------------------------------

    @property
    def durable_seq(self) -> int:
        return self.state.durable_seq

    @property
    def instruments(self) -> dict[str, InstrumentView]:
        return self.state.instruments

    @property
    def offerings(self) -> dict[int, OfferingView]:
        return self.state.offerings

    @property
    def tapes(self) -> dict[str, Tape]:
        return self.state.tapes

    @property
    def books(self) -> dict[str, Book]:
        return self.state.books

    @property
    def accounts_by_key(self) -> dict[str, str]:
        return self.state.accounts_by_key

    # --- listeners ------------------------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        """Call `listener` with every durable record, after the read state has applied it."""
        self._listeners.append(listener)

    def listen_market_data(self, listener: MarketDataListener) -> None:
        """Call `listener` once a durable batch with what it changed in market data."""
        self._market_data_listeners.append(listener)

    def after_batch(self, hook: Callable[[], None]) -> None:
        """Call `hook` after each batch's market data (the read snapshots' trigger)."""
        self._batch_ends.append(hook)

    # --- prices ---------------------------------------------------------------------------

    def tick_size(self, symbol: str) -> Decimal:
        return tick_size_of(self.state.instruments[symbol].tick)

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

    def avg_price(self, symbol: str, filled: int, notional: int) -> str | None:
        """The average price of `filled` units whose prices (ticks) x qty sum to
        `notional`: the wire price when on a tick, else AVG_PRICE_EXTRA_DECIMALS more
        decimals; None before any fill."""
        if not filled:
            return None
        if notional % filled == 0:
            return self.price(symbol, notional // filled)
        return average_price(notional, filled, self.state.instruments[symbol].tick)

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
        self.state.apply(sequenced.seq, sequenced.events)
        self._tell(self._listeners, sequenced)

    def end_batch(self) -> None:
        """Publish the batch's market data (see ReadState.end_batch)."""
        published = self.state.end_batch()
        if published is not None:
            self._tell(self._market_data_listeners, published)
        for hook in self._batch_ends:
            try:
                hook()
            except Exception:  # a snapshot's failure must not stop the market data
                self.listener_errors += 1
                log.exception("after-batch hook %r failed at seq %d", hook, self.durable_seq)

    def _tell(self, listeners: list[Callable[[Any], None]], what: object) -> None:
        for listener in listeners:
            try:
                listener(what)
            except Exception:  # one listener's bug must not silence the others
                self.listener_errors += 1
                log.exception("read model listener %r failed at seq %d", listener, self.durable_seq)

    # --- reads ----------------------------------------------------------------------------

    def book(self, symbol: str, depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best `depth` levels a side, best first, without touching the others."""
        book = self.state.books[symbol]
        return book.bids.top(depth), book.asks.top(depth)

    def full_book(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        book = self.state.books[symbol]
        return book.bids.all(), book.asks.all()

    def checksum(self, symbol: str) -> int:
        """CRC-32 of the ten best asks then the ten best bids, as the contract defines it."""
        bids, asks = self.book(symbol, CHECKSUM_DEPTH)
        price = self.price
        asks_text = ";".join(f"{price(symbol, p)}:{q}" for p, q in asks)
        bids_text = ";".join(f"{price(symbol, p)}:{q}" for p, q in bids)
        return zlib.crc32(f"A{asks_text}|B{bids_text}".encode())

    def open_order(self, account: str, order_id: int) -> OrderRecord | None:
        return self.state.open_by_account.get(account, {}).get(order_id)

    def open_orders(self, account: str) -> list[OrderRecord]:
        return list(self.state.open_by_account.get(account, {}).values())

    def ended_orders(self, account: str) -> list[OrderRecord]:
        """The account's kept ended orders, newest first (bounded per account)."""
        return list(reversed(self.state.history.get(account, ())))

    def find_order(self, account: str, order_id: int) -> OrderRecord | None:
        return self.state.find_order(account, order_id)

    def order_by_client_order_id(self, account: str, client_order_id: str) -> OrderRecord | None:
        """The account's newest order with this id, open or among its kept ended ones (an
        id is reused once forgotten); a pass over what the account's history keeps."""
        newest: OrderRecord | None = None
        for record in self.state.open_by_account.get(account, {}).values():
            if record.client_order_id == client_order_id and (
                newest is None or record.order_id > newest.order_id
            ):
                newest = record
        for record in self.state.history.get(account, ()):  # bounded by the history
            if record.client_order_id == client_order_id and (
                newest is None or record.order_id > newest.order_id
            ):
                newest = record
        return newest

    def balances(self, account: str) -> tuple[int, int, dict[str, int], dict[str, int]]:
        return self.state.balances_of(account)


def average_price(notional: int, filled: int, tick: int) -> str:
    """notional x tick / filled cash minor units as a price string with the prices'
    CASH_DECIMALS decimals and up to AVG_PRICE_EXTRA_DECIMALS more (the last rounded half
    to even, trailing zeros past the prices' decimals dropped). In integers: a fill's
    answer needs it, and Decimal arithmetic cost a few microseconds each."""
    places = CASH_DECIMALS + AVG_PRICE_EXTRA_DECIMALS
    quotient, remainder = divmod(notional * tick * 10**AVG_PRICE_EXTRA_DECIMALS, filled)
    twice = 2 * remainder
    if twice > filled or (twice == filled and quotient % 2):
        quotient += 1
    whole, fraction = divmod(quotient, 10**places)
    decimals = str(fraction).rjust(places, "0").rstrip("0").ljust(CASH_DECIMALS, "0")
    return f"{whole}.{decimals}"
