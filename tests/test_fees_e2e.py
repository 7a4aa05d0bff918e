"""End to end over the real server: an underwritten, firm, undersubscribed offering, its
opening auction, and the uncross fill's fees (the older order the maker) in the WebSocket
fill message, /v1/fills and the fee account, in both wirings (one process, and the roles
over NATS: the read side each gateway builds from the stream)."""

from pathlib import Path

import pytest

from gateway.client import Admin, Client, RefusedError
from tests.server import ADMIN_TOKEN, running
from tests.wirings import WIRINGS, serving

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("wiring", WIRINGS)
async def test_an_underwritten_offering_then_trading_with_fees(wiring: str, tmp_path: Path) -> None:
    async with serving(wiring, tmp_path) as server, Admin(server.base_url, ADMIN_TOKEN) as admin:
        issuer, issuer_key = await admin.account("issuer")
        bank, _ = await admin.account("bank", "20000.00")
        _alice, alice_key = await admin.account("alice", "10000.00")
        _bob, bob_key = await admin.account("bob", "10000.00")
        listing = {"symbol": "NEWCO", "kind": "share", "tick_size": "0.01", "issuer": issuer,
                   "maker_bps": 10, "taker_bps": 25}
        await admin.ok("POST", "/v1/admin/instruments", listing)
        fees = await admin.ok("POST", "/v1/admin/instruments/NEWCO/fees",
                              {"maker_bps": -5, "taker_bps": 20})
        assert fees == {"symbol": "NEWCO", "maker_bps": -5, "taker_bps": 20}
        listed = (await admin.ok("GET", "/v1/instruments"))["instruments"]
        assert [i["fees"] for i in listed if i["symbol"] == "NEWCO"] == [
            {"maker_bps": -5, "taker_bps": 20}
        ]

        terms = {"symbol": "NEWCO", "price": "5.00", "qty": 1000, "underwriter": bank,
                 "fee_bps": 700, "commitment": "firm"}
        offering_id = (await admin.ok("POST", "/v1/admin/offerings", terms))["offering_id"]
        held = await admin.ok("GET", f"/v1/admin/accounts/{bank}")
        assert (held["cash"], held["holds"]["cash"]) == ("20000.00", "5000.00")
        (shown,) = (await admin.ok("GET", "/v1/offerings"))["offerings"]
        assert (shown["underwriter"], shown["fee_bps"], shown["commitment"]) == (bank, 700, "firm")

        async with (
            await Client.connect(server.ws_url, alice_key) as a,
            await Client.connect(server.ws_url, bob_key) as b,
        ):
            await a.request("subscribe_offering", offering_id=offering_id, qty=300)
            await b.request("subscribe_offering", offering_id=offering_id, qty=200)
            closed = await admin.ok("POST", f"/v1/admin/offerings/{offering_id}/close")
            assert closed == {
                "offering_id": offering_id, "symbol": "NEWCO", "issued": 1000,
                "proceeds": "5000.00", "fee": "350.00", "issuer_proceeds": "4650.00",
                "underwriter": bank, "underwritten": 500, "price": "5.00",
            }  # fmt: skip
            bank_now = await admin.ok("GET", f"/v1/admin/accounts/{bank}")
            assert (bank_now["cash"], bank_now["holds"]["cash"], bank_now["positions"]) == (
                "17850.00", "0.00", {"NEWCO": 500}
            )
            issuer_now = await admin.ok("GET", "/v1/account", token=issuer_key)
            assert issuer_now["cash"] == "4650.00"

            # The close left NEWCO in its opening auction: both orders rest, then the
            # uncross fills them at 5.50 (of 5.50 to 5.60, nearest the reference 5.00). The
            # older order (the ask) is the maker, the newer (the bid) the taker: 40 x 5.50 =
            # 220.00, the taker pays 20 bps = 0.44, the maker gets 5 bps = 0.11.
            ask = await a.place("NEWCO", "sell", 100, "5.50", client_order_id="a-1")
            assert ask["type"] == "accepted"
            assert (await b.place("NEWCO", "buy", 40, "5.60"))["type"] == "accepted"
            opened = await admin.ok("POST", "/v1/admin/instruments/NEWCO/auction")
            assert (opened["status"], opened["uncrossed"]) == (
                "trading", {"price": "5.50", "qty": 40}
            )
            taker_fill = await b.next_event("fill")
            maker_fill = await a.next_event("fill")
        assert (taker_fill["fee"], taker_fill["fee_asset"], taker_fill["liquidity"]) == (
            "0.44", "USD", "taker"
        )
        assert (maker_fill["fee"], maker_fill["fee_asset"], maker_fill["liquidity"]) == (
            "-0.11", "USD", "maker"
        )
        (bob_fill,) = (await admin.ok("GET", "/v1/fills", token=bob_key))["fills"]
        (alice_fill,) = (await admin.ok("GET", "/v1/fills", token=alice_key))["fills"]
        assert (bob_fill["fee"], alice_fill["fee"]) == ("0.44", "-0.11")
        assert bob_fill["fee_asset"] == alice_fill["fee_asset"] == "USD"
        fee_account = await admin.ok("GET", "/v1/admin/accounts/FEES")
        assert fee_account["cash"] == "0.33"
        bob_now = await admin.ok("GET", "/v1/account", token=bob_key)
        # 10,000 - 200 x 5.00 (subscribed) - 220.00 - 0.44: the buy's fee hold released.
        assert (bob_now["cash"], bob_now["holds"]["cash"]) == ("8779.56", "0.00")


