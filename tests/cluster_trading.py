"""What the cluster tests trade and read through their gateways: a small market set up by
an admin, a trade across two gateways, a client streaming orders through one gateway
(resending the same order while the cluster answers UNAVAILABLE or BUSY, and moving to
another gateway when its own is lost), a subscriber following a book, and what a client
reads from a gateway, to compare gateways with."""

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.client import Admin, Client, LocalBook
from tests.server import ADMIN_TOKEN, RunningServer

# Long enough for an answer through NATS and the stream on a loaded 2-core machine.
ANSWER_WAIT_S = 20.0
# Units of XYZ the seller holds: more than any test sells.
SELLER_UNITS = 1_000
# The codes a gateway may answer while part of the cluster is away: the order's outcome
# is unknown (UNAVAILABLE) or it was not taken (BUSY); either way the client resends.
RETRY_CODES = ("UNAVAILABLE", "BUSY")
# Between resends of one order: BUSY comes at once while NATS is away, so without a pause
# a client would spin; it is the pace of a client, not a wait for anything.
RESEND_PAUSE_S = 0.05
# Sends of one order at most: resends through an outage of a few seconds, with room.
MAX_SENDS = 600

Message = dict[str, Any]


async def market(admin: Admin) -> dict[str, Any]:
    """An instrument in trading, a seller holding units and a buyer with cash."""
    issuer, _ = await admin.account("issuer")
    _, alice_key = await admin.account("alice", "10000.00")
    bob, bob_key = await admin.account("bob", "10000.00")
    listing = {"symbol": "XYZ", "kind": "share", "tick_size": "0.01", "issuer": issuer}
    await admin.ok("POST", "/v1/admin/instruments", listing)
    await admin.ok("POST", "/v1/admin/instruments/XYZ/status", {"status": "trading"})
    deposit = {"account": bob, "symbol": "XYZ", "qty": SELLER_UNITS}
    await admin.ok("POST", "/v1/admin/deposits", deposit)
    return {"alice": alice_key, "bob": bob_key}


async def reads(gateway: RunningServer, keys: dict[str, Any]) -> dict[str, Any]:
    """What a client reads from one gateway: book with its seq, orders, trades, account."""
    async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
        return {
            "book": await admin.ok("GET", "/v1/book/XYZ"),
            "trades": await admin.ok("GET", "/v1/trades/XYZ"),
            "orders": {
                n: await admin.ok("GET", "/v1/orders?status=all", token=k) for n, k in keys.items()
            },
            "accounts": {n: await admin.ok("GET", "/v1/account", token=k) for n, k in keys.items()},
        }


async def trade(one: RunningServer, other: RunningServer, keys: dict[str, Any]) -> None:
    """Bob rests a sell through one gateway, Alice takes part of it through the other."""
    async with (
        await Client.connect(other.ws_url, keys["bob"]) as bob,
        await Client.connect(one.ws_url, keys["alice"]) as alice,
    ):
        await bob.subscribe(["book"], ["XYZ"])
        await bob.next_event("book_snapshot")
        sell = await bob.place("XYZ", "sell", 10, "5.00", client_order_id="s-1")
        assert (sell["type"], sell["status"]) == ("accepted", "open"), sell
        buy = await alice.place("XYZ", "buy", 4, "5.00", client_order_id="b-1")
        assert (buy["type"], buy["status"], buy["filled"]) == ("accepted", "filled", 4), buy
        fill = await asyncio.wait_for(bob.next_event("fill"), ANSWER_WAIT_S)
        assert (fill["order_id"], fill["qty"], fill["remaining"]) == (sell["order_id"], 4, 6)
        update = await asyncio.wait_for(bob.next_event("book_update"), ANSWER_WAIT_S)
        assert update["symbol"] == "XYZ"


async def same_seq(gateways: list[RunningServer]) -> int:
    """Waits (bounded) until every gateway has applied the same newest seq; returns it."""
    async with asyncio.timeout(ANSWER_WAIT_S):
        while True:  # bounded by the timeout: gateways follow one stream
            seqs = set()
            for gateway in gateways:
                async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
                    seqs.add(int((await admin.ok("GET", "/healthz"))["seq"]))
            if len(seqs) == 1:
                return seqs.pop()
            await asyncio.sleep(0.05)


