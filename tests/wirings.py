"""The two ways the exchange runs, started for end-to-end tests: `single` (one `exchange
serve` process) and `cluster` (a real nats-server, `exchange sequencer` and `exchange
gateway` processes, tests.server.start_role). Both give the test a RunningServer whose
port serves the whole client protocol; with a demo market, both leave its keys in
`server.data_dir / "demo-keys.json"`, so tests read them the same way.
"""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from exchange import natsserver
from exchange.natsserver import NatsNode
from gateway.demo import DEMO_KEYS_FILE
from tests.server import RunningServer, free_port, running, start_role, stop

WIRINGS = ("single", "cluster")


@dataclass
class Roles:
    nats: NatsNode
    data_dir: Path
    sequencer: RunningServer
    gateways: list[RunningServer] = field(default_factory=list)

    async def add_gateway(self, *extra: str, data_dir: Path | None = None) -> RunningServer:
        """One more `exchange gateway`; `data_dir` is only where the test looks for files
        the gateway writes (its demo keys)."""
        port = free_port()
        args = ["gateway", "--nats", self.nats.url, "--port", str(port), *extra]
        ready = "exchange gateway"
        gateway = await start_role(args, port, data_dir or self.data_dir, ready=ready)
        self.gateways.append(gateway)
        return gateway


@contextlib.asynccontextmanager
async def roles(
    nats_node: NatsNode, data_dir: Path, gateways: int, sequencer_args: tuple[str, ...] = ()
) -> AsyncIterator[Roles]:
    """A sequencer on `data_dir` (started with `sequencer_args` too) and `gateways`
    gateways; at the end each role still running must stop with status 0 and no traceback
    (a role the test killed is skipped)."""
    args = ["sequencer", "--nats", nats_node.url, "--data-dir", str(data_dir), *sequencer_args]
    sequencer = await start_role(args, 0, data_dir, ready="exchange sequencer")
    started = Roles(nats_node, data_dir, sequencer)
    try:
        for _ in range(gateways):
            await started.add_gateway()
        yield started
    finally:
        for role in [*started.gateways, sequencer]:
            if role.process.returncode is not None:
                await stop(role)  # killed by the test: only collect its output
                continue
            assert await stop(role) == 0, role.log()
            assert role.tracebacks == 0, role.log()


@contextlib.asynccontextmanager
async def cluster(
    base: Path, gateways: int = 1, *, demo: bool = False, extra: tuple[str, ...] = ()
) -> AsyncIterator[Roles]:
    """nats-server, a sequencer, and `gateways` gateways started with `extra`; with `demo`
    the first one seeded the demo market (its keys in its RunningServer's data_dir, as
    `serve --demo` leaves them)."""
    nodes = await natsserver.start(base / "nats", nodes=1)
    try:
        async with roles(nodes.nodes[0], base / "sequencer", gateways=0) as started:
            keys_dir = base / "gateway-1"
            keys_dir.mkdir(parents=True)
            keys = ("--demo", "--demo-keys", str(keys_dir / DEMO_KEYS_FILE)) if demo else ()
            await started.add_gateway(*extra, *keys, data_dir=keys_dir)
            for _ in range(gateways - 1):
                await started.add_gateway(*extra)
            yield started
    finally:
        await nodes.stop()


@contextlib.asynccontextmanager
async def serving(
    wiring: str, base: Path, *, demo: bool = False, extra: tuple[str, ...] = ()
) -> AsyncIterator[RunningServer]:
    """The exchange in one wiring, its client flags `extra`: the server (or first
    gateway) clients talk to. Stopped, and checked to exit 0, at the end unless the test
    stopped it itself."""
    if wiring == "single":
        async with running(base / "data", demo=demo, extra=extra) as server:
            yield server
    else:
        async with cluster(base, demo=demo, extra=extra) as started:
            yield started.gateways[0]
