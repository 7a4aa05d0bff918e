"""The load test's trader: one connection that sends orders at an offered rate (or keeps
a number in flight) and follows their answers with plain callbacks.

`gateway.client.Client` gives every request a future, a timer and an awaiting task, and
queues every pushed message for a reader task: right for tests, but at thousands of
orders a second that asyncio machinery was most of the load test's own CPU, taken from
the exchange it shares the cores with. Here one task sends, one reads; a frame is decoded
by msgspec into the few fields the trader looks at; answers are matched to their request
by `req_id` in a dict; nothing else is allocated per order. `Pinger` is the same loop
sending `ping`s, for the echo baseline, so both figures come from the same client.
"""

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec

# How long, after the sending stops, the answers still awaited are waited for.
ANSWER_GRACE_S = 10.0
# Frames larger than this end the connection (a batch of a few thousand trades fits).
MAX_FRAME_BYTES = 16 * 1024 * 1024
# Accepted orders whose intended send time is kept for their taker fills, the latest
# first: those fills follow the acceptance at once, in the same durable batch.
ORDERS_AWAITING_FILLS = 1_024

_encode = msgspec.json.encode


class Reply(msgspec.Struct):
    """The fields of an answer or a pushed message the trader looks at."""

    type: str = ""  # the echo baseline's answers are the requests themselves
    req_id: int | None = None
    order_id: str | None = None
    code: str | None = None
    ts: int = 0
    liquidity: str = ""  # a fill's: "taker" when the order traded on arrival
    remaining: int = 0


_decode_reply = msgspec.json.Decoder(Reply).decode

Record = Callable[[int], None]  # a latency in µs


@dataclass
class Tally:
    """What one trader saw; the harness adds them up."""

    orders: int = 0  # places answered
    cancels: int = 0  # makers' cancels answered
    fills: int = 0
    rejects: dict[str, int] = field(default_factory=dict)

    def reject(self, code: str, n: int = 1) -> None:
        self.rejects[code] = self.rejects.get(code, 0) + n


@dataclass(frozen=True)
class Orders:
    """What a trader sends: a maker quotes around the shared mid and cancels half its
    orders once accepted; a taker crosses the spread with IOC orders."""

    symbol: str
    maker: bool
    rng: random.Random
    mid: list[int]  # shared by the traders of a process; the mid wanders

    def next_place(self, req_id: int) -> bytes:
        rng, mid = self.rng, self.mid
        if rng.random() < 0.01:
            mid[0] += rng.choice((-1, 1))
        side = rng.choice(("buy", "sell"))
        if self.maker:
            offset = rng.randint(1, 20)
            ticks = mid[0] - offset if side == "buy" else mid[0] + offset
            tif = "gtc"
        else:
            ticks = mid[0] + 25 if side == "buy" else mid[0] - 25
            tif = "ioc"
        return _encode({
            "op": "place", "req_id": req_id, "symbol": self.symbol, "side": side,
            "type": "limit", "price": f"{ticks // 100}.{ticks % 100:02d}",
            "qty": rng.randint(1, 10), "tif": tif,
        })  # fmt: skip

    def cancels_after_accept(self) -> bool:
        return self.maker and self.rng.random() < 0.5


# What an awaited request is: a first request (an order, a ping; its latency counts) or a
# follow-up (a maker's cancel).
FIRST, FOLLOW_UP = 0, 1
TEXT = aiohttp.WSMsgType.TEXT


