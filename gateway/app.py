"""The aiohttp application: routes, and the sequencer and hub it runs around."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web

from exchange.bus import Bus, ManualClock
from gateway import binance, clusterview, demofeed, queryparams, rest, webpage
from gateway.halfopen import HalfOpenGuard
from gateway.limits import MAX_CONNECTIONS, RATE_PER_S
from gateway.metrics import Metrics
from gateway.readmodel import DEFAULT_CURRENCY, ReadModel
from gateway.ws import Hub, websocket

log = logging.getLogger(__name__)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as JSON with a code, including aiohttp's own 404 and 405; those the
    gateway answers itself (not the engine's rejects) counted by code for /metrics."""
    hub: Hub = request.app["hub"]
    try:
        return await handler(request)
    except rest.ApiError as problem:
        if not problem.sequenced:
            hub.count_reject(problem.code)
        raise
    except web.HTTPException as problem:
        if problem.status < 400:
            raise
        if problem.content_type == "application/json":  # already {"code":..} (503 BUSY)
            hub.count_reject(str(_code_of(problem.body)))
            raise
        code = "NOT_FOUND" if problem.status == 404 else "BAD_REQUEST"
        hub.count_reject(code)
        raise rest.ApiError(problem.status, code, problem.reason) from None


def _code_of(body: object) -> object:
    """The code of a JSON error body."""
    try:
        decoded = msgspec.json.decode(body) if isinstance(body, bytes) else None
    except msgspec.DecodeError:
        decoded = None
    return decoded.get("code", "BAD_REQUEST") if isinstance(decoded, dict) else "BAD_REQUEST"


def build_app(
    sequencer: Bus,
    read: ReadModel,
    admin_token: str,
    max_connections: int = MAX_CONNECTIONS,
    rate_limit: float = RATE_PER_S,
    account_rate_limit: float | None = None,
    guard: HalfOpenGuard | None = None,
    cluster: clusterview.ClusterSource | None = None,
    demo_feed: demofeed.DemoFeed | None = None,
    currency: str = DEFAULT_CURRENCY,
    binance_weight_limit: int | None = None,
) -> web.Application:
    edge = [json_errors, queryparams.refuse_unknown_params]
    middlewares = edge if guard is None else [guard.middleware(), *edge]
    app = web.Application(middlewares=middlewares, client_max_size=rest.MAX_BODY_BYTES)
    hub = Hub(sequencer, read, max_connections, rate_limit, account_rate_limit)
    app["sequencer"] = sequencer
    app["read"] = read
    read.currency = currency
    app["hub"] = hub
    app["admin_token"] = admin_token
    app["cluster"] = cluster if cluster is not None else clusterview.SingleProcess(read)
    # Tests step the in-process sequencer's clock by hand (exchange serve --test-clock).
    clock = getattr(sequencer, "clock", None)
    app["set_clock"] = clock.advance_to if isinstance(clock, ManualClock) else None
    app["auth_failures"] = hub.auth_failures  # one bound on the lines, WebSocket and REST
    metrics = Metrics(sequencer, read, hub, guard)
    app["metrics"] = metrics
    app.add_routes(rest.routes)
    app.router.add_get("/v1/ws", websocket)
    app.router.add_get("/metrics", metrics.handler)
    app.router.add_get("/v1/cluster", clusterview.handler)
    # The trading page, and the demo-only feed of the simulation's hidden value.
    webpage.add_routes(app.router)
    app["demo_feed"] = demo_feed
    app.router.add_get("/v1/demo/fundamental", demofeed.handler)
    # The Binance-spot dialect (docs/BINANCE.md): a second face of the same gateway.
    binance.setup(app, admin_token, currency, binance_weight_limit)
    queryparams.check_routes(app.router)
    app.cleanup_ctx.append(_heartbeats)
    return app


async def _heartbeats(app: web.Application) -> AsyncIterator[None]:
    hub: Hub = app["hub"]
    task = asyncio.get_running_loop().create_task(hub.heartbeat_loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
