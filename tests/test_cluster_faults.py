"""Faults of a whole cluster as `exchange cluster --nats-nodes 3 --sequencers 2` runs it:
three real nats-server nodes (the stream and the lease bucket R3), a leading and a standby
`exchange sequencer`, two `exchange gateway` processes, each connected with all three
node URLs, and clients streaming orders through both gateways (tests/cluster_trading.py).

- kill -9 of one NATS node under load (first the node the leader's connection uses, then
  the node leading the stream): nothing acknowledged lost, trading resumes; restarted, the
  node catches up (every replica current in the stream's info, its own store at the
  stream's last message).
- kill -9 of everything (the three nodes, both sequencers, both gateways) under load, all
  started again on the same directories: every order answered `accepted` is there, with
  its order id; trading resumes; the sequencers' state hashes equal a clean replay of
  the stream.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from exchange import natswire
from exchange.lease import ensure_bucket
from exchange.natsserver import LOOPBACK, NatsCluster, NatsNode
from exchange.natsstream import ensure_stream
from gateway.client import Admin
from tests.cluster_trading import (
    OrderStream,
    finished,
    listed_orders,
    market,
    reads,
    same_seq,
)
from tests.sequencers import NodeWatch, start_sequencer, state_hash, stream_hash, watching
from tests.server import ADMIN_TOKEN, RunningServer, free_port, start_role, stop

pytest_plugins = ("tests.nats_fixtures",)

REPLICAS = 3
# Orders each client places between two faults, and how many of them come before it.
ORDERS_A_ROUND = 20
BEFORE_FAULT = 5
# The NATS node-loss test's rounds: one node killed and restarted in each.
ROUNDS = 2
# A NATS node restarted, a role started or caught up, on a loaded 2-core machine.
CATCH_UP_S = 30.0
# A whole test's bound (each runs in about 20-40 s on an idle machine).
TEST_TIMEOUT_S = 180.0
# Between looks at a restarted node's replica (a few requests; the node catches up in ~1 s).
LOOK_EVERY_S = 0.2
HTTP_TIMEOUT_S = 5.0


@dataclass
class Cluster:
    nats: NatsCluster
    base: Path
    watch: NodeWatch
    sequencers: dict[str, RunningServer] = field(default_factory=dict)
    gateways: list[RunningServer] = field(default_factory=list)

    @property
    def nats_arg(self) -> str:
        return ",".join(self.nats.urls)

    def data_dir(self, node_id: str) -> Path:
        return self.base / node_id

    async def start_sequencer(self, node_id: str) -> None:
        self.sequencers[node_id] = await start_sequencer(
            self.nats_arg, self.data_dir(node_id), node_id
        )

    async def start_gateways(self, count: int) -> None:
        self.gateways = []
        for _ in range(count):
            port = free_port()
            args = ["gateway", "--nats", self.nats_arg, "--port", str(port)]
            self.gateways.append(
                await start_role(args, port, self.base / "gateways", ready="exchange gateway")
            )

    def roles(self) -> list[RunningServer]:
        return [*self.gateways, *self.sequencers.values()]

    def leader(self) -> str:
        leaders = [n for n, s in self.watch.latest.items() if s.role == "leader"]
        assert len(leaders) == 1, self.watch.latest
        return leaders[0]

    async def until_level(self) -> None:
        """Every sequencer has applied what the gateways have."""
        seq = await same_seq(self.gateways)
        try:
            await self.watch.until(lambda latest: all(
                n in latest and latest[n].applied_seq >= seq for n in self.sequencers
            ), CATCH_UP_S)  # fmt: skip
        except TimeoutError:
            logs = "\n".join(f"--- {n}:\n{s.log()}" for n, s in self.sequencers.items())
            raise AssertionError(f"not at seq {seq}: {self.watch.latest}\n{logs}") from None

    async def stop_sequencers_and_compare(self) -> None:
        """Both stop cleanly; their state hashes equal a clean replay of the stream."""
        for node_id, sequencer in self.sequencers.items():
            assert await stop(sequencer) == 0, sequencer.log()
            assert sequencer.tracebacks == 0, sequencer.log()
            assert "standby stopped" not in sequencer.log(), node_id
        hashes = {n: state_hash(self.data_dir(n)) for n in self.sequencers}
        assert len(set(hashes.values())) == 1, hashes
        assert next(iter(hashes.values())) == await stream_hash(self.nats.urls)


@contextlib.asynccontextmanager
async def three_nodes(nats_cluster: NatsCluster, base: Path) -> AsyncIterator[Cluster]:
    """The stream and the lease bucket R3 (as `exchange cluster` makes them), sequencer-1
    leading, sequencer-2 following, two gateways. Whatever still runs at the end is
    stopped; gateways must stop with status 0 and no traceback."""
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        await ensure_stream(nc.jetstream(), replicas=REPLICAS)
        await ensure_bucket(nc.jetstream(), replicas=REPLICAS)
    finally:
        await nc.close()
    async with asyncio.timeout(TEST_TIMEOUT_S), watching(nats_cluster.urls) as watch:
        cluster = Cluster(nats_cluster, base, watch)
        try:
            await cluster.start_sequencer("sequencer-1")
            await watch.until(lambda latest: "sequencer-1" in latest
                              and latest["sequencer-1"].role == "leader", CATCH_UP_S)  # fmt: skip
            await cluster.start_sequencer("sequencer-2")
            await watch.until(lambda latest: "sequencer-2" in latest, CATCH_UP_S)
            await cluster.start_gateways(2)
            yield cluster
            for gateway in cluster.gateways:
                assert await stop(gateway) == 0, gateway.log()
                assert gateway.tracebacks == 0, gateway.log()
        finally:
            for role in cluster.roles():
                await stop(role)


def order_streams(cluster: Cluster, keys: dict[str, str]) -> list[OrderStream]:
    """Alice buys through gateway 1, Bob sells through gateway 2."""
    one, two = cluster.gateways
    return [
        OrderStream("alice", keys["alice"], one.ws_url, "buy"),
        OrderStream("bob", keys["bob"], two.ws_url, "sell"),
    ]


async def check_nothing_acknowledged_lost(
    cluster: Cluster, streams: list[OrderStream], keys: dict[str, str], orders: int
) -> None:
    """Every gateway lists every order answered `accepted`, with its order id, each once
    and nothing else of the streams', and both read the same."""
    await same_seq(cluster.gateways)
    for stream in streams:
        assert stream.wrong == [], f"{stream.name} got wrong answers"
        assert len(stream.accepted) == orders, f"{stream.name}: trading did not resume"
        for gateway in cluster.gateways:
            assert await listed_orders(gateway, stream) == stream.accepted
    seen = [await reads(gateway, keys) for gateway in cluster.gateways]
    assert all(one == seen[0] for one in seen[1:])


