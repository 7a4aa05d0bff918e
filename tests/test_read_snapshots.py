"""Read-side snapshots: one follows each engine snapshot, so when the journal's old
segments are pruned a restart still rebuilds every read (ended orders, fills, trades,
candles, seqs) from the newest read snapshot plus the records after it."""

import asyncio
import itertools
from pathlib import Path

import pytest

from exchange.domain.commands import Command
from exchange.journal import journal as journal_module
from exchange.journal.journal import Journal
from exchange.journal.snapshots import SnapshotStore
from exchange.journal.storage import MARK_FILE, FileSegmentStore
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, recover
from exchange.sequencer import Sequencer
from gateway.readmodel import ReadModel
from gateway.readsnapshots import (
    READ_SNAPSHOT_DIR,
    ReadSnapshots,
    ReadSnapshotStore,
    recover_read,
)
from gateway.readstate import ReadState
from tests.streams import START_TS, mixed_stream

COMMANDS = 1_500


async def _serve_commands(data_dir: Path, *, fork: bool, clean_stop: bool) -> ReadState:
    """Run a sequencer and a read side wired as `exchange serve` wires them, with a
    snapshot every 300 records; the live read state once all is durable."""
    recovered = recover(data_dir)
    sequencer = Sequencer(
        recovered.engine, recovered.journal, recovered.snapshots,
        clock=itertools.count(START_TS, 1_000).__next__, max_batch=64, snapshot_every=300,
    )  # fmt: skip
    store = ReadSnapshotStore(data_dir / READ_SNAPSHOT_DIR)
    read = ReadModel(recover_read(store, recovered.journal, recovered.engine))
    snapshots = ReadSnapshots(store, fork=fork)
    read.after_batch(lambda: snapshots.maybe_take(read.state, sequencer.last_snapshot_seq))
    sequencer.subscribe(read, batch_end=read.end_batch)
    task = asyncio.create_task(sequencer.run())
    commands = mixed_stream(seed=11, count=COMMANDS)
    for start in range(0, len(commands), 100):  # batches of every size along the way
        await asyncio.gather(*(sequencer.submit(c) for c in commands[start : start + 100]))
    await sequencer.stop()
    await task
    if clean_stop:
        snapshots.take_now(read.state)
    else:
        snapshots._reap(block=True)  # the children have written (or failed) by now
    return read.state


def _rebuilt(data_dir: Path) -> ReadState:
    recovered = recover(data_dir)
    try:
        return recover_read(
            ReadSnapshotStore(data_dir / READ_SNAPSHOT_DIR), recovered.journal, recovered.engine
        )
    finally:
        recovered.journal.close()


@pytest.mark.parametrize("fork", [False, True], ids=["written on the loop", "forked"])
async def test_a_pruned_journal_still_rebuilds_every_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", 8 * 1024)
    live = await _serve_commands(tmp_path, fork=fork, clean_stop=False)
    first_segment = FileSegmentStore(tmp_path / JOURNAL_DIR).list_segments()[0]
    assert int(first_segment.removesuffix(".seg")) > 1, "old segments were pruned"
    assert ReadSnapshotStore(tmp_path / READ_SNAPSHOT_DIR).seqs(), "read snapshots taken"
    rebuilt = _rebuilt(tmp_path)
    assert rebuilt.durable_seq == live.durable_seq
    assert sum(len(f) for f in rebuilt.fills.values()) > 0
    # The records after the read snapshot are replayed in the batches the journal marks:
    # all is the same, the book seqs too.
    assert rebuilt.export() == live.export()


async def test_after_a_clean_stop_the_read_side_comes_back_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", 8 * 1024)
    live = await _serve_commands(tmp_path, fork=False, clean_stop=True)
    assert _rebuilt(tmp_path).export() == live.export()


async def test_a_damaged_newest_read_snapshot_falls_back_to_the_older_one(
    tmp_path: Path,
) -> None:
    live = await _serve_commands(tmp_path, fork=False, clean_stop=True)
    store = ReadSnapshotStore(tmp_path / READ_SNAPSHOT_DIR)
    newest = store.seqs()[0]
    data = bytearray(store.path(newest).read_bytes())
    data[-1] ^= 0xFF
    store.path(newest).write_bytes(bytes(data))
    assert _rebuilt(tmp_path).export() == live.export()


