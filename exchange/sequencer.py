"""The single writer: orders every command, applies it, journals it, then releases it.

One asyncio task owns the engine. It takes commands from a bounded input queue, stamps
each with the next sequence number and the time, applies it, and appends its record to
the open batch. A writer task takes the whole open batch whenever it is free, makes it
durable in a worker thread (one write and one fsync: group commit) and only then
completes each command's future and publishes its events, in sequence order. So while
one batch is being synced the engine fills the next with everything that arrives
meanwhile, and a command waits for at most the sync in progress and its own; nothing of
the next batch is released before its own sync. A full input queue is refused at once
(Busy); an exception from the engine stops everything, and nothing of the command that
raised is journaled.

Sequenced time: the engine reports its next deadline (a gtd expiry, an auction's end, a
session's close). Before a command stamped at or past it, the sequencer applies and
journals a `Timer` command of its own with the same stamp, and when no command comes it
wakes itself at the deadline (by its clock) to do so: a replay of the journal reproduces
every expiry and auction exactly, and no clock enters the engine.
"""

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from exchange import forked_snapshot
from exchange.bus import (
    BatchObserver,
    BusyError,
    InvalidCommandError,
    Refused,
    Sequenced,
    SequencerFailedError,
    SequencerStoppedError,
    Subscriber,
)
from exchange.domain.commands import Command, Timer
from exchange.domain.engine import Engine
from exchange.domain.state import EngineState, export_state
from exchange.journal.journal import Framed, Journal
from exchange.journal.records import JournalEntry, decode_entry, encode_entry
from exchange.journal.snapshots import SnapshotStore
from exchange.recovery import Recovered, recover

log = logging.getLogger(__name__)

# Commands waiting for the sequencer. At ~100k commands/s this is 0.1 s of work: enough to
# absorb a burst, small enough that a client told BUSY retries against a fresh queue.
MAX_QUEUE = 10_000
# Commands per journal write. Bounds the latency one batch adds and the bytes of a write.
# The engine runs at most one batch ahead of the disk: once the open batch is full, the
# sequencer waits for the writer to take it, so at most 2 * MAX_BATCH records are applied
# and not yet durable.
MAX_BATCH = 4_096
# A snapshot every this many records bounds the replay on restart (about five seconds of
# replay on this machine). Not fewer: each fork of a big process stalls the loop for tens
# of milliseconds afterwards (copy-on-write of the pages it writes next), and at 200,000 the
# two forks (engine and read side) every ~7 s at the peak set the half-peak ack p99 (51 ms
# against 6.6 ms; BENCHMARKS.md).
SNAPSHOT_EVERY = 1_000_000
# A batch this large is written as soon as the disk is free, whatever the gather window.
GATHER_ENOUGH = 256

# The shortest time between the starts of two journal writes (`--gather-ms`), unless a
# batch is big enough. At half the peak rate it halved the batches (~650 to ~400 a second)
# and cut the server's CPU by ~10%; it never delays the first command after a quiet spell.
GATHER_MS = 2.0

# The longest the sequencer sleeps towards a deadline before looking at its clock again
# (a far deadline, or a clock that runs apart from the loop's): a minute costs nothing.
MAX_TIMER_WAIT_S = 60.0


class WindowClock(Protocol):
    """The clock of the gather window: what time it is, and a wait that ends when an
    event is set or when some seconds have passed on this clock. Tests inject one they
    move by hand, so what the window does is checked without reading the wall clock."""

    def now(self) -> float: ...

    async def wait(self, event: asyncio.Event, seconds: float) -> None: ...


