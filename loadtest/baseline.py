"""`python -m loadtest baseline`: the same number of clients against a bare echo server.

Each client keeps MAX_IN_FLIGHT requests outstanding (closed loop) for the duration; the
result is echoed messages a second, the ceiling the framework alone reaches here.
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


async def run(clients: int, duration: float, port: int) -> dict[str, Any]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.echo", "--port", str(port), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    try:
        async with asyncio.timeout(30):
            await server.stdout.readline()  # "echo listening ..."
        url = f"ws://127.0.0.1:{port}/v1/ws"
        counts = [0]
        started = time.perf_counter()
        await asyncio.gather(*(_client(url, started + duration, counts) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    finally:
        server.kill()
        with contextlib.suppress(ProcessLookupError, aiohttp.ClientError):
            await server.wait()
    return {
        "clients": clients,
        "messages": counts[0],
        "messages_per_s": round(counts[0] / elapsed, 1),
    }
