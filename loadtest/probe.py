"""The clients of `loadtest.bench_failover`'s kill loop: connections that send orders at a
steady rate through the gateways and keep every answer with its times.

Open loop on purpose: a client that waits for answers before sending (closed loop) would
sit with every slot taken by orders the dead leader never saw until the gateway answers
them `UNAVAILABLE` (5 s), whatever the takeover took; sent at a steady rate, the first
orders after the takeover are answered as soon as the new leader takes commands. Each
order is resent with its `client_order_id` while it is answered `UNAVAILABLE` or `BUSY`
(docs/PROTOCOL.md), before any new order. A seller rests GTC sells at one price and a
buyer takes them with IOC buys of twice the size, so the book stays small however long
the loop runs.
"""

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
import msgspec

from gateway.client import Admin
from loadtest.takeover import ACCEPTED, Answer
from loadtest.trader import connect

# Orders a connection may await at once: a takeover leaves about 5 s of them unanswered
# (the gateway's UNAVAILABLE bound) before they come back to be resent, so this is
# room for that at up to ~800 orders/s a connection; past it the sender holds back
# (counted) rather than grow without bound.
MAX_IN_FLIGHT = 4_096
# Answers kept per connection (about 40 bytes each): a kill loop of 20 kills at the
# default rate keeps under a tenth of it; past it answers are counted, not kept.
MAX_ANSWERS = 1_000_000
# The sender's pace: it wakes this often and sends what the rate owes since last time,
# so the clock's resolution costs nothing at a few hundred orders a second.
SEND_TICK_S = 0.005
# Codes after which the same order is resent (its outcome is unknown, or it was not taken).
RESEND_CODES = ("UNAVAILABLE", "BUSY")
PRICE = "5.00"
# Units the seller holds and the buyer's cash: far past what a bounded run trades.
SELLER_UNITS = 100_000_000
BUYER_CASH = "1000000000.00"
# A gateway shows the set-up within this (it follows the stream).
CATCH_UP_S = 30.0
CATCH_UP_POLL_S = 0.05


class _Reply(msgspec.Struct):
    type: str = ""
    req_id: int | None = None
    code: str | None = None


_decode = msgspec.json.Decoder(_Reply).decode
_encode = msgspec.json.encode


@dataclass
class Probe:
    """One connection sending `rate` orders a second on `side`, keeping every answer."""

    name: str
    url: str
    key: str
    symbol: str
    side: str
    rate: float
    answers: list[Answer] = field(default_factory=list)
    dropped: int = 0  # answers past MAX_ANSWERS, not kept
    held_back: int = 0  # sends skipped while MAX_IN_FLIGHT orders awaited answers
    resends: int = 0
    _pending: dict[int, tuple[float, str]] = field(default_factory=dict)  # req_id -> sent, cid
    _resend: deque[str] = field(default_factory=deque)  # bounded by MAX_IN_FLIGHT
    _req_ids: int = 0
    _orders: int = 0

    def oldest_pending(self) -> float | None:
        """When the oldest order still awaiting its answer was sent."""
        return min((sent for sent, _ in self._pending.values()), default=None)

    @property
    def to_resend(self) -> int:
        """Orders answered with a code to resend on, not resent yet."""
        return len(self._resend)

    @property
    def unresolved(self) -> int:
        """Orders not yet answered, or answered with a code to resend on and not resent."""
        return len(self._pending) + len(self._resend)

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Sends until `stop`, then awaits what is in flight (bounded by the caller)."""
        ws = await connect(session, self.url, self.key)
        reading = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            await self._send(ws, stop)
            while self._pending and not reading.done():  # the caller bounds the wait
                await asyncio.sleep(SEND_TICK_S)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            await ws.close()

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, stop: asyncio.Event) -> None:
        owed, last = 0.0, time.monotonic()
        while not stop.is_set():  # one turn a tick until stopped
            await asyncio.sleep(SEND_TICK_S)
            now = time.monotonic()
            owed += (now - last) * self.rate
            last = now
            while owed >= 1.0:  # bounded: what the rate owes since the last tick
                owed -= 1.0
                if len(self._pending) >= MAX_IN_FLIGHT:
                    self.held_back += 1
                    continue
                await ws.send_frame(self._next_order(now), aiohttp.WSMsgType.TEXT)

    def _next_order(self, now: float) -> bytes:
        if self._resend:
            cid = self._resend.popleft()
            self.resends += 1
        else:
            cid = f"{self.name}-{self._orders}"
            self._orders += 1
        self._req_ids += 1
        self._pending[self._req_ids] = (now, cid)
        buy = self.side == "buy"
        return _encode({
            "op": "place", "req_id": self._req_ids, "symbol": self.symbol, "side": self.side,
            "type": "limit", "price": PRICE, "qty": 2 if buy else 1,
            "tif": "ioc" if buy else "gtc", "client_order_id": cid,
        })  # fmt: skip

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:  # until the connection closes
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            reply = _decode(message.data)
            if reply.req_id is None or reply.req_id not in self._pending:
                continue  # a fill or another push, not an answer
            sent, cid = self._pending.pop(reply.req_id)
            outcome = ACCEPTED if reply.type == ACCEPTED else (reply.code or reply.type)
            if outcome in RESEND_CODES:
                self._resend.append(cid)
            if len(self.answers) < MAX_ANSWERS:
                self.answers.append(Answer(sent, time.monotonic(), outcome))
            else:
                self.dropped += 1


async def set_up(base_url: str, admin_token: str, pairs: int) -> tuple[str, list[str]]:
    """An instrument of its own and `pairs` (seller, buyer) accounts, funded; the symbol
    and the API keys, seller then buyer for each pair."""
    async with Admin(base_url, admin_token) as admin:
        symbol = "FAILOVER"
        issuer, _ = await admin.account(f"{symbol}-issuer")
        listing = {"symbol": symbol, "kind": "share", "tick_size": "0.01", "issuer": issuer}
        await admin.ok("POST", "/v1/admin/instruments", listing)
        await admin.ok("POST", f"/v1/admin/instruments/{symbol}/status", {"status": "trading"})
        keys = []
        for n in range(pairs):
            seller, seller_key = await admin.account(f"{symbol}-seller-{n}")
            deposit = {"account": seller, "symbol": symbol, "qty": SELLER_UNITS}
            await admin.ok("POST", "/v1/admin/deposits", deposit)
            _, buyer_key = await admin.account(f"{symbol}-buyer-{n}", BUYER_CASH)
            keys += [seller_key, buyer_key]
        return symbol, keys


async def caught_up(base_url: str, admin_token: str, key: str, symbol: str) -> None:
    """Until the gateway at `base_url` shows the set-up's last step (bounded)."""
    async with Admin(base_url, admin_token) as admin, asyncio.timeout(CATCH_UP_S):
        while True:  # bounded by the timeout: the gateway follows the stream
            status, account = await admin.call("GET", "/v1/account", token=key)
            if status == 200 and account.get("cash"):
                return
            await asyncio.sleep(CATCH_UP_POLL_S)
