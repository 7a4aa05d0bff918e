"""One client process of a multi-process load test: runs its share, reports on stdout.

A progress line (JSON) every second while it runs, then its result as the last line.
"""

import asyncio
import os
import sys
import time

import msgspec
import uvloop

from exchange.runtime import tune_gc
from loadtest.harness import PROGRESS_EVERY_S, Progress, Share, Stats, WorkerResult, drive


def _emit(data: msgspec.Struct) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(data) + b"\n")
    sys.stdout.flush()


async def _report_progress(stats: Stats, deadline: float) -> None:
    while time.perf_counter() < deadline:  # bounded by the deadline
        await asyncio.sleep(PROGRESS_EVERY_S)
        p99 = stats.ack.histogram().get_value_at_percentile(99.0) / 1000
        _emit(Progress(stats.orders, stats.fills, stats.md_so_far(), p99))


async def _main(share: Share, niceness: int) -> WorkerResult:
    stats = Stats(niceness=niceness)
    reporter = asyncio.get_running_loop().create_task(
        _report_progress(stats, time.perf_counter() + share.duration)
    )
    elapsed = await drive(share, stats, show_progress=False)
    reporter.cancel()
    return WorkerResult.of(stats, elapsed)


def main() -> None:
    share = msgspec.json.decode(sys.argv[1], type=Share)
    tune_gc()  # the clients' own collections must not pass for the exchange's latency
    _emit(uvloop.run(_main(share, os.nice(share.nice))))


if __name__ == "__main__":
    main()
