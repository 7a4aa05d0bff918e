"""Starts, checks and stops real nats-server processes on 127.0.0.1 (tests and `exchange cluster`).

It owns the config each node runs with (JetStream on, its store in a given directory, loopback
ports only, a cluster block with routes and server names when there is more than one node), the
subprocesses and every bounded wait around them. It never talks to the exchange's streams: that
is the bus's job, through nats-py.

Debian ships nats-server 2.9.10 (`.ci/install-nats-server` installs it). What that version
lacks matters to the roles and the replicated journal built on it:

- No per-message TTL: the `Nats-TTL` header (nats-py's `publish(msg_ttl=...)`,
  `KeyValue.create(msg_ttl=...)`) needs 2.11, and KV limit markers (`limit_marker_ttl`) need
  API level 1, which 2.9 does not report (nats-py refuses them). A lease is a KV bucket whose
  stream has a short `max_age` (nats-py's `KeyValueConfig.ttl`), one per bucket, not per key.
- Lazy fsync: JetStream 2.9 has no `sync_interval` and writes its file store without an fsync
  per message, so an acknowledged message can be lost when all nodes lose power together. An
  acknowledgement means "on a quorum of nodes' page caches", never "on disk"; the sequencer's
  own fsync'd journal stays the durable record (issue 15).
- Readiness: `/healthz?js-enabled-only=true` answers ok on a clustered node that has no meta
  leader yet, so JetStream calls would still fail; the bare `/healthz` (JetStream enabled, a meta
  leader known, this node's streams current) is what `wait_ready` asks for.
"""

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp

from exchange.natswire import NATS_MAX_PAYLOAD

LOOPBACK = "127.0.0.1"
# Debian installs the binary in /usr/sbin, which is not on a normal user's PATH.
DEBIAN_BINARY = Path("/usr/sbin/nats-server")
CLUSTER_NAME = "exchange"
# JetStream's memory store is a reservation per node (default: 75% of RAM, each); we keep
# streams on files, so a small cap stops three local nodes from claiming the machine three times.
MAX_MEMORY_STORE_BYTES = 256 * 1024 * 1024
# A clustered node reports healthy only once a meta leader is elected, which takes a few route
# handshakes and a Raft election (about a second here, more on 2 cores shared with a load test).
READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.05
# One /healthz request: loopback answers in microseconds; a node stalled longer is not ready.
HEALTH_REQUEST_TIMEOUT_S = 2.0
# SIGTERM makes nats-server close its clients, routes and JetStream stores; a node that has
# not exited by then is SIGKILLed (its store is still recoverable, as after a crash).
STOP_TIMEOUT_S = 10.0
# After SIGKILL the kernel reaps at once; waiting longer than this means something is wrong.
KILL_TIMEOUT_S = 5.0
LOG_TAIL_BYTES = 4000


class NatsServerError(RuntimeError):
    """A nats-server that is missing, exits early or does not become ready in time."""


def find_binary() -> Path:
    """The nats-server to run: the one on PATH, else Debian's in /usr/sbin."""
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    if DEBIAN_BINARY.exists():
        return DEBIAN_BINARY
    raise NatsServerError(
        "nats-server is missing: install Debian's package: apt-get install -y nats-server"
    )


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open together so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class NodeConfig:
    """One node's identity, ports and directory (config, JetStream store and log live there)."""

    name: str
    directory: Path
    client_port: int
    monitor_port: int
    cluster_port: int | None = None
    route_ports: tuple[int, ...] = ()
    cluster_name: str = CLUSTER_NAME

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "nats-server.conf"

    @property
    def store_dir(self) -> Path:
        return self.directory / "jetstream"

    @property
    def log_path(self) -> Path:
        return self.directory / "nats-server.log"

    def render(self) -> str:
        """The config file's text (nats-server's own format; JSON strings are valid in it)."""
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "{LOOPBACK}:{self.client_port}"',
            f'http: "{LOOPBACK}:{self.monitor_port}"',
            # A durable batch message is up to natswire.MAX_BATCH_MESSAGE_BYTES; the default
            # max_payload (1 MiB) would refuse a big batch the sequencer must publish.
            f"max_payload: {NATS_MAX_PAYLOAD}",
            "jetstream {",
            f"  store_dir: {_quoted(self.store_dir)}",
            f"  max_memory_store: {MAX_MEMORY_STORE_BYTES}",
            "}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://{LOOPBACK}:{port}"' for port in self.route_ports)
            lines += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f'  listen: "{LOOPBACK}:{self.cluster_port}"',
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"


def _quoted(path: Path) -> str:
    text = str(path)
    if '"' in text or "\\" in text or "\n" in text:
        raise NatsServerError(f"a nats-server path may not hold quotes or backslashes: {text!r}")
    return f'"{text}"'


