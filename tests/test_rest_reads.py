"""End to end: the REST reads of issue 13 (item 14) against the real server: /v1/time,
/v1/ticker, the instruments' filters, orders by client_order_id, cursor pages that walk to
the same list as one big page (orders placed meanwhile shift nothing), and the route table
that refuses an unknown or repeated query parameter on every route."""

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from exchange.domain.limits import MAX_QTY
from gateway.client import Admin, Client
from gateway.queryparams import ROUTE_PARAMS
from tests.server import ADMIN_TOKEN, RunningServer, running

pytestmark = pytest.mark.asyncio(loop_scope="module")

MINUTE_NS = 60_000_000_000
DAY_NS = 1_440 * MINUTE_NS
# A route's placeholders, filled so that the route is found.
PLACEHOLDERS = {
    "{symbol}": "ACME", "{order_id}": "1", "{offering_id}": "1", "{account}": "A1",
    "{name}": "main.js",
}  # fmt: skip
# Admin routes that read (every other admin route is a POST).
ADMIN_READS = frozenset({"/v1/admin/accounts/{account}"})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    async with running(tmp_path_factory.mktemp("rest-reads") / "data", demo=True) as market:
        yield market


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(server: RunningServer) -> AsyncIterator[Admin]:
    async with Admin(server.base_url, ADMIN_TOKEN) as calls:
        yield calls


def demo_key(server: RunningServer, name: str) -> str:
    keys = json.loads((server.data_dir / "demo-keys.json").read_text())
    return str(keys[name]["api_key"])


async def raw_get(server: RunningServer, target: str, method: str = "GET") -> tuple[int, Any]:
    """(status, decoded JSON body) of a request sent as written (nothing re-encoded)."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.base_url + target) as response,
    ):
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


async def new_trader(admin: Admin, name: str) -> str:
    _, key = await admin.account(name, "100000.00")
    return key


# --- the route table --------------------------------------------------------------------------


def route_target(route: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        route = route.replace(placeholder, value)
    return route


def method_of(route: str) -> str:
    return "POST" if route.startswith("/v1/admin/") and route not in ADMIN_READS else "GET"


@pytest.mark.parametrize("route", sorted(ROUTE_PARAMS))
async def test_every_route_refuses_an_unknown_query_parameter(
    server: RunningServer, route: str
) -> None:
    status, body = await raw_get(server, route_target(route) + "?bogus=1", method_of(route))
    assert (status, body["code"]) == (400, "BAD_REQUEST"), (route, body)
    assert "bogus" in body["message"]


@pytest.mark.parametrize("route", sorted(r for r, names in ROUTE_PARAMS.items() if names))
async def test_every_route_refuses_a_parameter_given_twice(
    server: RunningServer, route: str
) -> None:
    name = min(ROUTE_PARAMS[route])
    target = f"{route_target(route)}?{name}=1&{name}=1"
    status, body = await raw_get(server, target, method_of(route))
    assert (status, body["code"]) == (400, "BAD_REQUEST"), (route, body)
    assert "more than once" in body["message"]


async def test_an_unknown_parameter_is_refused_before_authentication(
    server: RunningServer,
) -> None:
    """The table is checked first: a wrong parameter is the answer, whoever calls."""
    assert (await raw_get(server, "/v1/account?api_key=x"))[0] == 400


# --- /v1/time and /v1/instruments --------------------------------------------------------------


async def test_time_is_the_gateways_clock_in_ns(admin: Admin) -> None:
    answer = await admin.ok("GET", "/v1/time")
    assert set(answer) == {"server_time"}
    assert isinstance(answer["server_time"], int)
    # The same machine's clock: a sanity check of the unit (ns), not a timing assertion.
    assert abs(answer["server_time"] - time.time_ns()) < DAY_NS


async def test_instruments_carry_their_filters_and_fees(admin: Admin) -> None:
    listed = {i["symbol"]: i for i in (await admin.ok("GET", "/v1/instruments"))["instruments"]}
    acme = listed["ACME"]
    assert acme == {
        "symbol": "ACME", "kind": "share", "tick_size": "0.01", "issuer": acme["issuer"],
        "status": "trading", "min_qty": 1, "max_qty": MAX_QTY, "max_price": "10000000.00",
        "fees": {"maker_bps": -2, "taker_bps": 10},  # the demo's (gateway/demo.py)
        "rules": {"band_pct": 0, "interruption_s": 120, "open_at": None, "close_at": None},
    }  # fmt: skip


async def test_instruments_filter_by_kind_and_status(admin: Admin) -> None:
    bonds = (await admin.ok("GET", "/v1/instruments?kind=bond"))["instruments"]
    assert [i["symbol"] for i in bonds] == ["BOND"]
    trading = (await admin.ok("GET", "/v1/instruments?status=trading&kind=share"))["instruments"]
    assert "ACME" in {i["symbol"] for i in trading}
    assert (await admin.ok("GET", "/v1/instruments?status=halted&kind=bond"))["instruments"] == []
    for bad in ("kind=stock", "status=", "status=TRADING", "kind=share%00"):
        status, body = await admin.call("GET", f"/v1/instruments?{bad}")
        assert (status, body["code"]) == (400, "BAD_REQUEST"), bad


# --- /v1/orders: client_order_id, symbol and cursor pages --------------------------------------


async def test_an_order_is_found_by_its_client_order_id(
    server: RunningServer, admin: Admin
) -> None:
    key = await new_trader(admin, "cid")
    async with await Client.connect(server.ws_url, key) as trader:
        resting = await trader.place("ACME", "buy", 1, "1.00", client_order_id="c-open")
        ended = await trader.place("ACME", "buy", 1, "1.01", client_order_id="c-ended")
        await trader.cancel(order_id=ended["order_id"])

    async def by_cid(text: str) -> list[dict[str, Any]]:
        answer = await admin.ok("GET", f"/v1/orders?client_order_id={text}", token=key)
        assert answer["next_cursor"] is None
        orders: list[dict[str, Any]] = answer["orders"]
        return orders

    assert [(o["order_id"], o["status"]) for o in await by_cid("c-open")] == [
        (resting["order_id"], "open")
    ]
    assert [(o["order_id"], o["status"]) for o in await by_cid("c-ended")] == [
        (ended["order_id"], "cancelled")
    ]
    assert await by_cid("c-never") == []
    # Another account's id is unknown here.
    assert (await admin.ok("GET", "/v1/orders?client_order_id=c-open", token=demo_key(
        server, "alice")))["orders"] == []  # fmt: skip


@pytest.mark.parametrize(
    "query",
    [
        "client_order_id=",
        "client_order_id=a%0Ab",
        "client_order_id=a%E2%80%AEb",
        "client_order_id=" + "x" * 65,
        "client_order_id=c-1&status=all",
        "client_order_id=c-1&limit=5",
    ],
)
async def test_a_bad_client_order_id_lookup_is_refused(
    server: RunningServer, admin: Admin, query: str
) -> None:
    status, body = await admin.call("GET", f"/v1/orders?{query}", token=demo_key(server, "alice"))
    assert (status, body["code"]) == (400, "BAD_REQUEST"), query


async def all_pages(
    admin: Admin, key: str, query: str, what: str = "orders", cursor: str | None = None
) -> list[Any]:
    """Every item from `cursor` on, walked page by page with the answers' cursors."""
    items: list[Any] = []
    cursor = f"&cursor={cursor}" if cursor is not None else ""
    for _ in range(1_000):  # bounded: each page moves the cursor to older items
        page = await admin.ok("GET", f"/v1/{what}?{query}{cursor}", token=key)
        items += page[what]
        if page["next_cursor"] is None:
            return items
        assert page[what], "a page that promises more must hold some"
        cursor = f"&cursor={page['next_cursor']}"
    raise AssertionError("the cursor never ended")


