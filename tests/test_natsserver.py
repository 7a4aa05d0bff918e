"""Real nats-server nodes (Debian's 2.9.10) with nats-py: the JetStream calls the bus relies on.

What the replicated journal builds on: a stream append fenced by `Nats-Expected-Last-Sequence`,
a KV lease that lapses by the bucket's max age, and an R3 stream that keeps acknowledging when
one of three nodes is killed, and that the restarted node catches up with.
"""

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyValueLimitMarkerTTLNotSupportedError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    ServiceUnavailableError,
)

from exchange import natsserver

pytest_plugins = ("tests.nats_fixtures",)

STREAM = "BATCHES"
SUBJECT = "exchange.batches"
EXPECTED_LAST_SEQUENCE = api.Header.EXPECTED_LAST_SEQUENCE.value  # "Nats-Expected-Last-Sequence"
# JetStream's error code for a publish whose expected last sequence is not the stream's.
JS_WRONG_LAST_SEQUENCE = 10071
CONNECT_TIMEOUT_S = 2
PUBLISH_TIMEOUT_S = 2.0
LEASE_TTL_S = 1.0
# The server expires messages on a timer after max_age; a lease gone later than this is a bug.
LEASE_EXPIRY_BOUND_S = 10.0
# A killed stream leader's followers elect a new one after a Raft election timeout (seconds).
FAILOVER_BOUND_S = 30.0
# A restarted node replays its store and fetches what it missed from the leader.
CATCH_UP_BOUND_S = 30.0
POLL_S = 0.1


@asynccontextmanager
async def connected(urls: list[str]) -> AsyncIterator[Client]:
    nc = await nats.connect(
        servers=urls,
        connect_timeout=CONNECT_TIMEOUT_S,
        reconnect_time_wait=1,
        max_reconnect_attempts=-1,
    )
    try:
        yield nc
    finally:
        await nc.close()


async def append(js: JetStreamContext, payload: bytes, last: int) -> api.PubAck:
    """One batch appended only if the stream still ends at `last` (the leader's fence)."""
    return await js.publish(
        SUBJECT, payload, timeout=PUBLISH_TIMEOUT_S, headers={EXPECTED_LAST_SEQUENCE: str(last)}
    )


async def test_a_stream_append_is_fenced_by_the_expected_last_sequence(
    nats_server: natsserver.NatsNode,
) -> None:
    async with connected([nats_server.url]) as nc:
        js = nc.jetstream()
        assert (await js.account_info()).streams == 0  # JetStream answers
        info = await js.add_stream(
            name=STREAM, subjects=[SUBJECT], num_replicas=1, storage=api.StorageType.FILE
        )
        assert info.config.num_replicas == 1
        assert (await append(js, b"batch-1", last=0)).seq == 1
        assert (await append(js, b"batch-2", last=1)).seq == 2
        # A second writer still believing the stream ends at 1 is refused; nothing is stored.
        with pytest.raises(BadRequestError) as refused:
            await append(js, b"stale", last=1)
        assert refused.value.err_code == JS_WRONG_LAST_SEQUENCE, refused.value
        assert refused.value.description == "wrong last sequence: 2"
        state = (await js.stream_info(STREAM)).state
        assert (state.messages, state.last_seq) == (2, 2)
        assert (await js.get_msg(STREAM, 2)).data == b"batch-2"


async def test_a_kv_lease_lapses_by_the_buckets_max_age_and_can_then_be_taken(
    nats_server: natsserver.NatsNode,
) -> None:
    async with connected([nats_server.url]) as nc:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="leases", ttl=LEASE_TTL_S, history=1)
        assert (await kv.status()).ttl == LEASE_TTL_S
        revision = await kv.create("leader", b"node-a")
        with pytest.raises(KeyWrongLastSequenceError):
            await kv.create("leader", b"node-b")  # held: a standby cannot take it
        refreshed = await kv.update("leader", b"node-a", last=revision)
        with pytest.raises(KeyWrongLastSequenceError):
            await kv.update("leader", b"node-b", last=revision)  # a stale refresh is refused
        assert (await kv.get("leader")).value == b"node-a"

        async def lapsed() -> None:
            while True:
                try:
                    await kv.get("leader")
                except KeyNotFoundError:
                    return
                await asyncio.sleep(POLL_S)

        await asyncio.wait_for(lapsed(), LEASE_EXPIRY_BOUND_S)
        assert await kv.create("leader", b"node-b") > refreshed


