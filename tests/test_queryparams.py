"""The route table of query parameters must name exactly the app's routes."""

import pytest
from aiohttp import web

from gateway.queryparams import ROUTE_PARAMS, check_routes


async def _nothing(request: web.Request) -> web.Response:
    return web.Response()


def _app(paths: list[str]) -> web.Application:
    app = web.Application()
    for path in paths:
        app.router.add_get(path, _nothing)
    return app


def test_the_table_passes_when_it_names_every_route() -> None:
    check_routes(_app(list(ROUTE_PARAMS)).router)


def test_a_route_missing_from_the_table_stops_the_app() -> None:
    with pytest.raises(RuntimeError, match=r"add \['/v1/new'\]"):
        check_routes(_app([*ROUTE_PARAMS, "/v1/new"]).router)


def test_a_stale_entry_in_the_table_stops_the_app() -> None:
    with pytest.raises(RuntimeError, match=r"drop \['/v1/time'\]"):
        check_routes(_app([p for p in ROUTE_PARAMS if p != "/v1/time"]).router)
