"""Journal benchmark: the sequencer's throughput with and without fsync, and replay speed.

(a) Throughput. A fresh data directory and engine set up as in `bench_engine` (100
funded accounts, one instrument; the set-up goes through the sequencer too, untimed),
then `--records` commands of `bench_engine.build_stream` driven through the Sequencer
under a saturating load: the producer submits until the input queue refuses (BUSY),
then waits for the oldest outstanding command to become durable, and refills. It runs
once with durability `none` (FileSegmentStore(durable=False): no fsync) and once with
`fsync` (the default: group commit, one fdatasync per batch in the journal's thread).
The clock is a counter, so both runs journal the same records and end in the same state.

(b) Replay. A journal of `--replay-records` records is written directly (engine, encode,
append; no fsync), then `recover(dir, use_snapshots=False)` is timed: open and check every
record (length, CRC, chain), decode, apply, and compare the events with those recorded.

    python -m loadtest.bench_journal [--records N] [--replay-records N] [--seed S] [--json]
        [--profile throughput|replay]

Each measured phase (the two throughput runs, the recovery) runs in a fresh child
interpreter (`--phase`), as the server and a restart do: a heap left over from an earlier
phase slowed a later one by 10 to 30% when they shared a process.

Targets: fsync at least 75% of none's records/s; replay at least 150,000 records/s.
"""

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import msgspec

from exchange.bus import BusyError, Sequenced
from exchange.domain.commands import Command
from exchange.domain.engine import Engine
from exchange.domain.events import OrderRejected, Rejected
from exchange.journal.journal import Journal
from exchange.journal.records import JournalEntry, encode_entry
from exchange.journal.snapshots import SnapshotStore
from exchange.journal.storage import FileSegmentStore
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, recover
from exchange.runtime import tune_gc
from exchange.sequencer import MAX_BATCH, Sequencer
from loadtest.bench_engine import TS_STEP, build_setup, build_stream

Durability = Literal["none", "fsync"]

TARGET_FSYNC_RATIO = 0.75
TARGET_REPLAY_PER_S = 150_000
PROFILE_TOP = 25
# Progress lines on stderr while the replay journal is written, every this many records.
PROGRESS_EVERY = 100_000
# Bound on one measured phase in its child process (a 1,000,000-record replay takes ~10 s).
PHASE_TIMEOUT_S = 600.0
# A durable future that takes longer than this means the sequencer is stuck.
STALL_S = 60.0


class Throughput(msgspec.Struct, frozen=True):
    durability: str
    records: int
    seconds: float
    records_per_s: float
    batches: int  # journal writes; with fsync, each is one fdatasync
    batches_per_s: float
    mean_batch: float
    # The sequencer's own measure: from handing a batch to the journal thread until the
    # loop sees it written (write + sync, plus any wait for the loop), summed.
    write_wait_seconds: float
    syncs: int  # store.sync() calls; with fsync each is one fdatasync
    sync_seconds: float  # time inside store.sync() (the fdatasync itself), summed
    mean_sync_ms: float
    busy: int  # submissions refused with BUSY: the load kept the queue full
    state_hash: str


class Replay(msgspec.Struct, frozen=True):
    records: int
    journal_bytes: int
    write_seconds: float
    seconds: float  # recover(): open and check, decode, apply, compare
    records_per_s: float
    state_hash: str


class Recovery(msgspec.Struct, frozen=True):
    """What the child that recovers the replay journal reports."""

    records: int
    seconds: float
    records_per_s: float
    state_hash: str


class Report(msgspec.Struct, frozen=True):
    records: int
    seed: int
    none: Throughput
    fsync: Throughput
    fsync_over_none: float
    fsyncs_per_s: float
    mean_batch_fsync: float
    replay: Replay
    target_fsync_over_none: float
    target_replay_per_s: int
    targets_met: bool


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _counter_clock() -> Callable[[], int]:
    """TS_STEP, 2*TS_STEP, ...: the timestamps `bench_engine` gives set-up and stream."""
    calls = 0

    def clock() -> int:
        nonlocal calls
        calls += 1
        return calls * TS_STEP

    return clock


def _first_stream_ts(setup: Sequence[Command]) -> int:
    return setup[-1].ts + TS_STEP


# --- (a) throughput -----------------------------------------------------------------------


class TimedStore(FileSegmentStore):
    """The file store, timing each sync (in the journal's worker thread)."""

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        super().__init__(directory, durable=durable)
        self.syncs = 0
        self.sync_seconds = 0.0

    def sync(self) -> None:
        started = time.perf_counter()
        super().sync()
        self.sync_seconds += time.perf_counter() - started
        self.syncs += 1


