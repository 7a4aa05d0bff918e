"""A writer process for the crash tests: recovers a data directory, then sequences the rest
of a deterministic command stream through a durable Sequencer, acknowledging as it goes.

    python -m tests.crash_writer DATA_DIR ACK_FILE SEED TOTAL

It recovers DATA_DIR, builds `mixed_stream(SEED, TOTAL)` and submits the commands from
index `last_seq` on, so every restart continues the same stream where the journal ends.
Each command's future completes once its record is durable (fsync); only then is its seq
appended to ACK_FILE (write + flush: a SIGKILL does not lose the page cache) and printed
as `ack <seq>` on stdout, so the parent can kill at a chosen point without polling. After
recovery it prints `ready <last_seq>`; when the stream is exhausted, `done`.

The sequencer's clock is deterministic: the n-th command stamped after a restart gets the
ts the stream itself gave it (`stream_clock`), so a clean replay of the first `last_seq`
commands of the stream (`stamp`) reproduces the journal's commands and the state hash.
"""

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from exchange.bus import BusyError, Sequenced
from exchange.domain.commands import Command
from exchange.domain.engine import Engine
from exchange.recovery import recover
from exchange.sequencer import Sequencer
from tests.streams import mixed_stream

# Futures not yet completed: bounds the writer's memory and how far it runs ahead.
MAX_OUTSTANDING = 256
# Submissions between yields to the loop, so sequencing, syncing and acknowledging
# overlap (a kill then lands anywhere in the pipeline, not only between bursts).
YIELD_EVERY = 32
# Small, so snapshots (and their pruning) are written under kills too.
SNAPSHOT_EVERY = 100
# A durable future that takes longer than this means the sequencer is stuck.
ACK_TIMEOUT_S = 30.0

Clock = Callable[[], int]


def stream_clock(commands: Sequence[Command], start: int) -> Clock:
    """The writer's clock: the n-th call (from 0) returns the ts the stream gave
    commands[start + n]. The sequencer calls it once per command it stamps, in order, and
    the stream's timestamps strictly increase, so `max(clock(), last_ts)` is always the
    clock's value and seq s gets commands[s - 1].ts whatever the restarts."""
    position = start

    def clock() -> int:
        nonlocal position
        ts = commands[position].ts
        position += 1
        return ts

    return clock


def stamp(command: Command, clock: Clock) -> Command:
    """A command as the sequencer journals it under `clock` (one call per command)."""
    return msgspec.structs.replace(command, ts=clock())


def clean_replay(engine: Engine, commands: Sequence[Command], start: int, stop: int) -> None:
    """Apply commands[start:stop] to `engine`, stamped as the writer's sequencer does."""
    clock = stream_clock(commands, start)
    for command in commands[start:stop]:
        engine.apply(stamp(command, clock))


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _await_one(future: "asyncio.Future[Sequenced]", runner: "asyncio.Task[None]") -> None:
    """Wait for `future`; fail (not hang) if the sequencer ends or stalls first."""
    waiters: set[asyncio.Future[Any]] = {future, runner}
    done, _ = await asyncio.wait(
        waiters, timeout=ACK_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
    )
    if future in done:
        future.result()  # raises if the sequencer refused it
        return
    if runner in done:
        runner.result()  # raises the sequencer's failure
        raise RuntimeError("the sequencer stopped with commands outstanding")
    raise TimeoutError(f"no durable ack within {ACK_TIMEOUT_S}s")


async def run(data_dir: Path, ack_file: Path, seed: int, total: int) -> None:
    commands = mixed_stream(seed, total)
    recovered = recover(data_dir)
    start = recovered.journal.last_seq
    if start > len(commands):
        raise SystemExit(f"the journal ({start} records) is past the stream ({len(commands)})")
    _emit(f"ready {start}")
    sequencer = Sequencer(
        recovered.engine,
        recovered.journal,
        recovered.snapshots,
        clock=stream_clock(commands, start),
        snapshot_every=SNAPSHOT_EVERY,
        fork_snapshots=True,  # as the server: a kill may find a snapshot child at work
    )
    runner = asyncio.create_task(sequencer.run(), name="sequencer")
    outstanding: deque[asyncio.Future[Sequenced]] = deque()
    with ack_file.open("a", encoding="ascii") as acks:

        def acknowledge(future: "asyncio.Future[Sequenced]") -> None:
            # Done callbacks run in the order the futures completed: sequence order.
            if future.cancelled() or future.exception() is not None:
                return  # the producer loop raises it
            seq = future.result().seq
            acks.write(f"{seq}\n")
            acks.flush()
            _emit(f"ack {seq}")

        for index in range(start, len(commands)):  # bounded by the stream
            while True:  # bounded: each turn either submits or waits for the oldest
                while outstanding and outstanding[0].done():
                    outstanding.popleft().result()
                if len(outstanding) < MAX_OUTSTANDING:
                    try:
                        future = sequencer.submit(commands[index])
                    except BusyError:
                        pass
                    else:
                        break
                if outstanding:
                    await _await_one(outstanding[0], runner)
                else:  # busy with nothing of ours in flight: let the sequencer drain
                    await asyncio.sleep(0)
            future.add_done_callback(acknowledge)
            outstanding.append(future)
            if (index - start) % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        while outstanding:  # bounded by MAX_OUTSTANDING
            await _await_one(outstanding.popleft(), runner)
        await sequencer.stop()
        await runner
    _emit("done")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 4:
        print("usage: python -m tests.crash_writer DATA_DIR ACK_FILE SEED TOTAL", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run(Path(args[0]), Path(args[1]), int(args[2]), int(args[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
