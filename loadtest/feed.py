"""The load test's market-data subscriber: a checked local book at a few microseconds a
frame, so a hundred of them fit in a client process beside the traders.

`gateway.client.Client` decodes every frame into dicts and queues each message for a
reader task; under a busy instrument that per-message work made the subscribers, not the
exchange, the bottleneck (three quarters of the client CPU with 100 of them). Here each
frame is decoded by msgspec straight into the few fields a subscriber checks, every
message's seq is checked, every `book_update` is applied and its checksum compared, and
the lag of the trades of one frame is counted per distinct timestamp.

The subscribers of a process get the same frames, so they share the checking (`Peers`):
those that start from the same book follow one `Chain`, whose book checks each frame
once; every other subscriber of the chain compares the frame it got with the one checked
at the same point (a string comparison) and takes that outcome; any other frame is its
own gap when it skips seqs, a divergence when it does not. A step remembers the address
its checker read from, so when a process's subscribers are spread over several gateways
of a cluster, each frame one gateway sent is compared with the one the other sent at the
same point: a gateway whose market data differs shows as divergences, and the frames
taken from a step checked on another address are counted (`cross_frames`) to show the
comparison happened.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
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
    trade_seq: int | None = None


class Ticker(msgspec.Struct, tag="ticker"):
    pass


class Auction(msgspec.Struct, tag="auction"):
    """A call auction's indicative price: it takes a book seq."""

    seq: int


class Status(msgspec.Struct, tag="status"):
    pass


class Batch(msgspec.Struct, tag="batch"):
    symbol: str
    messages: list[Trade | BookUpdate | Ticker | Auction | Status]


class Heartbeat(msgspec.Struct, tag="heartbeat"):
    pass


Frame = Batch | Trade | BookUpdate | BookSnapshot | Ticker | Heartbeat | Auction | Status
_decode_frame = msgspec.json.Decoder(Frame).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.encode

# Trades' timestamps are cut to this before their lags are counted, so a frame's trades
# make a few distinct lags, not one each: a lag is over-stated by less than this.
LAG_QUANTUM_NS = 100_000
# Called with (receipt time in ns, {trade ts: trades with it}) for each frame's trades.
LagSink = Callable[[int, dict[int, int]], None]
# A subscriber's first snapshot (the answer to its subscribe) takes a loopback round trip and
# the server's snapshot of one instrument; one not there by then means a broken exchange.
SNAPSHOT_TIMEOUT_S = 30.0
# Chains a process's subscribers may still join (each started by a snapshot no chain
# matched); past this the oldest is no longer offered (its followers keep it).
JOINABLE_CHAINS = 64

Messages = list[Trade | BookUpdate | Ticker | Auction | Status]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What checking one frame found: whether the book is still good, and what to count."""

    ok: bool
    messages: int
    gaps: int
    bad_checksums: int
    lags: dict[int, int]  # trade ts (cut to LAG_QUANTUM_NS) -> trades with it


def check(book: LocalBook, messages: Messages) -> Outcome:
    """Apply one frame's messages to `book`: every seq checked (trades on the trade
    sequence, updates on the book's), every update applied and its checksum compared, the
    trades' lags counted per timestamp."""
    gaps, bad = book.gaps, book.bad_checksums
    lags: dict[int, int] = {}  # trade ts, cut to LAG_QUANTUM_NS -> trades
    ok = True
    # The trades' seqs are checked here, inline (the book checks the updates'): at half a
    # million messages a second a call per trade was a tenth of the client.
    trade_seq = book.trade_seq
    for message in messages:
        if type(message) is Trade:
            if trade_seq is not None and message.seq != trade_seq + 1:
                book.trade_seq = trade_seq
                ok = book.on_trade(message.seq)  # counts the gap
                break
            trade_seq = message.seq
            quantum = message.ts // LAG_QUANTUM_NS
            lags[quantum] = lags.get(quantum, 0) + 1
        elif type(message) is BookUpdate:
            ok = book.on_update(message.seq, message.changes, message.checksum)
            if not ok:
                book.trade_seq = trade_seq
                break
        elif type(message) is Auction:
            ok = book.on_auction(message.seq)
            if not ok:
                book.trade_seq = trade_seq
                break
    else:
        book.trade_seq = trade_seq
    return Outcome(
        ok, len(messages), book.gaps - gaps, book.bad_checksums - bad,
        {q * LAG_QUANTUM_NS: n for q, n in lags.items()},
    )  # fmt: skip


