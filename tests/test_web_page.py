"""The trading page in a real browser (Debian's Chromium through Playwright) against the
real server: it loads without console errors, its ladder is the REST book, a limit order
sent through its ticket shows in open orders and in GET /v1/orders and can be cancelled
there, another client's trade reaches its tape and candles, a stalled socket is shown and
recovers, a bad API key is refused in words. Screenshots: test-artifacts/web/."""

import json
import os
import re
import signal
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, WebSocketRoute, expect

from gateway.client import Admin, Client, LocalBook, book_checksum
from tests import server as srv
from tests.browser import page_at
from tests.wirings import WIRINGS, serving

pytestmark = pytest.mark.slow
# Waits for the page (a bound, never a measurement): a stall is seen after 5 s of silence.
PAGE_TIMEOUT_MS = 20_000
LADDER_DEPTH = 20  # what the page's ladder shows (gateway/web/main.js LADDER_DEPTH)
READ_LADDER = """() => ({
  bids: [...document.querySelectorAll('[data-testid=book-bids] [data-testid=level]')]
        .map(e => [e.dataset.price, Number(e.dataset.qty)]),
  asks: [...document.querySelectorAll('[data-testid=book-asks] [data-testid=level]')]
        .map(e => [e.dataset.price, Number(e.dataset.qty)]).reverse(),
})"""


def _key(server: srv.RunningServer, name: str = "alice") -> str:
    keys = json.loads((server.data_dir / "demo-keys.json").read_text())
    return str(keys[name]["api_key"])


async def _rest(server: srv.RunningServer, path: str, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + path, headers=headers) as reply,
    ):
        assert reply.status == 200, await reply.text()
        return await reply.json()


async def _live(page: Page) -> None:
    await expect(page.get_by_test_id("connection")).to_have_attribute(
        "data-state", "live", timeout=PAGE_TIMEOUT_MS
    )


async def _ladder_is_rest_book(page: Page, server: srv.RunningServer) -> dict[str, Any]:
    """Wait (bounded) until the ladder shows the REST book's levels; returns them."""
    book = await _rest(server, f"/v1/book/ACME?depth={LADDER_DEPTH}")
    expected = {"bids": book["bids"], "asks": book["asks"]}
    await page.wait_for_function(
        f"expected => JSON.stringify(({READ_LADDER})()) === JSON.stringify(expected)",
        arg=expected, timeout=PAGE_TIMEOUT_MS,
    )  # fmt: skip
    shown: dict[str, Any] = await page.evaluate(READ_LADDER)
    assert shown == expected
    return shown


@pytest.mark.parametrize("wiring", WIRINGS)
async def test_the_page_loads_without_console_errors_and_its_ladder_is_the_rest_book(
    wiring: str, tmp_path: Path
) -> None:
    async with serving(wiring, tmp_path, demo=True) as server, page_at(server.base_url) as opened:
        page = opened.page
        await _live(page)
        shown = await _ladder_is_rest_book(page, server)
        assert len(shown["bids"]) == 5  # the demo's maker quotes five levels a side
        assert len(shown["asks"]) == 5
        await expect(page.get_by_test_id("symbol-select")).to_have_value("ACME")
        await expect(page.get_by_test_id("spread")).to_contain_text("spread 0.10")
        # No simulation here: the demo-only value is not shown.
        await expect(page.get_by_test_id("fundamental")).to_be_hidden()
        await expect(page.get_by_test_id("offerings")).to_contain_text("ACME #1")
        await opened.screenshot(f"page-loaded-{wiring}")
        assert opened.console_errors == []


