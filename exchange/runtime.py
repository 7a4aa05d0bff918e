"""Process-wide settings shared by the roles and the benchmarks: the garbage collector, and
the signals that stop a role cleanly.

The engine allocates many short-lived objects per command and keeps long-lived
ones (resting orders, accounts); CPython's default thresholds (700, 10, 10) make
it rescan the long-lived heap far too often. Freezing the start-up heap and raising
the first threshold keeps collection to a few percent of the time.
"""

import asyncio
import gc
import signal
from collections.abc import Iterator
from contextlib import contextmanager

# Allocations (net of frees) between young collections. Most of what a command allocates
# dies with it; what lives on is mainly orders, which stay as their client order ids'
# records: a young collection of 50,000 of them took ~9 ms (bench_engine's deep mix,
# compiled core, BENCHMARKS.md), about 9% of that mix's time, which a larger threshold
# would only move into fewer, longer pauses.
GC_GEN0_THRESHOLD = 50_000
GC_GEN1_THRESHOLD = 20
GC_GEN2_THRESHOLD = 100


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside: for bounded batch work such as a replay, whose objects
    all live on (the engine breaks its own cycles when an order leaves the book)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def tune_gc() -> None:
    """Move everything alive now out of the collector's sight and raise its thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (a clean stop), from now on."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
