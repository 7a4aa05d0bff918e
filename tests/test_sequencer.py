"""The sequencer: order, group commit, release only after durability, BUSY, and failure."""

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.bus import BusyError, Sequenced, SequencerFailedError, SequencerStoppedError
from exchange.domain.commands import Command, CreateAccount, DepositCash
from exchange.domain.engine import Engine
from exchange.journal.faulty import FaultySegmentStore
from exchange.journal.journal import Journal
from exchange.journal.records import decode_entry
from exchange.sequencer import Sequencer
from tests.streams import mixed_stream

# Every wait on the loop in these tests is bounded by this, so a hang fails instead.
WAIT_S = 10.0


class GatedStore(FaultySegmentStore):
    """A store whose sync blocks (in the journal's worker thread) until the test opens the
    gate: the test can look at what the sequencer released while a sync is in progress."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Semaphore(0)
        self.sync_started = threading.Semaphore(0)

    def sync(self) -> None:
        self.sync_started.release()
        if not self.gate.acquire(timeout=WAIT_S):
            raise TimeoutError("the test never opened the gate")
        super().sync()


def counter_clock(start: int = 1_000) -> "Iterator[int]":
    n = start
    while True:  # an endless clock; each call takes one tick
        n += 1
        yield n


async def started(sequencer: Sequencer) -> "asyncio.Task[None]":
    task = asyncio.create_task(sequencer.run())
    await asyncio.sleep(0)  # let the run loop reach its first await
    return task


def durable_seqs(store: FaultySegmentStore) -> list[int]:
    """The seqs a power cut now would leave."""
    journal = Journal.open(store.durable_copy())
    return [decode_entry(r.payload).seq for r in journal.read_from(1)]


async def test_commands_get_consecutive_seqs_and_increasing_times() -> None:
    store = FaultySegmentStore()
    ticks = counter_clock()
    seq = Sequencer(Engine(), Journal.open(store), clock=lambda: next(ticks))
    task = await started(seq)
    results = await asyncio.gather(*(seq.submit(c) for c in mixed_stream(1, 300)))
    assert [r.seq for r in results] == list(range(1, len(results) + 1))
    stamps = [r.command.ts for r in results]
    assert stamps == sorted(stamps)
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)
    assert durable_seqs(store) == [r.seq for r in results]


async def test_time_never_runs_backwards_in_the_journal() -> None:
    readings = iter([5_000, 4_000, 6_000])
    seq = Sequencer(Engine(), Journal.open(FaultySegmentStore()), clock=lambda: next(readings))
    task = await started(seq)
    names = [CreateAccount(name=f"n{i}") for i in range(3)]
    results = await asyncio.gather(*(seq.submit(c) for c in names))
    assert [r.command.ts for r in results] == [5_000, 5_000, 6_000]
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)


async def test_many_commands_share_one_write_and_fsync() -> None:
    store = FaultySegmentStore()
    seq = Sequencer(Engine(), Journal.open(store), max_batch=100)
    task = await started(seq)
    await asyncio.gather(*(seq.submit(c) for c in mixed_stream(2, 450)))
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)
    assert seq.records_written == seq.last_seq
    assert seq.batches_written == -(-seq.last_seq // 100)  # full batches: the queue was full
    assert store.syncs == seq.batches_written


async def test_whatever_arrives_during_a_sync_goes_out_in_the_next_single_write() -> None:
    store = GatedStore()
    seq = Sequencer(Engine(), Journal.open(store), max_batch=100)
    task = await started(seq)
    first = seq.submit(CreateAccount(name="first"))
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    # Three bursts while the first sync is held, each applied before the next arrives.
    later = []
    for burst in range(3):
        later += [seq.submit(CreateAccount(name=f"b{burst}-{i}")) for i in range(5)]
        for _ in range(50):
            if seq.last_seq == 1 + 5 * (burst + 1):
                break
            await asyncio.sleep(0)
        assert seq.last_seq == 1 + 5 * (burst + 1)
    store.gate.release()
    await asyncio.wait_for(first, WAIT_S)
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    store.gate.release()
    await asyncio.wait_for(asyncio.gather(*later), WAIT_S)
    # One write and one fsync for all three bursts, not one a burst.
    assert (seq.batches_written, store.syncs) == (2, 2)
    await seq.stop()
    for _ in range(4):  # the stop may still sync; let it through
        store.gate.release()
    await asyncio.wait_for(task, WAIT_S)


async def test_nothing_is_released_before_its_own_sync() -> None:
    store = GatedStore()
    seq = Sequencer(Engine(), Journal.open(store), max_batch=2)
    published: list[int] = []
    seq.subscribe(lambda s: published.append(s.seq))
    task = await started(seq)
    first = [seq.submit(CreateAccount(name=f"a{i}")) for i in range(2)]
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    second = [seq.submit(CreateAccount(name=f"b{i}")) for i in range(2)]
    # The engine runs ahead: the second batch is applied while the first is syncing...
    for _ in range(50):
        if seq.last_seq == 4:
            break
        await asyncio.sleep(0)
    assert seq.last_seq == 4
    # ...but nothing is answered or published until a sync has finished.
    assert not any(f.done() for f in first + second)
    assert published == []
    store.gate.release()
    await asyncio.wait_for(asyncio.gather(*first), WAIT_S)
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    assert not any(f.done() for f in second)
    assert published == [1, 2]
    assert durable_seqs(store) == [1, 2]
    store.gate.release()
    await asyncio.wait_for(asyncio.gather(*second), WAIT_S)
    assert published == [1, 2, 3, 4]
    await seq.stop()
    for _ in range(4):  # the stop may still sync; let it through
        store.gate.release()
    await asyncio.wait_for(task, WAIT_S)


async def test_the_next_write_starts_before_the_last_batch_is_released() -> None:
    store = GatedStore()
    seq = Sequencer(Engine(), Journal.open(store))
    next_sync_started: list[bool] = []

    def subscriber(sequenced: Sequenced) -> None:
        if sequenced.seq == 1:
            # This blocks the loop: only a write already handed to the journal thread can
            # start its sync meanwhile.
            next_sync_started.append(store.sync_started.acquire(timeout=2))

    seq.subscribe(subscriber)
    task = await started(seq)
    first = seq.submit(CreateAccount(name="a"))
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    second = seq.submit(CreateAccount(name="b"))
    for _ in range(50):
        if seq.last_seq == 2:
            break
        await asyncio.sleep(0)
    store.gate.release()
    await asyncio.wait_for(first, WAIT_S)
    assert next_sync_started == [True]  # the disk syncs seq 2 while seq 1 is published
    store.gate.release()
    await asyncio.wait_for(second, WAIT_S)
    await seq.stop()
    for _ in range(4):  # the stop may still sync; let it through
        store.gate.release()
    await asyncio.wait_for(task, WAIT_S)


class HandClock:
    """A gather-window clock the test moves by hand: time passes only in `advance`."""

    def __init__(self, now: float) -> None:
        self.time = now
        self.holding = asyncio.Event()  # the writer is waiting for the window
        self._moved = asyncio.Event()

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds
        self._moved.set()

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        until = self.time + seconds
        self.holding.set()
        try:
            while self.time < until and not event.is_set():  # until moved far enough
                self._moved.clear()
                waits = [asyncio.ensure_future(e.wait()) for e in (event, self._moved)]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
        finally:
            self.holding.clear()


class TimedStore(FaultySegmentStore):
    """A store that notes, on the sequencer's window clock, when each sync starts."""

    def __init__(self, clock: HandClock | None = None) -> None:
        super().__init__()
        self.clock = clock or HandClock(0.0)
        self.sync_times: list[float] = []

    def sync(self) -> None:
        self.sync_times.append(self.clock.now())
        super().sync()


