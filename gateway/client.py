"""An asyncio client for the exchange's WebSocket and REST protocol.

`Client` sends requests and awaits each answer by its req_id; everything else the server
pushes (fills, dones, market data, heartbeats) lands in a bounded queue read with
`next_event`. `LocalBook` keeps a level-2 book from `book_snapshot` and `book_update`
messages, checks `seq` and the checksum, and says when it must resubscribe.
`Admin` wraps the REST admin calls. Tests use all three; the load test, `Admin` and
`LocalBook`.
"""

import asyncio
import bisect
import contextlib
import itertools
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import msgspec

Message = dict[str, Any]
# Pushed messages waiting to be read; a client that never reads them loses the oldest.
EVENT_QUEUE_BOUND = 100_000
# Levels a side that the book checksum covers (the contract says ten).
CHECKSUM_DEPTH = 10
# How long a request waits for its answer before it is given up.
ANSWER_TIMEOUT_S = 10.0


class ProtocolError(Exception):
    """The server answered something this client cannot use."""


class RefusedError(ProtocolError):
    """A REST call answered with an error status; `payload` holds its code and message."""

    def __init__(self, method: str, path: str, status: int, payload: Message) -> None:
        super().__init__(f"{method} {path} -> {status} {payload}")
        self.status = status
        self.payload = payload


def _expire(future: "asyncio.Future[Message]", op: str) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no answer to {op} in {ANSWER_TIMEOUT_S} s"))


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession):
        self.ws = ws
        self._session = session
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self.events: deque[Message] = deque()
        self._event_waiter: asyncio.Future[None] | None = None
        self.dropped_events = 0
        self.resubscribes = 0
        self.close_code: int | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str, api_key: str | None = None) -> "Client":
        session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            ws = await session.ws_connect(url, headers=headers, max_msg_size=16 * 1024 * 1024)
        except BaseException:
            await session.close()
            raise
        return cls(ws, session)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._session.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # --- requests -------------------------------------------------------------------------

    async def request(self, op: str, **fields: Any) -> Message:
        """Send one request and return its direct answer."""
        req_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        self._waiting[req_id] = future
        # A bare timer, not wait_for: its task and callbacks cost more than the request.
        timer = loop.call_later(ANSWER_TIMEOUT_S, _expire, future, op)
        try:
            await self.ws.send_str(
                msgspec.json.encode({"op": op, "req_id": req_id, **fields}).decode()
            )
            return await future
        finally:
            timer.cancel()
            self._waiting.pop(req_id, None)

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def auth(self, api_key: str) -> Message:
        return await self.request("auth", api_key=api_key)

    async def place(
        self, symbol: str, side: str, qty: int, price: str | None = None, **fields: Any
    ) -> Message:
        order: dict[str, Any] = {"symbol": symbol, "side": side, "qty": qty, **fields}
        if price is not None:
            order["price"] = price
        order.setdefault("type", "limit" if price is not None else "market")
        return await self.request("place", **order)

    async def cancel(
        self, order_id: str | None = None, client_order_id: str | None = None
    ) -> Message:
        fields = (
            {"order_id": order_id} if order_id is not None else {"client_order_id": client_order_id}
        )
        return await self.request("cancel", **fields)

    async def cancel_all(self, symbol: str | None = None) -> Message:
        return await self.request("cancel_all", **({"symbol": symbol} if symbol else {}))

    async def replace(
        self, order_id: str, qty: int | None = None, price: str | None = None
    ) -> Message:
        fields: dict[str, Any] = {"order_id": order_id}
        if qty is not None:
            fields["qty"] = qty
        if price is not None:
            fields["price"] = price
        return await self.request("replace", **fields)

    async def subscribe(
        self, channels: list[str], symbols: list[str], *, batched: bool = False
    ) -> Message:
        """Subscribe; `batched` asks for one frame a durable batch and symbol (unpacked
        by this client into the usual messages)."""
        fields: dict[str, Any] = {"channels": channels, "symbols": symbols}
        if batched:
            fields["batched"] = True
        return await self.request("subscribe", **fields)

    async def ping(self) -> Message:
        return await self.request("ping")

    async def follow(self, book: "LocalBook", message: Message) -> bool:
        """Apply a pushed message to `book`; on a gap or a checksum mismatch resubscribe
        (the new book_snapshot restores it). Returns False when it had to resubscribe."""
        if book.apply(message):
            return True
        await self.resubscribe(book)
        return False

    async def resubscribe(self, book: "LocalBook") -> None:
        """Unsubscribe and subscribe again: the new book_snapshot restores `book`."""
        self.resubscribes += 1
        channels, symbols = ["book", "trades"], [book.symbol]
        await self.request("unsubscribe", channels=channels, symbols=symbols)
        await self.subscribe(channels, symbols)

    # --- pushed messages ------------------------------------------------------------------

    async def next_event(
        self, kind: str | None = None, timeout: float = ANSWER_TIMEOUT_S
    ) -> Message:
        """The next pushed message (of type `kind`, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:  # bounded by the timeout
                await self._pushed()
                event = self.events.popleft()
                if kind is None or event.get("type") == kind:
                    return event

    async def _pushed(self) -> None:
        """Return once a pushed message is waiting; raises ConnectionError once closed."""
        while not self.events:  # woken by each push, or by the close
            if self._reader.done():
                raise ConnectionError(f"closed with {self.close_code}")
            if self._event_waiter is None or self._event_waiter.done():
                self._event_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._event_waiter)

    def _wake(self) -> None:
        waiter = self._event_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _read(self) -> None:
        try:
            await self._read_frames()
        finally:
            self._wake()  # whoever waits for a push learns of the close

    async def _read_frames(self) -> None:
        decode = msgspec.json.decode
        async for message in self.ws:  # until the socket closes
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data: Message = decode(message.data)
            req_id = data.get("req_id")
            future = self._waiting.get(req_id) if isinstance(req_id, int) else None
            if future is not None and not future.done():
                future.set_result(data)
                continue
            # A batched subscriber's frame holds several market-data messages: unpacked
            # here, so readers see the same messages in either mode.
            pushed = data["messages"] if data.get("type") == "batch" else (data,)
            for event in pushed:
                if len(self.events) >= EVENT_QUEUE_BOUND:
                    self.events.popleft()
                    self.dropped_events += 1
                self.events.append(event)
            self._wake()
        self.close_code = self.ws.close_code
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError(f"closed with {self.close_code}"))


def book_checksum(bids: Mapping[str, int], asks: Mapping[str, int]) -> int:
    """The contract's CRC-32 over the ten best asks and bids, prices as wire strings."""
    best_asks = sorted(asks.items(), key=lambda kv: price_key(kv[0]))[:CHECKSUM_DEPTH]
    best_bids = sorted(bids.items(), key=lambda kv: price_key(kv[0]), reverse=True)
    return _crc(best_asks, best_bids[:CHECKSUM_DEPTH])