async def test_nats_server_2_9_has_no_kv_limit_markers(nats_server: natsserver.NatsNode) -> None:
    """Per-key TTLs (2.11's limit markers) are refused by nats-py on a 2.9 server, not ignored."""
    async with connected([nats_server.url]) as nc:
        js = nc.jetstream()
        assert (await js.account_info()).api.level is None
        with pytest.raises(KeyValueLimitMarkerTTLNotSupportedError):
            await js.create_key_value(bucket="markers", ttl=10.0, limit_marker_ttl=1.0)


async def test_a_node_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    node = natsserver.plan(tmp_path, nodes=1).nodes[0]
    with socket.socket() as taken:  # someone else holds the node's client port
        taken.bind((natsserver.LOOPBACK, node.config.client_port))
        taken.listen()
        with pytest.raises(
            natsserver.NatsServerError, match="exited before it was ready"
        ) as failed:
            await node.start()
    assert "address already in use" in str(failed.value)
    assert not node.running


async def wait_for_ack(nc: Client, payload: bytes, last: int) -> api.PubAck:
    """Appends, retrying while the stream has no leader (the failover's bound is the caller's)."""
    js = nc.jetstream()
    while True:
        try:
            return await append(js, payload, last)
        # No leader yet, or our connection moving to a live node; a refused sequence is no
        # reason to retry (TimeoutError includes nats-py's own).
        except (
            TimeoutError,
            NoStreamResponseError,
            ServiceUnavailableError,
            nats.errors.NoRespondersError,
            nats.errors.ConnectionReconnectingError,
        ):
            await asyncio.sleep(POLL_S)


@pytest.mark.slow
async def test_an_r3_stream_keeps_acknowledging_when_its_leader_is_killed(
    nats_cluster: natsserver.NatsCluster,
) -> None:
    async with connected(nats_cluster.urls) as nc:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[SUBJECT], num_replicas=3)
        assert (await append(js, b"batch-1", last=0)).seq == 1
        cluster = (await js.stream_info(STREAM)).cluster
        assert cluster is not None
        assert cluster.leader is not None
        assert len(cluster.replicas or []) == 2
        leader = nats_cluster.node(cluster.leader)

    await leader.kill()
    survivors = [node.url for node in nats_cluster.nodes if node is not leader]
    async with connected(survivors) as nc:
        ack = await asyncio.wait_for(wait_for_ack(nc, b"batch-2", last=1), FAILOVER_BOUND_S)
        assert ack.seq == 2
        js = nc.jetstream()
        after = await js.stream_info(STREAM)
        assert after.cluster is not None
        assert after.cluster.leader != leader.config.name
        assert (after.state.messages, after.state.last_seq) == (2, 2)

    await leader.start()  # its /healthz is ok only once its streams are current again
    async with connected(nats_cluster.urls) as nc:
        js = nc.jetstream()

        async def caught_up() -> None:
            while True:
                info = await js.stream_info(STREAM)
                peers = {p.name: p for p in (info.cluster.replicas or [])} if info.cluster else {}
                back = peers.get(leader.config.name)
                if back is not None and back.current and not back.lag:
                    return
                await asyncio.sleep(POLL_S)

        await asyncio.wait_for(caught_up(), CATCH_UP_BOUND_S)
        assert (await append(js, b"batch-3", last=2)).seq == 3


def test_a_planned_cluster_listens_on_loopback_only_with_routes_to_every_node(
    tmp_path: Path,
) -> None:
    single = natsserver.plan(tmp_path / "one", nodes=1).nodes[0].config.render()
    assert "cluster {" not in single
    configs = [node.config for node in natsserver.plan(tmp_path / "three", nodes=3).nodes]
    ports = [p for c in configs for p in (c.client_port, c.monitor_port, c.cluster_port)]
    assert len(set(ports)) == 9, ports
    assert [c.name for c in configs] == ["n1", "n2", "n3"]
    routes = ", ".join(f'"nats-route://127.0.0.1:{c.cluster_port}"' for c in configs)
    for config in configs:
        text = config.render()
        assert f'server_name: "{config.name}"' in text
        assert f"routes: [{routes}]" in text
        for line in text.splitlines():
            if line.strip().startswith(("listen:", "http:")):
                assert line.split(":", 1)[1].strip().startswith('"127.0.0.1:'), text
        addresses = re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", text)
        assert set(addresses) == {"127.0.0.1"}, text