@pytest.mark.parametrize("wiring", WIRINGS)
async def test_a_limit_order_from_the_ticket_shows_in_open_orders_and_is_cancelled_there(
    wiring: str, tmp_path: Path
) -> None:
    async with serving(wiring, tmp_path, demo=True) as server, page_at(server.base_url) as opened:
        page, key = opened.page, _key(server)
        await _live(page)
        await page.get_by_test_id("api-key-input").fill(key)
        await page.get_by_test_id("login-button").click()
        await expect(page.get_by_test_id("status-line")).to_contain_text("Logged in")
        assert await page.evaluate("() => sessionStorage.getItem('exchange.apiKey')") == key
        assert key not in page.url
        await expect(page.get_by_test_id("balances")).to_contain_text("ACME units2,857")
        # The ticket by keyboard alone: focus, type, Tab on, Enter submits.
        await page.get_by_test_id("ticket-side").select_option("buy")
        await page.get_by_test_id("ticket-price").focus()
        await page.keyboard.type("9.50")
        await page.keyboard.press("Tab")
        await page.keyboard.press("Control+A")
        await page.keyboard.type("7")
        await page.keyboard.press("Enter")
        status = page.get_by_test_id("status-line")
        await expect(status).to_contain_text("Accepted: ▲ Buy 7 ACME @ 9.50")
        row = page.get_by_test_id("open-orders").get_by_test_id("order")
        await expect(row).to_have_count(1)
        order_id = await row.get_attribute("data-order-id")
        listed = await _rest(server, "/v1/orders?status=open", key)
        assert [(o["order_id"], o["price"], o["qty"]) for o in listed["orders"]] == [
            (order_id, "9.50", 7)
        ]
        await opened.screenshot(f"order-placed-{wiring}")
        # Replace in the row: a lower quantity at the same price keeps its priority.
        await row.get_by_label(f"new quantity for order {order_id}").fill("5")
        await row.get_by_test_id("replace").click()
        await expect(status).to_contain_text(
            f"Replaced order {order_id}: 5 @ 9.50 (kept its time priority)"
        )
        await expect(row).to_contain_text("5 of 5")
        assert (await _rest(server, f"/v1/orders/{order_id}", key))["qty"] == 5
        await row.get_by_test_id("cancel").click()
        await expect(status).to_contain_text(f"Order {order_id} cancelled")
        await expect(row).to_have_count(0)
        assert (await _rest(server, "/v1/orders?status=open", key))["orders"] == []
        # A refusal is shown in words with its code.
        await page.get_by_test_id("ticket-price").fill("9.505")
        await page.get_by_test_id("ticket-submit").click()
        await expect(status).to_contain_text("the price is between two ticks (OFF_TICK)")
        # An order that trades at once: its fill shows with its fee.
        await page.get_by_test_id("ticket-price").fill("10.05")
        await page.get_by_test_id("ticket-qty").fill("2")
        await page.get_by_test_id("ticket-submit").click()
        await expect(status).to_contain_text("filled 2 at 10.05 on average")
        fill = page.get_by_test_id("fills").get_by_test_id("fill")
        await expect(fill).to_have_count(1)
        rest_fill = (await _rest(server, "/v1/fills", key))["fills"][0]
        await expect(fill).to_contain_text(f"{rest_fill['fee']} {rest_fill['fee_asset']}")
        await expect(fill).to_contain_text("taker")
        assert opened.console_errors == []


async def test_an_offering_is_subscribed_from_the_page_and_its_allocation_shown(
    tmp_path: Path,
) -> None:
    async with (
        srv.running(tmp_path / "data", demo=True) as server,
        Admin(server.base_url, srv.ADMIN_TOKEN) as admin,
    ):
        issuer, _ = await admin.account("fund-issuer")
        listing = {"symbol": "FUND", "kind": "fund", "tick_size": "0.01", "issuer": issuer}
        await admin.ok("POST", "/v1/admin/instruments", listing)
        offer = {"symbol": "FUND", "price": "5.00", "qty": 100}
        offering_id = (await admin.ok("POST", "/v1/admin/offerings", offer))["offering_id"]
        async with page_at(server.base_url) as opened:
            page = opened.page
            await _live(page)
            await page.get_by_test_id("api-key-input").fill(_key(server))
            await page.get_by_test_id("login-button").click()
            await expect(page.get_by_test_id("status-line")).to_contain_text("Logged in")
            offering = page.locator(f"[data-testid=offering][data-offering-id='{offering_id}']")
            await expect(offering).to_have_attribute("data-status", "open")
            units = offering.get_by_label(f"units to subscribe in offering {offering_id}")
            await units.fill("30")
            await offering.get_by_role("button", name="Subscribe").click()
            await expect(page.get_by_test_id("status-line")).to_contain_text(
                f"Subscribed 30 units in offering {offering_id}"
            )
            await admin.ok("POST", f"/v1/admin/offerings/{offering_id}/close")
            await page.reload()  # still logged in: the key is in the tab's sessionStorage
            await _live(page)
            await expect(page.get_by_test_id("status-line")).to_contain_text("Logged in as")
            await expect(offering).to_have_attribute("data-status", "closed")
            await expect(offering).to_contain_text("allocated in full")
            await expect(page.get_by_test_id("balances")).to_contain_text("FUND units30")
            await opened.screenshot("offering-allocated")
            assert opened.console_errors == []


