"""WebSocket sessions and the hub that routes durable events to them.

A session decodes each frame, turns a valid request into a command and submits it with
itself as the origin. Nothing is answered from the submit: the hub, a listener of the
read model, sees each command only once it is durable, sends the direct answer (with its
req_id) to the session that asked, then every private event to the sessions of the
accounts concerned, then market data to subscribers. So an order's `accepted` always
precedes its fills, and nothing reaches a client before its record is on disk.

Each session sends from a bounded buffer; a client that lets it fill is closed with 4008
and never slows the sequencer or anyone else. The hub writes every session that has
something queued once per loop turn, straight to its socket, in one write: a durable
batch that concerns twelve sessions costs twelve writes and no task switch. Only a
session whose socket is backed up gets a task, which waits for it to drain.
"""

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from exchange.bus import (
    Bus,
    BusyError,
    InvalidCommandError,
    Sequenced,
    SequencerStoppedError,
    UnavailableError,
)
from exchange.domain import commands as cmd
from exchange.domain.codes import RejectCode
from exchange.domain.events import (
    Event,
    OfferingSubscribed,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    Rejected,
    TradeExecuted,
)
from exchange.domain.limits import MAX_ENTITY_ID, MAX_OPEN_ORDERS_PER_ACCOUNT
from exchange.domain.money import MoneyError, parse_cash
from exchange.domain.text import parse_bounded_int
from gateway import audit
from gateway import messages as wire
from gateway import protocol as p
from gateway.auth import bearer, hash_api_key
from gateway.frames import close_frame, drain, text_frames, transport_of
from gateway.limits import (
    MAX_CONNECTIONS,
    PEER_RATE_PER_S,
    RATE_PER_S,
    REFUSAL_WINDOW_S,
    Refusals,
    TokenBucket,
    account_rate,
)
from gateway.readmodel import Published, ReadModel

log = logging.getLogger(__name__)

# A session's send buffer: the contract promises at least 10,000 messages or 4 MiB.
SEND_BUFFER_MESSAGES = 10_000
SEND_BUFFER_BYTES = 4 * 1024 * 1024
CLOSE_AUTH_FAILED = 4001
CLOSE_SLOW_CONSUMER = 4008
CLOSE_RATE_LIMITED = 4029
# After the server's close frame: how long a client has to answer it, and to read what was
# queued before it. A client that does neither is cut off (the socket aborted).
CLOSE_REPLY_TIMEOUT_S = 5.0
CLOSE_LINGER_S = 10.0
# A session closed for its rate (4029) first writes the answer of every request it had
# taken: they come a group commit later (milliseconds). The bound only counts when the
# disk stalls; a request still unanswered then is settled by resending it with its
# client_order_id after reconnecting.
CLOSE_ANSWERS_WAIT_S = 5.0
# While a connection closed for a frame past the size bound is still open for reading:
# how often to look whether the client has closed its end (it has nothing else to tell).
CLOSE_POLL_S = 0.05
# Addresses whose unauthenticated sessions share a rate-limit bucket, at most (a bucket is
# ~100 bytes; past the bound the oldest address's bucket is dropped).
MAX_PEER_BUCKETS = 65_536
# A book snapshot costs one rate-limit token per this many bytes, beyond its request's
# own: about what a kilobyte's encoding and socket write cost against a small request's
# handling. A 30,000-level book (380 KB) is then ~370 tokens: five a second at the
# default 2,000/s, where it was 2,000.
SNAPSHOT_BYTES_PER_TOKEN = 1_024
HEARTBEAT_SECONDS = 1.0
# Frames joined into one socket write; bounds the size of one write (and its latency).
FRAMES_PER_WRITE = 512

_encode = msgspec.json.Encoder().encode
# Public channels in the order a batch's messages go out: its trades, then the book
# update (whose checksum is over the book after them), then the ticker.
_MARKET_DATA_CHANNELS = ("trades", "book", "ticker")


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked: the session and the request's req_id."""

    session: "Session"
    req_id: str | int | None


