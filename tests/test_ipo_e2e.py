"""End to end over the real server: an underwritten (firm, undersubscribed) offering and
its allocation, its opening auction with indicative prices
on the book channel, the uncross at the volume-maximising price, continuous trading, an
order beyond the dynamic band, the volatility interruption, and its timer-driven re-open;
a gtd order's expiry; a halt and its re-opening auction; a session's close.

The server runs with `--test-clock`: the sequencer's clock stands still until the test
moves it (POST /v1/admin/clock), so the interruption ends when the test says, with no
sleeping and no wall-clock timing.
"""

from pathlib import Path
from typing import Any

from gateway.client import Admin, Client
from tests.server import ADMIN_TOKEN, running

T0 = 1_800_000_000_000_000_000
SECOND = 1_000_000_000
INTERRUPTION_S = 30


async def _until(client: Client, kind: str, **match: Any) -> dict[str, Any]:
    """The next pushed message of `kind` whose fields include `match` (others skipped)."""
    while True:  # bounded by next_event's timeout
        message = await client.next_event(kind)
        if all(message.get(k) == v for k, v in match.items()):
            return message


async def test_an_ipo_from_offering_to_auction_to_interruption_and_reopen(tmp_path: Path) -> None:
    async with (
        running(tmp_path / "data", extra=("--test-clock", str(T0))) as server,
        Admin(server.base_url, ADMIN_TOKEN) as admin,
    ):
        _, issuer_key = await admin.account("issuer")
        issuer = (await admin.ok("GET", "/v1/account", token=issuer_key))["account"]
        alice, alice_key = await admin.account("alice", "20000.00")
        _, bob_key = await admin.account("bob", "20000.00")
        _, carol_key = await admin.account("carol", "20000.00")
        bank, bank_key = await admin.account("bank", "15000.00")
        listing = {
            "symbol": "IPO", "kind": "share", "tick_size": "0.01", "issuer": issuer,
            "band_pct": 10, "interruption_s": INTERRUPTION_S,
        }  # fmt: skip
        listed = await admin.ok("POST", "/v1/admin/instruments", listing)
        assert (listed["status"], listed["rules"]["band_pct"]) == ("listed", 10)
        code, refused = await admin.call(
            "POST", "/v1/admin/instruments/IPO/rules", {"open_at": T0 - 1}
        )
        assert (code, refused["code"]) == (409, "BAD_EXPIRY")
        terms = {"symbol": "IPO", "price": "10.00", "qty": 1000, "underwriter": bank,
                 "fee_bps": 700, "commitment": "firm"}  # fmt: skip
        offering_id = (await admin.ok("POST", "/v1/admin/offerings", terms))["offering_id"]

        async with (
            await Client.connect(server.ws_url) as watcher,
            await Client.connect(server.ws_url, alice_key) as a,
            await Client.connect(server.ws_url, bob_key) as b,
            await Client.connect(server.ws_url, carol_key) as c,
        ):
            await a.request("subscribe_offering", offering_id=offering_id, qty=600)
            await b.request("subscribe_offering", offering_id=offering_id, qty=300)
            await watcher.subscribe(["book", "trades"], ["IPO"])
            snapshot = await watcher.next_event("book_snapshot")
            assert snapshot["status"] == "in_offering"

            # The offering closes undersubscribed (900 of 1,000): everyone gets what they
            # asked for, the underwriter buys the other 100 and takes its 7% of the gross;
            # the instrument is in its opening auction.
            closed = await admin.ok("POST", f"/v1/admin/offerings/{offering_id}/close")
            assert (closed["issued"], closed["underwritten"], closed["fee"]) == (
                1000, 100, "700.00"
            )
            assert closed["issuer_proceeds"] == "9300.00"
            bank_now = await admin.ok("GET", "/v1/account", token=bank_key)
            assert (bank_now["cash"], bank_now["positions"]) == ("14700.00", {"IPO": 100})
            issuer_now = await admin.ok("GET", "/v1/account", token=issuer_key)
            assert issuer_now["cash"] == "9300.00"
            status = await _until(watcher, "status", symbol="IPO")
            assert (status["status"], status["reason"], status["open_at"]) == (
                "pre_open", "offering", None
            )
            assert (await a.place("IPO", "sell", 300, "9.80"))["status"] == "open"
            assert (await b.place("IPO", "buy", 200, "10.20"))["status"] == "open"
            assert (await c.place("IPO", "buy", 100, "10.10"))["status"] == "open"
            refused = await c.place("IPO", "buy", 5)
            assert (refused["type"], refused["code"]) == ("rejected", "NOT_IN_PHASE")
            refused = await c.place("IPO", "buy", 5, "11.01")  # the band: 9.00 to 11.00
            assert (refused["type"], refused["code"]) == ("rejected", "PRICE_OUT_OF_BAND")
            # 300 trade anywhere from 9.80 to 10.10 with nothing left over: the nearest to
            # the reference (the offering price) is 10.00.
            indicative = await _until(watcher, "auction", indicative_qty=300)
            assert (indicative["indicative_price"], indicative["imbalance_side"]) == ("10.00", None)
            book = await admin.ok("GET", "/v1/book/IPO")
            assert (book["bids"][0], book["asks"][0]) == (["10.20", 200], ["9.80", 300])

            opened = await admin.ok("POST", "/v1/admin/instruments/IPO/auction")
            assert (opened["status"], opened["uncrossed"]) == (
                "trading", {"price": "10.00", "qty": 300}
            )
            trades = [await watcher.next_event("trade") for _ in range(2)]
            assert [(t["price"], t["qty"]) for t in trades] == [("10.00", 200), ("10.00", 100)]
            assert (await _until(watcher, "status", symbol="IPO"))["status"] == "trading"
            assert (await admin.ok("GET", "/v1/account", token=alice_key))["positions"] == {
                "IPO": 300
            }
            assert (await a.next_event("fill"))["price"] == "10.00"

            # Continuous trading: a trade at 10.40 moves the reference (band 9.36..11.44).
            await a.place("IPO", "sell", 50, "10.40")
            await a.place("IPO", "sell", 20, "10.70")
            await b.place("IPO", "buy", 10, "10.40")
            assert (await watcher.next_event("trade"))["price"] == "10.40"
            # A narrower band (10.20..10.60): the ask at 10.70 is now beyond it.
            await admin.ok("POST", "/v1/admin/instruments/IPO/rules", {"band_pct": 2})
            market_buy = await b.place("IPO", "buy", 60)
            assert (market_buy["filled"], market_buy["status"]) == (40, "expired")
            interrupted = await _until(watcher, "status", symbol="IPO")
            assert (interrupted["status"], interrupted["reason"]) == ("pre_open", "volatility")
            assert interrupted["open_at"] == T0 + INTERRUPTION_S * SECOND

            # The volatility auction: orders rest, then the clock reaches its end.
            await c.place("IPO", "buy", 20, "10.60")
            await a.place("IPO", "sell", 20, "10.50")
            indicative = await _until(watcher, "auction", indicative_qty=20)
            assert indicative["indicative_price"] == "10.50"  # the nearest to 10.40
            await admin.ok("POST", "/v1/admin/clock", {"now": T0 + (INTERRUPTION_S - 1) * SECOND})
            await admin.ok("POST", "/v1/admin/clock", {"now": T0 + INTERRUPTION_S * SECOND})
            reopened = await _until(watcher, "status", symbol="IPO")
            assert (reopened["status"], reopened["reason"]) == ("trading", "open_at")
            last = await admin.ok("GET", "/v1/trades/IPO?limit=1")
            assert [(t["price"], t["qty"]) for t in last["trades"]] == [("10.50", 20)]

            # A gtd order ends at its time, by the same timer.
            expire_at = T0 + (INTERRUPTION_S + 10) * SECOND
            gtd = await c.place("IPO", "buy", 5, "10.30", tif="gtd", expire_at=expire_at)
            assert (gtd["tif"], gtd["expire_at"], gtd["status"]) == ("gtd", expire_at, "open")
            late = await c.place("IPO", "buy", 5, "10.30", tif="gtd", expire_at=T0)
            assert (late["type"], late["code"]) == ("rejected", "BAD_EXPIRY")
            await admin.ok("POST", "/v1/admin/clock", {"now": expire_at})
            done = await _until(c, "done", order_id=gtd["order_id"])
            assert (done["order_id"], done["reason"]) == (gtd["order_id"], "expired")
            order = await admin.ok("GET", f"/v1/orders/{gtd['order_id']}", token=carol_key)
            assert (order["status"], order["expire_at"]) == ("expired", expire_at)
        # Alice: 600 allocated, 300 sold in the opening auction, 10 and 40 continuously,
        # 20 in the re-opening auction.
        account = await admin.ok("GET", "/v1/account", token=alice_key)
        assert (account["account"], account["positions"]) == (alice, {"IPO": 230})