async def test_without_durability_snapshots_past_the_journals_end_are_deleted(
    tmp_path: Path,
) -> None:
    """Under --durability none a power cut may keep snapshots and lose the journal's tail:
    nothing was promised, so the snapshots go (their seqs will be taken by new commands);
    with durability the same journal is refused (tests/test_durable_points.py)."""
    await _serve_commands(tmp_path, fork=False, clean_stop=True)
    (tmp_path / JOURNAL_DIR / MARK_FILE).unlink()  # none mode writes no watermark
    segment = tmp_path / JOURNAL_DIR / FileSegmentStore(tmp_path / JOURNAL_DIR).list_segments()[-1]
    with segment.open("r+b") as f:
        f.truncate(segment.stat().st_size - 5)
    engine_snapshots = SnapshotStore(tmp_path / SNAPSHOT_DIR)
    newest_engine = engine_snapshots.seqs()[0]
    read_store = ReadSnapshotStore(tmp_path / READ_SNAPSHOT_DIR)
    newest_read = read_store.seqs()[0]

    recovered = recover(tmp_path, durable=False, snapshots_durable=False)
    try:
        rebuilt = recover_read(read_store, recovered.journal, recovered.engine)
    finally:
        recovered.journal.close()

    end = recovered.journal.last_seq
    assert end < newest_engine
    assert end < newest_read
    assert newest_engine not in engine_snapshots.seqs()
    assert newest_read not in read_store.seqs()
    assert recovered.snapshot_seq <= end
    assert rebuilt.durable_seq == end


async def _run(data_dir: Path, commands: list[Command], first_ts: int) -> ReadState:
    """A sequencer and a read side as `exchange serve` wires them (no snapshots), the
    commands in groups that share batches; the live read state at the end."""
    recovered = recover(data_dir)
    sequencer = Sequencer(
        recovered.engine, recovered.journal, recovered.snapshots,
        clock=itertools.count(first_ts, 1_000).__next__, max_batch=64, snapshot_every=10**9,
    )  # fmt: skip
    store = ReadSnapshotStore(data_dir / READ_SNAPSHOT_DIR)
    read = ReadModel(recover_read(store, recovered.journal, recovered.engine))
    sequencer.subscribe(read, batch_end=read.end_batch)
    task = asyncio.create_task(sequencer.run())
    for start in range(0, len(commands), 50):
        await asyncio.gather(*(sequencer.submit(c) for c in commands[start : start + 50]))
    await sequencer.stop()
    await task
    return read.state


def _md_seqs(state: ReadState) -> dict[str, tuple[int, int]]:
    return {t.symbol: (t.book_seq, t.trade_seq) for t in state.export().tapes}


@pytest.mark.parametrize("kept", [1, 5, 20])
async def test_a_write_a_crash_cut_short_is_cut_whole_and_the_rebuilt_seqs_match_the_live(
    tmp_path: Path, kept: int
) -> None:
    """A crash that keeps the first `kept` records of a write whole and tears the rest:
    that write was never synced, so it goes whole. Were its whole records kept, the next
    process would end their batch at its start and a later rebuild would read them with
    the next write as one batch: one book update fewer than clients were sent."""
    commands = mixed_stream(seed=11, count=900)
    await _run(tmp_path, commands[:600], START_TS)
    journal = Journal.open(FileSegmentStore(tmp_path / JOURNAL_DIR), repair=False)
    records = list(journal.read_from(1))
    journal.store.close()
    ends = [i for i, record in enumerate(records) if record.batch_end]
    assert ends[-1] - ends[-2] > kept, "the last write holds more records than are kept"
    cut = records[ends[-2] + 1 + kept]
    segment = tmp_path / JOURNAL_DIR / cut.segment
    segment.write_bytes(segment.read_bytes()[: cut.offset] + bytes(7))  # torn after them
    # The crash came before the watermark or a snapshot reached that write.
    (tmp_path / JOURNAL_DIR / MARK_FILE).unlink()
    for snapshot in (tmp_path / SNAPSHOT_DIR).glob("*.snap"):
        snapshot.unlink()

    live = await _run(tmp_path, commands[600:], START_TS + 10**9)
    recovered = recover(tmp_path)
    try:
        rebuilt = recover_read(
            ReadSnapshotStore(tmp_path / "no-read-snapshots"), recovered.journal, recovered.engine
        )
    finally:
        recovered.journal.close()
    assert _md_seqs(rebuilt) == _md_seqs(live)