async def _await_oldest(
    pending: "deque[asyncio.Future[Sequenced]]", runner: "asyncio.Task[None]"
) -> None:
    """Wait until the oldest outstanding command is durable, then drop every completed
    one from the front. Fails, rather than hangs, if the sequencer stops or stalls."""
    oldest = pending[0]
    waiters: set[asyncio.Future[Any]] = {oldest, runner}
    done, _ = await asyncio.wait(waiters, timeout=STALL_S, return_when=asyncio.FIRST_COMPLETED)
    if oldest not in done:
        if runner in done:
            runner.result()
            raise RuntimeError("the sequencer stopped with commands outstanding")
        raise TimeoutError(f"no command became durable in {STALL_S}s")
    while pending and pending[0].done():  # bounded by len(pending)
        pending.popleft().result()


async def _saturate(
    sequencer: Sequencer, commands: Sequence[Command], runner: "asyncio.Task[None]"
) -> int:
    """Submit every command, keeping the input queue full; returns the BUSY refusals.
    Outstanding futures are bounded by the queue plus the batches in flight."""
    pending: deque[asyncio.Future[Sequenced]] = deque()
    busy = 0
    i = 0
    n = len(commands)
    submit = sequencer.submit
    while i < n:  # each turn submits one command or waits for a durable one
        try:
            pending.append(submit(commands[i]))
        except BusyError:
            busy += 1
            await _await_oldest(pending, runner)
            continue
        i += 1
    while pending:  # bounded by len(pending)
        await _await_oldest(pending, runner)
    return busy


async def _drive(
    data_dir: Path,
    durability: Durability,
    setup: Sequence[Command],
    stream: Sequence[Command],
    profiler: cProfile.Profile | None,
) -> Throughput:
    durable = durability == "fsync"
    store = TimedStore(data_dir / JOURNAL_DIR, durable=durable)
    engine = Engine()
    sequencer = Sequencer(
        engine,
        Journal.open(store),
        SnapshotStore(data_dir / SNAPSHOT_DIR, durable=durable),
        clock=_counter_clock(),
    )
    runner = asyncio.create_task(sequencer.run(), name="sequencer")
    # Set-up, untimed: it must all be accepted, or the stream's order ids would drift.
    futures = [sequencer.submit(command) for command in setup]
    for future in futures:
        for event in (await future).events:
            if isinstance(event, Rejected | OrderRejected):
                raise SystemExit(f"bench set-up refused: {event!r}")
    batches0, records0 = sequencer.batches_written, sequencer.records_written
    wait0, syncs0, sync0 = sequencer.sync_seconds_total, store.syncs, store.sync_seconds
    tune_gc()
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    busy = await _saturate(sequencer, stream, runner)
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
    batches = sequencer.batches_written - batches0
    records = sequencer.records_written - records0
    write_wait = sequencer.sync_seconds_total - wait0
    syncs, sync_seconds = store.syncs - syncs0, store.sync_seconds - sync0
    await sequencer.stop()
    await runner
    return Throughput(
        durability=durability,
        records=records,
        seconds=round(seconds, 6),
        records_per_s=round(records / seconds, 1) if seconds > 0 else 0.0,
        batches=batches,
        batches_per_s=round(batches / seconds, 1) if seconds > 0 else 0.0,
        mean_batch=round(records / batches, 1) if batches else 0.0,
        write_wait_seconds=round(write_wait, 6),
        syncs=syncs,
        sync_seconds=round(sync_seconds, 6),
        mean_sync_ms=round(1000 * sync_seconds / syncs, 3) if syncs else 0.0,
        busy=busy,
        state_hash=engine.state_hash(),
    )


def throughput(
    data_dir: Path,
    durability: Durability,
    records: int,
    seed: int,
    profiler: cProfile.Profile | None = None,
) -> Throughput:
    """One throughput run, in this process: generate (untimed), then drive. `profiler`
    covers the timed part (the loop's thread only: not the journal's or snapshot's)."""
    setup = build_setup()
    stream = build_stream(records, seed, _first_stream_ts(setup)).commands
    return asyncio.run(_drive(data_dir, durability, setup, stream, profiler))


# --- (b) replay ---------------------------------------------------------------------------