async def test_under_sustained_load_writes_start_a_gather_window_apart() -> None:
    clock = HandClock(100.0)
    store = TimedStore(clock)
    seq = Sequencer(Engine(), Journal.open(store), gather_seconds=0.25, window_clock=clock)
    task = await started(seq)
    # The first comes after a quiet spell: written at once, with no time passing.
    await asyncio.wait_for(seq.submit(CreateAccount(name="a")), WAIT_S)
    assert store.sync_times == [100.0]
    second = asyncio.ensure_future(seq.submit(CreateAccount(name="b")))
    await asyncio.wait_for(clock.holding.wait(), WAIT_S)  # held for the window
    clock.advance(0.125)  # (binary fractions: the sums are exact)
    for _ in range(5):  # the writer looks at the clock again, and holds on
        await asyncio.sleep(0)
    assert not second.done()
    assert clock.holding.is_set()
    clock.advance(0.125)  # the window since the first write has passed
    await asyncio.wait_for(second, WAIT_S)
    assert store.sync_times == [100.0, 100.25]
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)


async def test_a_batch_big_enough_is_written_without_waiting_for_the_window() -> None:
    store = TimedStore()
    # A window far longer than the test's own bound: only the size rule can let it pass.
    seq = Sequencer(Engine(), Journal.open(store), gather_seconds=3 * WAIT_S, gather_enough=4)
    task = await started(seq)
    await asyncio.wait_for(seq.submit(CreateAccount(name="first")), WAIT_S)
    burst = [seq.submit(CreateAccount(name=f"n{i}")) for i in range(4)]
    await asyncio.wait_for(asyncio.gather(*burst), WAIT_S)
    assert len(store.sync_times) == 2
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)


