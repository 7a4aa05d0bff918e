"""Kill -9 a gateway under load: a nats-server, a sequencer and two gateways, clients on
both trading on; gateway 1 is killed. Its clients do what docs/PROTOCOL.md tells a client
to do after a gateway loss: connect to another gateway, subscribe again, resend every
order left unanswered with the same client_order_id. Then nothing acknowledged is lost,
no resend made a second order, and gateway 2's clients noticed nothing: no gap in their
market data, no disconnect."""

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.client import Admin, Client, LocalBook
from gateway.demo import DEMO_KEYS_FILE
from tests.cluster_trading import watch
from tests.server import ADMIN_TOKEN
from tests.wirings import cluster

# Orders each trader places, how far apart (a handful a second each), and which of the
# first trader's orders is on its way when gateway 1 is killed.
ORDERS_EACH = 30
PACE_S = 0.1
KILL_AT = 10
# Sends of one order at most: the first, a resend after the gateway loss, and one more
# after an UNAVAILABLE answer (an outcome the gateway could not learn in time).
MAX_SENDS = 3
# The whole test's bound, on a loaded 2-core machine.
TEST_TIMEOUT_S = 120.0

Message = dict[str, Any]


@dataclass
class Trader:
    """One account's client that trades ACME through `urls[0]`, and fails over to the
    next URL when its connection is lost."""

    name: str
    key: str
    urls: list[str]
    rng: random.Random
    sent: dict[str, Message] = field(default_factory=dict)  # client_order_id -> the order
    answers: dict[str, Message] = field(default_factory=dict)
    reconnects: int = 0
    resends: int = 0
    # Called once order KILL_AT is written to the socket, before its answer can come.
    kill: "Callable[[], None] | None" = None
    client: Client | None = None
    book: LocalBook = field(default_factory=lambda: LocalBook("ACME"))

    async def connect(self) -> None:
        self.client = await Client.connect(self.urls[self.reconnects], self.key)
        await self.client.subscribe(["book"], ["ACME"])
        self.book = LocalBook("ACME")
        assert self.book.apply(await self.client.next_event("book_snapshot"))

    async def fail_over(self) -> None:
        assert self.client is not None
        with contextlib.suppress(Exception):
            await self.client.close()
        self.reconnects += 1
        await self.connect()

    async def run(self) -> None:
        await self.connect()
        for i in range(ORDERS_EACH):
            cid = f"{self.name}-{i}"
            side = "buy" if self.rng.random() < 0.5 else "sell"
            price = f"{self.rng.randint(996, 1004) / 100:.2f}"
            order: Message = {"symbol": "ACME", "side": side, "qty": self.rng.randint(1, 5),
                              "price": price, "client_order_id": cid}  # fmt: skip
            self.sent[cid] = order
            placing = asyncio.create_task(self.place(cid, order))
            if i == KILL_AT and self.kill is not None:
                await asyncio.sleep(0)  # the task writes the order, then waits for the answer
                self.kill()
            await placing
            await asyncio.sleep(PACE_S)  # the pace of the load, not a wait for anything

    async def place(self, cid: str, order: Message) -> None:
        for _ in range(MAX_SENDS):
            assert self.client is not None
            try:
                answer = await self.client.place(**order)
            except (ConnectionError, aiohttp.ClientError):
                await self.fail_over()  # then resend: the outcome is unknown
                self.resends += 1
                continue
            if answer.get("code") == "UNAVAILABLE":
                self.resends += 1
                continue  # resend with the same client_order_id
            self.answers[cid] = answer
            return
        raise AssertionError(f"{self.name}: {cid} unanswered after {MAX_SENDS} sends")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


async def test_a_gateway_killed_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    async with cluster(tmp_path, gateways=2, demo=True) as started, asyncio.timeout(
        TEST_TIMEOUT_S
    ):
        one, two = started.gateways
        keys = json.loads((one.data_dir / DEMO_KEYS_FILE).read_text())
        key = {name: keys[name]["api_key"] for name in ("alice", "bob", "market-maker")}
        rng = random.Random(14)
        movers = [
            Trader(name, key[name], [one.ws_url, two.ws_url], random.Random(rng.random()))
            for name in ("alice", "bob")
        ]
        stayer = Trader("maker", key["market-maker"], [two.ws_url], random.Random(rng.random()))
        watcher = await Client.connect(two.ws_url)
        await watcher.subscribe(["book", "trades"], ["ACME"])
        watched = LocalBook("ACME")
        assert watched.apply(await watcher.next_event("book_snapshot"))
        stop_watching = asyncio.Event()
        watching = asyncio.create_task(watch(watcher, watched, stop_watching))
        acknowledged: dict[str, dict[str, Message]] = {}

        def kill() -> None:
            acknowledged.update({t.name: dict(t.answers) for t in movers})
            one.process.kill()  # SIGKILL: no close frames, no goodbye

        movers[0].kill = kill
        trading = [asyncio.create_task(t.run()) for t in [*movers, stayer]]
        try:
            await asyncio.gather(*trading)
            async with Admin(two.base_url, ADMIN_TOKEN) as admin:
                rest_book = await admin.ok("GET", "/v1/book/ACME?depth=1000")
                orders = {
                    t.name: (await admin.ok("GET", "/v1/orders?status=all", token=t.key))[
                        "orders"
                    ]
                    for t in [*movers, stayer]
                }
            while watched.seq != rest_book["seq"]:  # bounded: up to the seq REST shows
                await asyncio.sleep(0.01)  # the watch task applies what comes
        finally:
            stop_watching.set()
            await watching
            for trader in [*movers, stayer]:
                await trader.close()
            watcher_closed = watcher._reader.done()
            await watcher.close()

        assert [t.reconnects for t in movers] == [1, 1], "gateway 1's clients moved once"
        assert stayer.reconnects == 0, "gateway 2's trader stayed connected"
        assert not watcher_closed, "gateway 2's watcher stayed connected"
        assert (watched.gaps, watched.bad_checksums, watcher.dropped_events) == (0, 0, 0)
        assert list(watched.levels()) == [rest_book["bids"], rest_book["asks"]]
        for trader in [*movers, stayer]:
            listed = orders[trader.name]
            ours = [o for o in listed if o["client_order_id"] in trader.sent]
            counts = Counter(o["client_order_id"] for o in ours)
            assert max(counts.values()) == 1, f"{trader.name}: a resend made a second order"
            by_id = {o["order_id"]: o for o in ours}
            assert all(a["type"] == "accepted" for a in trader.answers.values()), trader.answers
            assert len(trader.answers) == ORDERS_EACH
            for cid, answer in trader.answers.items():
                order = by_id.get(answer["order_id"])
                assert order is not None, f"{trader.name}: acknowledged {cid} is not listed"
                sent = trader.sent[cid]
                assert order["client_order_id"] == cid
                shape = (order["side"], order["qty"], order["price"])
                assert shape == (sent["side"], sent["qty"], sent["price"]), (order, sent)
                assert order["filled"] + order["remaining"] <= order["qty"], order
                if order["status"] == "open":
                    assert order["filled"] + order["remaining"] == order["qty"], order
        for name, before in acknowledged.items():  # acknowledged before the kill: kept
            listed_ids = {o["order_id"] for o in orders[name]}
            assert {a["order_id"] for a in before.values()} <= listed_ids