async def http_json(url: str) -> Any:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as answer:
        assert answer.status == 200, url
        return await answer.json()


def monitor_url(node: NatsNode, path: str) -> str:
    return f"http://{LOOPBACK}:{node.config.monitor_port}/{path}"


async def node_of_connection(cluster: NatsCluster, name: str) -> NatsNode:
    """The NATS node a client named `name` is connected to (its /connz)."""
    for node in cluster.nodes:
        connz = await http_json(monitor_url(node, "connz"))
        if any(c.get("name") == name for c in connz.get("connections") or []):
            return node
    raise AssertionError(f"no node has a connection named {name}")


async def stream_leader(cluster: NatsCluster) -> NatsNode:
    nc = await nats.connect(servers=cluster.urls)
    try:
        info = await nc.jetstream().stream_info(natswire.STREAM)
    finally:
        await nc.close()
    assert info.cluster is not None, info
    assert info.cluster.leader is not None, info
    return cluster.node(info.cluster.leader)


async def stored_last_seq(node: NatsNode) -> int | None:
    """The stream's last message in this node's own store (its /jsz), None if it has none."""
    jsz = await http_json(monitor_url(node, "jsz?streams=true"))
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream.get("name") == natswire.STREAM:
                return int(stream["state"]["last_seq"])
    return None


