"""A gateway and the leading sequencer killed (-9) at the same moment, while clients stream
orders through both gateways (issue 15: the gateway loss of issue 14 still holds with
failovers happening). A real nats-server, `exchange sequencer` leader and standby, two
`exchange gateway`s, all on loopback.

Gateway 1's clients do what docs/PROTOCOL.md ("Losing a gateway") says: connect to gateway
2, subscribe again, resend the order left unanswered with the same client_order_id
(UNAVAILABLE and BUSY answers resent too: no one leads for a few seconds). The standby
leads within 5 s; the killed node, restarted, rejoins as a standby. Then every order
answered `accepted` is listed once on gateway 2 with the order id it was answered with
(no client_order_id made two orders), gateway 2's subscriber saw no gap, no checksum
mismatch and no disconnect, and both sequencers' state hashes equal a clean replay of
the stream.
"""

import asyncio
from pathlib import Path

import pytest

from exchange.natsserver import NatsNode
from gateway.client import Admin, Client, LocalBook
from tests.cluster_trading import OrderStream, finished, listed_orders, watch
from tests.server import ADMIN_TOKEN
from tests.test_failover import CATCH_UP_S, TAKEOVER_S, failover_market

pytest_plugins = ("tests.nats_fixtures",)

# Orders each client places, and how many of each client's are accepted before the kill
# (the rest stream on through it: every client has orders on the way at the kill).
ORDERS_EACH = 40
BEFORE_KILL = 5
# The whole test's bound, on a loaded 2-core machine (about 8 s on an idle one).
TEST_TIMEOUT_S = 120.0


@pytest.mark.slow
async def test_a_gateway_and_the_leader_killed_together_lose_nothing_acknowledged(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with failover_market(nats_server, tmp_path, TEST_TIMEOUT_S, gateways=2) as m:
        one, two = m.cluster.gateways
        keys = m.keys
        movers = [
            OrderStream("a1", keys["alice"], one.ws_url, "buy", [two.ws_url], subscribed=True),
            OrderStream("b1", keys["bob"], one.ws_url, "sell", [two.ws_url], subscribed=True),
        ]
        stayers = [
            OrderStream("a2", keys["alice"], two.ws_url, "buy"),
            OrderStream("b2", keys["bob"], two.ws_url, "sell"),
        ]
        streams = [*movers, *stayers]
        watcher = await Client.connect(two.ws_url)
        await watcher.subscribe(["book", "trades"], ["XYZ"])
        watched = LocalBook("XYZ")
        assert watched.apply(await watcher.next_event("book_snapshot"))
        stop_watching = asyncio.Event()
        watching = asyncio.create_task(watch(watcher, watched, stop_watching))
        try:
            trading = [asyncio.create_task(s.run(ORDERS_EACH)) for s in streams]
            for stream in streams:
                await stream.accepted_at_least(BEFORE_KILL)
            assert m.leader() == "sequencer-1"
            leader = m.sequencers["sequencer-1"]
            one.process.kill()  # SIGKILL, both in the same tick: no goodbye from either
            leader.process.kill()
            acknowledged = {s.name: dict(s.accepted) for s in streams}
            await leader.process.wait()
            await m.until_role("sequencer-2", "leader", TAKEOVER_S)
            await m.restart("sequencer-1")  # its journal may hold what the stream lacks: cut
            await m.until_role("sequencer-1", "standby", CATCH_UP_S)
            await finished(trading)  # every order answered accepted: trading resumed
            async with Admin(two.base_url, ADMIN_TOKEN) as admin:
                rest_book = await admin.ok("GET", "/v1/book/XYZ?depth=1000")
            while watched.seq < rest_book["seq"]:  # bounded by the test's timeout
                await asyncio.sleep(0.01)  # the watch task applies what comes
        finally:
            stop_watching.set()
            await watching
            watcher_closed = watcher._reader.done()
            await watcher.close()

        assert m.nodes.role("sequencer-1") == "standby"
        assert [s.reconnects for s in movers] == [1, 1], "gateway 1's clients moved once"
        assert [s.snapshots for s in movers] == [2, 2], "and subscribed again"
        assert [s.reconnects for s in stayers] == [0, 0]
        assert not watcher_closed, "gateway 2's subscriber stayed connected"
        assert (watched.gaps, watched.bad_checksums, watcher.dropped_events) == (0, 0, 0)
        assert watched.seq == rest_book["seq"]
        assert list(watched.levels()) == [rest_book["bids"], rest_book["asks"]]
        for stream in streams:
            assert stream.wrong == [], f"{stream.name} got wrong answers"
            assert len(stream.accepted) == ORDERS_EACH, stream.name
            # Each client_order_id listed once, with the order id it was answered with;
            # so every order acknowledged before the kill is kept.
            assert await listed_orders(two, stream) == stream.accepted, stream.name
            assert stream.accepted.items() >= acknowledged[stream.name].items()
        await m.until_level()
        await m.stop_all_and_compare()
