"""The load test's market-data subscriber: a checked local book at a few microseconds a
frame, so a hundred of them fit in a client process beside the traders.

`gateway.client.Client` decodes every frame into dicts and queues each message for a
reader task; under a busy instrument that per-message work made the subscribers, not the
exchange, the bottleneck (three quarters of the client CPU with 100 of them). Here each
frame is decoded by msgspec straight into the few fields a subscriber checks, every
message's seq is checked, every `book_update` is applied and its checksum compared, and
the lag of the trades of one frame is counted per distinct timestamp.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from gateway.client import LocalBook, ProtocolError
from loadtest.trader import connect


class Trade(msgspec.Struct, tag="trade"):
    seq: int
    ts: int


class BookUpdate(msgspec.Struct, tag="book_update"):
    seq: int
    changes: list[tuple[str, str, int]]
    checksum: int


class BookSnapshot(msgspec.Struct, tag="book_snapshot"):
    symbol: str
    seq: int
    bids: list[tuple[str, int]]
    asks: list[tuple[str, int]]
    checksum: int


class Ticker(msgspec.Struct, tag="ticker"):
    pass


class Batch(msgspec.Struct, tag="batch"):
    symbol: str
    messages: list[Trade | BookUpdate | Ticker]


class Heartbeat(msgspec.Struct, tag="heartbeat"):
    pass


Frame = Batch | Trade | BookUpdate | BookSnapshot | Ticker | Heartbeat
_decode_frame = msgspec.json.Decoder(Frame).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.encode

# Trades' timestamps are cut to this before their lags are counted, so a frame's trades
# make a few distinct lags, not one each: a lag is over-stated by less than this.
LAG_QUANTUM_NS = 100_000
# Called with (receipt time in ns, {trade ts: trades with it}) for each frame's trades.
LagSink = Callable[[int, dict[int, int]], None]


class Feed:
    """One subscriber: its socket, its book, and what it saw (`messages`, and the book's
    `gaps` and `bad_checksums`). The symbol subscribed to is the only one it gets, so
    messages carry no symbol worth checking except the snapshot's."""

    def __init__(self, symbol: str, record_lag: LagSink, *, batched: bool = True) -> None:
        self.book = LocalBook(symbol)
        self.batched = batched
        self.messages = 0
        self.resubscribes = 0
        self._record_lag = record_lag
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._req_ids = 0
        # The close code when the exchange closed this subscriber before the run's end
        # (4008: too slow to read its market data); None while it followed to the end.
        self.closed_with: int | None = None

    async def run(self, url: str, deadline: float) -> None:
        """Subscribe and follow the book until `deadline` (a perf_counter time)."""
        async with aiohttp.ClientSession() as session, await connect(session, url) as ws:
            self._ws = ws
            await self._subscribe(batched=self.batched)
            try:
                async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                    await self._follow(ws)
            except TimeoutError:
                return  # the run is over
            self.closed_with = ws.close_code or 1006  # closed before the end of the run

    async def _follow(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:  # until the deadline or the socket closes
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            if not self.on_frame(message.data, time.time_ns()):
                await self._resubscribe()

    def on_frame(self, data: str, now_ns: int) -> bool:
        """Check and apply one frame received at `now_ns`; False when the book can no
        longer be trusted (a gap or a bad checksum) and must be resubscribed."""
        try:
            frame = _decode_frame(data)
        except msgspec.ValidationError:
            answer = _decode_any(data)  # an answer (subscribed, unsubscribed) or an error
            if answer.get("type") in {"error", "rejected"}:
                raise ProtocolError(f"the exchange refused a subscriber: {answer}") from None
            return True
        if isinstance(frame, Batch):
            return self._on_messages(frame.messages, now_ns)
        if isinstance(frame, BookSnapshot):
            self.messages += 1
            book = self.book
            if frame.symbol != book.symbol:
                return True
            return book.on_snapshot(frame.seq, frame.bids, frame.asks, frame.checksum)
        if isinstance(frame, Heartbeat):
            return True
        return self._on_messages([frame], now_ns)

    def _on_messages(self, messages: list[Trade | BookUpdate | Ticker], now_ns: int) -> bool:
        self.messages += len(messages)
        book = self.book
        lags: dict[int, int] = {}  # trade ts, cut to LAG_QUANTUM_NS -> trades
        ok = True
        # The trades' seqs are checked here, inline (the book checks the updates'): at
        # half a million messages a second a call per trade was a tenth of the client.
        seq = book.seq
        for message in messages:
            if type(message) is Trade:
                if seq is not None:
                    seq += 1
                    if message.seq != seq:
                        book.seq = seq - 1
                        ok = book.on_trade(message.seq)  # counts the gap
                        break
                quantum = message.ts // LAG_QUANTUM_NS
                lags[quantum] = lags.get(quantum, 0) + 1
            elif type(message) is BookUpdate:
                book.seq = seq
                ok = book.on_update(message.seq, message.changes, message.checksum)
                if not ok:
                    break
                seq = book.seq
        else:
            book.seq = seq
        if lags:
            self._record_lag(now_ns, {q * LAG_QUANTUM_NS: n for q, n in lags.items()})
        return ok

    async def _subscribe(self, *, batched: bool) -> None:
        assert self._ws is not None
        self._req_ids += 1
        request: dict[str, Any] = {
            "op": "subscribe", "req_id": self._req_ids, "channels": ["book", "trades"],
            "symbols": [self.book.symbol],
        }  # fmt: skip
        if batched:
            request["batched"] = True
        await self._ws.send_str(_encode(request).decode())

    async def _resubscribe(self) -> None:
        """Unsubscribe and subscribe again: the new snapshot restores the book (until it
        comes, the book ignores what the old subscription still delivers)."""
        assert self._ws is not None
        self.resubscribes += 1
        self._req_ids += 1
        request = {
            "op": "unsubscribe", "req_id": self._req_ids, "channels": ["book", "trades"],
            "symbols": [self.book.symbol],
        }  # fmt: skip
        await self._ws.send_str(_encode(request).decode())
        await self._subscribe(batched=False)  # batching, once asked, stays on
