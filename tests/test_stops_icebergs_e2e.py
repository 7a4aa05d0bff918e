"""End to end over the WebSocket (issue 16): a stop order that a trade triggers, and an
iceberg whose book (REST and the `book` channel) shows only its displayed part.

Runs against both wirings (tests/wirings.py), on a fresh instrument of its own.
"""

from pathlib import Path

import pytest

from gateway.client import Admin, Client
from tests.server import ADMIN_TOKEN
from tests.wirings import WIRINGS, serving

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("wiring", WIRINGS)
async def test_a_stop_triggers_and_an_iceberg_shows_only_its_display(
    wiring: str, tmp_path: Path
) -> None:
    async with serving(wiring, tmp_path, demo=False) as server, Admin(
        server.base_url, ADMIN_TOKEN
    ) as admin:
        issuer, _ = await admin.account("issuer")
        _, alice_key = await admin.account("alice", "10000.00")
        _, bob_key = await admin.account("bob", "10000.00")
        _, carol_key = await admin.account("carol", "10000.00")
        listing = {"symbol": "STOP", "kind": "share", "tick_size": "0.01", "issuer": issuer}
        await admin.ok("POST", "/v1/admin/instruments", listing)
        offering = await admin.ok(
            "POST", "/v1/admin/offerings", {"symbol": "STOP", "price": "5.00", "qty": 400}
        )
        async with (
            await Client.connect(server.ws_url) as a,
            await Client.connect(server.ws_url) as b,
            await Client.connect(server.ws_url) as c,
            await Client.connect(server.ws_url) as watcher,
        ):
            await a.auth(alice_key)
            await b.auth(bob_key)
            await c.auth(carol_key)
            for client in (a, b):
                await client.request(
                    "subscribe_offering", offering_id=offering["offering_id"], qty=200
                )
            await admin.ok("POST", f"/v1/admin/offerings/{offering['offering_id']}/close")
            # The close leaves it in its opening auction (market phases): uncross, empty.
            await admin.ok("POST", "/v1/admin/instruments/STOP/auction")

            # An iceberg: 100 at 5.10, 10 shown.
            ice = await a.place("STOP", "sell", 100, "5.10", display_qty=10)
            assert (ice["type"], ice["display_qty"], ice["remaining"]) == ("accepted", 10, 100)
            assert (await admin.ok("GET", "/v1/book/STOP"))["asks"] == [["5.10", 10]]
            await watcher.subscribe(["book"], ["STOP"])
            snapshot = await watcher.next_event("book_snapshot")
            assert snapshot["asks"] == [["5.10", 10]]
            bad = await a.place("STOP", "sell", 5, "5.20", display_qty=6)
            assert (bad["type"], bad["code"]) == ("rejected", "BAD_QTY")

            # Taking 15: the shown 10, a refresh of 10 at the back, then 5 of it.
            await b.place("STOP", "buy", 15, "5.10")
            update = await watcher.next_event("book_update")
            assert update["changes"] == [["sell", "5.10", 5]]
            assert (await admin.ok("GET", "/v1/book/STOP"))["asks"] == [["5.10", 5]]
            mine = (await admin.ok("GET", "/v1/orders", token=alice_key))["orders"]
            assert [(o["remaining"], o["display_qty"]) for o in mine] == [(85, 10)]

            # A sell stop at 4.90 that the next trade at 4.90 triggers.
            off_tick = await b.place("STOP", "sell", 20, type="stop", trigger_price="4.905")
            assert (off_tick["type"], off_tick["code"]) == ("rejected", "BAD_TRIGGER")
            stop = await b.place("STOP", "sell", 20, type="stop", trigger_price="4.90")
            assert (stop["type"], stop["order_type"], stop["trigger_price"]) == (
                "accepted", "stop", "4.90",
            )  # fmt: skip
            waiting = (await admin.ok("GET", "/v1/orders", token=bob_key))["orders"]
            assert [(o["type"], o["trigger_price"]) for o in waiting] == [("stop", "4.90")]
            await c.place("STOP", "buy", 30, "4.90")
            await c.place("STOP", "buy", 50, "4.80")
            await a.place("STOP", "sell", 1, "4.90")  # prints at 4.90
            triggered = await b.next_event("triggered")
            assert (triggered["order_id"], triggered["order_type"]) == (stop["order_id"], "market")
            fill = await b.next_event("fill")
            assert (fill["order_id"], fill["price"], fill["qty"]) == (stop["order_id"], "4.90", 20)
            assert (await b.next_event("done"))["reason"] == "filled"
            book = await admin.ok("GET", "/v1/book/STOP")
            assert book["bids"] == [["4.90", 9], ["4.80", 50]]
            account = await admin.ok("GET", "/v1/account", token=bob_key)
            assert account["positions"] == {"STOP": 200 + 15 - 20}