async def until_caught_up(cluster: NatsCluster, node: NatsNode) -> None:
    """Until the stream's info says every replica is current with no lag, and `node`'s own
    store holds the stream to its last message (bounded by CATCH_UP_S)."""
    nc = await nats.connect(servers=cluster.urls)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(CATCH_UP_S):
            while True:  # bounded by the timeout
                with contextlib.suppress(Exception):  # no stream leader yet: look again
                    info = await js.stream_info(natswire.STREAM)
                    peers = (info.cluster.replicas if info.cluster is not None else None) or []
                    current = len(peers) == REPLICAS - 1 and all(
                        p.current and not p.offline and not p.lag for p in peers
                    )
                    if current and await stored_last_seq(node) == info.state.last_seq:
                        return
                await asyncio.sleep(LOOK_EVERY_S)
    finally:
        await nc.close()


async def a_round(streams: list[OrderStream], number: int) -> list["asyncio.Task[None]"]:
    """Round `number` of orders started, once each client had BEFORE_FAULT of them accepted."""
    first = number * ORDERS_A_ROUND
    tasks = [asyncio.create_task(s.run(first + ORDERS_A_ROUND, first)) for s in streams]
    for stream in streams:
        await stream.accepted_at_least(first + BEFORE_FAULT)
    return tasks


@pytest.mark.slow
async def test_a_nats_node_killed_under_load_loses_nothing_and_catches_up_when_restarted(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    async with three_nodes(nats_cluster, tmp_path) as cluster:
        async with Admin(cluster.gateways[0].base_url, ADMIN_TOKEN) as admin:
            keys = await market(admin)
        streams = order_streams(cluster, keys)
        for number in range(ROUNDS):
            trading = await a_round(streams, number)
            if number == 0:  # the node the leader's connection uses
                victim = await node_of_connection(nats_cluster, cluster.leader())
            else:  # the node leading the stream
                victim = await stream_leader(nats_cluster)
            await victim.kill()  # SIGKILL, while both clients have orders on the way
            await finished(trading)  # every order answered accepted: trading resumed
            await victim.start()  # the same ports and store
            await until_caught_up(nats_cluster, victim)
        await check_nothing_acknowledged_lost(
            cluster, streams, keys, ROUNDS * ORDERS_A_ROUND
        )
        await cluster.until_level()
        await cluster.stop_sequencers_and_compare()


@pytest.mark.slow
async def test_the_whole_cluster_killed_and_restarted_keeps_everything_acknowledged(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    async with three_nodes(nats_cluster, tmp_path) as cluster:
        async with Admin(cluster.gateways[0].base_url, ADMIN_TOKEN) as admin:
            keys = await market(admin)
        streams = order_streams(cluster, keys)
        trading = await a_round(streams, 0)
        for role in cluster.roles():  # everything at once, orders on the way
            role.process.kill()
        await asyncio.gather(*(node.kill() for node in nats_cluster.nodes))
        for role in cluster.roles():
            await stop(role)  # collect the output of the killed process
        await asyncio.gather(*trading, return_exceptions=True)  # their sockets closed
        acknowledged = {s.name: dict(s.accepted) for s in streams}
        cluster.watch.latest.clear()  # the dead nodes' last heartbeats
        await nats_cluster.start()  # the same ports and stores
        await cluster.start_sequencer("sequencer-1")
        await cluster.start_sequencer("sequencer-2")
        await cluster.start_gateways(2)
        one_leads = lambda latest: sum(s.role == "leader" for s in latest.values()) == 1  # noqa: E731
        await cluster.watch.until(one_leads, CATCH_UP_S)
        restarted = order_streams(cluster, keys)
        for stream in restarted:  # every acknowledged order is there, with its order id
            for gateway in cluster.gateways:
                listed = await listed_orders(gateway, stream)
                assert listed.items() >= acknowledged[stream.name].items(), stream.name
            # The order on its way at the kill is resent with its client_order_id.
            stream.accepted = dict(acknowledged[stream.name])
        await finished([asyncio.create_task(s.run(ORDERS_A_ROUND, len(s.accepted)))
                        for s in restarted])  # fmt: skip
        await check_nothing_acknowledged_lost(cluster, restarted, keys, ORDERS_A_ROUND)
        await cluster.until_level()
        await cluster.stop_sequencers_and_compare()
