"""`exchange cluster --data-dir DIR`: the whole cluster on this machine, in one command.

It starts the nats-server node(s) (exchange/natsserver.py, configs and stores under
DIR/nats), makes the stream and the leader lease's bucket (R3 on three nodes), then the
sequencers (DIR/sequencer-1, the leader, then DIR/sequencer-2, ... as standbys), then the
gateways on port, port+1, ..., each a child process with its output forwarded line by
line behind its name. It waits (bounded) for each role's ready line, prints where
everything listens, and then only watches: Ctrl-C or SIGTERM stops the gateways, then the
sequencers, then NATS (SIGTERM, a bounded wait, SIGKILL), exit 0; a role that exits on its
own stops everything, exit 1 with one line naming it, except a sequencer while another
still runs (a standby takes over: one line says so). It never talks to a client and never
writes a sequencer's or gateway's data: each role owns its own.
"""

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nats

from exchange import natsserver
from exchange.datadir import DataDirError, claim
from exchange.lease import ensure_bucket
from exchange.natsstream import ensure_stream
from gateway import demo
from gateway.auth import ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE, admin_token

NATS_DIR = "nats"
# A gateway replays the whole stream before it listens (and the first one seeds the demo
# market): a long history on a loaded machine takes a while; past this it is stuck.
ROLE_READY_TIMEOUT_S = 120.0
# SIGTERM to exit: a sequencer finishes the batch in hand and publishes it, a gateway closes
# its sockets; one still running after this is SIGKILLed.
ROLE_STOP_TIMEOUT_S = 20.0
# After SIGKILL the kernel reaps at once; waiting longer than this means something is wrong.
KILL_TIMEOUT_S = 5.0
# How often the nats-server nodes (plain subprocesses, not asyncio's) are checked for an exit.
NATS_WATCH_POLL_S = 0.2
# Reaching NATS to make the stream, right after the nodes report healthy.
CONNECT_TIMEOUT_S = 10.0
# A child's output line longer than this is cut (asyncio's reader refuses longer ones).
MAX_LINE_BYTES = 64 * 1024
READY_LINE = {"sequencer": "exchange sequencer", "gateway": "exchange gateway"}


@dataclass(frozen=True)
class ClusterOptions:
    data_dir: Path
    nats_nodes: int = 1
    sequencers: int = 1
    gateways: int = 2
    port: int = 8080
    host: str = "127.0.0.1"
    demo: bool = False
    currency: str = "USD"  # every gateway's --currency


class RoleFailedError(Exception):
    """A role (or NATS) that would not start, or stopped on its own; the message names it."""


@dataclass
class Role:
    """One child process: `exchange sequencer` or `exchange gateway`."""

    name: str
    process: asyncio.subprocess.Process
    forwarding: "asyncio.Task[None] | None" = None
    exited: "asyncio.Task[int] | None" = None
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid


def _say(name: str, line: str) -> None:
    print(f"{name:<12}| {line}", flush=True)


async def _spawn(name: str, args: Sequence[str], env: dict[str, str]) -> Role:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env, limit=MAX_LINE_BYTES,
        start_new_session=True,  # Ctrl-C reaches the launcher only: it stops roles in order
    )  # fmt: skip
    role = Role(name, process)
    role.exited = asyncio.get_running_loop().create_task(process.wait(), name=f"{name}-exit")
    return role


async def _next_line(role: Role) -> str | None:
    assert role.process.stdout is not None
    try:
        raw = await role.process.stdout.readline()
    except ValueError:  # a line past MAX_LINE_BYTES: skip what is buffered of it
        return "(a line too long to forward)"
    return raw.decode(errors="replace").rstrip() if raw else None


async def _until_ready(role: Role, ready: str) -> None:
    """Forwards the role's output until its ready line; raises RoleFailedError if it exits
    first or takes longer than ROLE_READY_TIMEOUT_S."""
    try:
        async with asyncio.timeout(ROLE_READY_TIMEOUT_S):
            while True:  # bounded by the timeout: the role says when it is ready
                line = await _next_line(role)
                if line is None:
                    status = await role.process.wait()
                    msg = f"{role.name} exited while starting (status {status})"
                    raise RoleFailedError(msg)
                _say(role.name, line)
                if line.startswith(ready):
                    break
    except TimeoutError:
        raise RoleFailedError(f"{role.name} not ready within {ROLE_READY_TIMEOUT_S:g} s") from None
    role.forwarding = asyncio.get_running_loop().create_task(_forward(role))


