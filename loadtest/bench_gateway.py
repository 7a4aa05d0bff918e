"""Gateway read-path benchmark: times what the server does with each durable record after
the journal, without sockets: the read model (the read state applying events, order tracking, the
book's touched levels) and the hub (the direct answer, fills and dones to the accounts'
sessions, one market-data frame a batch to batched subscribers), batch by batch.

It owns the figure for that part of the server's cost per record (the half of the main
thread that follows the fsync). The records come from `bench_engine`'s seeded stream,
applied once by an engine before any timing; sessions are real `Session`s whose socket
write only counts bytes.

    python -m loadtest.bench_gateway --ops 100000 --seed 1 [--batch 50] [--profile]
"""

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Sequence
from typing import Any

from exchange.bus import Sequenced
from exchange.domain.commands import Command
from exchange.domain.events import Event
from exchange.runtime import tune_gc
from gateway.readmodel import ReadModel
from gateway.ws import Hub, Origin, Session
from loadtest.bench_engine import N_ACCOUNTS, SYMBOL, account_id, build_stream, setup_engine

# Accounts with a connected session (the load test's traders); the others' orders are
# answered to nobody, as for clients that left.
CONNECTED_ACCOUNTS = 8
# Batched market-data subscribers to the benchmark's instrument.
SUBSCRIBERS = 4


class _Sequencer:
    """What the hub needs of a sequencer here: somewhere to hang `on_refused`."""

    on_refused: Any = None


class CountingSession(Session):
    """A session whose socket write counts the bytes it would have sent."""

    sent_bytes = 0

    def write(self) -> None:
        self._queued = False
        CountingSession.sent_bytes += self._out_bytes
        self._out.clear()
        self._out_bytes = 0


def _records(ops: int, seed: int) -> list[tuple[int, Command, list[Event]]]:
    """The stream's records as the sequencer would release them: (seq, command, events)."""
    engine, first_ts = setup_engine()
    commands = build_stream(ops, seed, first_ts).commands
    return [(seq, c, engine.apply(c)) for seq, c in enumerate(commands, start=1)]


def _hub() -> tuple[ReadModel, Hub, dict[str, CountingSession]]:
    engine, _ = setup_engine()
    read = ReadModel.from_engine(engine)
    hub = Hub(_Sequencer(), read)  # type: ignore[arg-type]
    sessions: dict[str, CountingSession] = {}
    for n in range(1, CONNECTED_ACCOUNTS + 1):
        session = CountingSession(None, hub)  # type: ignore[arg-type]
        hub.sessions.add(session)
        hub.attach(session, account_id(n))
        sessions[account_id(n)] = session
    for _ in range(SUBSCRIBERS):
        watcher = CountingSession(None, hub)  # type: ignore[arg-type]
        watcher.batched = True
        hub.sessions.add(watcher)
        for channel in ("trades", "book"):
            hub.subscribe(watcher, channel, SYMBOL)
    return read, hub, sessions


async def _timed(
    records: Sequence[tuple[int, Command, list[Event]]], batch: int, profile: bool
) -> float:
    read, _, sessions = _hub()
    sequenced = []
    for seq, command, events in records:
        session = sessions.get(getattr(command, "account", ""))
        origin = Origin(session, seq) if session is not None else None
        sequenced.append(Sequenced(seq, command, events, origin))
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    for i, record in enumerate(sequenced, start=1):
        read(record)
        if i % batch == 0:
            read.end_batch()
            await asyncio.sleep(0)  # the loop turn in which the hub writes the sessions
    read.end_batch()
    await asyncio.sleep(0)
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_gateway")
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=50, help="records a durable batch")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    records = _records(args.ops, args.seed)
    tune_gc()
    seconds = asyncio.run(_timed(records, args.batch, args.profile))
    print(
        f"{len(records)} records, batches of {args.batch}, {CONNECTED_ACCOUNTS} of "
        f"{N_ACCOUNTS} accounts connected, {SUBSCRIBERS} subscribers: "
        f"{seconds / len(records) * 1e6:.2f} us a record "
        f"({CountingSession.sent_bytes / len(records):.0f} bytes sent a record)"
    )


if __name__ == "__main__":
    main()
