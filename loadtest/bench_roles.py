"""`python -m loadtest.bench_roles`: CPU per order of each role, one process and clustered.

Runs, one after the other, on 127.0.0.1 in a temporary directory: `exchange serve`, then
a nats-server, `exchange sequencer` and GATEWAYS `exchange gateway` processes; drives each
with the load test (`python -m loadtest run --rate max`, one run per gateway at once, the
clients spread over them) for `--duration` seconds, and reads every server process's CPU
time (user + system, from /proc/PID/stat) before and after. Orders are the load tests'
accepted orders; CPU per order is a process's CPU over them (the nats-server's is
reported beside the roles'). Prints one JSON object.
Clients, NATS and the roles share this machine's cores: the throughput says what they
do together; the CPU per order is each role's own cost.
"""

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from exchange import natsserver

ADMIN_TOKEN = "bench-roles-token"  # noqa: S105 - a local benchmark's own token
# Per-connection and per-account limits far past what the load test sends.
LIMITS = ("--rate-limit", "1000000", "--account-rate-limit", "1000000")
# A role that has not said it is ready by then has failed.
START_TIMEOUT_S = 60.0
# The load test's own grace past its duration before the benchmark gives up on it.
RUN_GRACE_S = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def free_port() -> int:
    return natsserver.free_ports(1)[0]


async def start(args: list[str], ready: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "EXCHANGE_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:  # bounded by the timeout
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"{args[0]} exited while starting")
            if line.startswith(ready):
                break
    asyncio.get_running_loop().create_task(_drain(process))
    return process


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    async for _ in process.stdout:  # until it exits
        pass


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), START_TIMEOUT_S)
    if process.returncode is None:
        process.kill()
        await process.wait()


async def load(
    urls: list[str], duration: float, report_dir: Path, makers: int
) -> list[dict[str, Any]]:
    """One closed-loop load test per URL, all at once; their reports."""
    runs = []
    for i, url in enumerate(urls):
        args = ["run", "--url", url, "--admin-token", ADMIN_TOKEN, "--rate", "max",
                "--duration", str(duration), "--makers", str(makers), "--takers", str(makers),
                "--subscribers", "1", "--seed", str(i + 1),
                "--report", str(report_dir / f"run-{i}.json")]  # fmt: skip
        runs.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        ))  # fmt: skip
    reports = []
    for run in runs:
        out, _ = await asyncio.wait_for(run.communicate(), duration + RUN_GRACE_S)
        if run.returncode != 0:
            raise RuntimeError(f"a load test failed with {run.returncode}")
        reports.append(json.loads(out.splitlines()[-1]))
    return reports


async def measured(
    processes: dict[str, asyncio.subprocess.Process], urls: list[str], duration: float,
    report_dir: Path, makers: int,
) -> dict[str, Any]:
    before = {name: cpu_seconds(p.pid) for name, p in processes.items()}
    reports = await load(urls, duration, report_dir, makers)
    cpu = {name: cpu_seconds(p.pid) - before[name] for name, p in processes.items()}
    orders = sum(r["orders"] for r in reports)
    commands = sum(r["orders"] + r["cancels"] for r in reports)
    return {
        "orders": orders,
        "commands": commands,
        "orders_per_s": round(sum(r["orders_per_s"] for r in reports), 1),
        "us_per_order": {name: round(seconds / orders * 1e6, 2) for name, seconds in cpu.items()},
        "us_per_command": {name: round(s / commands * 1e6, 2) for name, s in cpu.items()},
        "seq_gaps": sum(r["seq_gaps"] for r in reports),
    }


@contextlib.asynccontextmanager
async def single(directory: Path) -> AsyncIterator[tuple[dict[str, Any], list[str]]]:
    port = free_port()
    serve = await start(["serve", "--port", str(port), "--data-dir", str(directory / "serve"),
                         *LIMITS], "exchange listening")  # fmt: skip
    try:
        yield {"serve": serve}, [f"ws://127.0.0.1:{port}/v1/ws"]
    finally:
        await stop(serve)


@contextlib.asynccontextmanager
async def cluster(
    directory: Path, gateways: int
) -> AsyncIterator[tuple[dict[str, Any], list[str]]]:
    nats = await natsserver.start(directory / "nats", nodes=1)
    url = nats.nodes[0].url
    roles: dict[str, Any] = {}
    try:
        roles["sequencer"] = await start(
            ["sequencer", "--nats", url, "--data-dir", str(directory / "sequencer")],
            "exchange sequencer",
        )
        urls = []
        for i in range(gateways):
            port = free_port()
            roles[f"gateway-{i + 1}"] = await start(
                ["gateway", "--nats", url, "--port", str(port), *LIMITS], "exchange gateway"
            )
            urls.append(f"ws://127.0.0.1:{port}/v1/ws")
        processes = dict(roles)  # the nats-server's CPU is read beside the roles'
        processes["nats"] = nats.nodes[0].process
        yield processes, urls
    finally:
        for role in roles.values():
            await stop(role)
        await nats.stop()


async def main(duration: float, gateways: int, makers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-roles-") as name:
        directory = Path(name)
        async with single(directory) as (processes, urls):
            one = await measured(processes, urls * gateways, duration, directory, makers)
        async with cluster(directory, gateways) as (processes, urls):
            many = await measured(processes, urls, duration, directory, makers)
    return {
        "duration_s": duration,
        "gateways": gateways,
        "single_process": one,
        "cluster": many,
        "cluster_over_single": round(many["orders_per_s"] / one["orders_per_s"], 3),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_roles", description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load a wiring")
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--makers", type=int, default=2, help="makers (and takers) a load test")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.duration, args.gateways, args.makers))))


if __name__ == "__main__":
    cli()
