"""Engine snapshots in the cluster's bucket and the stream's trim, end to end: real
nats-server, `exchange sequencer` and `exchange gateway` processes, clients over real
sockets. Snapshots every EVERY records and a small trim margin make the stream trimmed
after a few hundred orders (the flags are hidden: operators keep the defaults).

- the stream is trimmed, never past what the kept snapshots need (each engine snapshot's
  next message, each read snapshot's own message, is still there);
- a sequencer started with an empty data dir after the trim fetches an engine snapshot,
  follows the stream after it, and ends with the leader's state hash;
- a gateway started after the trim reads the same as one there from the start;
- that node, paused while the stream is trimmed past it, fetches a snapshot again when it
  resumes and still ends with the leader's state hash.
"""

import asyncio
import contextlib
import re
import signal
from pathlib import Path

import nats

from exchange import natsstream, natswire
from exchange.buckets import ENGINE_BUCKET, READ_BUCKET, engine_snapshots, read_snapshots
from exchange.natsserver import NatsNode
from exchange.natsstream import records_of
from exchange.streamtrim import TRIM_BASIS
from gateway.client import Admin, Client
from tests.cluster_trading import market, reads
from tests.sequencers import READY, state_hash, watching
from tests.server import ADMIN_TOKEN, RunningServer, free_port, start_role, stop

pytest_plugins = ("tests.nats_fixtures",)

EVERY = 40  # records between engine snapshots, and between read snapshots
MARGIN = 5  # stream messages never trimmed
# Trimmed this far, the first engine snapshots and read snapshots are long gone: the
# stream starts past several snapshot intervals.
TRIMMED_PAST_RECORD = 4 * EVERY
ORDERS_A_ROUND = 10  # each trader's orders between two looks at the stream
# The leader looks for a snapshot to put once a second (enginebucket.SHARE_CHECK_S) and
# trims once two are in the bucket: rounds go on until then (a round is ~20 records,
# tens of milliseconds); the bound is far more than that takes, and within what each
# trader's cash pays for (10,000.00 at 1.00 an order, over both such loops).
MAX_ROUNDS = 200
TEST_TIMEOUT_S = 150.0
CATCH_UP_S = 30.0

_CAUGHT_UP = re.compile(r"caught up with the stream at seq (\d+): (\d+) records applied after "
                        r"stream message (\d+)")  # fmt: skip
_DIGEST = re.compile(r"stopped at seq (\d+), read state digest ([0-9a-f]{64})")


async def start_node(nats_url: str, data_dir: Path, node_id: str) -> RunningServer:
    args = ["sequencer", "--nats", nats_url, "--data-dir", str(data_dir), "--node-id", node_id,
            "--snapshot-every", str(EVERY), "--trim-margin", str(MARGIN)]  # fmt: skip
    return await start_role(args, 0, data_dir, ready=READY)


async def start_gateway(nats_url: str, data_dir: Path) -> RunningServer:
    port = free_port()
    args = ["gateway", "--nats", nats_url, "--port", str(port),
            "--read-snapshot-every", str(EVERY)]  # fmt: skip
    return await start_role(args, port, data_dir, ready="exchange gateway")


async def stream_start(nats_url: str) -> tuple[int, int]:
    """(the stream's first message, the first record in it), past a trim between the two
    reads (natsstream.stream_start)."""
    client = await nats.connect(servers=[nats_url])
    try:
        start = await natsstream.stream_start(client.jetstream())
        assert start is not None, "the stream is empty"
        return start
    finally:
        await client.close()


async def check_snapshots_still_fit(nats_url: str) -> None:
    """The newest TRIM_BASIS snapshots of each kind can still start a node or a gateway:
    the trim never passed what they need. (An older one kept, the third engine snapshot,
    may be behind the trim: a fetch passes over it, as the docs say.)"""
    client = await nats.connect(servers=[nats_url])
    try:
        js = client.jetstream()
        first = (await js.stream_info(natswire.STREAM)).state.first_seq
        engine = await engine_snapshots(await js.object_store(ENGINE_BUCKET))
        read = await read_snapshots(await js.object_store(READ_BUCKET))
        assert len(engine) >= 2, engine
        assert len(read) >= 2, read
        for placed in engine[:TRIM_BASIS]:
            span = await records_of(js, placed.after + 1)
            assert placed.after + 1 >= first, (placed, first)
            assert span is not None, placed
            assert span[0] <= placed.seq + 1 <= span[1], (placed, span)
        for stored in read[:TRIM_BASIS]:
            span = await records_of(js, stored.stream_seq)
            assert stored.stream_seq >= first, (stored, first)
            assert span is not None, stored
            assert span[1] == stored.seq, (stored, span)
    finally:
        await client.close()


async def seq_of(gateway: RunningServer) -> int:
    async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
        return int((await admin.ok("GET", "/healthz"))["seq"])


