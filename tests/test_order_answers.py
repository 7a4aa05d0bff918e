"""End to end: `accepted` states the order as the command left it, a market order shows
the `tif` it behaves by, and every fill carries the order's cumulative filled quantity and
average price (issue 13, 15). The demo's ACME asks: 10.05 x100, 10.10 x200, 10.15 x300."""

import pytest

from gateway.client import Admin, Client
from tests.server import ADMIN_TOKEN, RunningServer, running
from tests.test_gateway_e2e import demo_key


@pytest.fixture
async def market(tmp_path):  # type: ignore[no-untyped-def]
    async with running(tmp_path / "data", demo=True) as server:
        yield server


def _state(answer: dict[str, object]) -> tuple[object, ...]:
    return answer["status"], answer["remaining"], answer["filled"], answer["avg_price"]


async def test_an_ioc_that_filled_is_answered_filled(market: RunningServer) -> None:
    async with await Client.connect(market.ws_url, demo_key(market, "alice")) as alice:
        answer = await alice.place("ACME", "buy", 50, "10.05", tif="ioc")
        assert answer["type"] == "accepted"
        assert _state(answer) == ("filled", 0, 50, "10.05")


async def test_an_ioc_remainder_is_answered_expired_with_what_filled(
    market: RunningServer,
) -> None:
    async with await Client.connect(market.ws_url, demo_key(market, "alice")) as alice:
        answer = await alice.place("ACME", "buy", 150, "10.05", tif="ioc")
        assert _state(answer) == ("expired", 50, 100, "10.05")
        fill = await alice.next_event("fill")
        assert (fill["qty"], fill["filled"], fill["remaining"]) == (100, 100, 50)
        assert (await alice.next_event("done"))["reason"] == "expired"


async def test_fills_carry_the_orders_cumulative_quantity_and_average_price(
    market: RunningServer,
) -> None:
    async with await Client.connect(market.ws_url, demo_key(market, "alice")) as alice:
        answer = await alice.place("ACME", "buy", 150, "10.10", client_order_id="sweep")
        assert _state(answer) == ("filled", 0, 150, "10.066667")  # (100 x 10.05 + 50 x 10.10) / 150
        fills = [await alice.next_event("fill") for _ in range(2)]
        assert [(f["price"], f["filled"], f["avg_price"]) for f in fills] == [
            ("10.05", 100, "10.05"),
            ("10.10", 150, "10.066667"),
        ]
        assert {f["client_order_id"] for f in fills} == {"sweep"}
    async with Admin(market.base_url, ADMIN_TOKEN) as admin:
        key = demo_key(market, "alice")
        order = await admin.ok("GET", f"/v1/orders/{answer['order_id']}", token=key)
        assert (order["filled"], order["avg_price"], order["status"]) == (
            150,
            "10.066667",
            "filled",
        )


async def test_a_resting_order_is_answered_open_with_nothing_filled(market: RunningServer) -> None:
    async with await Client.connect(market.ws_url, demo_key(market, "alice")) as alice:
        answer = await alice.place("ACME", "buy", 5, "9.50")
        assert _state(answer) == ("open", 5, 0, None)


async def test_a_market_order_shows_the_tif_it_behaves_by(market: RunningServer) -> None:
    async with await Client.connect(market.ws_url, demo_key(market, "alice")) as alice:
        answer = await alice.request("place", symbol="ACME", side="buy", type="market", qty=150)
        assert (answer["tif"], answer["order_type"]) == ("ioc", "market")
        assert _state(answer) == ("filled", 0, 150, "10.066667")
        fok = await alice.request(
            "place", symbol="ACME", side="buy", type="market", qty=10, tif="fok"
        )
        assert fok["tif"] == "fok"