async def test_a_halt_and_its_reopening_auction_over_the_admin_routes(tmp_path: Path) -> None:
    async with (
        running(tmp_path / "data", extra=("--test-clock", str(T0))) as server,
        Admin(server.base_url, ADMIN_TOKEN) as admin,
    ):
        _, issuer_key = await admin.account("issuer")
        issuer = (await admin.ok("GET", "/v1/account", token=issuer_key))["account"]
        _, key = await admin.account("trader", "1000.00")
        listing = {"symbol": "HLT", "kind": "share", "tick_size": "0.01", "issuer": issuer,
                   "interruption_s": 5, "close_at": T0 + 60 * SECOND}  # fmt: skip
        await admin.ok("POST", "/v1/admin/instruments", listing)
        await admin.ok("POST", "/v1/admin/instruments/HLT/status", {"status": "trading"})
        async with await Client.connect(server.ws_url, key) as trader:
            day = await trader.place("HLT", "buy", 1, "5.00", tif="day")
            assert (await admin.ok("POST", "/v1/admin/instruments/HLT/halt"))["status"] == "halted"
            refused = await trader.place("HLT", "buy", 1, "5.00")
            assert (refused["type"], refused["code"]) == ("rejected", "NOT_IN_PHASE")
            resumed = await admin.ok("POST", "/v1/admin/instruments/HLT/resume")
            assert (resumed["status"], resumed["open_at"]) == ("pre_open", T0 + 5 * SECOND)
            status, body = await admin.call("POST", "/v1/admin/instruments/HLT/auction")
            assert (status, body["status"]) == (200, "trading")
            status, body = await admin.call("POST", "/v1/admin/instruments/HLT/auction")
            assert (status, body["code"]) == (409, "NOT_IN_PHASE")
            # The session's close (close_at) expires the day order.
            await admin.ok("POST", "/v1/admin/clock", {"now": T0 + 60 * SECOND})
            done = await _until(trader, "done", order_id=day["order_id"])
            assert done["reason"] == "expired"
            listed = (await admin.ok("GET", "/v1/instruments?status=closed"))["instruments"]
            assert [i["symbol"] for i in listed] == ["HLT"]


async def test_the_clock_route_exists_only_with_a_test_clock(tmp_path: Path) -> None:
    async with running(tmp_path / "data") as server, Admin(server.base_url, ADMIN_TOKEN) as admin:
        status, body = await admin.call("POST", "/v1/admin/clock", {"now": T0})
        assert (status, body["code"]) == (404, "NOT_FOUND")