def _skips(messages: Messages, seq: int | None, trade_seq: int | None) -> bool:
    """Whether the frame's first update or first trade does not follow on from the book
    and trade seqs a subscriber stands at (None: not known, so not a skip)."""
    update_seen = trade_seen = False
    for message in messages:  # bounded by the frame
        if type(message) is Trade and not trade_seen:
            trade_seen = True
            if trade_seq is not None and message.seq != trade_seq + 1:
                return True
        elif isinstance(message, BookUpdate | Auction) and not update_seen:
            update_seen = True
            if seq is not None and message.seq != seq + 1:
                return True
    return False


class Step:
    """One market-data frame of a chain, as the first of its followers checked it."""

    __slots__ = ("next", "origin", "outcome", "seq", "text", "trade_seq")

    def __init__(
        self, text: str, outcome: Outcome, seq: int | None, trade_seq: int | None,
        origin: str = "",
    ) -> None:  # fmt: skip
        self.text = text
        self.outcome = outcome
        self.origin = origin  # the address its checker read the frame from
        self.seq = seq  # the chain's book's after it (None once the book broke)
        self.trade_seq = trade_seq  # and its trades'
        self.next: Step | None = None


class Chain:
    """Subscribers that started from the same book, following it frame by frame. A frame
    is checked once, on the chain's book, by the follower that gets it first; a follower
    that gets the very same text at the same point takes that outcome. Only the newest
    step is held here: older ones live while a follower still stands on them."""

    def __init__(self, book: LocalBook, start: Step) -> None:
        self.book = book  # as of `last`
        self.last = start

    def extend(self, text: str, messages: Messages, origin: str) -> Step:
        outcome = check(self.book, messages)
        step = Step(text, outcome, self.book.seq, self.book.trade_seq, origin)
        self.last.next = step
        self.last = step
        return step


