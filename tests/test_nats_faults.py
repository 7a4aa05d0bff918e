"""The NATS server fails under the cluster while clients trade: a real nats-server, an
`exchange sequencer` and two `exchange gateway` processes on 127.0.0.1, clients streaming
orders through both gateways (tests/cluster_trading.py).

- kill -9 of nats-server, restarted on its store: clients meanwhile get UNAVAILABLE or
  BUSY, never a wrong answer; trading resumes; every order answered `accepted` is listed
  on both gateways, each once, and both gateways read the same.
- nats-server restarted without its store (the stream is gone): the running sequencer
  notices and refills the stream from its journal; the gateways that followed the old
  stream go on from where they were, and a gateway started afterwards reads the same.
- the same, when the lost stream had a batch stored twice (so the refilled one holds
  records at other positions): the gateways that followed it stop with status 2 and one
  line rather than skip a record; a gateway started afterwards reads everything.
"""

import asyncio
import shutil
from pathlib import Path

import aiohttp
import nats
import pytest

from exchange import natswire
from exchange.natsserver import NatsNode
from gateway.client import Admin
from tests.cluster_trading import OrderStream, listed_orders, market, reads, same_seq
from tests.server import ADMIN_TOKEN, RunningServer, stop
from tests.wirings import Roles, roles

pytest_plugins = ("tests.nats_fixtures",)

# Orders each client places in all, and how many each has had accepted when NATS fails.
ORDERS_EACH = 40
BEFORE_FAULT = 15
# A test's bound on a loaded 2-core machine (each runs in about 10-20 s on an idle one).
TEST_TIMEOUT_S = 90.0


def order_streams(cluster: Roles, keys: dict[str, str]) -> list[OrderStream]:
    """Alice buys through gateway 1, Bob sells through gateway 2."""
    one, two = cluster.gateways
    return [
        OrderStream("alice", keys["alice"], one.ws_url, "buy"),
        OrderStream("bob", keys["bob"], two.ws_url, "sell"),
    ]


async def check_nothing_acknowledged_lost(
    gateways: list[RunningServer], streams: list[OrderStream], keys: dict[str, str]
) -> None:
    """Every gateway lists every order answered `accepted`, with its order id, each once
    and nothing else of the streams', and all read the same."""
    await same_seq(gateways)
    for stream in streams:
        assert stream.wrong == [], f"{stream.name} got wrong answers"
        assert len(stream.accepted) == ORDERS_EACH, f"{stream.name}: trading did not resume"
        for gateway in gateways:
            assert await listed_orders(gateway, stream) == stream.accepted
    seen = [await reads(gateway, keys) for gateway in gateways]
    assert all(one == seen[0] for one in seen[1:])