class Pipe:
    """One connection's send and read loops: requests go out while fewer than `in_flight`
    await answers, at `rate` a second (each at its intended time, from which its latency
    counts, so a slow answer delays no later send's clock) or, with no rate, as answers
    free room."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, in_flight: int, rate: float | None,
        record_ack: Record, record_fill: Record, tally: Tally,
        record_order_fill: Record | None = None,
    ) -> None:  # fmt: skip
        """`record_ack`: order to answer; `record_fill`: trade to fill received (every
        fill); `record_order_fill`: order to fill, for the fills an order gets as it
        arrives (liquidity "taker"), all from the order's intended send time."""
        self.ws = ws
        self.in_flight = in_flight
        self.rate = rate
        self.record_ack = record_ack
        self.record_fill = record_fill
        self.record_order_fill = record_order_fill
        self.tally = tally
        self._req_ids = 0
        # req_id -> (intended send time, kind): what awaits an answer.
        self._waiting: dict[int, tuple[float, int]] = {}
        # order_id -> intended send time, for its taker fills (ORDERS_AWAITING_FILLS).
        self._sent_at: dict[str, float] = {}
        self._slots_used = 0  # an order holds its slot until its cancel is answered
        self._follow_ups: deque[bytes] = deque()  # cancels to send before new orders
        self._wake: asyncio.Future[None] | None = None
        # The sender waits for room (any answer may free it), not just for the clock:
        # waking it for every answer while it waits for the clock cost a timer each.
        self._wanting_room = False
        self._closed = False

    def request(self, req_id: int) -> bytes:
        """The next request to send; a subclass says what."""
        raise NotImplementedError

    def on_answer(self, reply: Reply, kind: int) -> None:
        """An answer to this pipe's request of `kind`; frees its slot by default."""
        del reply, kind
        self._slots_used -= 1

    async def run(self, deadline: float, started: float | None = None) -> None:
        """Send until `deadline` (perf_counter), then wait a grace for what is awaited.
        Sends are timed from `started` (now by default): pipes of a process given the same
        start and rate send at the same instants, woken by one turn of the loop."""
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            try:
                await self._send_until(
                    time.perf_counter() if started is None else started, deadline
                )
            except ConnectionError:  # the socket closed under a send: counted below
                self._closed = True
            grace_ends = time.perf_counter() + ANSWER_GRACE_S
            self._wanting_room = True  # now every answer may be the last awaited
            while self._waiting and not self._closed:  # bounded by the grace
                await self._send_follow_ups()  # a cancel still holds its order's slot
                if time.perf_counter() >= grace_ends:
                    break
                await self._sleep_until(grace_ends)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader  # a reader that failed (a frame it cannot read) raises here
            lost = sum(1 for _, kind in self._waiting.values() if kind != FOLLOW_UP)
            if lost:
                self.tally.reject("CONNECTION_LOST" if self._closed else "NO_ANSWER", lost)

    async def _send_until(self, started: float, deadline: float) -> None:
        interval = 1 / self.rate if self.rate else 0.0
        n = 0
        ws, waiting, follow_ups = self.ws, self._waiting, self._follow_ups
        while not self._closed:  # bounded by the deadline
            now = time.perf_counter()
            if follow_ups:
                await self._send_follow_ups()
            intended = started + n * interval if interval else now
            if intended >= deadline:
                return
            if self._slots_used >= self.in_flight:
                self._wanting_room = True
                await self._sleep_until(deadline)  # woken by an answer
                self._wanting_room = False
                continue
            if intended > now:
                await self._sleep_until(intended)
                continue
            self._req_ids += 1
            req_id = self._req_ids
            frame = self.request(req_id)
            waiting[req_id] = (intended, FIRST)
            self._slots_used += 1
            n += 1
            await ws.send_frame(frame, TEXT)

    async def _send_follow_ups(self) -> None:
        follow_ups = self._follow_ups
        while follow_ups:  # bounded: one per order answered
            await self.ws.send_frame(follow_ups.popleft(), TEXT)

    async def _sleep_until(self, when: float) -> None:
        """Until `when` (perf_counter) or an answer wakes the sender, whichever first."""
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()
        timer = loop.call_later(max(0.0, when - time.perf_counter()), _wake, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def follow_up(self, frame: bytes, req_id: int) -> None:
        """Send `frame` (a request with `req_id`, from `next_req_id`) before new orders."""
        self._waiting[req_id] = (0.0, FOLLOW_UP)
        self._follow_ups.append(frame)

    def next_req_id(self) -> int:
        self._req_ids += 1
        return self._req_ids

    async def _read(self) -> None:
        try:
            async for message in self.ws:  # until the socket closes
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._on_frame(message.data)
        finally:
            self._closed = True
            self._wake_sender()

    def _on_frame(self, data: str) -> None:
        reply = _decode_reply(data)
        entry = self._waiting.pop(reply.req_id, None) if reply.req_id is not None else None
        if entry is not None:
            intended, kind = entry
            if kind != FOLLOW_UP:
                self.record_ack(int((time.perf_counter() - intended) * 1e6))
                if reply.order_id and self.record_order_fill and reply.type == "accepted":
                    self._await_fills(reply.order_id, intended)
            self.on_answer(reply, kind)
            if self._wanting_room or self._follow_ups:
                self._wake_sender()
        elif reply.type == "fill":
            self.tally.fills += 1
            self.record_fill((time.time_ns() - reply.ts) // 1_000)
            if reply.liquidity == "taker" and reply.order_id in self._sent_at:
                assert self.record_order_fill is not None  # nothing is kept without it
                intended = self._sent_at[reply.order_id]
                self.record_order_fill(int((time.perf_counter() - intended) * 1e6))
                if reply.remaining == 0:
                    del self._sent_at[reply.order_id]

    def _await_fills(self, order_id: str, intended: float) -> None:
        sent_at = self._sent_at
        sent_at[order_id] = intended
        if len(sent_at) > ORDERS_AWAITING_FILLS:
            del sent_at[next(iter(sent_at))]  # the oldest: its fills came long ago

    def _wake_sender(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)


def _wake(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class Trader(Pipe):
    """Places `orders`; a maker cancels half of those accepted."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, orders: Orders, in_flight: int,
        rate: float | None, record_ack: Record, record_fill: Record, tally: Tally,
        record_order_fill: Record | None = None,
    ) -> None:  # fmt: skip
        super().__init__(ws, in_flight, rate, record_ack, record_fill, tally, record_order_fill)
        self.orders = orders

    def request(self, req_id: int) -> bytes:
        return self.orders.next_place(req_id)

    def on_answer(self, reply: Reply, kind: int) -> None:
        if kind == FOLLOW_UP:
            self.tally.cancels += 1
            self._slots_used -= 1
            return
        self.tally.orders += 1
        if reply.type in {"rejected", "error"}:  # an error: BUSY, RATE_LIMITED, ...
            self.tally.reject(reply.code or "UNKNOWN")
        elif reply.type == "accepted" and reply.order_id and self.orders.cancels_after_accept():
            req_id = self.next_req_id()
            self.follow_up(_encode({"op": "cancel", "req_id": req_id,
                                    "order_id": reply.order_id}), req_id)  # fmt: skip
            return  # the slot stays held until the cancel is answered
        self._slots_used -= 1


class Pinger(Pipe):
    """Sends `ping`s and counts the answers: the echo baseline's client."""

    def request(self, req_id: int) -> bytes:
        return _encode({"op": "ping", "req_id": req_id})

    def on_answer(self, reply: Reply, kind: int) -> None:
        self.tally.orders += 1
        self._slots_used -= 1


async def connect(
    session: aiohttp.ClientSession, url: str, api_key: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return await session.ws_connect(url, headers=headers, max_msg_size=MAX_FRAME_BYTES)