async def test_a_call_auction_shows_its_indicative_price_and_opens_without_a_resync(
    tmp_path: Path,
) -> None:
    """An offering's close leaves FUND pre_open: the page shows the phase, each auction
    message's indicative price (they take book seqs, which the page counts: no resync),
    and the uncross's status change and trade."""
    async with (
        srv.running(tmp_path / "data", demo=True) as server,
        Admin(server.base_url, srv.ADMIN_TOKEN) as admin,
        page_at(server.base_url) as opened,
    ):
        issuer, _ = await admin.account("fund-issuer")
        listing = {"symbol": "FUND", "kind": "fund", "tick_size": "0.01", "issuer": issuer}
        await admin.ok("POST", "/v1/admin/instruments", listing)
        offer = {"symbol": "FUND", "price": "5.00", "qty": 100}
        offering_id = (await admin.ok("POST", "/v1/admin/offerings", offer))["offering_id"]
        await admin.ok("POST", f"/v1/admin/offerings/{offering_id}/close")
        alice_id = json.loads((server.data_dir / "demo-keys.json").read_text())["alice"]["account"]
        deposit = {"account": alice_id, "symbol": "FUND", "qty": 50}
        await admin.ok("POST", "/v1/admin/deposits", deposit)
        page = opened.page
        await _live(page)
        badge = page.get_by_test_id("instrument-status")
        await page.get_by_test_id("symbol-select").select_option("FUND")
        await expect(badge).to_have_attribute("data-status", "pre_open")
        async with (
            await Client.connect(server.ws_url, _key(server, "alice")) as alice,
            await Client.connect(server.ws_url, _key(server, "bob")) as bob,
        ):
            assert (await alice.place("FUND", "sell", 10, "5.00"))["type"] == "accepted"
            await expect(badge).to_contain_text("indicative \u2013 \u00d7 0")  # nothing crosses yet
            assert (await bob.place("FUND", "buy", 10, "5.05"))["type"] == "accepted"
            # 10 trade anywhere from 5.00 to 5.05: the offering price is the reference.
            await expect(badge).to_contain_text("indicative 5.00 \u00d7 10")
            await opened.screenshot("call-auction")
            answer = await admin.ok("POST", "/v1/admin/instruments/FUND/auction")
            assert answer["uncrossed"] == {"price": "5.00", "qty": 10}
        await expect(badge).to_have_attribute("data-status", "trading")
        trade = page.get_by_test_id("trades").get_by_test_id("trade").first
        await expect(trade).to_contain_text("5.00")
        resyncs = await page.get_by_test_id("connection").get_attribute("data-resyncs")
        assert resyncs in (None, "0")
        assert opened.console_errors == []


async def test_another_clients_trade_reaches_the_tape_and_moves_the_candles(
    tmp_path: Path,
) -> None:
    async with (
        srv.running(tmp_path / "data", demo=True) as server,
        page_at(server.base_url) as opened,
    ):
        page = opened.page
        await _live(page)
        candles = page.get_by_test_id("candles")
        await expect(candles).to_have_attribute("data-count", "0")  # nothing traded yet
        async with await Client.connect(server.ws_url, _key(server, "bob")) as bob:
            answer = await bob.place("ACME", "buy", 3, "10.05", tif="ioc")
            assert answer["type"] == "accepted"
            fill = await bob.next_event("fill")
        trade = page.get_by_test_id("trades").get_by_test_id("trade").first
        await expect(trade).to_have_attribute("data-trade-id", fill["trade_id"])
        await expect(trade).to_contain_text("▲ Buy")
        await expect(trade).to_contain_text("10.05")
        last = (await _rest(server, "/v1/candles/ACME?interval=1m"))["candles"][-1]
        assert (last["close"], last["volume"]) == ("10.05", 3)
        await expect(candles).to_have_attribute("data-count", "1")
        await expect(candles).to_have_attribute("data-last-close", last["close"])
        await expect(candles).to_have_attribute("data-last-volume", str(last["volume"]))
        await _ladder_is_rest_book(page, server)  # the trade took 3 of the best ask
        await opened.screenshot("trade-in-tape")
        assert opened.console_errors == []