def write_journal(data_dir: Path, records: int, seed: int) -> str:
    """Journal `records` records (set-up, then a seeded stream) without fsync, applying
    each to an engine as the sequencer would; returns the engine's state hash."""
    setup = build_setup()
    ops = max(records - len(setup), 0)
    _progress(f"replay: generating {ops:,} commands ...")
    stream = build_stream(ops, seed, _first_stream_ts(setup))
    engine = Engine()
    journal = Journal.open(FileSegmentStore(data_dir / JOURNAL_DIR, durable=False))
    apply = engine.apply
    batch: list[bytes] = []
    try:
        for seq, command in enumerate(chain(setup, stream.commands), start=1):
            batch.append(encode_entry(JournalEntry(seq, command, apply(command))))
            if len(batch) >= MAX_BATCH:
                journal.append(batch)
                batch = []
            if seq % PROGRESS_EVERY == 0:
                _progress(f"  written {seq:,} records")
        journal.append(batch)
    finally:
        journal.close()
    return engine.state_hash()


def recovery(data_dir: Path, profiler: cProfile.Profile | None = None) -> Recovery:
    """Time `recover` without snapshots, in this process (a fresh one, as on a restart)."""
    tune_gc()
    if profiler is not None:
        profiler.enable()
    recovered = recover(data_dir, use_snapshots=False)
    if profiler is not None:
        profiler.disable()
    recovered.journal.close()
    rate = recovered.replayed / recovered.seconds if recovered.seconds > 0 else 0.0
    return Recovery(
        records=recovered.replayed,
        seconds=round(recovered.seconds, 6),
        records_per_s=round(rate, 1),
        state_hash=recovered.engine.state_hash(),
    )


# --- the parent: each measured phase in a fresh interpreter --------------------------------


def _phase(phase: str, data_dir: Path, *options: str, profile: bool = False) -> bytes:
    """Run one measured phase in a child interpreter; its JSON result (stdout). Progress
    and profiles go to the inherited stderr."""
    command = [sys.executable, "-m", "loadtest.bench_journal", "--phase", phase]
    command += ["--dir", str(data_dir), *options, *(["--profile", "phase"] if profile else [])]
    done = subprocess.run(command, stdout=subprocess.PIPE, check=True, timeout=PHASE_TIMEOUT_S)  # noqa: S603 - our own module, no shell
    return done.stdout


def _run_throughput(
    root: Path, durability: Durability, records: int, seed: int, profile: bool
) -> Throughput:
    _progress(f"throughput ({durability}): {records:,} records through the sequencer ...")
    out = _phase(
        durability,
        root / f"throughput-{durability}",
        "--records",
        str(records),
        "--seed",
        str(seed),
        profile=profile,
    )
    result = msgspec.json.decode(out, type=Throughput)
    _progress(
        f"  {result.records_per_s:,.0f} records/s, {result.batches:,} batches "
        f"(mean {result.mean_batch:,.1f} records) in {result.seconds:.2f}s"
    )
    return result


def _run_replay(root: Path, records: int, seed: int, profile: bool) -> Replay:
    data_dir = root / "replay"
    started = time.perf_counter()
    expected_hash = write_journal(data_dir, records, seed)
    write_seconds = time.perf_counter() - started
    # Recovery reads a journal at rest, as after a restart: without this the kernel is
    # still writing the unsynced journal back to disk, on the same two cores, while the
    # replay runs (worth about 5% here).
    os.sync()
    journal_bytes = sum(p.stat().st_size for p in (data_dir / JOURNAL_DIR).iterdir())
    _progress(
        f"replay: journal of {records:,} records ({journal_bytes / 1e6:,.0f} MB) written in "
        f"{write_seconds:.1f}s; recovering it in a fresh process ..."
    )
    result = msgspec.json.decode(_phase("recover", data_dir, profile=profile), type=Recovery)
    if result.state_hash != expected_hash:
        raise SystemExit(f"replay gave state hash {result.state_hash}, the writer {expected_hash}")
    return Replay(
        records=result.records,
        journal_bytes=journal_bytes,
        write_seconds=round(write_seconds, 3),
        seconds=result.seconds,
        records_per_s=result.records_per_s,
        state_hash=result.state_hash,
    )