class Session:
    def __init__(self, ws: web.WebSocketResponse, hub: "Hub") -> None:
        self.ws = ws
        self.hub = hub
        self.account: str | None = None
        self.subscriptions: set[tuple[str, str]] = set()  # (channel, symbol)
        self.closed = False
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._queued = False  # in the hub's list of sessions to write this loop turn
        self._draining: asyncio.Task[None] | None = None  # waiting for a backed-up socket
        # Close once the buffer is sent and every request taken is answered (or the wait
        # for the answers has run out: _answers_timer).
        self._close_after: tuple[int, str] | None = None
        self._answers_timer: asyncio.TimerHandle | None = None
        # Requests handed to the sequencer whose direct answer is not written yet.
        self.outstanding = 0
        self.bucket = TokenBucket(hub.rate_limit, 2 * hub.rate_limit)
        # Shared with the client's other sessions: its account's once authenticated, until
        # then its address's (a reconnect must not bring a fresh burst).
        self.shared_bucket: TokenBucket | None = None
        self.refusals = Refusals()
        self.cancel_on_disconnect = False
        self.placed: set[int] = set()  # orders placed here, for cancel-on-disconnect
        self.batched = False  # market data as one frame a batch and symbol
        # The task reading this client's frames, while it reads: it does the closing.
        self.reader: asyncio.Task[Any] | None = None
        self.closing_with: tuple[int, str] | None = None  # the server's close code, reason
        # For the connection's log lines (gateway/audit.py), set by websocket().
        self.conn_id = 0
        self.peer = ""
        self.opened_at = 0.0
        self.requests = 0  # frames received

    # --- sending --------------------------------------------------------------------------

    def send(self, message: dict[str, Any], req_id: str | int | None = None) -> None:
        if req_id is not None:
            message = {**message, "req_id": req_id}
        self.send_text(_encode(message))

    def send_text(self, text: bytes) -> None:
        """Queue a frame; past the buffer's bound the client is too slow and is closed."""
        if self.closed:
            return
        if len(self._out) >= SEND_BUFFER_MESSAGES or self._out_bytes > SEND_BUFFER_BYTES:
            self.hub.evictions += 1
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer: send buffer full")
            return
        self._out.append(text)
        self._out_bytes += len(text)
        self._write_soon()

    def _write_soon(self) -> None:
        if not self._queued:
            self._queued = True
            self.hub.write_soon(self)

    def write(self) -> None:
        """Write what is queued, FRAMES_PER_WRITE frames a write. If the socket is backed
        up, the rest stays queued (and counted against the buffer's bound) until a task
        has seen it drain."""
        self._queued = False
        if self.closed or self._draining is not None:
            return
        transport = transport_of(self.ws)
        if transport is None:
            self.closed = True  # the connection is going: the reader ends the session
            self._out.clear()
            self._out_bytes = 0
            return
        high = transport.get_write_buffer_limits()[1]
        out = self._out
        while out:  # bounded by the buffer's bound
            if transport.get_write_buffer_size() > high:
                self._draining = asyncio.get_running_loop().create_task(self._drain())
                return
            batch = [out.popleft() for _ in range(min(len(out), FRAMES_PER_WRITE))]
            self._out_bytes -= sum(len(b) for b in batch)
            transport.write(text_frames(batch))
        if self._close_after is not None and self.outstanding <= 0:
            self.close(*self._close_after)

    async def _drain(self) -> None:
        try:
            await drain(self.ws)
        except ConnectionError:
            self.closed = True
        finally:
            self._draining = None
        self.write()

    def close_after_sending(self, code: int, reason: str) -> None:
        """Close once what is queued (an error explaining why) has been sent, and the
        answer of every request already taken with it (at most CLOSE_ANSWERS_WAIT_S).
        Nothing more is executed meanwhile; the account's private events still come (the
        fills of the orders being answered), market data no longer does."""
        if self._close_after is not None or self.closed:
            return
        self._close_after = (code, reason)
        self.hub.unsubscribe_all(self)  # still counted until the socket closes
        if self.outstanding > 0:
            loop = asyncio.get_running_loop()
            self._answers_timer = loop.call_later(CLOSE_ANSWERS_WAIT_S, self._stop_waiting)
        self._write_soon()

    def _stop_waiting(self) -> None:
        """The answers did not all come in time: close after what is queued."""
        self._answers_timer = None
        self.outstanding = 0
        self._write_soon()

    def answered(self) -> None:
        """A request taken from this session has had its direct answer queued."""
        self.outstanding -= 1
        if self.outstanding <= 0 and self._close_after is not None:
            self._write_soon()  # the close was waiting for this answer

    def ended(self) -> None:
        """The connection is gone or going: no more writes, no timers left behind."""
        self.closed = True
        if self._answers_timer is not None:
            self._answers_timer.cancel()
            self._answers_timer = None
        if self._draining is not None:
            self._draining.cancel()

    def close(self, code: int, reason: str) -> None:
        """Close now, dropping what is queued (a slow consumer would never read it)."""
        if self.closed:
            return
        self.ended()
        self._out.clear()  # a closed session keeps no buffer
        self._out_bytes = 0
        self.hub.forget(self)
        # The reader closes (websocket() after _read_frames): aiohttp's close() from
        # another task, while the reader waits for a frame, shuts the socket at once, and
        # frames the client still sends then make the kernel reset the connection,
        # dropping the close frame it has not read. From the reader, close() reads on
        # (ignoring what comes) until the client's close reply, or its timeout.
        self.closing_with = (code, reason)
        reader = self.reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()  # out of its wait for a frame
        # From inside the reader (a request's answer overflowed the buffer), the reader
        # sees `closing_with` once this frame is handled.

    # --- receiving ------------------------------------------------------------------------

    def receive(self, frame: str) -> None:
        """A text frame from the client."""
        self.requests += 1
        try:
            self.handle(frame)
        except Exception:  # a bug of ours: this client is cut off, the others go on
            log.exception("session of %s failed on a frame", self.account)
            self.close(WSCloseCode.INTERNAL_ERROR, "internal error")

    def handle(self, frame: str) -> None:
        if self._close_after is not None or self.closed:
            return  # being closed: nothing more is done (or answered) for this client
        if not self.within_rate():
            self.hub.rate_limited += 1
            self.refuse(p.req_id_of(frame), RejectCode.RATE_LIMITED, "slow down")
            self.refusals.note()
            if self.refusals.abusive:
                self.close_after_sending(CLOSE_RATE_LIMITED, "rate limit exceeded repeatedly")
            return
        try:
            request = p.decode_request(frame)
        except msgspec.DecodeError as problem:
            self._refuse_frame(frame, problem)
            return
        handler = _HANDLERS[type(request)]
        handler(self, request)

    def within_rate(self, cost: float = 1.0) -> bool:
        """Takes `cost` tokens from the connection's bucket and, once authenticated, from
        the account's (a request refused by the account's still spent the connection's)."""
        if not self.bucket.take(cost):
            return False
        shared = self.shared_bucket
        return shared is None or shared.take(cost)

    def _refuse_frame(self, frame: str, problem: msgspec.DecodeError) -> None:
        req_id = p.req_id_of(frame)
        code = p.code_for(problem)
        message = p.describe(problem)
        self.hub.count_reject(code)
        if code == RejectCode.BAD_REQUEST:
            self.send(wire.error(code, message), req_id)
        else:
            self.send({"type": "rejected", "code": code, "message": message}, req_id)

    def refuse(self, req_id: str | int | None, code: str, message: str, cid: str = "") -> None:
        self.hub.count_reject(code)
        self.send(
            {"type": "rejected", "code": code, "message": message, "client_order_id": cid},
            req_id,
        )

    def submit(self, command: cmd.Command, req_id: str | int | None, cid: str = "") -> None:
        try:
            self.hub.sequencer.post(command, Origin(self, req_id))
        except InvalidCommandError as problem:
            self.refuse(req_id, RejectCode.BAD_REQUEST, str(problem), cid)
            return
        except BusyError:
            self.refuse(req_id, RejectCode.BUSY, "the exchange is busy; retry", cid)
            return
        except SequencerStoppedError:
            self.refuse(req_id, RejectCode.BUSY, "the exchange is shutting down", cid)
            return
        self.outstanding += 1  # answered from Hub.on_durable (or Hub._refused)

    def authed(self, req_id: str | int | None, cid: str = "") -> str | None:
        if self.account is None:
            self.refuse(req_id, RejectCode.NOT_AUTHENTICATED, "send auth first", cid)
        return self.account


