"""`python -m loadtest baseline`: the same number of clients against a bare echo server.

Each client keeps MAX_IN_FLIGHT requests outstanding (closed loop; `--in-flight`) for the
duration, with the load test's own client loop (`loadtest.trader.Pinger`, the traders'
loop sending pings); the result is echoed messages a second, the ceiling the framework
alone reaches here. With `--processes N` the clients are spread over N processes, as
`run --processes N` does, so the two figures compare like with like; `--nice` lowers the
priority of the processes the clients run in (this one, with a single process).
"""

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.trader import Pinger, Tally, connect

MAX_IN_FLIGHT = 64
ROOT = Path(__file__).resolve().parent.parent


async def _client(url: str, deadline: float, tally: Tally, in_flight: int) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await connect(session, url)
        try:
            await Pinger(ws, in_flight, None, _ignore, _ignore, tally).run(deadline)
        finally:
            await ws.close()


def _ignore(_: int) -> None:
    """The baseline counts answers; their latencies are not its question."""


async def clients_in_this_process(
    url: str, clients: int, duration: float, in_flight: int = MAX_IN_FLIGHT
) -> int:
    tally = Tally()
    deadline = time.perf_counter() + duration
    await asyncio.gather(*(_client(url, deadline, tally, in_flight) for _ in range(clients)))
    return tally.orders


async def _in_processes(
    url: str, clients: int, duration: float, processes: int, in_flight: int, nice: int
) -> int:
    shares = [
        clients // processes + (1 if i < clients % processes else 0) for i in range(processes)
    ]
    script = (
        "import os, uvloop; from loadtest.baseline import clients_in_this_process as c; "
        "from exchange.runtime import tune_gc; tune_gc(); "
        "os.nice({nice}); print(uvloop.run(c({url!r}, {share}, {duration}, {in_flight})))"
    )
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script.format(url=url, share=share, duration=duration, in_flight=in_flight, nice=nice),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for share in shares
    ]
    outputs = await asyncio.gather(*(child.communicate() for child in children))
    return sum(int(out.strip() or 0) for out, _ in outputs)


async def run(
    clients: int, duration: float, port: int, processes: int = 1,
    in_flight: int = MAX_IN_FLIGHT, nice: int = 0,
) -> dict[str, Any]:  # fmt: skip
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
            messages = await _in_processes(url, clients, duration, processes, in_flight, nice)
        else:
            os.nice(nice)  # after the echo server started: only the clients yield
            messages = await clients_in_this_process(url, clients, duration, in_flight)
        elapsed = time.perf_counter() - started
    finally:
        server.kill()
        with contextlib.suppress(ProcessLookupError, aiohttp.ClientError):
            await server.wait()
    return {
        "clients": clients,
        "processes": processes,
        "in_flight_per_client": in_flight,
        "client_nice": nice,
        "messages": messages,
        "messages_per_s": round(messages / elapsed, 1),
    }