@pytest.mark.parametrize("limit", ["gather_enough", "max_batch"])
async def test_a_batch_that_grows_big_enough_while_held_is_written_at_once(limit: str) -> None:
    store = TimedStore()
    # A window far longer than the test's own bound: only the batch's size can end it.
    enough, most = (4, 1_000) if limit == "gather_enough" else (1_000, 4)
    seq = Sequencer(Engine(), Journal.open(store), gather_seconds=3 * WAIT_S,
                    gather_enough=enough, max_batch=most)  # fmt: skip
    task = await started(seq)
    await asyncio.wait_for(seq.submit(CreateAccount(name="first")), WAIT_S)
    held = [seq.submit(CreateAccount(name="held"))]
    for _ in range(5):  # the writer is now holding that one batch for the window
        await asyncio.sleep(0)
    assert not held[0].done()
    # Three more make it big enough; a fourth (after a full batch of 4) must wait for room.
    held += [seq.submit(CreateAccount(name=f"n{i}")) for i in range(4)]
    await asyncio.wait_for(asyncio.gather(*held[:4]), WAIT_S)
    assert len(store.sync_times) == 2
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)
    assert (await held[4]).seq == 6


async def test_stopping_writes_what_is_gathering_at_once() -> None:
    store = TimedStore()
    seq = Sequencer(Engine(), Journal.open(store), gather_seconds=3 * WAIT_S)
    task = await started(seq)
    await asyncio.wait_for(seq.submit(CreateAccount(name="first")), WAIT_S)
    waiting = seq.submit(CreateAccount(name="held by the window"))
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)
    assert (await waiting).seq == 2
    assert durable_seqs(store) == [1, 2]


async def test_a_full_queue_answers_busy_at_once() -> None:
    seq = Sequencer(Engine(), Journal.open(FaultySegmentStore()), max_queue=3)
    accepted = [seq.submit(CreateAccount(name=f"n{i}")) for i in range(3)]
    with pytest.raises(BusyError):
        seq.submit(CreateAccount(name="one too many"))
    task = await started(seq)
    await asyncio.wait_for(asyncio.gather(*accepted), WAIT_S)
    seq.submit(CreateAccount(name="room again"))
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)


async def test_a_stopped_sequencer_takes_nothing() -> None:
    seq = Sequencer(Engine(), Journal.open(FaultySegmentStore()))
    task = await started(seq)
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)
    with pytest.raises(SequencerStoppedError):
        seq.submit(CreateAccount(name="late"))