async def test_a_gap_in_the_book_seq_resubscribes_and_the_ladder_recovers(tmp_path: Path) -> None:
    """One book_update is lost on its way to the page (Playwright stands between the page
    and the server's socket): the next one's seq shows the gap, the page resubscribes, and
    the ladder is the REST book again."""
    dropped: list[str] = []
    async with (
        srv.running(tmp_path / "data", demo=True) as server,
        page_at(server.base_url, before=_losing_first("book_update", dropped)) as opened,
    ):
        page = opened.page
        await _live(page)
        await _ladder_is_rest_book(page, server)
        async with await Client.connect(server.ws_url, _key(server, "bob")) as bob:
            assert (await bob.place("ACME", "buy", 11, "9.91"))["type"] == "accepted"
            assert (await bob.place("ACME", "buy", 12, "9.92"))["type"] == "accepted"
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-resyncs", "1")
        shown = await _ladder_is_rest_book(page, server)
        assert ["9.91", 11] in shown["bids"]
        assert ["9.92", 12] in shown["bids"]
        assert len(dropped) == 1
        assert opened.console_errors == []


async def test_a_lost_last_update_is_caught_by_the_seqs_that_follow_it(tmp_path: Path) -> None:
    """The only book_update of a change is lost and no other follows: the ticker and the
    heartbeat carry the book seq past the page's, and it resubscribes."""
    dropped: list[str] = []
    async with (
        srv.running(tmp_path / "data", demo=True) as server,
        page_at(server.base_url, before=_losing_first("book_update", dropped)) as opened,
    ):
        page = opened.page
        await _live(page)
        await _ladder_is_rest_book(page, server)
        async with await Client.connect(server.ws_url, _key(server, "bob")) as bob:
            assert (await bob.place("ACME", "buy", 11, "9.91"))["type"] == "accepted"
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-resyncs", "1")
        assert ["9.91", 11] in (await _ladder_is_rest_book(page, server))["bids"]
        assert len(dropped) == 1


def _losing_first(kind: str, dropped: list[str]) -> Callable[[Page], Awaitable[None]]:
    """A page set-up (page_at's `before`) under which the first `kind` message from the
    server is lost on its way to the page."""

    async def before(page: Page) -> None:
        await page.route_web_socket("**/v1/ws", _dropping(kind, dropped))

    return before


def _dropping(kind: str, dropped: list[str]) -> Callable[[WebSocketRoute], None]:
    """A WebSocket route that loses the first message of `kind` from the server."""

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            text = message.decode() if isinstance(message, bytes) else message
            if not dropped and json.loads(text).get("type") == kind:
                dropped.append(text)  # lost
                return
            ws.send(message)

        server.on_message(from_server)

    return route


@pytest.mark.single_only
async def test_a_stalled_websocket_is_shown_and_the_page_recovers(tmp_path: Path) -> None:
    async with (
        srv.running(tmp_path / "data", demo=True) as server,
        page_at(server.base_url) as opened,
    ):
        page = opened.page
        await _live(page)
        await _ladder_is_rest_book(page, server)
        connection = page.get_by_test_id("connection")
        os.kill(server.process.pid, signal.SIGSTOP)  # no heartbeat, no answer
        try:
            await expect(connection).to_have_attribute(
                "data-state", "stalled", timeout=PAGE_TIMEOUT_MS
            )
            await expect(connection).to_contain_text("stalled")
            await opened.screenshot("stalled")
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        await _live(page)
        await expect(connection).to_contain_text("reconnected")
        # The new socket's book follows what changes after it: a new level shows.
        async with await Client.connect(server.ws_url, _key(server, "bob")) as bob:
            assert (await bob.place("ACME", "buy", 11, "9.91"))["type"] == "accepted"
        shown = await _ladder_is_rest_book(page, server)
        assert ["9.91", 11] in shown["bids"]
        await opened.screenshot("recovered")