async def test_fee_and_underwriting_refusals_over_rest(tmp_path: Path) -> None:
    async with running(tmp_path / "data") as server, Admin(server.base_url, ADMIN_TOKEN) as admin:
        issuer, _ = await admin.account("issuer")
        poor, poor_key = await admin.account("poor", "10.00")
        listing = {"symbol": "NEWCO", "kind": "share", "tick_size": "0.01", "issuer": issuer}
        await admin.ok("POST", "/v1/admin/instruments", listing)
        # Before any non-zero rate the fee account is all zeros.
        assert (await admin.ok("GET", "/v1/admin/accounts/FEES"))["cash"] == "0.00"
        refusals = [
            ("POST", "/v1/admin/instruments/NEWCO/fees", {"maker_bps": -30, "taker_bps": 20},
             400, "BAD_FEE"),
            ("POST", "/v1/admin/instruments/NEWCO/fees", {"maker_bps": 0, "taker_bps": 1001},
             400, "BAD_FEE"),
            ("POST", "/v1/admin/instruments/NOPE/fees", {"maker_bps": 0, "taker_bps": 1},
             404, "UNKNOWN_SYMBOL"),
            ("POST", "/v1/admin/instruments", {**listing, "symbol": "B", "taker_bps": -1},
             400, "BAD_FEE"),
            ("POST", "/v1/admin/offerings", {"symbol": "NEWCO", "price": "5.00", "qty": 10,
                                             "underwriter": poor, "commitment": "firm"},
             409, "INSUFFICIENT_FUNDS"),
            ("POST", "/v1/admin/offerings", {"symbol": "NEWCO", "price": "5.00", "qty": 10,
                                             "fee_bps": 100}, 400, "BAD_REQUEST"),
            ("POST", "/v1/admin/offerings", {"symbol": "NEWCO", "price": "5.00", "qty": 10,
                                             "underwriter": poor, "fee_bps": 10_001},
             400, "BAD_FEE"),
            ("POST", "/v1/admin/offerings", {"symbol": "NEWCO", "price": "5.00", "qty": 10,
                                             "underwriter": "A99"}, 404, "UNKNOWN_ACCOUNT"),
            ("GET", "/v1/admin/accounts/A99", None, 404, "UNKNOWN_ACCOUNT"),
        ]
        for method, path, body, status, code in refusals:
            with pytest.raises(RefusedError) as refused:
                await admin.ok(method, path, body)
            assert (refused.value.status, refused.value.payload["code"]) == (status, code), path
        # The fee account is the admin's to read: an API key is refused.
        status, body = await admin.call("GET", "/v1/admin/accounts/FEES", token=poor_key)
        assert (status, body["code"]) == (403, "FORBIDDEN")


async def test_fees_are_charged_in_the_servers_currency(tmp_path: Path) -> None:
    extra = ("--currency", "EUR")
    async with (
        running(tmp_path / "data", extra=extra) as server,
        Admin(server.base_url, ADMIN_TOKEN) as admin,
    ):
        issuer, _ = await admin.account("issuer")
        _alice, alice_key = await admin.account("alice", "1000.00")
        _bob, bob_key = await admin.account("bob", "1000.00")
        listing = {"symbol": "NEWCO", "kind": "share", "tick_size": "0.01", "issuer": issuer,
                   "taker_bps": 20}  # fmt: skip
        await admin.ok("POST", "/v1/admin/instruments", listing)
        terms = {"symbol": "NEWCO", "price": "5.00", "qty": 100}
        offering_id = (await admin.ok("POST", "/v1/admin/offerings", terms))["offering_id"]
        async with (
            await Client.connect(server.ws_url, alice_key) as a,
            await Client.connect(server.ws_url, bob_key) as b,
        ):
            await a.request("subscribe_offering", offering_id=offering_id, qty=100)
            await admin.ok("POST", f"/v1/admin/offerings/{offering_id}/close")
            assert (await a.place("NEWCO", "sell", 10, "5.00"))["type"] == "accepted"
            assert (await b.place("NEWCO", "buy", 10, "5.00"))["type"] == "accepted"
            # The closed offering left NEWCO in its opening auction: the uncross trades them
            # (the older order, alice's, is the maker).
            await admin.ok("POST", "/v1/admin/instruments/NEWCO/auction")
            taker_fill = await b.next_event("fill")
        # 10 x 5.00 = 50.00 at 20 bps: 0.10, in the currency `--currency` names.
        assert (taker_fill["fee"], taker_fill["fee_asset"]) == ("0.10", "EUR")
        (bob_fill,) = (await admin.ok("GET", "/v1/fills", token=bob_key))["fills"]
        assert (bob_fill["fee"], bob_fill["fee_asset"]) == ("0.10", "EUR")