class ExplodingEngine(Engine):
    """An engine with a bug: it raises on a deposit of 13."""

    def apply(self, command: Command) -> list[object]:  # type: ignore[override]
        if isinstance(command, DepositCash) and command.amount == 13:
            raise RuntimeError("boom")
        return super().apply(command)  # type: ignore[return-value]


async def test_an_engine_exception_stops_everything_and_journals_nothing_of_it() -> None:
    store = FaultySegmentStore()
    seq = Sequencer(ExplodingEngine(), Journal.open(store))
    before = seq.submit(CreateAccount(name="fine"))
    bad = seq.submit(DepositCash(account="A1", amount=13))
    after = seq.submit(CreateAccount(name="never"))
    task = asyncio.create_task(seq.run())
    with pytest.raises(SequencerFailedError, match="boom"):
        await asyncio.wait_for(task, WAIT_S)
    assert isinstance(await before, Sequenced)
    with pytest.raises(SequencerFailedError):
        await bad
    with pytest.raises(SequencerStoppedError):
        await after
    assert durable_seqs(store) == [1]
    with pytest.raises(SequencerStoppedError):
        seq.submit(CreateAccount(name="later"))


class FullDiskStore(FaultySegmentStore):
    """Every sync fails, as on a full or failing disk."""

    def sync(self) -> None:
        raise OSError(28, "No space left on device")


async def test_a_failed_journal_write_refuses_everything_and_stops() -> None:
    engine = Engine()
    seq = Sequencer(engine, Journal.open(FullDiskStore()))
    first = seq.submit(CreateAccount(name="never acknowledged"))
    task = asyncio.create_task(seq.run())
    with pytest.raises(SequencerFailedError, match="No space left"):
        await asyncio.wait_for(first, WAIT_S)
    with pytest.raises(SequencerStoppedError):
        seq.submit(CreateAccount(name="not taken"))
    with pytest.raises(SequencerFailedError, match="journal write failed"):
        await asyncio.wait_for(task, WAIT_S)
    assert len(engine.accounts) == 1  # nothing applied after the failure


async def test_time_never_runs_backwards_across_a_restart() -> None:
    store = FaultySegmentStore()
    first = Sequencer(Engine(), Journal.open(store), clock=lambda: 2_000)
    task = await started(first)
    await first.submit(CreateAccount(name="before"))
    await first.stop()
    await asyncio.wait_for(task, WAIT_S)
    journal = Journal.open(store)
    engine = Engine()
    for record in journal.read_from(1):
        engine.apply(decode_entry(record.payload).command)
    second = Sequencer(engine, journal, clock=lambda: 1_000)  # the wall clock stepped back
    task = await started(second)
    answer = await second.submit(CreateAccount(name="after"))
    assert answer.command.ts == 2_000
    await second.stop()
    await asyncio.wait_for(task, WAIT_S)


async def test_a_failing_subscriber_does_not_stop_the_others_or_the_answers() -> None:
    seq = Sequencer(Engine(), Journal.open(FaultySegmentStore()))
    seen: list[int] = []

    def broken(_: Sequenced) -> None:
        raise RuntimeError("read model bug")

    seq.subscribe(broken)
    seq.subscribe(lambda s: seen.append(s.seq))
    task = await started(seq)
    answers = await asyncio.gather(*(seq.submit(CreateAccount(name=f"n{i}")) for i in range(3)))
    assert [a.seq for a in answers] == seen == [1, 2, 3]
    assert seq.subscriber_errors == 3
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)


async def test_batch_end_follows_the_records_of_each_durable_batch() -> None:
    store = GatedStore()
    seq = Sequencer(Engine(), Journal.open(store), max_batch=2)
    calls: list[object] = []

    def broken_end() -> None:
        raise RuntimeError("publisher bug")

    seq.subscribe(lambda s: calls.append(s.seq), batch_end=lambda: calls.append("end"))
    seq.subscribe(lambda s: None, batch_end=broken_end)
    task = await started(seq)
    first = [seq.submit(CreateAccount(name=f"a{i}")) for i in range(2)]
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    second = [seq.submit(CreateAccount(name=f"b{i}")) for i in range(2)]
    assert calls == []  # nothing before the first sync ends
    store.gate.release()
    await asyncio.wait_for(asyncio.gather(*first), WAIT_S)
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    store.gate.release()
    await asyncio.wait_for(asyncio.gather(*second), WAIT_S)
    assert calls == [1, 2, "end", 3, 4, "end"]
    assert seq.subscriber_errors == 2  # the broken batch end, once a batch
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)