# --- request handlers ----------------------------------------------------------------------


def _auth(s: Session, r: p.Auth) -> None:
    account = s.hub.read.accounts_by_key.get(hash_api_key(r.api_key))
    if s.account is not None and account != s.account:
        # Answers in flight belong to the first account: a session never changes hands.
        s.hub.count_reject(RejectCode.BAD_REQUEST)
        s.send(
            wire.error(RejectCode.BAD_REQUEST, f"already authenticated as {s.account}"), r.req_id
        )
        return
    if account is None:
        s.hub.count_reject(RejectCode.AUTH_FAILED)
        s.hub.auth_failures.failed("ws_auth", s.peer, r.api_key, s.conn_id)
        s.send(wire.error(RejectCode.AUTH_FAILED, "unknown API key"), r.req_id)
        s.close_after_sending(CLOSE_AUTH_FAILED, "authentication failed")
        return
    s.hub.attach(s, account)
    s.cancel_on_disconnect = r.cancel_on_disconnect
    s.send({"type": "authenticated", "account": account}, r.req_id)


def _place(s: Session, r: p.Place) -> None:
    account = s.authed(r.req_id, r.client_order_id)
    if account is None:
        return
    if r.symbol not in s.hub.read.instruments:
        s.refuse(r.req_id, RejectCode.UNKNOWN_SYMBOL, "no such instrument", r.client_order_id)
        return
    try:
        price = 0 if r.price is None else s.hub.read.ticks(r.symbol, r.price)
        max_notional = 0 if r.max_notional is None else parse_cash(r.max_notional)
    except MoneyError as problem:
        s.refuse(r.req_id, problem.code, str(problem), r.client_order_id)
        return
    if r.type in ("limit", "stop_limit") and r.price is None:
        s.refuse(r.req_id, RejectCode.BAD_PRICE, f"a {r.type} order needs a price",
                 r.client_order_id)  # fmt: skip
        return
    try:  # a trigger that is no price of this instrument (off tick, malformed) is BAD_TRIGGER
        trigger = 0 if r.trigger_price is None else s.hub.read.ticks(r.symbol, r.trigger_price)
    except MoneyError as problem:
        s.refuse(r.req_id, RejectCode.BAD_TRIGGER, f"trigger_price: {problem}", r.client_order_id)
        return
    command = cmd.PlaceOrder(
        account=account, client_order_id=r.client_order_id, symbol=r.symbol, side=r.side,
        type=r.type, price=price, qty=r.qty, tif=r.tif, post_only=r.post_only, stp=r.stp,
        max_notional=max_notional, expire_at=r.expire_at or 0, trigger_price=trigger,
        display_qty=r.display_qty or 0,
    )  # fmt: skip
    s.submit(command, r.req_id, r.client_order_id)


def _order_id(text: str | None) -> int | None:
    """An order or offering id as the int it names; None for text that names none."""
    return None if text is None else parse_bounded_int(text, 0, MAX_ENTITY_ID)


def _cancel(s: Session, r: p.Cancel) -> None:
    account = s.authed(r.req_id)
    if account is None:
        return
    order_id = _order_id(r.order_id)
    if r.order_id is not None and order_id is None:
        s.refuse(r.req_id, RejectCode.UNKNOWN_ORDER, "no such open order")
        return
    s.submit(
        cmd.CancelOrder(
            account=account, order_id=order_id or 0, client_order_id=r.client_order_id or ""
        ),
        r.req_id,
    )


def _cancel_all(s: Session, r: p.CancelAll) -> None:
    account = s.authed(r.req_id)
    if account is not None:
        s.submit(cmd.CancelAll(account=account, symbol=r.symbol or ""), r.req_id)


