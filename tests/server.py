"""Start the real exchange server as a subprocess on 127.0.0.1 for end-to-end tests."""

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
OUTPUT_LINES_KEPT = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningServer:
    process: asyncio.subprocess.Process
    port: int
    data_dir: Path
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES_KEPT))
    drain: "asyncio.Task[None] | None" = None
    # Tracebacks the server printed, counted over its whole output (not only the lines kept).
    tracebacks: int = 0
    role: str = "serve"  # the `exchange` command it runs: serve, gateway or sequencer

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def log(self) -> str:
        return "\n".join(self.output)

    def keep(self, line: str) -> None:
        self.output.append(line)
        if line.startswith("Traceback"):
            self.tracebacks += 1


async def start(
    data_dir: Path, *, demo: bool = False, durability: str = "fsync", extra: tuple[str, ...] = ()
) -> RunningServer:
    port = free_port()
    args = ["serve", "--port", str(port), "--data-dir", str(data_dir), "--durability", durability]
    args += [*extra, *(["--demo"] if demo else [])]
    return await start_role(args, port, data_dir, ready="exchange listening")


async def start_role(
    args: list[str], port: int, data_dir: Path, ready: str, *, admin_token: str | None = ADMIN_TOKEN
) -> RunningServer:
    """`python -m exchange ARGS`, once a line of its output starts with `ready` (with
    admin_token None, $EXCHANGE_ADMIN_TOKEN unset: the server makes its own)."""
    env = {k: v for k, v in os.environ.items() if k != "EXCHANGE_ADMIN_TOKEN"}
    env["PYTHONUNBUFFERED"] = "1"
    if admin_token is not None:
        env["EXCHANGE_ADMIN_TOKEN"] = admin_token
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    server = RunningServer(process, port, data_dir, role=args[0])
    assert process.stdout is not None
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:  # bounded by the timeout; the process says when it is ready
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"{args[0]} exited while starting:\n{server.log()}")
            server.keep(line.rstrip())
            if line.startswith(ready):
                break
    server.drain = asyncio.get_running_loop().create_task(_drain(server))
    return server


async def _drain(server: RunningServer) -> None:
    assert server.process.stdout is not None
    async for line in server.process.stdout:  # until the process closes its output
        server.keep(line.decode().rstrip())


async def stop(server: RunningServer) -> int:
    """SIGTERM, then wait for a clean exit; returns the exit status. A process still
    running when this ends anyway (the wait timed out, or the test's own timeout cancelled
    it) is killed: a failing test never leaves a process behind."""
    if server.process.returncode is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            status = await server.process.wait()
    finally:
        if server.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                server.process.kill()
    if server.drain is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await server.drain
    return status


@contextlib.asynccontextmanager
async def running(
    data_dir: Path, *, demo: bool = False, extra: tuple[str, ...] = ()
) -> AsyncIterator[RunningServer]:
    server = await start(data_dir, demo=demo, extra=extra)
    try:
        yield server
    finally:
        if server.process.returncode is None:
            status = await stop(server)
            assert status == 0, f"the server exited with {status}:\n{server.log()}"


async def metrics(server: RunningServer) -> tuple[str, dict[str, float]]:
    """The server's /metrics: its text, and each sample's value by name (with labels)."""
    async with aiohttp.ClientSession() as http, http.get(server.base_url + "/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return text, values
