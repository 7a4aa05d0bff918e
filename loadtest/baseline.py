"""`python -m loadtest baseline`: the same number of clients against a bare echo server.

Each client keeps MAX_IN_FLIGHT requests outstanding (closed loop) for the duration; the
result is echoed messages a second, the ceiling the framework alone reaches here. With
`--processes N` the clients are spread over N processes, as `run --processes N` does, so
the two figures compare like with like.
"""

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.client import Client

MAX_IN_FLIGHT = 64
ROOT = Path(__file__).resolve().parent.parent


async def _client(url: str, deadline: float, counts: list[int]) -> None:
    async with await Client.connect(url) as client:

        async def one() -> None:
            await client.request("ping")

        while time.perf_counter() < deadline:  # bounded by the deadline
            await asyncio.gather(*(one() for _ in range(MAX_IN_FLIGHT)))
            counts[0] += MAX_IN_FLIGHT


async def clients_in_this_process(url: str, clients: int, duration: float) -> int:
    counts = [0]
    started = time.perf_counter()
    await asyncio.gather(*(_client(url, started + duration, counts) for _ in range(clients)))
    return counts[0]


async def _in_processes(url: str, clients: int, duration: float, processes: int) -> int:
    shares = [
        clients // processes + (1 if i < clients % processes else 0) for i in range(processes)
    ]
    script = (
        "import uvloop; from loadtest.baseline import clients_in_this_process as c; "
        "print(uvloop.run(c({url!r}, {share}, {duration})))"
    )
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script.format(url=url, share=share, duration=duration),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for share in shares
    ]
    outputs = await asyncio.gather(*(child.communicate() for child in children))
    return sum(int(out.strip() or 0) for out, _ in outputs)


async def run(clients: int, duration: float, port: int, processes: int = 1) -> dict[str, Any]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.echo", "--port", str(port), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    try:
        async with asyncio.timeout(30):
            await server.stdout.readline()  # "echo listening ..."
        url = f"ws://127.0.0.1:{port}/v1/ws"
        started = time.perf_counter()
        if processes > 1:
            messages = await _in_processes(url, clients, duration, processes)
        else:
            messages = await clients_in_this_process(url, clients, duration)
        elapsed = time.perf_counter() - started
    finally:
        server.kill()
        with contextlib.suppress(ProcessLookupError, aiohttp.ClientError):
            await server.wait()
    return {
        "clients": clients,
        "processes": processes,
        "messages": messages,
        "messages_per_s": round(messages / elapsed, 1),
    }