def run(records: int, replay_records: int, seed: int, profile: str | None = None) -> Report:
    """Both throughput runs, then the replay; each measured phase in a child interpreter."""
    with tempfile.TemporaryDirectory(prefix="bench_journal-") as tmp:
        root = Path(tmp)
        none = _run_throughput(root, "none", records, seed, profile == "throughput")
        fsync = _run_throughput(root, "fsync", records, seed, profile == "throughput")
        if none.state_hash != fsync.state_hash:
            raise SystemExit("the none and fsync runs ended in different states")
        replayed = _run_replay(root, replay_records, seed, profile == "replay")
    ratio = fsync.records_per_s / none.records_per_s if none.records_per_s else 0.0
    return Report(
        records=records,
        seed=seed,
        none=none,
        fsync=fsync,
        fsync_over_none=round(ratio, 3),
        fsyncs_per_s=fsync.batches_per_s,
        mean_batch_fsync=fsync.mean_batch,
        replay=replayed,
        target_fsync_over_none=TARGET_FSYNC_RATIO,
        target_replay_per_s=TARGET_REPLAY_PER_S,
        targets_met=ratio >= TARGET_FSYNC_RATIO and replayed.records_per_s >= TARGET_REPLAY_PER_S,
    )


def _run_phase(args: argparse.Namespace) -> None:
    """In a child: run one phase (under cProfile if asked) and print its JSON result."""
    profiler = cProfile.Profile() if args.profile == "phase" else None
    result: Throughput | Recovery
    if args.phase == "recover":
        result = recovery(args.dir, profiler)
    else:
        result = throughput(args.dir, args.phase, args.records, args.seed, profiler)
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats(pstats.SortKey.TIME).print_stats(PROFILE_TOP)
        stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(PROFILE_TOP)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")


def _summary(report: Report) -> str:
    lines = [f"sequencer, {report.records:,} records under a saturating load (seed {report.seed}):"]
    lines.extend(
        f"  {t.durability:>5}: {t.records_per_s:>10,.0f} records/s  {t.seconds:6.2f}s  "
        f"{t.batches:,} batches ({t.batches_per_s:,.0f}/s, mean {t.mean_batch:,.1f} "
        f"records), {t.syncs:,} syncs of {t.mean_sync_ms:.2f} ms mean, {t.busy:,} BUSY"
        for t in (report.none, report.fsync)
    )
    mark = "ok" if report.fsync_over_none >= TARGET_FSYNC_RATIO else "MISSED"
    lines.append(
        f"  fsync/none: {report.fsync_over_none:.1%} (target {TARGET_FSYNC_RATIO:.0%}: {mark}); "
        f"{report.fsyncs_per_s:,.0f} fsyncs/s, mean batch {report.mean_batch_fsync:,.1f}"
    )
    r = report.replay
    mark = "ok" if r.records_per_s >= TARGET_REPLAY_PER_S else "MISSED"
    lines.append(
        f"replay of {r.records:,} records ({r.journal_bytes / 1e6:,.0f} MB) without snapshots: "
        f"{r.seconds:.2f}s, {r.records_per_s:,.0f} records/s "
        f"(target {TARGET_REPLAY_PER_S:,}: {mark})"
    )
    lines.append(f"state hash after the throughput runs: {report.fsync.state_hash}")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_journal",
        description=(
            "Records/s through the sequencer with durability none and fsync (group commit) "
            "under a saturating load, fsyncs/s and mean batch size; then the replay speed "
            "of recovering a journal without snapshots."
        ),
    )
    parser.add_argument("--records", type=int, default=200_000, help="commands per throughput run")
    parser.add_argument(
        "--replay-records", type=int, default=1_000_000, help="records in the replayed journal"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the command stream")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument(
        "--profile",
        choices=("throughput", "replay", "phase"),
        help="run the throughput runs or the recovery under cProfile; top "
        f"{PROFILE_TOP} by tottime and by cumtime to stderr (the timing then includes the "
        "profiler's overhead)",
    )
    internal = parser.add_argument_group(
        "one measured phase",
        "what the harness runs in a fresh child interpreter, so that no phase inherits "
        "another's heap; prints the phase's JSON result",
    )
    internal.add_argument("--phase", choices=("none", "fsync", "recover"))
    internal.add_argument("--dir", type=Path, help="the phase's data directory")
    args = parser.parse_args(argv)
    if args.records < 1 or args.replay_records < 1:
        parser.error("--records and --replay-records must be >= 1")
    if (args.phase is None) != (args.dir is None):
        parser.error("--phase and --dir go together")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    # The recovery logs its progress (every 250,000 records) and summary at INFO.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="  %(message)s")
    logging.getLogger("exchange.recovery").setLevel(logging.INFO)
    if args.phase is not None:
        _run_phase(args)
        return
    report = run(args.records, args.replay_records, args.seed, args.profile)
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        print(_summary(report))


if __name__ == "__main__":
    main()