def _replace(s: Session, r: p.Replace) -> None:
    account = s.authed(r.req_id)
    if account is None:
        return
    order_id = _order_id(r.order_id)
    order = s.hub.read.open_order(account, order_id) if order_id is not None else None
    if order is None or order_id is None:
        s.refuse(r.req_id, RejectCode.UNKNOWN_ORDER, "no such open order")
        return
    try:
        price = 0 if r.price is None else s.hub.read.ticks(order.symbol, r.price)
    except MoneyError as problem:
        s.refuse(r.req_id, problem.code, str(problem))
        return
    command = cmd.ReplaceOrder(account=account, order_id=order_id, qty=r.qty or 0, price=price)
    s.submit(command, r.req_id)


def _subscribe_offering(s: Session, r: p.SubscribeOffering) -> None:
    account = s.authed(r.req_id)
    if account is None:
        return
    offering_id = _order_id(r.offering_id)
    if offering_id is None:
        s.refuse(r.req_id, RejectCode.UNKNOWN_OFFERING, "no such offering")
        return
    command = cmd.SubscribeOffering(account=account, offering_id=offering_id, qty=r.qty)
    s.submit(command, r.req_id)


def _subscribe(s: Session, r: p.Subscribe) -> None:
    instruments = s.hub.read.instruments
    unknown = [symbol for symbol in r.symbols if symbol not in instruments]
    if unknown:
        s.refuse(r.req_id, RejectCode.UNKNOWN_SYMBOL, f"no such instrument: {unknown[0]}")
        return
    channels, symbols = list(dict.fromkeys(r.channels)), list(dict.fromkeys(r.symbols))
    book = "book" in channels
    snapshots = {symbol: s.hub.book_snapshot_frame(symbol) for symbol in symbols} if book else {}
    # A snapshot costs its size in tokens (beyond the request's own): a client may
    # re-subscribe to a deep book a few times a second, not thousands.
    cost = sum(len(frame) // SNAPSHOT_BYTES_PER_TOKEN for frame in snapshots.values())
    if cost and not s.within_rate(cost):
        s.hub.rate_limited += 1
        s.refuse(r.req_id, RejectCode.RATE_LIMITED, "snapshots of this size: slow down")
        return
    s.batched = s.batched or r.batched
    answer = {"type": "subscribed", "channels": channels, "symbols": symbols}
    s.send(answer | {"batched": True} if s.batched else answer, r.req_id)
    for symbol in symbols:
        for channel in channels:
            if s.closed:
                return  # a snapshot overflowed its buffer: the session is gone
            s.hub.subscribe(s, channel, symbol)
            if channel == "book":
                s.send_text(snapshots[symbol])
            elif channel == "ticker":
                s.send(s.hub.ticker(symbol))


def _unsubscribe(s: Session, r: p.Unsubscribe) -> None:
    for symbol in r.symbols:
        for channel in r.channels:
            s.hub.unsubscribe(s, channel, symbol)
    s.send({"type": "unsubscribed", "channels": r.channels, "symbols": r.symbols}, r.req_id)


def _ping(s: Session, r: p.Ping) -> None:
    s.send({"type": "pong"}, r.req_id)


_HANDLERS: dict[type[Any], Any] = {
    p.Auth: _auth,
    p.Place: _place,
    p.Cancel: _cancel,
    p.CancelAll: _cancel_all,
    p.Replace: _replace,
    p.SubscribeOffering: _subscribe_offering,
    p.Subscribe: _subscribe,
    p.Unsubscribe: _unsubscribe,
    p.Ping: _ping,
}


# --- the hub -------------------------------------------------------------------------------


class Hub:
    """Sessions by account and by subscription; turns durable events into messages."""

    def __init__(
        self,
        sequencer: Bus,
        read: ReadModel,
        max_connections: int = MAX_CONNECTIONS,
        rate_limit: float = RATE_PER_S,
        account_rate_limit: float | None = None,
    ) -> None:
        self.sequencer = sequencer
        self.read = read
        self.max_connections = max_connections
        self.rate_limit = rate_limit
        self.account_rate_limit = account_rate(rate_limit, account_rate_limit)
        # One bucket per account that has authenticated a session (bounded by the
        # accounts); kept when its sessions go, so reconnecting gives no fresh burst.
        self.account_buckets: dict[str, TokenBucket] = {}
        # Per address with unauthenticated sessions (at most MAX_PEER_BUCKETS): the bucket
        # and the refusal count they share.
        self.peers: dict[str, tuple[TokenBucket, Refusals]] = {}
        self.peer_rate_limit = max(PEER_RATE_PER_S, rate_limit)
        self.by_account: dict[str, set[Session]] = {}
        self.subscribers: dict[tuple[str, str], set[Session]] = {}
        self.sessions: set[Session] = set()
        self._to_write: list[Session] = []  # sessions with frames queued this loop turn
        self.evictions = 0
        self.rate_limited = 0
        # Refusals the gateway answered itself, by code (/metrics: plain counts, no label
        # lookup per refusal); the sequencer's rejects are counted from the durable stream.
        self.rejects: dict[str, int] = {}
        self.conn_ids = itertools.count(1)  # connection ids of the log lines
        self.auth_failures = audit.AuthFailures()
        # Each symbol's book snapshot, encoded, with the (book seq, trade seq) it shows:
        # rebuilt at most once per durable batch that changed the book, however many
        # subscribe (one per instrument: bounded by the instruments).
        self._snapshots: dict[str, tuple[tuple[int, int, str], bytes]] = {}
        self.snapshots_built = 0
        read.listen(self.on_durable)
        read.listen_market_data(self.publish)
        sequencer.on_refused = self._refused

    def _refused(self, origin: object, reason: Exception) -> None:
        """A command taken from a client and then refused: the sequencer stopped or failed
        before it was durable, so it may or may not be in the journal."""
        if isinstance(origin, Origin):
            code, message = refusal_of(reason)
            self.count_reject(code)
            origin.session.send(wire.error(code, message), origin.req_id)
            origin.session.answered()

    def count_reject(self, code: str) -> None:
        self.rejects[code] = self.rejects.get(code, 0) + 1

    def write_soon(self, session: Session) -> None:
        """Write the session at the end of this loop turn, with all else queued by then
        (each session is listed once: bounded by the sessions)."""
        if not self._to_write:
            asyncio.get_running_loop().call_soon(self._write_all)
        self._to_write.append(session)

    def _write_all(self) -> None:
        sessions, self._to_write = self._to_write, []
        for session in sessions:
            session.write()

    def attach(self, session: Session, account: str) -> None:
        if session.account is not None:
            self.by_account.get(session.account, set()).discard(session)
        session.account = account
        self.by_account.setdefault(account, set()).add(session)
        bucket = self.account_buckets.get(account)
        if bucket is None:
            rate = self.account_rate_limit
            bucket = self.account_buckets[account] = TokenBucket(rate, 2 * rate)
        session.shared_bucket = bucket
        session.refusals = Refusals()  # its own from now on, as its account's bucket

    def peer_abusive(self, peer: str | None) -> bool:
        """Whether the address's unauthenticated sessions were refused past the bound within
        the current window (a new connection from it is then refused at once)."""
        shared = self.peers.get(peer) if peer is not None else None
        return shared is not None and shared[1].abusive

    def join_peer(self, session: Session, peer: str | None) -> None:
        """Tie an unauthenticated session to its address's bucket and refusal count: they
        are anonymous, so the address is all that ties a reconnecting client to its past
        (a fresh burst, and a thousand refusals more before its next 4029, each time)."""
        if peer is None:
            return
        shared = self.peers.get(peer)
        if shared is None:
            if len(self.peers) >= MAX_PEER_BUCKETS:
                # The oldest address's goes: bounded memory, at worst a fresh burst for it.
                del self.peers[next(iter(self.peers))]
            rate = self.peer_rate_limit
            shared = self.peers[peer] = (TokenBucket(rate, 2 * rate), Refusals())
        session.shared_bucket, session.refusals = shared

    def subscribe(self, session: Session, channel: str, symbol: str) -> None:
        if session.closed or session._close_after is not None:
            return
        session.subscriptions.add((channel, symbol))
        self.subscribers.setdefault((channel, symbol), set()).add(session)

    def unsubscribe(self, session: Session, channel: str, symbol: str) -> None:
        session.subscriptions.discard((channel, symbol))
        self.subscribers.get((channel, symbol), set()).discard(session)

    def detach(self, session: Session) -> None:
        """Stop routing anything to the session (it is being closed)."""
        if session.account is not None:
            self.by_account.get(session.account, set()).discard(session)
        self.unsubscribe_all(session)

    def unsubscribe_all(self, session: Session) -> None:
        """No more market data for the session."""
        for key in session.subscriptions:
            self.subscribers.get(key, set()).discard(session)

    def forget(self, session: Session) -> None:
        """The session is gone: cancel its orders if it asked, stop routing, uncount it."""
        if session in self.sessions and session.cancel_on_disconnect:
            self._cancel_placed(session)
        self.sessions.discard(session)
        self.detach(session)

    def _cancel_placed(self, session: Session) -> None:
        """Cancel-on-disconnect: every order this session placed that is still open."""
        account = session.account
        if account is None:
            return
        for order_id in sorted(session.placed):  # bounded by the account's open orders
            if self.read.open_order(account, order_id) is not None:
                with contextlib.suppress(BusyError, SequencerStoppedError):
                    self.sequencer.post(cmd.CancelOrder(account=account, order_id=order_id), None)
        session.placed.clear()

    # --- market data views ----------------------------------------------------------------

    def book_snapshot_frame(self, symbol: str) -> bytes:
        """The encoded book snapshot, shared by every subscriber until the book changes:
        re-sending `subscribe` to a deep book used to rebuild it each time (380 KB for
        30,000 levels), and a flood of those starved every other client."""
        tape = self.read.tapes[symbol]
        shows = (tape.book_seq, tape.trade_seq, self.read.instruments[symbol].status)
        cached = self._snapshots.get(symbol)
        if cached is None or cached[0] != shows:
            cached = (shows, _encode(self.book_snapshot(symbol)))
            self._snapshots[symbol] = cached
            self.snapshots_built += 1
        return cached[1]

    def book_snapshot(self, symbol: str) -> dict[str, Any]:
        bids, asks = self.read.full_book(symbol)
        instrument = self.read.instruments[symbol]
        auction = None  # in a call auction: where it would uncross now
        if instrument.indicative is not None:
            auction = wire.auction(instrument.indicative, 0, self.read.price)
            del auction["type"], auction["symbol"], auction["seq"]
        price = self.read.price
        return {
            "type": "book_snapshot",
            "symbol": symbol,
            "seq": self.read.tapes[symbol].book_seq,
            "trade_seq": self.read.tapes[symbol].trade_seq,
            "bids": [[price(symbol, p), q] for p, q in bids],
            "asks": [[price(symbol, p), q] for p, q in asks],
            "checksum": self.read.checksum(symbol),
            "status": instrument.status,
            "auction": auction,
        }

    def ticker(self, symbol: str) -> dict[str, Any]:
        bids, asks = self.read.book(symbol, 1)
        tape = self.read.tapes[symbol]
        price = self.read.price
        return {
            "type": "ticker",
            "symbol": symbol,
            "seq": tape.book_seq,
            "best_bid": price(symbol, bids[0][0]) if bids else None,
            "best_ask": price(symbol, asks[0][0]) if asks else None,
            "last": price(symbol, tape.last) if tape.last is not None else None,
            "volume": tape.volume,
        }

    def _seqs(self, symbol: str) -> dict[str, int]:
        tape = self.read.tapes[symbol]
        return {"book": tape.book_seq, "trades": tape.trade_seq}

    async def heartbeat_loop(self) -> None:
        while True:  # until the app's cleanup cancels it
            await asyncio.sleep(HEARTBEAT_SECONDS)
            for session in list(self.sessions):
                symbols = {symbol for _, symbol in session.subscriptions}
                if symbols:
                    seqs = {symbol: self._seqs(symbol) for symbol in sorted(symbols)}
                    session.send({"type": "heartbeat", "seqs": seqs})

    # --- durable events -------------------------------------------------------------------

    def on_durable(self, sequenced: Sequenced) -> None:
        origin = sequenced.origin if isinstance(sequenced.origin, Origin) else None
        answered = self._answer(origin, sequenced) if origin is not None else None
        asker = origin.session if origin is not None else None
        # Every private message the events make, built only if one of the account's
        # sessions is there to receive it (and encoded once for all of them); the event
        # answered directly is not sent again to the session that asked. The read state
        # has applied this record: its fills (maker then taker, trade by
        # trade) carry each order's client order id, side and totals after the fill.
        read = self.read
        price, fills, orders, n = read.price, read.state.record_fills, read.state.record_orders, 0
        for event in sequenced.events:
            kind = type(event)
            if kind is TradeExecuted:
                trade: TradeExecuted = event  # type: ignore[assignment]
                for fill, account in (
                    (fills[n], trade.maker_account),
                    (fills[n + 1], trade.taker_account),
                ):
                    to = self._recipients(account, asker, answered=False)
                    if to:
                        _send_all(to, _encode(wire.fill(fill, read)))
                        if fill.remaining == 0:
                            done = wire.done(fill.order_id, fill.client_order_id, "filled")
                            _send_all(to, _encode(done))
                n += 2
            elif kind is OrderAccepted:
                accepted: OrderAccepted = event  # type: ignore[assignment]
                if accepted.resent:
                    continue  # a resend changes nothing: only its sender hears of it
                self._tell_account(accepted.account, asker, event is answered, wire.accepted,
                                   accepted, read, orders.get(accepted.order_id))  # fmt: skip
            elif kind is OrderCancelled:
                cancelled: OrderCancelled = event  # type: ignore[assignment]
                self._tell_account(cancelled.account, asker, event is answered,
                                   wire.cancelled, cancelled)  # fmt: skip
            elif kind is OrderReplaced:
                replaced: OrderReplaced = event  # type: ignore[assignment]
                self._tell_account(replaced.account, asker, event is answered,
                                   wire.replaced, replaced, price)  # fmt: skip
            elif kind is OrderTriggered:
                triggered: OrderTriggered = event  # type: ignore[assignment]
                self._tell_account(triggered.account, asker, False, wire.triggered,
                                   triggered, price)  # fmt: skip

    def _tell_account(
        self, account: str, asker: "Session | None", answered: bool,
        make: Callable[..., dict[str, Any]], *args: Any,
    ) -> None:  # fmt: skip
        """`make(*args)`, built only if a session of `account` is there to receive it, and
        encoded once for all of them."""
        to = self._recipients(account, asker, answered=answered)
        if to:
            _send_all(to, _encode(make(*args)))

    def _recipients(
        self, account: str, asker: "Session | None", *, answered: bool
    ) -> list[Session]:
        """The account's sessions to tell, as a list (sending may evict a slow one, which
        leaves the set); not the one that asked, if it had this event as its answer."""
        sessions = self.by_account.get(account)
        if not sessions:
            return []
        return [s for s in sessions if s is not asker] if answered else list(sessions)

    def _answer(self, origin: Origin, sequenced: Sequenced) -> Event | None:
        """Send the direct answer; returns the event it stood for (not sent again)."""
        session, req_id = origin.session, origin.req_id
        try:
            return self._send_answer(session, req_id, sequenced)
        finally:
            session.answered()

    def _send_answer(
        self, session: Session, req_id: str | int | None, sequenced: Sequenced
    ) -> Event | None:
        command, events = sequenced.command, sequenced.events
        first = events[0] if events else None
        if isinstance(first, OrderRejected | Rejected):
            session.send(wire.rejected(first, getattr(command, "client_order_id", "")), req_id)
            return first
        if isinstance(command, cmd.CancelAll):
            count = sum(isinstance(e, OrderCancelled) for e in events)
            session.send({"type": "cancelled_all", "count": count}, req_id)
            return None
        if isinstance(first, OrderAccepted):
            after = self.read.state.record_orders.get(first.order_id)
            session.send(wire.accepted(first, self.read, after), req_id)
            if session.cancel_on_disconnect and (after or first).status == "open":
                session.placed.add(first.order_id)
                if len(session.placed) > 2 * MAX_OPEN_ORDERS_PER_ACCOUNT:
                    account = session.account or ""
                    session.placed = {
                        i for i in session.placed if self.read.open_order(account, i) is not None
                    }
        elif isinstance(first, OrderCancelled):
            session.send(wire.cancelled(first), req_id)
        elif isinstance(first, OrderReplaced):
            session.send(wire.replaced(first, self.read.price), req_id)
        elif isinstance(first, OfferingSubscribed):
            message = {
                "type": "offering_subscribed",
                "offering_id": str(first.offering_id),
                "qty": first.qty,
                "total": first.total,
            }
            session.send(message, req_id)
        return first

    def publish(self, published: Published) -> None:
        """A durable batch's market data to the subscribers of each channel: a frame a
        message, or to batched sessions one frame a symbol with the messages of the
        channels they chose. Every message is encoded once, whoever receives it."""
        read = self.read
        changed = (
            published.trades.keys() | published.levels.keys() | published.statuses.keys()
            | published.auctions.keys()
        )  # fmt: skip
        for symbol in changed:
            trades = published.trades.get(symbol, [])
            levels = published.levels.get(symbol, [])
            auction = published.auctions.get(symbol)
            tape = read.tapes[symbol]
            trade_seq = tape.trade_seq - len(trades)
            texts: dict[str, list[bytes]] = {"trades": [], "book": [], "ticker": []}
            wanted = {c for c in texts if self.subscribers.get((c, symbol))}
            if not wanted:
                continue
            if "trades" in wanted:
                for n, trade in enumerate(trades, start=1):
                    texts["trades"].append(_encode(wire.trade(trade, trade_seq + n, read.price)))
            if levels and "book" in wanted:
                update = {
                    "type": "book_update",
                    "symbol": symbol,
                    "seq": tape.book_seq - (1 if auction is not None else 0),
                    "changes": [[side, read.price(symbol, p), q] for side, p, q in levels],
                    "checksum": read.checksum(symbol),
                }
                texts["book"].append(_encode(update))
            if "book" in wanted:
                for change in published.statuses.get(symbol, ()):
                    texts["book"].append(_encode(wire.status(change, tape.book_seq)))
                if auction is not None:
                    texts["book"].append(_encode(wire.auction(auction, tape.book_seq, read.price)))
            if "ticker" in wanted and (trades or levels):
                texts["ticker"].append(_encode(self.ticker(symbol)))
            self._deliver(symbol, texts)

    def _deliver(self, symbol: str, texts: dict[str, list[bytes]]) -> None:
        batched: dict[Session, list[str]] = {}
        for channel in _MARKET_DATA_CHANNELS:  # trades before the update, ticker last
            sessions = self.subscribers.get((channel, symbol))
            if not sessions or not texts[channel]:
                continue
            for session in tuple(sessions):  # a copy: a send may evict the session
                if session.batched:
                    batched.setdefault(session, []).append(channel)
                else:
                    for text in texts[channel]:
                        session.send_text(text)
        frames: dict[tuple[str, ...], bytes] = {}  # one encoding per choice of channels
        for session, channels in batched.items():
            key = tuple(channels)
            frame = frames.get(key)
            if frame is None:
                parts = [text for channel in key for text in texts[channel]]
                frame = frames[key] = (
                    b'{"type":"batch","symbol":' + _encode(symbol)
                    + b',"messages":[' + b",".join(parts) + b"]}"
                )  # fmt: skip
            session.send_text(frame)


class ExchangeWebSocket(web.WebSocketResponse):
    """aiohttp's WebSocketResponse, with a clean close for a frame past max_msg_size and
    for a slow consumer.

    aiohttp answers such a frame with a 1009 close frame and closes the socket at once,
    while the rest of the frame (and whatever follows) is still arriving: the kernel then
    resets the connection, and the reset drops the close frame before the client reads
    it (it sees 1006). A slow consumer (4008) has megabytes queued before the close frame,
    and aiohttp's close waits CLOSE_REPLY_TIMEOUT_S for its reply, then cuts the socket:
    a consumer slow enough to be evicted may well not have read to the close frame by
    then (1006 again, seen on a loaded machine). Here the close frame is followed by a FIN
    instead, the socket stays open for reading (what comes is not acted on) until the
    client closes its end, or CLOSE_LINGER_S passes and the socket is aborted. It
    overrides close(), which aiohttp's receive() calls with 1009 on that frame; the test
    of it (tests/test_ws_close.py) fails should aiohttp change that path.
    """

    _transport: asyncio.Transport | None = None
    output_ended = False  # its FIN is written: nothing more may be sent (frames.transport_of)
    # The code of the close frame sent here; close_code ends up 1006 (the socket is gone
    # by the time aiohttp's close runs).
    sent_close_code: int | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter:
        self._transport = request.transport
        return await super().prepare(request)

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        transport = self._transport
        if (
            code not in FIN_FIRST_CLOSES
            or self.closed
            or transport is None
            or transport.is_closing()
            or not transport.can_write_eof()
        ):
            return await super().close(code=code, message=message, drain=drain)
        transport.write(close_frame(code, message))
        self.output_ended, self.sent_close_code = True, code
        transport.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_LINGER_S):
                while not transport.is_closing():  # bounded by the timeout
                    await asyncio.sleep(CLOSE_POLL_S)
        if not transport.is_closing():
            transport.abort()
        # aiohttp's own bookkeeping (closed, heartbeat stopped); the socket is gone, so
        # its close frame goes nowhere.
        await super().close(code=code, message=message, drain=False)
        return True


