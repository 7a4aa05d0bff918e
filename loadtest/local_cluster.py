"""A whole cluster for the benchmarks, on 127.0.0.1 in a given directory: NATS_NODES
nats-server nodes (the stream and the lease bucket made with as many replicas: R3 on
three), SEQUENCERS `exchange sequencer` (the first leads, the others follow as standbys)
and GATEWAYS `exchange gateway`, each started as `loadtest.bench_roles` starts its roles
(ready line, output drained, the benchmark's admin token). A sequencer can be killed
(kill -9) and started again with its own data directory and node id; everything started
is stopped on the way out, whatever happened.
"""

import contextlib
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats

from exchange import natsserver
from exchange.lease import ensure_bucket
from exchange.natsstream import ensure_stream
from loadtest import bench_roles

SEQUENCER_READY = "exchange sequencer"
GATEWAY_READY = "exchange gateway"
# Reaching NATS to make the stream, right after the nodes report healthy.
CONNECT_TIMEOUT_S = 10.0


@dataclass
class LocalCluster:
    nats: natsserver.NatsCluster
    sequencer_args: dict[str, list[str]]  # node id -> its `exchange` arguments
    sequencers: dict[str, Process]
    gateways: dict[str, Process]
    urls: list[str]  # each gateway's ws:// URL

    @property
    def nats_urls(self) -> list[str]:
        return self.nats.urls

    @property
    def http_urls(self) -> list[str]:
        return [u.replace("ws://", "http://").removesuffix("/v1/ws") for u in self.urls]

    async def kill(self, node_id: str) -> None:
        """kill -9, and reaped."""
        process = self.sequencers[node_id]
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def restart(self, node_id: str) -> None:
        """Started again on its own data directory; back once it says it is ready (a
        standby once it follows the leader)."""
        self.sequencers[node_id] = await bench_roles.start(
            self.sequencer_args[node_id], SEQUENCER_READY
        )

    def processes(self) -> dict[str, Process]:
        return {**self.sequencers, **self.gateways}


async def _make_stream(urls: list[str], replicas: int) -> None:
    nc = await nats.connect(servers=urls, connect_timeout=CONNECT_TIMEOUT_S)
    try:
        await ensure_stream(nc.jetstream(), replicas=replicas)
        await ensure_bucket(nc.jetstream(), replicas=replicas)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def local_cluster(
    directory: Path, nats_nodes: int, sequencers: int, gateways: int
) -> AsyncIterator[LocalCluster]:
    nats_cluster = await natsserver.start(directory / "nats", nodes=nats_nodes)
    cluster = LocalCluster(nats_cluster, {}, {}, {}, [])
    try:
        await _make_stream(nats_cluster.urls, nats_nodes)
        joined = ",".join(nats_cluster.urls)
        for number in range(1, sequencers + 1):
            name = f"sequencer-{number}"
            cluster.sequencer_args[name] = [
                "sequencer", "--nats", joined, "--node-id", name,
                "--data-dir", str(directory / name),
            ]  # fmt: skip
            await cluster.restart(name)
        for number in range(1, gateways + 1):
            port = bench_roles.free_port()
            cluster.gateways[f"gateway-{number}"] = await bench_roles.start(
                ["gateway", "--nats", joined, "--port", str(port), *bench_roles.LIMITS],
                GATEWAY_READY,
            )
            cluster.urls.append(f"ws://127.0.0.1:{port}/v1/ws")
        yield cluster
    finally:
        for process in [*cluster.gateways.values(), *cluster.sequencers.values()]:
            await bench_roles.stop(process)
        await nats_cluster.stop()
