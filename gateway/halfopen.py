"""Connections whose first request has not arrived yet: each gets HEADER_TIMEOUT_S to send
its request line and headers (a WebSocket upgrade included), and at most MAX_HALF_OPEN
of them are open at once; a new one past that is closed at once.

aiohttp's server has no header timeout: a client that sends half a request (slowloris)
holds its connection, and a file handle, until aiohttp's keep-alive timeout (an hour by
default). HalfOpenGuard counts and times them from a RequestHandler subclass that only
extends the asyncio protocol's connection_made/connection_lost; the app's middleware
tells it when a request has arrived. tests/test_halfopen_e2e.py fails should aiohttp
change what those methods mean.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.web_request import BaseRequest

from exchange.domain.codes import RejectCode
from gateway.limits import HEADER_TIMEOUT_S, MAX_HALF_OPEN

log = logging.getLogger(__name__)

# An idle HTTP keep-alive connection (after its first request) is closed after this;
# aiohttp's default is an hour.
KEEPALIVE_S = 75.0


class HalfOpenGuard:
    def __init__(self, header_timeout: float = HEADER_TIMEOUT_S, bound: int = MAX_HALF_OPEN):
        self.header_timeout = header_timeout
        self.bound = bound
        self.pending: dict[web.RequestHandler, asyncio.TimerHandle] = {}  # <= bound
        self.refused = 0  # closed at once: too many half-open
        self.timed_out = 0  # closed: no complete request within the timeout

    def opened(self, handler: web.RequestHandler) -> None:
        if len(self.pending) >= self.bound:
            self.refused += 1
            handler.force_close()
            return
        loop = asyncio.get_running_loop()
        self.pending[handler] = loop.call_later(self.header_timeout, self._expire, handler)

    def arrived(self, handler: object) -> None:
        """A request came in on the connection (or it went away): it is no longer half-open."""
        timer = self.pending.pop(handler, None)  # type: ignore[call-overload]
        if timer is not None:
            timer.cancel()

    def _expire(self, handler: web.RequestHandler) -> None:
        if self.pending.pop(handler, None) is not None:
            self.timed_out += 1
            handler.force_close()

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def first_request(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            self.arrived(request.protocol)
            return await handler(request)

        return first_request


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's protocol for one connection, reporting its start and end to the guard."""

    def __init__(self, manager: web.Server, guard: HalfOpenGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.arrived(self)
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp's parser refused (a bad byte in the URL, not HTTP at all)
        answered as every other error is, `{"code":..,"message":..}`, not plain text, and
        logged in one line: it is the client's mistake, not a traceback's worth. The
        message's first line only: the rest echoes the client's bytes. A 500 (a bug of
        ours) goes to aiohttp's own handling, traceback and all, then gets the JSON too."""
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            super().handle_error(request, status, exc, message)
            code = "INTERNAL"
        else:
            if request.writer.output_size > 0:  # as aiohttp: too late for an answer
                raise ConnectionError("response already started: no error answer possible")
            log.info("refused an unparsable request from %s: %s", request.remote, exc)
            code = RejectCode.BAD_REQUEST
        first_line = (message or HTTPStatus(status).phrase).splitlines()[0:1]
        body = msgspec.json.encode({"code": code, "message": "".join(first_line).rstrip(":")})
        answer = web.Response(status=status, body=body, content_type="application/json")
        answer.force_close()
        return answer


async def listen(
    runner: web.AppRunner, guard: HalfOpenGuard, host: str, port: int
) -> asyncio.Server:
    """The listening socket for a set-up runner, its connections guarded."""
    loop = asyncio.get_running_loop()
    server = runner.server
    assert server is not None, "runner.setup() first"

    def protocol() -> GuardedRequestHandler:
        return GuardedRequestHandler(server, guard, loop=loop, keepalive_timeout=KEEPALIVE_S)

    return await loop.create_server(protocol, host, port, reuse_address=True)