# Closes written with a FIN right after the close frame (ExchangeWebSocket.close).
FIN_FIRST_CLOSES = frozenset({WSCloseCode.MESSAGE_TOO_BIG, CLOSE_SLOW_CONSUMER})


def refusal_of(reason: Exception) -> tuple[str, str]:
    """The code and words for a command the bus took and then refused."""
    if isinstance(reason, UnavailableError):
        return RejectCode.UNAVAILABLE, (
            "no answer from the exchange in time; the outcome is unknown: resend with the "
            "same client_order_id"
        )
    if isinstance(reason, BusyError):
        return RejectCode.BUSY, "the exchange is busy; retry"
    if isinstance(reason, InvalidCommandError):
        return RejectCode.BAD_REQUEST, str(reason)
    return RejectCode.BUSY, "the exchange stopped; the outcome is unknown: resend after it restarts"


def _send_all(sessions: list[Session], text: bytes) -> None:
    for session in sessions:
        session.send_text(text)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    hub: Hub = request.app["hub"]
    dialect = request.app.get("binance")  # the Binance dialect's sockets count too
    others = len(dialect.sockets) if dialect is not None else 0
    if len(hub.sessions) + others >= hub.max_connections:
        body = _encode({"code": RejectCode.BUSY, "message": "too many connections"})
        raise web.HTTPServiceUnavailable(body=body, content_type="application/json")
    token = bearer(request.headers.get("Authorization"))
    if not token and hub.peer_abusive(request.remote):
        # Its last connection was closed 4029 within the refusal window: no new session
        # (and no new burst) until the window has passed; a 429 costs far less.
        body = _encode({"code": RejectCode.RATE_LIMITED, "message": "rate limit exceeded "
                        "repeatedly from this address; retry later"})  # fmt: skip
        headers = {"Retry-After": str(int(REFUSAL_WINDOW_S))}
        raise web.HTTPTooManyRequests(body=body, content_type="application/json", headers=headers)
    ws = ExchangeWebSocket(
        max_msg_size=p.MAX_FRAME_BYTES, heartbeat=30.0, timeout=CLOSE_REPLY_TIMEOUT_S
    )
    await ws.prepare(request)
    session = Session(ws, hub)
    session.conn_id, session.peer = next(hub.conn_ids), audit.peer_of(request)
    session.opened_at = time.monotonic()
    hub.join_peer(session, request.remote)
    hub.sessions.add(session)
    if token:
        account = hub.read.accounts_by_key.get(hash_api_key(token))
        if account is None:
            # The failure's line (bounded) is this connection's only one: a flood of bad
            # keys adds no open and close lines.
            hub.count_reject(RejectCode.AUTH_FAILED)
            hub.auth_failures.failed("ws_header", session.peer, token, session.conn_id)
            await ws.close(code=CLOSE_AUTH_FAILED, message=b"authentication failed")
            hub.forget(session)
            return ws
        hub.attach(session, account)
        session.cancel_on_disconnect = request.query.get("cancel_on_disconnect") in {"1", "true"}
    audit.connection_opened(session.conn_id, session.peer, session.account)
    try:
        await _read_frames(ws, session)
    finally:
        session.ended()
        hub.forget(session)
    try:
        if session.closing_with is not None:
            await close_within_linger(ws, *session.closing_with)
        elif ws.close_code is None:
            await close_within_linger(ws, WSCloseCode.GOING_AWAY, "")
    finally:
        code, reason = session.closing_with or (ws.sent_close_code or ws.close_code, "")
        audit.connection_closed(
            session.conn_id, session.peer, session.account, code, reason,
            time.monotonic() - session.opened_at, session.requests,
        )  # fmt: skip
    return ws


