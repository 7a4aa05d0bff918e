"""End to end: what a client could read before a restart it reads after it (issue 13, 12):
orders by id and in `status=all`, fills, trades, candles and both market-data seqs, which
go on from where they were. After a clean stop the read side comes back from its
snapshot; after SIGKILL from the journal's events."""

import asyncio
from pathlib import Path
from typing import Any

from gateway.client import Admin, Client
from tests.server import ADMIN_TOKEN, RunningServer, running, start, stop
from tests.test_gateway_e2e import demo_key


async def _trade(server: RunningServer) -> list[str]:
    """Alice rests an order, takes part of the best ask twice and cancels one; the ids
    of her orders."""
    async with await Client.connect(server.ws_url, demo_key(server, "alice")) as alice:
        placed = [
            await alice.place("ACME", "buy", 5, "9.50", client_order_id="rest"),
            await alice.place("ACME", "buy", 10, "10.05", client_order_id="take-1"),
            await alice.place("ACME", "buy", 150, "10.05", tif="ioc", client_order_id="take-2"),
            await alice.place("ACME", "buy", 3, "9.60", client_order_id="gone"),
        ]
        assert all(p["type"] == "accepted" for p in placed), placed
        assert (await alice.cancel(order_id=placed[-1]["order_id"]))["reason"] == "cancelled"
    return [p["order_id"] for p in placed]


async def _md_seqs(server: RunningServer) -> tuple[int, int]:
    """(book seq, trade seq) of ACME, as a new subscriber's snapshot gives them."""
    async with await Client.connect(server.ws_url) as watcher:
        await watcher.subscribe(["book"], ["ACME"])
        snapshot = await watcher.next_event("book_snapshot")
        return snapshot["seq"], snapshot["trade_seq"]


async def _reads(server: RunningServer, order_ids: list[str]) -> dict[str, Any]:
    key = demo_key(server, "alice")
    async with Admin(server.base_url, ADMIN_TOKEN) as admin:

        async def get(path: str, token: str | None = None) -> Any:
            return await admin.ok("GET", path, token=token)

        return {
            "by_id": [await get(f"/v1/orders/{i}", key) for i in order_ids],
            "all": await get("/v1/orders?status=all", key),
            "open": await get("/v1/orders", key),
            "fills": await get("/v1/fills", key),
            "account": await get("/v1/account", key),
            "trades": await get("/v1/trades/ACME"),
            "candles": await get("/v1/candles/ACME?interval=1m"),
            "candles_1d": await get("/v1/candles/ACME?interval=1d"),
            "book": await get("/v1/book/ACME?depth=1000"),
            "ticker_24h": (await get("/v1/ticker/ACME"))["24h"],
            "by_client_order_id": await get("/v1/orders?client_order_id=take-1", key),
            "all_in_pages": await _all_pages(get, key),
        }


async def _all_pages(get: Any, key: str) -> list[Any]:
    """Every order of the account, walked a page of one at a time with its cursors."""
    orders, path = [], "/v1/orders?status=all&limit=1"
    while True:  # bounded: each page moves the cursor to an older order
        page = await get(path, key)
        orders += page["orders"]
        if page["next_cursor"] is None:
            return orders
        path = f"/v1/orders?status=all&limit=1&cursor={page['next_cursor']}"


def _checked_reads(reads: dict[str, Any], order_ids: list[str]) -> None:
    """What the trading above must have left to read (so equal reads are not both empty)."""
    statuses = [o["status"] for o in reads["by_id"]]
    assert statuses == ["open", "filled", "expired", "cancelled"], statuses
    assert {o["order_id"] for o in reads["all"]["orders"]} == set(order_ids)
    assert len(reads["fills"]["fills"]) >= 2
    assert reads["trades"]["trades"]
    assert reads["candles"]["candles"]
    assert reads["ticker_24h"]["volume"] > 0
    assert [o["order_id"] for o in reads["by_client_order_id"]["orders"]] == [order_ids[1]]
    assert reads["all_in_pages"] == reads["all"]["orders"]


async def _next_trade_seqs(server: RunningServer) -> tuple[int, int]:
    """Trade once more with a book and a trades subscriber: the seqs they get."""
    async with (
        await Client.connect(server.ws_url) as watcher,
        await Client.connect(server.ws_url, demo_key(server, "bob")) as bob,
    ):
        await watcher.subscribe(["book", "trades"], ["ACME"])
        await watcher.next_event("book_snapshot")
        assert (await bob.place("ACME", "sell", 1, "9.50"))["type"] == "accepted"
        trade = await watcher.next_event("trade")
        update = await watcher.next_event("book_update")
        return update["seq"], trade["seq"]


async def test_a_clean_restart_keeps_every_read_and_the_seqs_go_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running(data, demo=True) as server:
        order_ids = await _trade(server)
        before = await _reads(server, order_ids)
        seqs_before = await _md_seqs(server)
    _checked_reads(before, order_ids)
    assert min(seqs_before) > 0
    async with running(data, demo=True) as server:
        assert await _reads(server, order_ids) == before
        assert await _md_seqs(server) == seqs_before
        book_seq, trade_seq = await _next_trade_seqs(server)
        assert (book_seq, trade_seq) == (seqs_before[0] + 1, seqs_before[1] + 1)


async def test_after_sigkill_the_reads_are_rebuilt_from_the_journal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = await start(data, demo=True)
    try:
        order_ids = await _trade(server)
        # Orders sent at once share durable batches: one book update a batch went out.
        async with await Client.connect(server.ws_url, demo_key(server, "bob")) as bob:
            await asyncio.gather(*(
                bob.place("ACME", "buy", 1, f"{9 + tick / 100:.2f}") for tick in range(40)
            ))  # fmt: skip
        before = await _reads(server, order_ids)
        book_seq, trade_seq = await _md_seqs(server)
    finally:
        server.process.kill()
        assert await asyncio.wait_for(stop(server), 60) == -9
    async with running(data, demo=True) as server:
        assert await _reads(server, order_ids) == before
        # The journal marks where each durable batch ended: the seqs come back exactly.
        assert await _md_seqs(server) == (book_seq, trade_seq)