async def test_origin_comes_back_to_subscribers() -> None:
    seq = Sequencer(Engine(), Journal.open(FaultySegmentStore()))
    origins: list[object] = []
    seq.subscribe(lambda s: origins.append(s.origin))
    task = await started(seq)
    await seq.submit(CreateAccount(name="x"), origin=("session", 7))
    assert origins == [("session", 7)]
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)


async def test_cancelling_run_refuses_what_is_not_durable_and_snapshots_nothing(
    tmp_path: Path,
) -> None:
    from exchange.journal.snapshots import SnapshotStore

    store = GatedStore()
    snapshots = SnapshotStore(tmp_path)
    seq = Sequencer(Engine(), Journal.open(store), snapshots, max_batch=1)
    task = await started(seq)
    futures = [seq.submit(CreateAccount(name=f"n{i}")) for i in range(6)]
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    for _ in range(50):  # let the engine run ahead while the first sync is held
        await asyncio.sleep(0)
    assert seq.last_seq > seq.durable_seq
    task.cancel()
    store.gate.release()  # the held sync finishes (its result is no longer awaited)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    for future in futures:
        assert future.done(), "a command was left hanging"
    assert snapshots.seqs() == []  # no snapshot of a state the journal does not hold
    with pytest.raises(SequencerStoppedError):
        seq.submit(CreateAccount(name="late"))


async def test_a_forked_snapshot_of_records_never_durable_is_never_put_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exchange import forked_snapshot
    from exchange.journal.snapshots import SnapshotStore

    forks: list[int] = []
    real_start = forked_snapshot.start

    def start(engine: Engine, store: SnapshotStore, seq: int) -> int:
        forks.append(seq)
        return real_start(engine, store, seq)

    monkeypatch.setattr(forked_snapshot, "start", start)
    store = GatedStore()
    snapshots = SnapshotStore(tmp_path)
    seq = Sequencer(Engine(), Journal.open(store), snapshots, max_batch=1, snapshot_every=2,
                    fork_snapshots=True)  # fmt: skip
    task = await started(seq)
    futures = [seq.submit(CreateAccount(name=f"n{i}")) for i in range(6)]
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    for _ in range(50):  # the engine runs ahead while the first sync is held: a fork
        if forks:
            break
        await asyncio.sleep(0)
    assert forks == [2]
    task.cancel()
    store.gate.release()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    assert all(future.done() for future in futures)
    # The child wrote its file, but seq 2 never became durable: nothing is in place, and
    # the run waited for the child and removed what it wrote.
    assert snapshots.seqs() == []
    assert list(tmp_path.iterdir()) == []


async def test_a_posted_command_that_is_refused_is_told_to_on_refused_with_its_origin() -> None:
    store = GatedStore()
    seq = Sequencer(Engine(), Journal.open(store), max_batch=1)
    refused: list[tuple[object, str]] = []
    seq.on_refused = lambda origin, reason: refused.append((origin, type(reason).__name__))
    task = await started(seq)
    for i in range(4):
        seq.post(CreateAccount(name=f"n{i}"), origin=f"client-{i}")
    await asyncio.to_thread(store.sync_started.acquire, timeout=WAIT_S)
    task.cancel()
    store.gate.release()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    # Every one of them, in order: none is durable (the held sync's result was dropped).
    assert refused == [(f"client-{i}", "SequencerStoppedError") for i in range(4)]