async def close_within_linger(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Send the close frame after what is queued, read on (ignoring it) until the
    client's reply, then close the socket; past CLOSE_LINGER_S, abort it."""
    writer = ws._writer  # aiohttp gives no public way to the socket
    transport = writer.transport if writer is not None else None
    try:
        async with asyncio.timeout(CLOSE_LINGER_S):
            await ws.close(code=code, message=reason.encode())
    except TimeoutError:
        pass
    # Past its reply timeout aiohttp closes the socket after its buffer: a client that
    # reads nothing would hold it open for ever.
    if transport is not None and (not transport.is_closing() or transport.get_write_buffer_size()):
        transport.abort()


async def _read_frames(ws: web.WebSocketResponse, session: Session) -> None:
    """Hand each frame to the session until the client closes, or the session is closed
    by the server (`Session.close` cancels this reader, or, when called from it, leaves
    `closing_with` for it to see)."""
    task = asyncio.current_task()
    assert task is not None
    session.reader = task
    try:
        async for message in ws:  # ends when the client or the server closes
            if message.type == WSMsgType.TEXT:
                session.receive(message.data)
            elif message.type == WSMsgType.BINARY:
                session.hub.count_reject(RejectCode.BAD_REQUEST)
                session.send(wire.error(RejectCode.BAD_REQUEST, "send text frames of JSON"))
            elif message.type == WSMsgType.ERROR:
                break
            if session.closing_with is not None:
                break  # closed by the server while handling this frame
    except asyncio.CancelledError:
        # Only the session's own cancel is taken back; any other (the server stopping)
        # goes on.
        if session.closing_with is None or task.cancelling() > 1:
            raise
        task.uncancel()
    finally:
        session.reader = None