async def place(client: Client, side: str, price: str, orders: int, tag: str) -> None:
    for i in range(orders):
        answer = await client.place("XYZ", side, 1, price, client_order_id=f"{tag}-{i}")
        assert answer["type"] == "accepted", answer


async def digest_at_stop(gateway: RunningServer) -> tuple[int, str]:
    assert await stop(gateway) == 0, gateway.log()
    assert gateway.tracebacks == 0, gateway.log()
    found = [m for m in map(_DIGEST.search, gateway.output) if m is not None]
    return int(found[-1][1]), found[-1][2]


async def test_a_new_node_and_a_late_gateway_start_after_the_stream_was_trimmed(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    url = nats_server.url
    started: list[RunningServer] = []
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S), watching(url) as nodes:
            leader = await start_node(url, tmp_path / "s1", "sequencer-1")
            started.append(leader)
            first_gateway = await start_gateway(url, tmp_path / "g1")
            started.append(first_gateway)
            async with Admin(first_gateway.base_url, ADMIN_TOKEN) as admin:
                keys = await market(admin)
            async with (
                await Client.connect(first_gateway.ws_url, keys["bob"]) as bob,
                await Client.connect(first_gateway.ws_url, keys["alice"]) as alice,
            ):
                for round_ in range(MAX_ROUNDS):  # until the stream was trimmed far enough
                    await asyncio.gather(
                        place(bob, "buy", "1.00", ORDERS_A_ROUND, f"s{round_}"),
                        place(alice, "buy", "1.00", ORDERS_A_ROUND, f"b{round_}"),
                    )
                    if (await stream_start(url))[1] > TRIMMED_PAST_RECORD:
                        break
                first, first_record = await stream_start(url)
                assert first_record > TRIMMED_PAST_RECORD, (first, first_record, leader.log())
                await check_snapshots_still_fit(url)

                # A new node with an empty data dir: it cannot follow from record 1.
                new_node = await start_node(url, tmp_path / "s2", "sequencer-2")
                started.append(new_node)
                assert "installed engine snapshot engine-" in new_node.log(), new_node.log()
                late_gateway = await start_gateway(url, tmp_path / "g2")
                started.append(late_gateway)
                assert "read side loaded from snapshot read-" in late_gateway.log()
                found = [m for m in map(_CAUGHT_UP.search, late_gateway.output) if m]
                assert int(found[0][3]) >= first, late_gateway.log()

                # Both go on with the cluster.
                await asyncio.gather(
                    place(bob, "buy", "1.00", ORDERS_A_ROUND, "after-s"),
                    place(alice, "buy", "1.00", ORDERS_A_ROUND, "after-b"),
                )

                # The new node, paused (SIGSTOP) while the stream is trimmed past it, finds
                # on SIGCONT that the stream skips ahead of it and fetches a snapshot again.
                paused_at = await seq_of(first_gateway)
                await nodes.until(lambda latest: "sequencer-2" in latest
                                  and latest["sequencer-2"].applied_seq >= paused_at,
                                  CATCH_UP_S)  # fmt: skip
                new_node.process.send_signal(signal.SIGSTOP)
                for round_ in range(MAX_ROUNDS):  # until the trim passed the paused node
                    await asyncio.gather(
                        place(bob, "buy", "1.00", ORDERS_A_ROUND, f"p-s{round_}"),
                        place(alice, "buy", "1.00", ORDERS_A_ROUND, f"p-b{round_}"),
                    )
                    if (await stream_start(url))[1] > paused_at + 1:
                        break
                assert (await stream_start(url))[1] > paused_at + 1
                new_node.process.send_signal(signal.SIGCONT)
                async with asyncio.timeout(CATCH_UP_S):
                    while new_node.log().count("installed engine snapshot engine-") < 2:
                        await asyncio.sleep(0.05)  # bounded by the timeout
            last = await seq_of(first_gateway)
            await nodes.until(lambda latest: all(
                n in latest and latest[n].applied_seq >= last
                for n in ("sequencer-1", "sequencer-2")), CATCH_UP_S)  # fmt: skip
            assert nodes.role("sequencer-2") == "standby"
            async with asyncio.timeout(CATCH_UP_S):
                while await seq_of(late_gateway) < last:  # bounded by the timeout
                    await asyncio.sleep(0.05)
            assert await reads(late_gateway, keys) == await reads(first_gateway, keys)
            digests = [await digest_at_stop(g) for g in (first_gateway, late_gateway)]
            assert digests[0] == digests[1]
            assert digests[0][0] == last

            for node in (new_node, leader):  # the standby first: no takeover
                assert await stop(node) == 0, node.log()
                assert node.tracebacks == 0, node.log()
            assert state_hash(tmp_path / "s2") == state_hash(tmp_path / "s1")
            assert state_hash(tmp_path / "s1")[0] == last
    finally:
        for role in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                role.process.send_signal(signal.SIGCONT)
                await stop(role)
            print(f"--- {role.role} on port {role.port}:\n{role.log()}")  # shown on a failure