def _crc(best_asks: Iterable[tuple[str, int]], best_bids: Iterable[tuple[str, int]]) -> int:
    return _crc_of_texts(
        ";".join(f"{p}:{q}" for p, q in best_asks), ";".join(f"{p}:{q}" for p, q in best_bids)
    )


def _crc_of_texts(asks_text: str, bids_text: str) -> int:
    """The contract's CRC-32, from the best asks' and bids' "price:qty;..." texts."""
    return zlib.crc32(f"A{asks_text}|B{bids_text}".encode())


def price_key(price: str) -> int:
    """An exact integer that orders wire prices as numbers (up to 18 decimals)."""
    key = _price_keys.get(price)
    if key is None:
        whole, _, fraction = price.partition(".")
        key = int(whole) * 10**18 + int(fraction.ljust(18, "0")[:18])
        if len(_price_keys) >= PRICE_KEYS_CACHED:
            _price_keys.clear()
        _price_keys[price] = key
    return key


# Wire prices already turned into keys: books see the same few prices again and again.
PRICE_KEYS_CACHED = 100_000
_price_keys: dict[str, int] = {}


class BookSide:
    """One side's levels by wire price, with the keys kept sorted so the best ten are a
    slice, and each level's checksum text ("price:qty") kept beside it, so a checksum is
    a join of ready strings (sorting and formatting per update were the load test's
    largest costs)."""

    def __init__(self, levels: Iterable[tuple[str, int]] = ()) -> None:
        self.qty: dict[str, int] = {}
        self._text_of: dict[int, str] = {}  # key -> "price:qty"
        self._keys: list[int] = []  # ascending
        for price, qty in levels:
            self.set(price, qty)

    def set(self, price: str, qty: int) -> None:
        """The level's new total; 0 removes it (a level we never had is ignored)."""
        if qty:
            key = price_key(price)
            if self.qty.get(price) is None:
                bisect.insort(self._keys, key)
            self.qty[price] = qty
            self._text_of[key] = f"{price}:{qty}"
        elif self.qty.pop(price, None) is not None:
            key = price_key(price)
            del self._text_of[key]
            del self._keys[bisect.bisect_left(self._keys, key)]

    def lowest_text(self, n: int) -> str:
        text_of = self._text_of
        return ";".join([text_of[k] for k in self._keys[:n]])

    def highest_text(self, n: int) -> str:
        text_of = self._text_of
        return ";".join([text_of[k] for k in reversed(self._keys[-n:])])

    def lowest(self, n: int) -> list[tuple[str, int]]:
        return [_level(self._text_of[k]) for k in self._keys[:n]]

    def highest(self, n: int) -> list[tuple[str, int]]:
        return [_level(self._text_of[k]) for k in reversed(self._keys[-n:])]