@dataclass
class OrderStream:
    """One account's client placing small XYZ orders through one gateway, one after the
    other, each resent with its client_order_id until it is answered otherwise than
    UNAVAILABLE or BUSY. Every answer is kept, so a test can say none was wrong.

    With `fallbacks`, it does what docs/PROTOCOL.md ("Losing a gateway") tells a client
    whose gateway is lost: connects to the next fallback, subscribes again (with
    `subscribed`, XYZ's book: its book_snapshot must apply) and resends the order left
    unanswered with the same client_order_id."""

    name: str
    key: str
    url: str
    side: str  # "buy" prices 4.95-5.04, "sell" 5.00-5.09: some cross, some rest
    fallbacks: list[str] = field(default_factory=list)  # gateways to move to, in order
    subscribed: bool = False  # subscribe to XYZ's book on each connection
    accepted: dict[str, str] = field(default_factory=dict)  # client_order_id -> order_id
    retried: dict[str, int] = field(default_factory=dict)  # code -> answers of it
    wrong: list[Message] = field(default_factory=list)  # answers no order should get
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set on each accept
    turned_away: asyncio.Event = field(default_factory=asyncio.Event)  # set on a retry code
    reconnects: int = 0  # gateways lost, each followed by a move to the next fallback
    snapshots: int = 0  # book snapshots applied, one a subscribed connection
    client: Client | None = None

    async def run(self, orders: int, first: int = 0) -> None:
        """Places orders `first` to `orders` - 1 (each has its number in its client
        order id)."""
        self.client = await self._connect(self.url)
        try:
            for n in range(first, orders):  # bounded: each at most MAX_SENDS sends
                cid = f"{self.name}-{n}"
                base = 495 if self.side == "buy" else 500
                price = f"{(base + n % 10) / 100:.2f}"
                await self._place(cid, price)
        finally:
            with contextlib.suppress(Exception):  # the socket of a killed gateway included
                await self.client.close()

    async def _connect(self, url: str) -> Client:
        client = await Client.connect(url, self.key)
        if self.subscribed:
            await client.subscribe(["book"], ["XYZ"])
            book = LocalBook("XYZ")
            assert book.apply(await client.next_event("book_snapshot")), self.name
            self.snapshots += 1
        return client

    async def _fail_over(self) -> None:
        """The gateway is lost: on to the next one (or the loss is the test's failure)."""
        assert self.client is not None
        with contextlib.suppress(Exception):
            await self.client.close()
        if self.reconnects >= len(self.fallbacks):
            raise ConnectionError(f"{self.name}: gateway lost, no fallback left")
        self.reconnects += 1
        self.client = await self._connect(self.fallbacks[self.reconnects - 1])

    async def _place(self, cid: str, price: str) -> None:
        for _ in range(MAX_SENDS):
            assert self.client is not None
            try:
                answer = await self.client.place("XYZ", self.side, 1, price,
                                                 client_order_id=cid)  # fmt: skip
            except (ConnectionError, aiohttp.ClientError):
                await self._fail_over()  # then resend: the outcome is unknown
                continue
            code = answer.get("code")
            if code in RETRY_CODES:
                self.retried[code] = self.retried.get(code, 0) + 1
                self.turned_away.set()
                await asyncio.sleep(RESEND_PAUSE_S)
                continue
            if answer.get("type") == "accepted" and answer.get("client_order_id") == cid:
                self.accepted[cid] = answer["order_id"]
                self.progress.set()
            else:
                self.wrong.append(answer)
            return
        raise AssertionError(f"{self.name}: {cid} unanswered after {MAX_SENDS} sends")

    async def accepted_at_least(self, count: int) -> None:
        while len(self.accepted) < count:  # the caller bounds it with a timeout
            self.progress.clear()
            await self.progress.wait()


async def finished(tasks: list["asyncio.Task[None]"]) -> None:
    """Until every task is done; the first failure cancels the others."""
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def listed_orders(gateway: RunningServer, stream: OrderStream) -> dict[str, str]:
    """client_order_id -> order_id of the stream's orders, as the gateway lists them over
    REST (each client_order_id must appear once)."""
    async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
        orders = (await admin.ok("GET", "/v1/orders?status=all", token=stream.key))["orders"]
    ours = [o for o in orders if o["client_order_id"].startswith(f"{stream.name}-")]
    listed = {o["client_order_id"]: o["order_id"] for o in ours}
    assert len(listed) == len(ours), f"{stream.name}: a client_order_id listed twice"
    return listed


async def watch(client: Client, book: LocalBook, stop: "asyncio.Event") -> None:
    """Apply every market-data message as it comes, until told to stop."""
    while not stop.is_set():  # each turn takes one pushed message
        with contextlib.suppress(TimeoutError):
            book.apply(await client.next_event(timeout=0.5))