async def _forward(role: Role) -> None:
    while (line := await _next_line(role)) is not None:  # until the role closes its output
        _say(role.name, line)


async def _stop_role(role: Role) -> bool:
    """SIGTERM, a bounded wait, SIGKILL; True when it exited 0 of its own accord."""
    process = role.process
    clean = True
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(ROLE_STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            clean = False
            role.notes.append(f"did not stop within {ROLE_STOP_TIMEOUT_S:g} s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            async with asyncio.timeout(KILL_TIMEOUT_S):
                await process.wait()
    if role.forwarding is not None:
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(KILL_TIMEOUT_S):  # the output ends with the process
                await role.forwarding
    if role.exited is not None:
        role.exited.cancel()
    if process.returncode != 0:
        clean = False
        role.notes.append(f"exited with status {process.returncode}")
    return clean


class Launcher:
    """Starts, watches and stops one local cluster."""

    def __init__(self, options: ClusterOptions) -> None:
        self.options = options
        self.data_dir = options.data_dir
        self.token = admin_token(self.data_dir)
        self.env = {**os.environ, ADMIN_TOKEN_ENV: self.token, "PYTHONUNBUFFERED": "1"}
        self.nats = natsserver.plan(self.data_dir / NATS_DIR, options.nats_nodes)
        self.sequencers: list[Role] = []
        self.gateways: list[Role] = []

    @property
    def nats_arg(self) -> str:
        return ",".join(self.nats.urls)

    def gateway_port(self, index: int) -> int:
        return self.options.port + index

    async def start(self) -> None:
        """Every role, in order, each once the one before is ready; raises RoleFailedError
        or NatsServerError (what started stays for stop() to take down)."""
        await self.nats.start()
        await self._make_stream()
        # The first leads (it is ready once it does); the others follow it as standbys.
        for number in range(1, self.options.sequencers + 1):
            name = f"sequencer-{number}"
            args = ["sequencer", "--nats", self.nats_arg, "--node-id", name,
                    "--data-dir", str(self.data_dir / name)]  # fmt: skip
            self.sequencers.append(await _spawn(name, args, self.env))
            await _until_ready(self.sequencers[-1], READY_LINE["sequencer"])
        for index in range(self.options.gateways):
            name = f"gateway-{index + 1}"
            args = ["gateway", "--nats", self.nats_arg, "--host", self.options.host,
                    "--port", str(self.gateway_port(index)),
                    "--currency", self.options.currency]  # fmt: skip
            if self.options.demo and index == 0:  # one seeder: the market is seeded once
                args += ["--demo", "--demo-keys", str(self.data_dir / demo.DEMO_KEYS_FILE)]
            self.gateways.append(await _spawn(name, args, self.env))
            await _until_ready(self.gateways[-1], READY_LINE["gateway"])

    async def _make_stream(self) -> None:
        # Made here, not by the roles' default, so three NATS nodes keep it as R3.
        nc = await nats.connect(servers=self.nats.urls, connect_timeout=CONNECT_TIMEOUT_S)
        try:
            await ensure_stream(nc.jetstream(), replicas=len(self.nats.nodes))
            await ensure_bucket(nc.jetstream(), replicas=len(self.nats.nodes))
        finally:
            await nc.close()

    def banner(self) -> str:
        host = self.options.host
        lines = []
        for node in self.nats.nodes:
            pid = node.process.pid if node.process is not None else "?"
            lines.append(f"  nats {node.config.name:<7} {node.url}  pid {pid}  "
                         f"log {node.config.log_path}")  # fmt: skip
        for number, role in enumerate(self.sequencers):
            started = "leader " if number == 0 else "standby"  # as started: the first leads
            lines.append(f"  {role.name:<12} {started}  pid {role.pid}  "
                         f"data {self.data_dir / role.name}")  # fmt: skip
        for index, role in enumerate(self.gateways):
            where = f"{host}:{self.gateway_port(index)}"
            lines.append(f"  {role.name:<12} http://{where}  ws://{where}/v1/ws  pid {role.pid}")
        token_file = self.data_dir / ADMIN_TOKEN_FILE
        lines.append(f"  admin token  in ${ADMIN_TOKEN_ENV} or {token_file}")
        keys = demo.saved_keys(self.data_dir / demo.DEMO_KEYS_FILE)
        if keys:
            lines.extend("  " + line for line in demo.key_lines(keys, self.data_dir))
        lines.append(
            f"exchange cluster ready: {len(self.nats.nodes)} NATS node(s) at {self.nats_arg} "
            f"(stream and lease R{len(self.nats.nodes)}), {len(self.sequencers)} sequencer(s), "
            f"{len(self.gateways)} gateway(s); Ctrl-C stops everything"
        )
        return "\n".join(lines)

    async def watch(self, stop: asyncio.Event) -> str | None:
        """Until `stop` (None) or a role's exit (a line naming it); a sequencer's exit
        only while no other sequencer runs (a standby takes over from it)."""
        loop = asyncio.get_running_loop()
        stopping = loop.create_task(stop.wait())
        nats_exit = loop.create_task(self._nats_exit())
        exits = {role.exited: role for role in self.roles if role.exited is not None}
        try:
            while True:  # one turn per role exit; at most one per role
                await asyncio.wait(
                    {stopping, nats_exit, *exits}, return_when=asyncio.FIRST_COMPLETED
                )
                for task, role in list(exits.items()):
                    if not task.done():
                        continue
                    line = f"{role.name} (pid {role.pid}) exited on its own with status "
                    line += str(task.result())
                    others = [r for r in self.sequencers if r is not role and r.exited
                              and not r.exited.done()]  # fmt: skip
                    if role not in self.sequencers or not others:
                        return line
                    _say(role.name, f"{line}; {others[0].name} and any other standby go on")
                    del exits[task]
                if stopping.done() or nats_exit.done():
                    break
        finally:
            stopping.cancel()
            nats_exit.cancel()
        if nats_exit.done() and not nats_exit.cancelled():
            return nats_exit.result()
        return None

    async def _nats_exit(self) -> str:
        while True:  # polled every NATS_WATCH_POLL_S until a node exits (or cancelled)
            for node in self.nats.nodes:
                if not node.running:
                    code = node.process.returncode if node.process is not None else None
                    return f"nats-server {node.config.name} exited on its own (status {code})"
            await asyncio.sleep(NATS_WATCH_POLL_S)

    @property
    def roles(self) -> list[Role]:
        return [*self.gateways, *self.sequencers]

    async def stop(self) -> list[str]:
        """Gateways, then sequencers, then NATS; lines about roles that did not stop cleanly."""
        problems: list[str] = []
        for group in (self.gateways, self.sequencers):
            results = await asyncio.gather(*(_stop_role(role) for role in group))
            problems += [
                f"{role.name}: {'; '.join(role.notes)}"
                for role, clean in zip(group, results, strict=True)
                if not clean
            ]
        await self.nats.stop()
        return problems


def run(options: ClusterOptions) -> int:
    try:
        lock = claim(options.data_dir, (NATS_DIR,))
    except DataDirError as problem:
        print(f"exchange: {problem}", file=sys.stderr, flush=True)
        return 2
    try:
        return asyncio.run(_run(options))
    finally:
        lock.release()


async def _run(options: ClusterOptions) -> int:
    launcher = Launcher(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    failure: str | None = None
    starting = loop.create_task(launcher.start())
    stopping = loop.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raises what stopped the start
            print(launcher.banner(), flush=True)
            failure = await launcher.watch(stop)
    except (RoleFailedError, natsserver.NatsServerError) as problem:
        failure = str(problem)
    except (OSError, TimeoutError, nats.errors.NoServersError) as problem:
        failure = f"cannot make the stream on NATS at {launcher.nats_arg}: {problem!r}"
    finally:
        starting.cancel()
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
        problems = await launcher.stop()
    if failure is not None:  # one line: the others' exits follow from stopping them
        print(f"exchange cluster: {failure}; stopped everything", file=sys.stderr, flush=True)
        return 1
    for line in problems:
        print(f"exchange cluster: {line}", file=sys.stderr, flush=True)
    return 1 if problems else 0