@pytest.mark.slow
async def test_nats_killed_and_restarted_under_load_loses_nothing_acknowledged(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with (
        roles(nats_server, tmp_path / "sequencer", gateways=2) as cluster,
        asyncio.timeout(TEST_TIMEOUT_S),
    ):
        async with Admin(cluster.gateways[0].base_url, ADMIN_TOKEN) as admin:
            keys = await market(admin)
        streams = order_streams(cluster, keys)
        trading = [asyncio.create_task(s.run(ORDERS_EACH)) for s in streams]
        try:
            for stream in streams:
                await stream.accepted_at_least(BEFORE_FAULT)
            await nats_server.kill()  # SIGKILL, while both clients have orders on the way
            for stream in streams:  # NATS stays away until each client was turned away
                await stream.turned_away.wait()  # BUSY at once, or UNAVAILABLE in 5 s
            await nats_server.start()  # the same port and store directory
            await asyncio.gather(*trading)
        finally:
            for task in trading:
                task.cancel()
            await asyncio.gather(*trading, return_exceptions=True)
        await check_nothing_acknowledged_lost(cluster.gateways, streams, keys)


async def lose_the_stream(node: NatsNode) -> None:
    """The NATS server's disk loses the stream: stopped, its store deleted, started."""
    await node.stop()
    shutil.rmtree(node.config.store_dir)
    await node.start()


async def stopped_or_at(gateway: RunningServer, end: int) -> bool:
    """Waits (bounded by the test) until an old gateway stopped (True) or applied every
    record to `end` (False). Its ordered consumer, remade by nats-py after two missed
    beats, resumes one position past the refilled stream's end, so it misses the next
    record and stops; but one remade before the refilled stream reaches that position is
    started by the server at the stream's end (a start past it is moved there), and reads
    on without a gap, each seq once (nats-py times the remake; 2 runs in 15 on a loaded
    machine). Either is safe: a
    gateway never applies past a gap (a seq skipped stops it), so one at `end` applied
    every record."""
    while gateway.process.returncode is None:  # bounded by the test's timeout
        try:
            async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
                if int((await admin.ok("GET", "/healthz"))["seq"]) >= end:
                    return False
        except (OSError, aiohttp.ClientError):  # exiting: its listener closed
            pass
        await asyncio.sleep(0.05)
    return True


async def refilled_lines(sequencer: RunningServer, count: int) -> None:
    """Waits (bounded by the test) for the sequencer's `count`th line saying the stream
    is whole again."""
    while sum("the stream holds records to seq" in line and "again" in line
              for line in list(sequencer.output)) < count:  # fmt: skip
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_stream_lost_with_the_nats_store_is_refilled_by_the_running_sequencer(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with (
        roles(nats_server, tmp_path / "sequencer", gateways=2) as cluster,
        asyncio.timeout(TEST_TIMEOUT_S),
    ):
        async with Admin(cluster.gateways[0].base_url, ADMIN_TOKEN) as admin:
            keys = await market(admin)
        streams = order_streams(cluster, keys)
        await asyncio.gather(*(s.run(BEFORE_FAULT) for s in streams))
        await lose_the_stream(nats_server)
        # No order comes: the sequencer finds the stream gone on its own and refills it.
        await refilled_lines(cluster.sequencer, 1)
        await asyncio.gather(*(s.run(ORDERS_EACH, first=BEFORE_FAULT) for s in streams))
        await cluster.add_gateway()  # reads the refilled stream from its start
        await check_nothing_acknowledged_lost(cluster.gateways, streams, keys)


@pytest.mark.slow
async def test_gateways_stop_rather_than_skip_when_the_refilled_stream_moved_records(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    """The lost stream held a batch twice (a publish retried past JetStream's duplicate
    window), the refilled one holds it once: each record sits one stream position
    earlier than where the gateways' consumers resume. A gateway then sees a gap in the
    seqs and stops (status 2, one line) instead of answering from a read side that
    missed a record (or, its consumer remade before the refilled stream got that far,
    reads on with no gap: stopped_or_at); restarted, a gateway reads the whole refilled stream."""
    async with (
        roles(nats_server, tmp_path / "sequencer", gateways=2) as cluster,
        asyncio.timeout(TEST_TIMEOUT_S),
    ):
        async with Admin(cluster.gateways[0].base_url, ADMIN_TOKEN) as admin:
            keys = await market(admin)
        streams = order_streams(cluster, keys)
        await asyncio.gather(*(s.run(BEFORE_FAULT) for s in streams))
        client = await nats.connect(servers=[nats_server.url])
        try:
            js = client.jetstream()
            last = await js.get_last_msg(natswire.STREAM, natswire.BATCHES)
            await js.publish(natswire.BATCHES, last.data or b"", stream=natswire.STREAM,
                             headers={"Nats-Msg-Id": "a-retry-after-the-window"})  # fmt: skip
        finally:
            await client.close()
        await lose_the_stream(nats_server)
        await refilled_lines(cluster.sequencer, 1)
        old = list(cluster.gateways)
        # Orders through a gateway started now: the old gateways' consumers resume one
        # position past the refilled stream's end and miss its next record.
        late = await cluster.add_gateway()
        after = [OrderStream(s.name, s.key, late.ws_url, s.side) for s in streams]
        await asyncio.gather(*(s.run(ORDERS_EACH, first=BEFORE_FAULT) for s in after))
        end = await same_seq([late])
        survivors = []
        for gateway in old:
            if await stopped_or_at(gateway, end):
                assert await stop(gateway) == 2, gateway.log()
                assert "exchange: gateway stopped: the stream skips from seq" in gateway.log()
                assert gateway.tracebacks == 0, gateway.log()
            else:  # its consumer was remade before the stream got that far: no gap
                survivors.append(gateway)
        again = await cluster.add_gateway()
        for stream, later in zip(streams, after, strict=True):
            later.accepted.update(stream.accepted)
        await check_nothing_acknowledged_lost([late, again, *survivors], after, keys)
