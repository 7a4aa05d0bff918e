"""The query parameters each HTTP route takes, in one table, and the middleware that refuses
every other: an unknown, misspelt or repeated parameter is `400 BAD_REQUEST` on every
route, before its handler runs, never ignored.

The handlers parse the values (ASCII digits, bounds, choices); this module only names them.
The app refuses to start when a route is missing from the table or the table names a route
that does not exist (`check_routes`), so a new route cannot forget to declare its parameters.
"""

from collections.abc import Awaitable, Callable

from aiohttp import web

from exchange.domain.codes import RejectCode
from gateway import binance  # its routes check their own parameters (Binance's codes)
from gateway.rest import ApiError

# Route (as aiohttp writes its path, placeholders in braces) -> the parameters it takes.
ROUTE_PARAMS: dict[str, frozenset[str]] = {
    "/healthz": frozenset(),
    "/metrics": frozenset(),
    "/v1/ws": frozenset({"cancel_on_disconnect"}),
    "/v1/time": frozenset(),
    "/v1/cluster": frozenset(),
    "/v1/instruments": frozenset({"status", "kind"}),
    "/v1/offerings": frozenset(),
    "/v1/book/{symbol}": frozenset({"depth"}),
    "/v1/trades/{symbol}": frozenset({"limit"}),
    "/v1/candles/{symbol}": frozenset({"interval", "limit"}),
    "/v1/ticker/{symbol}": frozenset(),
    "/v1/account": frozenset(),
    "/v1/orders": frozenset({"status", "symbol", "limit", "cursor", "client_order_id"}),
    "/v1/orders/{order_id}": frozenset(),
    "/v1/fills": frozenset({"symbol", "limit", "cursor"}),
    "/v1/admin/accounts": frozenset(),
    "/v1/admin/accounts/{account}/keys": frozenset(),
    "/v1/admin/deposits": frozenset(),
    "/v1/admin/instruments": frozenset(),
    "/v1/admin/offerings": frozenset(),
    "/v1/admin/offerings/{offering_id}/close": frozenset(),
    "/v1/admin/instruments/{symbol}/status": frozenset(),
    "/v1/admin/instruments/{symbol}/halt": frozenset(),
    "/v1/admin/instruments/{symbol}/resume": frozenset(),
    "/v1/admin/instruments/{symbol}/auction": frozenset(),
    "/v1/admin/instruments/{symbol}/rules": frozenset(),
    "/v1/admin/clock": frozenset(),
    "/": frozenset(),
    "/web/{name}": frozenset(),
    "/v1/demo/fundamental": frozenset(),
    "/v1/admin/instruments/{symbol}/fees": frozenset(),
    "/v1/admin/accounts/{account}": frozenset(),
}
# Characters of a refused parameter's name quoted back in the error message.
NAME_SHOWN = 32

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def check_routes(router: web.UrlDispatcher) -> None:
    """Raise unless the table names exactly the router's routes (called at app build)."""
    routes = {r.canonical for r in router.resources() if not binance.owns(r.canonical)}
    missing, stale = routes - ROUTE_PARAMS.keys(), ROUTE_PARAMS.keys() - routes
    if missing or stale:
        msg = f"gateway/queryparams.py ROUTE_PARAMS: add {sorted(missing)}, drop {sorted(stale)}"
        raise RuntimeError(msg)


@web.middleware
async def refuse_unknown_params(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 BAD_REQUEST for a parameter the route does not take, or one given twice."""
    resource = request.match_info.route.resource
    # No route matched: the 404 or 405 answers. The Binance dialect checks its own.
    if resource is not None and request.query and not binance.owns(resource.canonical):
        allowed = ROUTE_PARAMS.get(resource.canonical, frozenset())
        query = request.query
        names = set(query.keys())  # each name once; len(query) counts every occurrence
        unknown = names - allowed
        if unknown:
            name = min(unknown)
            takes = ", ".join(sorted(allowed)) or "none"
            message = f"unknown query parameter {name[:NAME_SHOWN]!a} (takes: {takes})"
            raise ApiError(400, RejectCode.BAD_REQUEST, message)
        if len(names) < len(query):
            twice = sorted(name for name in names if len(query.getall(name)) > 1)
            message = f"query parameter given more than once: {', '.join(twice)}"
            raise ApiError(400, RejectCode.BAD_REQUEST, message)
    return await handler(request)