@dataclass
class NatsNode:
    """One nats-server subprocess; `start`/`stop` may be repeated (a restart keeps its store)."""

    config: NodeConfig
    binary: Path = field(default_factory=find_binary)
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> None:
        """Writes the config and starts the process without waiting for it to be ready."""
        if self.running:
            raise NatsServerError(f"nats-server {self.config.name} is already running")
        self.config.store_dir.mkdir(parents=True, exist_ok=True)
        self.config.config_path.write_text(self.config.render())
        with self.config.log_path.open("ab") as log:
            # The child keeps its own copy of the log's descriptor.
            self.process = subprocess.Popen(  # noqa: S603 (a fixed binary, our own config)
                [str(self.binary), "-c", str(self.config.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the nodes
            )

    async def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        self.launch()
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Returns once the bare /healthz says ok (see the module's docstring), else raises."""
        last = "no answer"
        client_timeout = aiohttp.ClientTimeout(total=HEALTH_REQUEST_TIMEOUT_S)
        url = f"http://{LOOPBACK}:{self.config.monitor_port}/healthz"
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        if not self.running:
                            raise NatsServerError(
                                f"nats-server {self.config.name} exited before it was ready "
                                f"(code {self._returncode()}):\n{self.log_tail()}"
                            )
                        try:
                            async with session.get(url) as answer:
                                if answer.status == 200:
                                    return
                                last = f"{answer.status} {await answer.text()}"
                        except (aiohttp.ClientError, TimeoutError) as exc:
                            last = repr(exc)
                        await asyncio.sleep(READY_POLL_S)
            except TimeoutError:
                raise NatsServerError(
                    f"nats-server {self.config.name} not ready within {timeout} s "
                    f"(last /healthz: {last}):\n{self.log_tail()}"
                ) from None

    async def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL. Does nothing when it is not running."""
        if not self.running:
            return
        self._signal(signal.SIGTERM)
        if await self._wait_exit(STOP_TIMEOUT_S):
            return
        await self.kill()

    async def kill(self) -> None:
        """SIGKILL at once (a crash, for fault tests), then waits for the process to go."""
        if not self.running:
            return
        self._signal(signal.SIGKILL)
        if not await self._wait_exit(KILL_TIMEOUT_S):
            raise NatsServerError(f"nats-server {self.config.name} survived SIGKILL")

    def log_tail(self) -> str:
        try:
            with self.config.log_path.open("rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"

    def _signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    async def _wait_exit(self, timeout: float) -> bool:
        process = self.process
        assert process is not None
        try:
            await asyncio.to_thread(process.wait, timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode


@dataclass
class NatsCluster:
    """One node, or N nodes routed to each other as one JetStream cluster."""

    nodes: list[NatsNode]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> NatsNode:
        for node in self.nodes:
            if node.config.name == name:
                return node
        raise KeyError(name)

    async def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        # Every process first: a clustered node is not ready until a quorum elects a meta leader.
        try:
            for node in self.nodes:
                node.launch()
            await asyncio.gather(*(node.wait_ready(timeout) for node in self.nodes))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))

    async def __aenter__(self) -> "NatsCluster":
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def plan(directory: Path, nodes: int = 1, names: Sequence[str] | None = None) -> NatsCluster:
    """`nodes` nodes in `directory` (a subdirectory each) on free ports, not started yet.

    One node runs without a cluster block; more get one, with routes to every node (their own
    included: nats-server drops that one) so any of them can start first.
    """
    if nodes < 1:
        raise ValueError("a NATS cluster needs at least one node")
    names = list(names) if names is not None else [f"n{i}" for i in range(1, nodes + 1)]
    if len(names) != nodes or len(set(names)) != nodes:
        raise ValueError(f"need {nodes} distinct node names, got {names}")
    clustered = nodes > 1
    ports = free_ports(nodes * (3 if clustered else 2))
    client_ports, monitor_ports = ports[:nodes], ports[nodes : 2 * nodes]
    cluster_ports = ports[2 * nodes :]
    configs = [
        NodeConfig(
            name=name,
            directory=directory / name,
            client_port=client_ports[i],
            monitor_port=monitor_ports[i],
            cluster_port=cluster_ports[i] if clustered else None,
            route_ports=tuple(cluster_ports),
        )
        for i, name in enumerate(names)
    ]
    return NatsCluster([NatsNode(config) for config in configs])


async def start(directory: Path, nodes: int = 1, timeout: float = READY_TIMEOUT_S) -> NatsCluster:
    """Plans and starts a cluster, returning once every node is ready (stop it with `stop()`)."""
    cluster = plan(directory, nodes)
    await cluster.start(timeout)
    return cluster