async def test_orders_in_cursor_pages_are_the_one_big_page_even_as_orders_arrive(
    server: RunningServer, admin: Admin
) -> None:
    key = await new_trader(admin, "pager")
    async with await Client.connect(server.ws_url, key) as trader:
        placed = [
            await trader.place("ACME", "buy", 1, f"1.{i:02d}", client_order_id=f"p-{i}")
            for i in range(23)
        ]
        for order in placed[::3]:
            await trader.cancel(order_id=order["order_id"])
        big = (await admin.ok("GET", "/v1/orders?status=all", token=key))["orders"]
        assert len(big) == 23
        assert [o["order_id"] for o in big] == [p["order_id"] for p in reversed(placed)]
        # The first page, then new orders, then the rest: nothing shifts.
        first = await admin.ok("GET", "/v1/orders?status=all&limit=5", token=key)
        for i in range(3):
            await trader.place("ACME", "buy", 1, f"2.{i:02d}", client_order_id=f"new-{i}")
        rest = await all_pages(admin, key, "status=all&limit=5", cursor=first["next_cursor"])
        assert first["orders"] + rest == big
        assert (
            await all_pages(admin, key, "status=all&limit=5")
            == (await admin.ok("GET", "/v1/orders?status=all", token=key))["orders"]
        )
        open_now = (await admin.ok("GET", "/v1/orders", token=key))["orders"]
        assert await all_pages(admin, key, "limit=4") == open_now
        assert len(open_now) == 23 - 8 + 3
        # A page that holds the rest exactly says there is no more.
        last = await admin.ok("GET", "/v1/orders?status=all&limit=26", token=key)
        assert (len(last["orders"]), last["next_cursor"]) == (26, None)