class HalfApplyingEngine(Engine):
    """A bug: it changes state, then raises, on a deposit of 13."""

    def apply(self, command: Command) -> list[object]:  # type: ignore[override]
        if isinstance(command, DepositCash) and command.amount == 13:
            self.accounts[command.account].cash += 13
            raise RuntimeError("half applied")
        return super().apply(command)  # type: ignore[return-value]


async def test_an_engine_failure_never_snapshots_the_half_applied_state(tmp_path: Path) -> None:
    from exchange.journal.snapshots import SnapshotStore

    snapshots = SnapshotStore(tmp_path)
    seq = Sequencer(HalfApplyingEngine(), Journal.open(FaultySegmentStore()), snapshots,
                    snapshot_every=2)  # fmt: skip
    seq.submit(CreateAccount(name="a"))
    seq.submit(CreateAccount(name="b"))
    seq.submit(DepositCash(account="A1", amount=13))
    with pytest.raises(SequencerFailedError):
        await asyncio.wait_for(seq.run(), WAIT_S)
    assert snapshots.seqs() == []


async def test_batch_observers_hear_how_long_the_batch_waited_since_its_first_record() -> None:
    seq = Sequencer(Engine(), Journal.open(FaultySegmentStore()))
    heard: list[tuple[int, float, float]] = []
    seq.batch_observers.append(lambda *figures: heard.append(figures))
    task = await started(seq)
    await asyncio.wait_for(seq.submit(CreateAccount(name="a")), WAIT_S)
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)
    [(records, write_seconds, waited)] = heard
    assert records == 1
    assert write_seconds <= waited < WAIT_S  # it waited at least for its own write


async def test_a_failing_batch_observer_does_not_stop_the_sequencer() -> None:
    seq = Sequencer(Engine(), Journal.open(FaultySegmentStore()))

    def broken(records: int, seconds: float, waited: float) -> None:
        raise ValueError("metrics bug")

    seq.batch_observers.append(broken)
    task = await started(seq)
    answers = await asyncio.wait_for(
        asyncio.gather(*(seq.submit(CreateAccount(name=f"n{i}")) for i in range(5))), WAIT_S
    )
    assert [a.seq for a in answers] == [1, 2, 3, 4, 5]
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)


async def test_a_command_outside_its_schema_is_never_journaled() -> None:
    from exchange.bus import InvalidCommandError
    from exchange.domain.commands import DepositUnits

    store = FaultySegmentStore()
    seq = Sequencer(Engine(), Journal.open(store))
    with pytest.raises(InvalidCommandError):
        seq.submit(DepositUnits(account="A1", symbol="bad sym!", qty=5))
    with pytest.raises(InvalidCommandError):
        seq.submit(DepositCash(account="A1", amount=-5))
    task = await started(seq)
    await seq.submit(CreateAccount(name="fine"))
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)
    assert durable_seqs(store) == [1]


async def test_after_a_snapshot_the_journal_is_pruned_only_below_what_prune_below_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster's leader keeps every record the stream may still need refilled
    (exchange/streamfloor.py), however many snapshots cover them."""
    from exchange.journal import journal as journal_module
    from exchange.journal.snapshots import SnapshotStore
    from exchange.streamfloor import StreamFloor

    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", 1)  # a segment a batch
    first_seqs = []
    for floor in (None, StreamFloor(1)):
        journal = Journal.open(FaultySegmentStore())
        seq = Sequencer(Engine(), journal, SnapshotStore(tmp_path / str(floor is None)),
                        max_batch=1, snapshot_every=2)  # fmt: skip
        if floor is not None:
            seq.prune_below = floor.prune_below
        task = await started(seq)
        for i in range(12):
            await asyncio.wait_for(seq.submit(CreateAccount(name=f"a{i}")), WAIT_S)
        await asyncio.wait_for(seq.stop(), WAIT_S)
        await asyncio.wait_for(task, WAIT_S)
        first_seqs.append(journal.first_seq)
    assert first_seqs[0] > 1, "a single process prunes what its snapshots cover"
    assert first_seqs[1] == 1, "the stream starts at record 1: nothing pruned"