class Peers:
    """The subscribers of one client process to one symbol. A hundred subscribers get the
    same frames; checking each frame once per chain instead of once per subscriber is
    what lets them fit in a process, while each still checks that every frame it got is
    the one its peers got at the same point, in order. A frame unlike its peers' that
    does not follow on from the subscriber's last seq is its own gap (and never becomes a
    step); one that does follow on counts as a divergence. Either way that subscriber
    resubscribes on its own; when the chain's book itself breaks on a frame some peers
    got, the others leave it quietly and resubscribe."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._joinable: deque[Chain] = deque(maxlen=JOINABLE_CHAINS)

    def join(self, snapshot: "BookSnapshot") -> tuple[Chain, Step, bool]:
        """The chain whose book is this snapshot's (a new one if none is): the chain, the
        step to stand on, and whether the snapshot checked out."""
        bids, asks = dict(snapshot.bids), dict(snapshot.asks)
        for chain in self._joinable:
            book = chain.book
            if (
                book.seq == snapshot.seq and book.trade_seq == snapshot.trade_seq
                and book.bids.qty == bids and book.asks.qty == asks
                and book.checksum() == snapshot.checksum
            ):  # fmt: skip
                return chain, chain.last, True
        book = LocalBook(self.symbol)
        ok = book.on_snapshot(
            snapshot.seq, snapshot.bids, snapshot.asks, snapshot.checksum, snapshot.trade_seq
        )
        chain = Chain(book, Step("", Outcome(ok, 1, 0, int(not ok), {}), book.seq, book.trade_seq))
        if ok:
            self._joinable.append(chain)
        return chain, chain.last, ok


class Feed:
    """One subscriber: its socket, its book, and what it saw (`messages`, `gaps`,
    `bad_checksums`, `divergences`). The symbol subscribed to is the only one it gets, so
    messages carry no symbol worth checking except the snapshot's. With `peers` it
    follows a chain shared with the other subscribers of its process; without, it keeps
    a book of its own. `url` is where it reads from (`open` sets it)."""

    def __init__(
        self, symbol: str, record_lag: LagSink, *, batched: bool = True,
        peers: Peers | None = None, url: str = "",
    ) -> None:  # fmt: skip
        self.book = LocalBook(symbol)  # its own book, when it follows no chain
        self.batched = batched
        self.peers = peers
        self.url = url
        self.messages = 0
        self.gaps = 0
        self.bad_checksums = 0
        self.divergences = 0  # frames unlike those its peers got at the same point
        self.cross_frames = 0  # frames equal to one a peer on another address checked
        self.snapshots = 0
        self.resubscribes = 0
        self._record_lag = record_lag
        self._chain: Chain | None = None
        self._at: Step | None = None  # the last step of the chain it has taken
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._req_ids = 0
        # The close code when the exchange closed this subscriber before the run's end
        # (4008: too slow to read its market data); None while it followed to the end.
        self.closed_with: int | None = None

    async def run(self, url: str, deadline: float) -> None:
        """Subscribe and follow the book until `deadline` (a perf_counter time)."""
        try:
            await self.open(url)
            await self.follow(deadline)
        finally:
            await self.close()

    async def open(self, url: str) -> None:
        """Connect, subscribe and read until the first snapshot (or a close): a run opens
        all its subscribers before its traders start, so they all start from the same
        book, on every gateway, and follow one chain."""
        self.url = url
        self._session = aiohttp.ClientSession()  # its own: a session pools 100 sockets
        self._ws = await connect(self._session, url)
        await self._subscribe(batched=self.batched)
        try:
            async with asyncio.timeout(SNAPSHOT_TIMEOUT_S):
                await self._read(self._ws, until_snapshot=True)
        except TimeoutError:
            raise ProtocolError(f"no snapshot within {SNAPSHOT_TIMEOUT_S} s from {url}") from None

    async def follow(self, deadline: float) -> None:
        """Follow the book until `deadline` (a perf_counter time) or the socket's close."""
        ws = self._ws
        assert ws is not None
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                await self._read(ws)
        except TimeoutError:
            return  # the run is over
        finally:
            self._chain = self._at = None  # its peers' later steps are not its to hold
        self.closed_with = ws.close_code or 1006  # closed before the end of the run

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, *, until_snapshot: bool = False
    ) -> None:
        async for message in ws:  # until the deadline, the socket's close or a snapshot
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            if not self.on_frame(message.data, time.time_ns()):
                await self._resubscribe()
            if until_snapshot and self.snapshots:
                return

    def on_frame(self, data: str, now_ns: int) -> bool:
        """Check and apply one frame received at `now_ns`; False when the book can no
        longer be trusted (a gap, a bad checksum, a divergence from its peers) and must
        be resubscribed."""
        at = self._at
        if at is not None:
            step = at.next
            if step is not None and step.text == data:  # a peer checked it: same outcome
                self._at = step
                if step.origin != self.url:
                    self.cross_frames += 1
                return self._count(step.outcome, now_ns)
        try:
            frame = _decode_frame(data)
        except msgspec.ValidationError:
            answer = _decode_any(data)  # an answer (subscribed, unsubscribed) or an error
            if answer.get("type") in {"error", "rejected"}:
                raise ProtocolError(f"the exchange refused a subscriber: {answer}") from None
            return True
        if isinstance(frame, Heartbeat):
            return True
        if isinstance(frame, BookSnapshot):
            return self._on_snapshot(frame)
        messages = frame.messages if isinstance(frame, Batch) else [frame]
        if at is None:
            return self._count(check(self.book, messages), now_ns)
        step = at.next
        if step is not None and not step.outcome.ok:
            self._distrust()  # the chain's book broke on a frame its peers got, not this
            return False
        if _skips(messages, at.seq, at.trade_seq):
            return self._own_gap(len(messages))  # what alone it would find first
        if step is None:  # the first of the chain here: it checks for all
            assert self._chain is not None
            self._at = self._chain.extend(data, messages, self.url)
            return self._count(self._at.outcome, now_ns)
        self.divergences += 1  # in sequence, but not the frame its peers got
        self._distrust()
        return False

    def _own_gap(self, messages: int) -> bool:
        self.messages += messages
        self.gaps += 1
        self._distrust()
        return False

    def _on_snapshot(self, frame: BookSnapshot) -> bool:
        self.messages += 1
        if frame.symbol != self.book.symbol:
            return True
        self.snapshots += 1
        if self.peers is None:
            ok = self.book.on_snapshot(
                frame.seq, frame.bids, frame.asks, frame.checksum, frame.trade_seq
            )
        else:
            self._chain, self._at, ok = self.peers.join(frame)
        if not ok:
            self.bad_checksums += 1
            self._distrust()
        return ok

    def _count(self, outcome: Outcome, now_ns: int) -> bool:
        self.messages += outcome.messages
        if outcome.lags:
            self._record_lag(now_ns, outcome.lags)
        if outcome.ok:
            return True
        self.gaps += outcome.gaps
        self.bad_checksums += outcome.bad_checksums
        self._distrust()
        return False

    def _distrust(self) -> None:
        """Off any chain, on a book of its own that ignores what comes until the next
        snapshot (the one the resubscription brings)."""
        self._chain = self._at = None
        self.book = LocalBook(self.book.symbol)

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
