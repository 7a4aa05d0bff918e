"""The Binance-spot dialect: a second face of the same gateway (same bus, read side and
accounts), so ccxt's `binance` class and Binance bots trade here unchanged
(docs/BINANCE.md). REST under /api/v3 (public.py, private.py, userdata.py's listen keys),
market streams on /ws and /stream (streams.py), the user-data stream on /ws-api/v3.
"""

from aiohttp import web

from gateway.binance import private, public, signing, streams, userdata
from gateway.binance.edge import Dialect
from gateway.binance.shapes import Names
from gateway.binance.weights import WEIGHT_PER_MINUTE, Weights
from gateway.readmodel import DEFAULT_CURRENCY

# Paths this dialect owns: they check their own parameters (Binance's rules and codes),
# not the native table of gateway/queryparams.py.
PATH_PREFIXES = ("/api/", "/ws/", "/stream", "/ws-api/")
PATHS = frozenset({"/ws"})


def owns(path: str) -> bool:
    return path in PATHS or path.startswith(PATH_PREFIXES)


def setup(
    app: web.Application, admin_token: str, currency: str = DEFAULT_CURRENCY,
    weight_limit: int | None = None,
) -> Dialect:  # fmt: skip
    """Register the dialect's routes and listeners on the gateway's app."""
    d = Dialect(app["read"], app["sequencer"], Names(app["read"], currency),
                signing.secret_key(admin_token),
                Weights(weight_limit or WEIGHT_PER_MINUTE))  # fmt: skip
    app["binance"] = d
    app.on_shutdown.append(d.close_sockets)
    app["binance_streams"] = streams.Streams(d)
    app["binance_users"] = userdata.UserData(d)
    app.add_routes(public.routes)
    app.add_routes(private.routes)
    app.add_routes(userdata.routes)
    app.router.add_get("/ws", streams.handler)
    app.router.add_get("/ws/{tail:.+}", streams.handler)
    app.router.add_get("/stream", streams.handler)
    app.router.add_get("/ws-api/v3", userdata.ws_api_handler)
    app.router.add_route("*", "/api/{tail:.*}", public.not_offered)  # last: what is left
    return d