async def test_orders_and_fills_filter_by_symbol(server: RunningServer, admin: Admin) -> None:
    key = await new_trader(admin, "symbols")
    async with await Client.connect(server.ws_url, key) as trader:
        acme = await trader.place("ACME", "buy", 1, "1.00")
        bond = await trader.place("BOND", "buy", 1, "1.00")
    for symbol, order in (("ACME", acme), ("BOND", bond)):
        shown = await admin.ok("GET", f"/v1/orders?symbol={symbol}", token=key)
        assert [o["order_id"] for o in shown["orders"]] == [order["order_id"]]
    for query, code in (("symbol=NOPE", "UNKNOWN_SYMBOL"), ("symbol=", "BAD_REQUEST"),
                        ("symbol=ac%0A", "BAD_REQUEST")):  # fmt: skip
        for what in ("orders", "fills"):
            _, body = await admin.call("GET", f"/v1/{what}?{query}", token=key)
            assert body["code"] == code, (what, query, body)


async def test_fills_in_cursor_pages_are_the_one_big_page(
    server: RunningServer, admin: Admin
) -> None:
    key = await new_trader(admin, "taker")
    async with await Client.connect(server.ws_url, key) as trader:
        for i in range(7):
            taken = await trader.place("BOND", "buy", 1, "100.00", client_order_id=f"t-{i}")
            assert taken["status"] == "filled", taken
    big = (await admin.ok("GET", "/v1/fills", token=key))["fills"]
    assert len(big) == 7
    assert all((f["fee"], f["fee_asset"]) == ("0.00", "USD") for f in big)
    assert await all_pages(admin, key, "limit=3", "fills") == big
    assert await all_pages(admin, key, "limit=1&symbol=BOND", "fills") == big


@pytest.mark.parametrize("cursor", ["", "abc", "-1", "1.5", "%C2%B2", "%D9%A3", "9" * 20, " 1"])
@pytest.mark.parametrize("what", ["orders", "fills"])
async def test_a_malformed_cursor_is_refused(server: RunningServer, what: str, cursor: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            server.base_url + f"/v1/{what}?cursor={cursor}",
            headers={"Authorization": f"Bearer {demo_key(server, 'alice')}"},
        ) as response,
    ):
        body = await response.json()
        assert (response.status, body["code"]) == (400, "BAD_REQUEST"), (what, cursor)


# --- /v1/ticker --------------------------------------------------------------------------------


async def test_the_ticker_has_the_ws_fields_and_the_days_figures(
    server: RunningServer, admin: Admin
) -> None:
    issuer, _ = await admin.account("tick-issuer")
    listing = {"symbol": "TICK", "kind": "share", "tick_size": "0.01", "issuer": issuer}
    await admin.ok("POST", "/v1/admin/instruments", listing)
    await admin.ok("POST", "/v1/admin/instruments/TICK/status", {"status": "trading"})
    seller_account, seller_key = await admin.account("tick-seller")
    await admin.ok("POST", "/v1/admin/deposits", {"account": seller_account, "symbol": "TICK",
                                                   "qty": 100})  # fmt: skip
    buyer_key = await new_trader(admin, "tick-buyer")
    quiet = await admin.ok("GET", "/v1/ticker/TICK")
    assert quiet["24h"] == {"since": None, "open": None, "high": None, "low": None, "volume": 0}
    async with (
        await Client.connect(server.ws_url, seller_key) as seller,
        await Client.connect(server.ws_url, buyer_key) as buyer,
        await Client.connect(server.ws_url) as watcher,
    ):
        for price, qty in (("5.00", 1), ("5.50", 2), ("4.80", 3)):
            await seller.place("TICK", "sell", qty, price)
            assert (await buyer.place("TICK", "buy", qty, price))["status"] == "filled"
        await seller.place("TICK", "sell", 5, "6.00")
        await buyer.place("TICK", "buy", 5, "4.00")
        ticker = await admin.ok("GET", "/v1/ticker/TICK")
        await watcher.subscribe(["ticker"], ["TICK"])
        ws_ticker = await watcher.next_event("ticker")
    day = ticker.pop("24h")
    assert ticker == ws_ticker
    assert (ticker["last"], ticker["best_bid"], ticker["best_ask"], ticker["volume"]) == (
        "4.80",
        "4.00",
        "6.00",
        6,
    )
    minute = (await admin.ok("GET", "/v1/candles/TICK?interval=1m"))["candles"][-1]["ts"]
    assert day == {
        "since": minute - DAY_NS + MINUTE_NS, "open": "5.00", "high": "5.50", "low": "4.80",
        "volume": 6,
    }  # fmt: skip


async def test_the_ticker_of_an_unknown_symbol_is_404(admin: Admin) -> None:
    status, body = await admin.call("GET", "/v1/ticker/NOPE")
    assert (status, body["code"]) == (404, "UNKNOWN_SYMBOL")