def _level(text: str) -> tuple[str, int]:
    price, _, qty = text.partition(":")
    return price, int(qty)


class LocalBook:
    """A level-2 book kept from market data, checked message by message. `apply` takes a
    decoded message; the `on_*` methods take its fields (for typed decoders).

    The book and trades channels are numbered apart: `seq` follows the book's (snapshot,
    then each update), `trade_seq` the trades' (the snapshot's `trade_seq`, or the first
    trade seen), so a subscriber of either channel alone checks it."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide()
        self.asks = BookSide()
        self.seq: int | None = None
        self.trade_seq: int | None = None
        self.gaps = 0
        self.bad_checksums = 0

    def apply(self, message: Message) -> bool:
        """Apply a book_snapshot, book_update, auction or trade for this symbol; False when the
        book can no longer be trusted (a gap or a checksum mismatch): resubscribe."""
        kind = message.get("type")
        if message.get("symbol") != self.symbol:
            return True
        if kind == "book_snapshot":
            return self.on_snapshot(
                message["seq"], message["bids"], message["asks"], message["checksum"],
                message.get("trade_seq"),
            )  # fmt: skip
        if kind == "trade":
            return self.on_trade(message["seq"])
        if kind == "book_update":
            return self.on_update(message["seq"], message["changes"], message["checksum"])
        if kind == "auction":
            return self.on_auction(message["seq"])
        return True

    def on_snapshot(
        self, seq: int, bids: Iterable[tuple[str, int]], asks: Iterable[tuple[str, int]],
        checksum: int, trade_seq: int | None = None,
    ) -> bool:  # fmt: skip
        self.bids = BookSide(bids)
        self.asks = BookSide(asks)
        self.seq = seq
        self.trade_seq = trade_seq
        return self._checked(checksum)

    def on_trade(self, seq: int) -> bool:
        """A trade's seq must follow the last trade's (the first one seen sets the start)."""
        if self.trade_seq is not None and seq != self.trade_seq + 1:
            self.gaps += 1
            self.seq = self.trade_seq = None
            return False
        self.trade_seq = seq
        return True

    def on_update(self, seq: int, changes: Iterable[tuple[str, str, int]], checksum: int) -> bool:
        if self.seq is None:
            return True  # waiting for the snapshot a resubscribe brings
        if not self._in_sequence(seq):
            return False
        bids, asks = self.bids, self.asks
        for side, price, qty in changes:
            (bids if side == "buy" else asks).set(price, qty)
        return self._checked(checksum)

    def on_auction(self, seq: int) -> bool:
        """A call auction's indicative price takes a book seq and changes no level."""
        if self.seq is None:
            return True  # waiting for the snapshot a resubscribe brings
        return self._in_sequence(seq)

    def _in_sequence(self, seq: int) -> bool:
        if self.seq is None or seq != self.seq + 1:
            self.gaps += 1
            self.seq = None
            return False
        self.seq = seq
        return True

    def checksum(self) -> int:
        return _crc_of_texts(
            self.asks.lowest_text(CHECKSUM_DEPTH), self.bids.highest_text(CHECKSUM_DEPTH)
        )

    def _checked(self, checksum: int) -> bool:
        if self.checksum() != checksum:
            self.bad_checksums += 1
            self.seq = None
            return False
        return True

    def levels(self) -> tuple[list[list[Any]], list[list[Any]]]:
        bids = self.bids.highest(len(self.bids.qty))
        asks = self.asks.lowest(len(self.asks.qty))
        return [[p, q] for p, q in bids], [[p, q] for p, q in asks]


class Admin:
    """The REST calls: admin writes with the admin token, reads with an API key or none."""

    def __init__(self, base_url: str, admin_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.admin_token = admin_token
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> "Admin":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Message]:
        headers = {"Authorization": f"Bearer {token if token is not None else self.admin_token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        data = None if body is None else msgspec.json.encode(body)
        async with self._session.request(
            method, self.base_url + path, data=data, headers=headers
        ) as response:
            payload: Message = msgspec.json.decode(await response.read())
            return response.status, payload

    async def ok(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> Message:
        status, payload = await self.call(method, path, body, token)
        if status >= 400:
            raise RefusedError(method, path, status, payload)
        return payload

    async def account(self, name: str, cash: str = "0") -> tuple[str, str]:
        created = await self.ok("POST", "/v1/admin/accounts", {"name": name, "cash": cash})
        return created["account"], created["api_key"]