async def test_a_bad_api_key_shows_a_readable_error(tmp_path: Path) -> None:
    async with (
        srv.running(tmp_path / "data", demo=True) as server,
        page_at(server.base_url) as opened,
    ):
        page = opened.page
        await _live(page)
        await page.get_by_test_id("api-key-input").fill("ek_not-a-key-of-this-exchange")
        await page.get_by_test_id("login-button").click()
        status = page.get_by_test_id("status-line")
        await expect(status).to_contain_text(
            "Login failed: the exchange does not know this API key (AUTH_FAILED)"
        )
        assert await page.evaluate("() => sessionStorage.getItem('exchange.apiKey')") is None
        assert "ek_" not in page.url
        await expect(page.get_by_test_id("login-button")).to_be_visible()
        # Order entry without a login is refused in words too, and nothing is sent.
        await page.get_by_test_id("ticket-price").fill("9.50")
        await page.get_by_test_id("ticket-submit").click()
        await expect(status).to_contain_text("Log in with an API key first")
        await _live(page)  # the socket was never dropped
        await opened.screenshot("bad-key")


async def test_the_demo_with_its_simulation_shows_the_hidden_value(tmp_path: Path) -> None:
    extra = ("--simulate", "--durability", "none")
    async with (
        srv.running(tmp_path / "data", demo=True, extra=extra) as server,
        page_at(server.base_url) as opened,
    ):
        page = opened.page
        await _live(page)
        await expect(page.get_by_test_id("fundamental")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        await expect(page.get_by_test_id("fundamental")).to_have_text(re.compile(r"^\d+\.\d\d$"))
        # The agents trade: the tape fills without anyone else.
        await expect(page.get_by_test_id("trade").first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        await opened.screenshot("simulated-demo")
        assert opened.console_errors == []
        feed = await _rest(server, "/v1/demo/fundamental")
        assert feed["running"] is True
        assert feed["symbol"] == "ACME"
        assert feed["points"]


async def test_the_pages_book_checks_seqs_and_checksums_like_the_client_library(
    tmp_path: Path,
) -> None:
    """gateway/web/book.js against gateway/client.py's LocalBook on the same messages: the
    same checksums, and the same verdicts on a good update, a call auction's message (it
    takes a book seq), a gap and a bad checksum."""
    bids = {"9.95": 100, "9.90": 200, "10.00": 5}
    asks = {"10.05": 100, "10.10": 7, "10.20": 1}
    after = {**bids, "9.95": 40}
    messages: list[dict[str, Any]] = [
        {"type": "book_snapshot", "symbol": "ACME", "seq": 41, "trade_seq": 12,
         "bids": [[p, q] for p, q in bids.items()], "asks": [[p, q] for p, q in asks.items()],
         "checksum": book_checksum(bids, asks)},
        {"type": "trade", "symbol": "ACME", "seq": 13},
        {"type": "book_update", "symbol": "ACME", "seq": 42, "changes": [["buy", "9.95", 40]],
         "checksum": book_checksum(after, asks)},
        {"type": "auction", "symbol": "ACME", "seq": 43, "indicative_price": "10.00",
         "indicative_qty": 5, "imbalance_side": None, "imbalance_qty": 0},
        {"type": "book_update", "symbol": "ACME", "seq": 45, "changes": [], "checksum": 0},
    ]  # fmt: skip
    bad_checksum = [messages[0], {**messages[2], "checksum": messages[2]["checksum"] ^ 1}]
    trade_gap = [messages[0], {"type": "trade", "symbol": "ACME", "seq": 14}]
    auction_gap = [messages[0], {**messages[3], "seq": 42}, {**messages[3], "seq": 44}]
    python = LocalBook("ACME")
    expected = [python.apply(m) for m in messages]
    assert expected == [True, True, True, True, False]
    async with srv.running(tmp_path / "data") as server, page_at(server.base_url) as opened:
        verdicts = await opened.page.evaluate(
            """async (cases) => {
                const { LocalBook, crc32 } = await import('/web/book.js');
                const run = (ms) => {
                    const book = new LocalBook('ACME');
                    return ms.map(m => book.apply(m));
                };
                return { runs: cases.map(run), crc: crc32('A10.05:100|B9.95:100') };
            }""",
            [messages, bad_checksum, trade_gap, auction_gap],
        )
    assert verdicts["runs"] == [expected, [True, False], [True, False], [True, True, False]]
    assert verdicts["crc"] == zlib.crc32(b"A10.05:100|B9.95:100")
