"""What every /api/v3 call goes through: its weight (weights.py), Binance-shaped errors, and
for signed calls the key, signature and timestamp checks (signing.py) that name the account.

`Dialect` holds what the handlers share; it lives in the app as app["binance"].
"""

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from exchange.bus import (
    Bus,
    BusyError,
    InvalidCommandError,
    Sequenced,
    SequencerStoppedError,
    UnavailableError,
)
from exchange.domain import commands as cmd
from exchange.domain.events import OrderRejected, Rejected
from gateway import audit
from gateway.auth import hash_api_key
from gateway.binance import signing
from gateway.binance.errors import BinanceError, from_reject
from gateway.binance.shapes import Names
from gateway.binance.weights import Weights
from gateway.readmodel import ReadModel

# Form bodies of signed calls are a few hundred bytes.
MAX_FORM_BYTES = 16 * 1024
API_KEY_HEADER = "X-MBX-APIKEY"


# The largest frame a dialect WebSocket takes (a SUBSCRIBE of many streams fits).
MAX_FRAME_BYTES = 64 * 1024
# aiohttp's ping interval on the dialect's WebSockets, s.
HEARTBEAT_S = 30.0

@dataclass
class Dialect:
    read: ReadModel
    bus: Bus
    names: Names
    key: bytes  # signing.secret_key(admin token)
    weights: Weights = field(default_factory=Weights)
    clock_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    # The dialect's open WebSockets (bounded by the server's connections), closed with
    # 1001 when the server stops: an open one would hold aiohttp's shutdown for its timeout.
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def room_for_socket(self, request: web.Request) -> None:
        """503 when the server's open WebSockets (native and dialect together) are at
        `--max-connections`."""
        hub = request.app["hub"]
        if len(hub.sessions) + len(self.sockets) >= hub.max_connections:
            hub.count_reject("BUSY")
            body = msgspec.json.encode({"code": -1008, "msg": "Too many connections."})
            raise web.HTTPServiceUnavailable(body=body, content_type="application/json")

    async def open_socket(self, request: web.Request) -> web.WebSocketResponse:
        """A dialect WebSocket, once the server has room for it (else 503)."""
        self.room_for_socket(request)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=HEARTBEAT_S)
        await ws.prepare(request)
        return ws

    async def read_socket(
        self, ws: web.WebSocketResponse, on_text: Callable[[str], None] | None = None
    ) -> None:
        """Read `ws` until it closes (or errs), giving `on_text` each text frame; meanwhile
        it is one of the dialect's sockets, closed when the server stops."""
        self.sockets.add(ws)
        try:
            async for message in ws:  # until the client (or the server) closes
                if message.type == WSMsgType.TEXT:
                    if on_text is not None:
                        on_text(message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self.sockets.discard(ws)

    async def close_sockets(self, _app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    def account_of_key(self, api_key: str) -> str | None:
        if not api_key or len(api_key) > signing.MAX_API_KEY_LENGTH:
            return None
        return self.read.accounts_by_key.get(hash_api_key(api_key))


def dialect(request: web.Request) -> Dialect:
    found: Dialect = request.app["binance"]
    return found


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json",
        headers=headers,
    )  # fmt: skip


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def endpoint(weight: int) -> Callable[[Handler], Handler]:
    """Charge `weight`, answer errors as `{"code","msg"}`, add the weight header."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def answered(request: web.Request) -> web.StreamResponse:
            d = dialect(request)
            used, retry_after = d.weights.spend(request.remote or "", weight)
            header = {"X-MBX-USED-WEIGHT-1M": str(used), "X-MBX-USED-WEIGHT": str(used)}
            if retry_after is not None:
                request.app["hub"].count_reject("RATE_LIMITED")
                body = {"code": -1003, "msg": "Too much request weight used; current limit is "
                    f"{d.weights.limit} request weight per 1 MINUTE. Please use WebSocket "
                    "Streams for live updates to avoid polling the API."}  # fmt: skip
                return json(body, 429, {**header, "Retry-After": str(retry_after)})
            try:
                response = await handler(request)
            except BinanceError as problem:
                return json({"code": problem.code, "msg": problem.msg}, problem.status,
                            {**header, **problem.headers})  # fmt: skip
            response.headers.update(header)
            return response

        return answered

    return wrap


async def params(request: web.Request) -> signing.Signed:
    """The call's parameters: the query string and (POST/PUT) the form body, as received."""
    body = ""
    if request.method in {"POST", "PUT"} and request.can_read_body:
        if (request.content_length or 0) > MAX_FORM_BYTES:
            raise BinanceError(-1101, "Request body too large.", 413)
        data = await request.read()  # the app's client_max_size bounds it too
        try:
            body = data.decode("ascii")
        except UnicodeDecodeError:
            raise BinanceError(-1100, "Illegal characters found in the request body.") from None
    return signing.split_signed(request.rel_url.raw_query_string, body)


def api_key_account(request: web.Request) -> str:
    """The account of the X-MBX-APIKEY header (-2014 without one, -2015 for an unknown)."""
    d = dialect(request)
    api_key = request.headers.get(API_KEY_HEADER, "")
    if not api_key:
        raise BinanceError(-2014, "API-key format invalid.", 401)
    account = d.account_of_key(api_key)
    if account is None:
        request.app["auth_failures"].failed("binance_key", audit.peer_of(request), api_key)
        raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    return account


async def signed(request: web.Request) -> tuple[str, dict[str, str]]:
    """(account, parameters) of a signed call, or the error that refuses it."""
    account = api_key_account(request)
    d = dialect(request)
    got = await params(request)
    api_key = request.headers[API_KEY_HEADER]
    try:
        signing.check_signature(signing.api_secret(d.key, api_key), got)
    except BinanceError:
        request.app["auth_failures"].failed("binance_signature", audit.peer_of(request), api_key)
        raise
    signing.check_timestamp(got.params, d.clock_ms())
    return account, got.params


def only(given: dict[str, str], allowed: frozenset[str]) -> None:
    """-1104 for a parameter the call does not read (never ignored)."""
    extra = given.keys() - allowed - {"timestamp", "recvWindow"}
    if extra:
        name = min(extra)[:32]
        raise BinanceError(-1104, f"Not all sent parameters were read; '{name}' is not a "
            "parameter of this call.")


async def execute(
    request: web.Request, command: cmd.Command, *, cancelling: bool = False
) -> Sequenced:
    """Submit and wait until durable; an engine refusal becomes Binance's error."""
    d = dialect(request)
    try:
        done = await d.bus.submit(command)
    except InvalidCommandError:
        raise BinanceError(-1102, "A parameter was malformed.") from None
    except (BusyError, SequencerStoppedError):
        raise from_reject("BUSY") from None
    except UnavailableError:
        raise from_reject("UNAVAILABLE") from None
    first = done.events[0] if done.events else None
    if isinstance(first, OrderRejected | Rejected):
        raise from_reject(first.code, cancelling=cancelling)
    return done