class LoopClock:
    """The running loop's monotonic clock and its timers (the default)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


_command_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(Command)
_Item = tuple[Command, "asyncio.Future[Sequenced] | None", object]


@dataclass(slots=True)
class _Batch:
    payloads: list[bytes]
    done: list[tuple[Sequenced, "asyncio.Future[Sequenced] | None"]]
    # The state exported after record `seq` (within this batch), written once it is durable.
    snapshot: tuple[int, EngineState] | None = None
    # Or (seq, pid) of the forked child writing that snapshot, put in place once durable.
    forked: tuple[int, int] | None = None
    opened: float = 0.0  # time.monotonic() when its first record was applied


@dataclass(slots=True)
class _Write:
    """A batch handed to the journal thread, and the seconds its write and sync will take."""

    batch: _Batch
    seconds: "asyncio.Future[float]"


class Sequencer:
    def __init__(
        self,
        engine: Engine,
        journal: Journal,
        snapshots: SnapshotStore | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
        max_queue: int = MAX_QUEUE,
        max_batch: int = MAX_BATCH,
        snapshot_every: int = SNAPSHOT_EVERY,
        gather_seconds: float = 0.0,
        gather_enough: int = GATHER_ENOUGH,
        fork_snapshots: bool = False,
        window_clock: WindowClock | None = None,
    ) -> None:
        """`gather_seconds`: journal writes start at least this far apart unless the open
        batch holds `gather_enough` records or is full; fewer, larger batches cost less
        CPU each (a command after a quiet spell is written at once), timed by
        `window_clock` (the loop's clock by default).
        `fork_snapshots`: a forked child exports and writes each snapshot, instead of an
        export on the event loop (exchange.forked_snapshot; where the OS can fork)."""
        self.engine = engine
        self.journal = journal
        self.snapshots = snapshots
        self.clock = clock
        self.max_batch = max_batch
        self.snapshot_every = snapshot_every
        self.gather_seconds = gather_seconds
        self.gather_enough = gather_enough
        self.window_clock: WindowClock = window_clock or LoopClock()
        self.fork_snapshots = fork_snapshots and forked_snapshot.available()
        # The seq below which the journal may be pruned after a snapshot, given the oldest
        # one kept: all it covers here; a cluster node keeps what the stream may still
        # need refilled (exchange/streamfloor.py). Called from the snapshot thread.
        self.prune_below: Callable[[int], int] = _covered_by
        self.last_seq = journal.last_seq
        self.durable_seq = journal.last_seq
        self.last_snapshot_seq = journal.last_seq
        self._last_ts = _last_timestamp(journal)
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(max_queue)
        self._open = _Batch([], [])  # applied, not yet taken by the writer
        self._work = asyncio.Event()  # the open batch has records (or the loop has ended)
        # The open batch need gather no longer: it is big enough, full, or the loop ended.
        self._enough = asyncio.Event()
        self._room = asyncio.Event()  # the writer took the open batch: it may fill again
        self._sequencing_done = False  # the writer drains the open batch, then returns
        self._subscribers: list[Subscriber] = []
        self._batch_ends: list[Callable[[], None]] = []
        self._accepting = True
        self._failure: SequencerFailedError | None = None
        self._journal_broken = False  # after a failed write nothing more is written
        # One thread each: journal writes must stay in order; a snapshot must not hold
        # up a journal sync.
        self._journal_thread = ThreadPoolExecutor(1, thread_name_prefix="journal")
        self._snapshot_thread = ThreadPoolExecutor(1, thread_name_prefix="snapshot")
        self._snapshot_task: asyncio.Task[None] | None = None
        self._snapshot_pending = False  # from the export until the file is written
        self._writing: _Write | None = None  # the batch the journal thread is writing
        self._in_hand: _Item | None = None  # taken from the queue, waiting for room
        self._last_write_start = float("-inf")
        # Measurements for metrics and benchmarks.
        self.batches_written = 0
        self.records_written = 0
        self.sync_seconds_total = 0.0
        self.subscriber_errors = 0
        # Called after each batch is durable with (records, seconds its write and sync
        # took, seconds since its first command was applied): metrics.
        self.batch_observers: list[BatchObserver] = []
        # Told (first seq, the records as journaled) of each durable batch, before its
        # subscribers: the NATS bus publishes these bytes to the stream unchanged.
        self.durable_batch_listeners: list[Callable[[int, list[bytes]], None]] = []
        self.on_refused: Refused | None = None  # for commands `post`ed without a future
        # The deadline a wake-up is set for (sequenced time), and its handle.
        self._armed_for: int | None = None
        self._stamped_at = time.monotonic()  # when _last_ts was taken
        self._wake_handle: asyncio.TimerHandle | None = None

    # --- the producer side ----------------------------------------------------------------

    def subscribe(
        self, subscriber: Subscriber, batch_end: Callable[[], None] | None = None
    ) -> None:
        """Call `subscriber` with every durable record, in sequence order, and `batch_end`
        once after the records of each durable batch (to publish what the batch changed
        in one go: market data, for one)."""
        self._subscribers.append(subscriber)
        if batch_end is not None:
            self._batch_ends.append(batch_end)

    def submit(self, command: Command, origin: object = None) -> "asyncio.Future[Sequenced]":
        """Queue a command; the future completes once its record is durable. `origin`
        comes back in the Sequenced, for subscribers to route the answer."""
        future: asyncio.Future[Sequenced] = asyncio.get_running_loop().create_future()
        self._enqueue(command, future, origin)
        return future

    def post(self, command: Command, origin: object, *, validated: bool = False) -> None:
        """Queue a command whose outcome its origin learns from the subscribers (the
        gateway's answer to a client), with no future to complete: should it be refused
        after all (the sequencer stopped or failed), `on_refused` is told. Raises as
        `submit` does when the command is not taken. `validated`: the command was just
        decoded with its schema's bounds (off a bus), so the re-check is skipped."""
        self._enqueue(command, None, origin, validated=validated)

    def _enqueue(
        self,
        command: Command,
        future: "asyncio.Future[Sequenced] | None",
        origin: object,
        *,
        validated: bool = False,
    ) -> None:
        if not self._accepting:
            raise SequencerStoppedError(str(self._failure or "the sequencer is stopping"))
        if type(command) is Timer:  # time is the sequencer's alone (a replay repeats it)
            raise InvalidCommandError("Timer commands come only from the sequencer")
        if not validated:
            try:  # about 1 µs: the same check the journal's reader will make
                _command_decoder.decode(_command_encoder.encode(command))
            except msgspec.ValidationError as problem:
                raise InvalidCommandError(str(problem)) from None
        try:
            self._queue.put_nowait((command, future, origin))
        except asyncio.QueueFull:
            raise BusyError from None

    def poke(self) -> None:
        """Look at the clock against the engine's next deadline now (a wake-up; tests
        that move an injected clock call it). What is due is applied and journaled as a
        Timer command; nothing is when nothing is due."""
        if self._accepting:
            with contextlib.suppress(asyncio.QueueFull):  # commands are coming anyway
                self._queue.put_nowait((_WAKE, None, None))

    def _arm_wake(self) -> None:
        """Wake the loop when the engine's next deadline passes, unless set already."""
        deadline = self.engine.next_deadline()
        if deadline is None or deadline == self._armed_for:
            return
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        # Not by reading the clock (tests script it, a read a command): from the last stamp,
        # and the monotonic time passed since it was taken.
        ahead = (deadline - self._last_ts) / 1e9 - (time.monotonic() - self._stamped_at)
        delay = min(max(0.0, ahead), MAX_TIMER_WAIT_S)
        self._armed_for = deadline
        self._wake_handle = asyncio.get_running_loop().call_later(delay, self._woken)

    def _woken(self) -> None:
        self._armed_for = self._wake_handle = None
        self.poke()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def stop(self) -> None:
        """Take no more commands; the run loop finishes what is queued and returns."""
        if self._accepting:
            self._accepting = False
            await self._queue.put(None)

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Sequence until stopped; then flush, snapshot and close. Raises
        SequencerFailedError when the engine raised or the journal failed. If the task
        running it is cancelled, everything not yet durable is refused and no snapshot is
        taken (the engine may hold commands the journal never got)."""
        writer = asyncio.create_task(self._write_loop(), name="journal-writer")
        clean = False
        try:
            await self._sequence_loop()
            self._sequencing_done = True
            self._work.set()
            self._enough.set()
            await writer
            clean = True
        finally:
            self._accepting = False
            if self._wake_handle is not None:
                self._wake_handle.cancel()
            if not clean:
                await self._abandon(writer)
            if self._snapshot_task is not None:
                with contextlib.suppress(Exception):
                    await self._snapshot_task
            if clean and self._failure is None and self.last_seq == self.durable_seq:
                await self._snapshot_now()
            self._journal_thread.shutdown()
            self._snapshot_thread.shutdown()
            self.journal.close()
        if self._failure is not None:
            raise self._failure

    async def _abandon(self, writer: "asyncio.Task[None]") -> None:
        """After a cancellation: stop the writer and refuse whatever it will never write."""
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        # The batch being written may yet reach the disk: its outcome is unknown, which a
        # client learns by resending with the same client order id after the restart.
        reason = SequencerStoppedError("the sequencer was cancelled; outcome unknown")
        if self._writing is not None:
            self._refuse_batch(self._writing.batch, reason)
        self._refuse_batch(self._open, reason)
        if self._in_hand is not None:
            self._refuse(self._in_hand[1], self._in_hand[2], reason)
        self._refuse_queued()

    async def _sequence_loop(self) -> None:
        queue = self._queue
        while True:  # ends on the stop sentinel or an engine failure
            self._arm_wake()
            item = await queue.get()
            stopping = False
            while item is not None:
                batch = self._open
                if len(batch.done) >= self.max_batch:
                    self._enough.set()
                    # A full batch the writer has not taken yet: wait, so the engine never
                    # runs more than one batch ahead of the disk.
                    self._maybe_snapshot()
                    self._room.clear()
                    self._work.set()
                    self._in_hand = item  # refused by _abandon if cancelled meanwhile
                    await self._room.wait()
                    self._in_hand = None
                    if self._failure is not None:  # the journal broke meanwhile
                        reason = SequencerStoppedError(str(self._failure))
                        self._refuse(item[1], item[2], reason)
                        stopping = True
                        break
                    continue
                command, future, origin = item
                # Time never runs backwards in the journal, whatever the wall clock does.
                ts = self._last_ts = max(self.clock(), self._last_ts)
                self._stamped_at = time.monotonic()
                deadline = self.engine.next_deadline()
                # What is due happens first (a batch may so hold one record past max_batch).
                if (
                    deadline is not None
                    and deadline <= ts
                    and not self._apply_one(Timer(ts=ts), None, None, batch)
                ):
                    assert self._failure is not None
                    self._refuse(future, origin, self._failure)
                    stopping = True
                    break
                # The wake-up item is no command: it only made the loop look at the time.
                if command is not _WAKE and not self._apply_one(
                    msgspec.structs.replace(command, ts=ts), future, origin, batch
                ):
                    stopping = True
                    break
                if queue.empty():
                    break
                item = queue.get_nowait()
            else:
                stopping = True
            if not stopping:  # after an engine failure the state may be half-applied
                self._maybe_snapshot()
            if self._open.done:
                self._work.set()
            if stopping or self._failure is not None:
                self._refuse_queued()
                return

    def _apply_one(
        self,
        stamped: Command,
        future: "asyncio.Future[Sequenced] | None",
        origin: object,
        batch: "_Batch",
    ) -> bool:
        """Apply a stamped command and add its record to the open batch; False when the
        engine raised (the sequencer has failed)."""
        try:
            events = self.engine.apply(stamped)
        except Exception as bug:  # noqa: BLE001 - any engine exception is fatal
            self._fail(stamped, bug, future, origin)
            return False
        self.last_seq += 1
        sequenced = Sequenced(self.last_seq, stamped, events, origin)
        if not batch.done:
            batch.opened = time.monotonic()
        # A bus's origin is text (a gateway's id and token) and is journaled with
        # the record, for that gateway to find its answer; an in-process one is not.
        sent_by = origin if type(origin) is str else ""
        entry = JournalEntry(self.last_seq, stamped, events, sent_by)
        batch.payloads.append(encode_entry(entry))
        batch.done.append((sequenced, future))
        if len(batch.done) >= self.gather_enough:
            self._enough.set()
        return True

    def _maybe_snapshot(self) -> None:
        """When a snapshot is due, fork a child to write it (or export the state here) and
        note it in the open batch: it is put in place once that batch is durable."""
        if (
            self.snapshots is not None
            and not self._snapshot_pending
            and self.last_seq - self.last_snapshot_seq >= self.snapshot_every
        ):
            pid = self._fork_snapshot() if self.fork_snapshots else None
            if pid is not None:
                self._open.forked = (self.last_seq, pid)
            else:
                self._open.snapshot = (self.last_seq, export_state(self.engine))
            self._snapshot_pending = True
            self.last_snapshot_seq = self.last_seq

    def _fork_snapshot(self) -> int | None:
        """The pid of a child writing the snapshot at the last seq, or None when the OS
        would not fork now (then the state is exported here, as without forking)."""
        assert self.snapshots is not None
        try:
            return forked_snapshot.start(self.engine, self.snapshots, self.last_seq)
        except OSError:
            log.exception("could not fork a snapshot child; exporting on the loop instead")
            return None

    async def _write_loop(self) -> None:
        while True:  # ends once the sequencing loop has ended and all it applied is written
            writing = self._writing
            if writing is None:
                if not self._open.done:
                    if self._sequencing_done:
                        return
                    await self._wait_for_work()
                    continue
                hold = self._hold_for()
                if hold > 0:
                    # Until the window has passed, or the batch is big enough (or full).
                    await self.window_clock.wait(self._enough, hold)
                self._start_write()
                continue
            try:
                write_seconds = await writing.seconds
            except Exception as problem:  # noqa: BLE001 - any write failure is fatal
                self._writing = None
                self._fail_journal(problem)
                failure = self._failure or SequencerFailedError(str(problem))
                self._refuse_batch(writing.batch, failure)
                continue
            self._writing = None
            # The next write starts before this batch is released, so the disk syncs it
            # while this loop answers and publishes what the last one made durable.
            if self._open.done and self._hold_for() <= 0:
                self._start_write()
            self._release(writing.batch, write_seconds)

    async def _wait_for_work(self) -> None:
        """Until there is a batch to write. Meanwhile, once it is due, bring the durable
        watermark up to the last sync, so it trails by at most MARK_EVERY_S even when the
        writes stop (it is written in the journal thread, which owns the store)."""
        due = None if self._journal_broken else self.journal.mark_due_in()
        if due is None:
            await self._work.wait()
            self._work.clear()
            return
        try:
            await asyncio.wait_for(self._work.wait(), due)
        except TimeoutError:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._journal_thread, self.journal.write_mark)
            except Exception as problem:  # noqa: BLE001 - like a failed journal write
                self._fail_journal(problem)
            return
        self._work.clear()

    def _hold_for(self) -> float:
        """Seconds the open batch should still gather before it is written."""
        if self._sequencing_done or self._enough.is_set():
            return 0.0
        return self._last_write_start + self.gather_seconds - self.window_clock.now()

    def _start_write(self) -> None:
        """Hand everything applied so far to the journal thread: one write, one fsync."""
        self._last_write_start = self.window_clock.now()
        self._enough.clear()
        batch = self._open
        self._open = _Batch([], [])
        self._room.set()
        if self._journal_broken:
            self._refuse_batch(batch, self._failure or SequencerFailedError("journal broken"))
            return
        framed = self.journal.frame(batch.payloads)  # here: the thread needs no GIL for it
        seconds = asyncio.get_running_loop().run_in_executor(
            self._journal_thread, _timed_write, self.journal, framed
        )
        self._writing = _Write(batch, seconds)

    def _release(self, batch: _Batch, write_seconds: float) -> None:
        """A durable batch: complete its futures and tell the subscribers, in seq order."""
        self.sync_seconds_total += write_seconds
        # Not by self.clock, which stamps commands (tests script it); a monotonic clock.
        waited = time.monotonic() - batch.opened if batch.done else 0.0
        for observe in self.batch_observers:
            try:
                observe(len(batch.done), write_seconds, waited)
            except Exception:  # metrics must not stop trading
                log.exception("batch observer %r failed", observe)
        self.batches_written += 1
        self.records_written += len(batch.done)
        if batch.done:
            first_seq = batch.done[0][0].seq
            for hand_on in self.durable_batch_listeners:
                try:
                    hand_on(first_seq, batch.payloads)
                except Exception:  # its own failure is its own to report (the bus)
                    log.exception("durable batch listener %r failed", hand_on)
        for sequenced, future in batch.done:
            self.durable_seq = sequenced.seq
            if future is not None and not future.done():
                future.set_result(sequenced)
            for subscriber in self._subscribers:
                try:
                    subscriber(sequenced)
                except Exception:  # a read model's bug must not stop trading
                    self.subscriber_errors += 1
                    log.exception("subscriber %r failed on seq %d", subscriber, sequenced.seq)
        for batch_end in self._batch_ends:
            try:
                batch_end()
            except Exception:  # as for subscribers: trading goes on
                self.subscriber_errors += 1
                log.exception("batch end %r failed", batch_end)
        if batch.snapshot is not None:
            seq, state = batch.snapshot
            self._snapshot_task = asyncio.create_task(
                self._in_snapshot_thread(self._store_snapshot, seq, state)
            )
        elif batch.forked is not None:
            seq, pid = batch.forked
            self._snapshot_task = asyncio.create_task(
                self._in_snapshot_thread(self._commit_forked, seq, pid)
            )

    # --- snapshots ------------------------------------------------------------------------

    async def _in_snapshot_thread(
        self, store: Callable[[int, Any], None], seq: int, what: object
    ) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._snapshot_thread, store, seq, what
            )
        except Exception:  # the journal still holds everything; the next one tries again
            log.exception("snapshot at seq %d failed", seq)
        finally:
            self._snapshot_task = None
            self._snapshot_pending = False

    def _store_snapshot(self, seq: int, state: EngineState) -> None:
        """In the snapshot thread: write, then prune snapshots and covered segments."""
        assert self.snapshots is not None
        started = time.perf_counter()
        self._prune_after(seq, self.snapshots.write(seq, state), started)

    def _commit_forked(self, seq: int, pid: int) -> None:
        """In the snapshot thread: wait for the child, put its file in place, prune."""
        assert self.snapshots is not None
        started = time.perf_counter()
        try:
            forked_snapshot.finish(pid)
        except forked_snapshot.ChildFailedError:
            self.snapshots.pending_path(seq, pid).unlink(missing_ok=True)
            raise
        self._prune_after(seq, self.snapshots.commit(seq, pid), started)

    def _discard_forked(self, seq: int, pid: int) -> None:
        """In the snapshot thread: a forked snapshot whose records never became durable."""
        assert self.snapshots is not None
        try:
            forked_snapshot.finish(pid)
        except forked_snapshot.ChildFailedError:
            log.exception("discarded snapshot child for seq %d", seq)
        finally:
            self.snapshots.pending_path(seq, pid).unlink(missing_ok=True)
            self._snapshot_pending = False

    def _prune_after(self, seq: int, path: Path, started: float) -> None:
        assert self.snapshots is not None
        oldest_kept = self.snapshots.prune()
        pruned: list[str] = []
        if oldest_kept is not None:
            # Safe from this thread: pruning touches only old, closed segments.
            pruned = self.journal.prune_before(self.prune_below(oldest_kept))
        log.info(
            "snapshot at seq %d written to %s in %.2fs; %d old segments pruned",
            seq, path, time.perf_counter() - started, len(pruned),
        )  # fmt: skip

    async def _snapshot_now(self) -> None:
        if self.snapshots is None or self.durable_seq == 0:
            return
        if self.snapshots.seqs()[:1] == [self.durable_seq]:
            return
        state = export_state(self.engine)
        await asyncio.get_running_loop().run_in_executor(
            self._snapshot_thread, self._store_snapshot, self.durable_seq, state
        )

    # --- failure --------------------------------------------------------------------------

    def _fail(
        self,
        command: Command,
        bug: Exception,
        future: "asyncio.Future[Sequenced] | None",
        origin: object,
    ) -> None:
        name = type(command).__name__
        at = self.last_seq + 1
        self._failure = SequencerFailedError(f"engine raised on {name} at seq {at}: {bug!r}")
        self._failure.__cause__ = bug
        self._accepting = False
        log.critical("%s; stopping", self._failure)
        self._refuse(future, origin, self._failure)

    def _fail_journal(self, problem: Exception) -> None:
        self._journal_broken = True
        if self._failure is None:
            self._failure = SequencerFailedError(f"journal write failed: {problem!r}")
            self._failure.__cause__ = problem
            log.critical("%s; stopping", self._failure)
        self._accepting = False
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # wake the sequencing loop if it waits for work

    def _refuse_queued(self) -> None:
        self._accepting = False
        reason = SequencerStoppedError(str(self._failure or "the sequencer stopped"))
        while not self._queue.empty():  # bounded by the queue's size
            item = self._queue.get_nowait()
            if item is not None:
                self._refuse(item[1], item[2], reason)

    def _refuse_batch(self, batch: _Batch, reason: Exception) -> None:
        for sequenced, future in batch.done:
            self._refuse(future, sequenced.origin, reason)
        if batch.forked is not None:  # its snapshot must never be put in place
            self._snapshot_thread.submit(self._discard_forked, *batch.forked)
            batch.forked = None

    def _refuse(
        self, future: "asyncio.Future[Sequenced] | None", origin: object, reason: Exception
    ) -> None:
        """Fail a command's future, or tell `on_refused` about a posted one."""
        if future is not None:
            if not future.done():
                future.set_exception(reason)
        elif self.on_refused is not None:
            try:
                self.on_refused(origin, reason)
            except Exception:  # the refusal of the others must still go out
                log.exception("on_refused %r failed", self.on_refused)


# The item `poke` queues: a Timer the loop never applies itself (it checks the deadline).
_WAKE = Timer()


def _timed_write(journal: Journal, framed: Framed) -> float:
    """In the journal thread: write and sync; the seconds it took (the disk's time alone,
    not the loop's time to notice)."""
    started = time.perf_counter()
    journal.write_framed(framed)
    return time.perf_counter() - started


def _covered_by(oldest_kept_snapshot: int) -> int:
    return oldest_kept_snapshot + 1


def _last_timestamp(journal: Journal) -> int:
    """The time of the last journaled command: the clock of a restarted sequencer must not
    stamp anything earlier, even if the wall clock stepped back in between."""
    for record in journal.read_from(journal.last_seq):
        return decode_entry(record.payload).command.ts
    return 0


async def stop_and_wait(sequencer: Sequencer, sequencing: "asyncio.Task[None]") -> int:
    """Take no more commands, let the run finish what it took (flush, snapshot): 0, or
    2 with one line on stderr when the engine or the journal failed."""
    await sequencer.stop()
    try:
        await sequencing
    except SequencerFailedError as failure:
        print(f"exchange stopped: {failure}", file=sys.stderr, flush=True)
        return 2
    return 0


def recover_sequencer(
    data_dir: Path, durability: str, gather_ms: float
) -> tuple[Recovered, Sequencer]:
    """A data directory recovered (refusing what lost acknowledged records) and the
    sequencer that goes on from it, as every role that writes the journal starts one:
    snapshots in forked children, the group-commit window `gather_ms`."""
    durable = durability == "fsync"
    recovered = recover(data_dir, durable=durable, snapshots_durable=durable)
    sequencer = Sequencer(
        recovered.engine, recovered.journal, recovered.snapshots,
        gather_seconds=gather_ms / 1_000, fork_snapshots=True,
    )  # fmt: skip
    return recovered, sequencer
