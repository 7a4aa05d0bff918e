"""A small scripted WebSocket server on 127.0.0.1: each JSON request a client sends goes
to a handler the test writes, which answers (or closes) as the case needs. For the load
test's own clients, whose behaviour against odd answers the real exchange cannot show."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from tests.server import free_port

Handler = Callable[[web.WebSocketResponse, dict[str, object]], Awaitable[None]]


@asynccontextmanager
async def ws_server(handle: Handler) -> AsyncIterator[str]:
    """Serve `handle` at ws://127.0.0.1:PORT/v1/ws (yielded) until the block ends."""

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:  # until the client closes
            await handle(ws, json.loads(message.data))
        return ws

    async with serving(endpoint) as url:
        yield url


@asynccontextmanager
async def serving(
    endpoint: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """Serve `endpoint` at ws://127.0.0.1:PORT/v1/ws (yielded) until the block ends."""
    app = web.Application()
    app.router.add_get("/v1/ws", endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"ws://127.0.0.1:{port}/v1/ws"
    finally:
        await runner.cleanup()
