"""Read-side snapshots: one follows each engine snapshot, so when the journal's old
segments are pruned a restart still rebuilds every read (ended orders, fills, trades,
candles, seqs) from the newest read snapshot plus the records after it."""

import asyncio
import itertools
from pathlib import Path

import msgspec
import pytest

from exchange.journal import journal as journal_module
from exchange.journal.storage import FileSegmentStore
from exchange.recovery import JOURNAL_DIR, recover
from exchange.sequencer import Sequencer
from gateway.readmodel import ReadModel
from gateway.readsnapshots import (
    READ_SNAPSHOT_DIR,
    ReadSnapshots,
    ReadSnapshotStore,
    recover_read,
)
from gateway.readstate import ReadSnapshot, ReadState
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


def _without_book_seqs(snapshot: ReadSnapshot) -> ReadSnapshot:
    tapes = [msgspec.structs.replace(t, book_seq=0) for t in snapshot.tapes]
    return msgspec.structs.replace(snapshot, tapes=tapes)


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
    # The records after the read snapshot are replayed one a batch: all is the same but
    # the book seq, which never falls behind.
    assert _without_book_seqs(rebuilt.export()) == _without_book_seqs(live.export())
    for again, before in zip(rebuilt.export().tapes, live.export().tapes, strict=True):
        assert again.book_seq >= before.book_seq


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
    rebuilt = _rebuilt(tmp_path)
    assert _without_book_seqs(rebuilt.export()) == _without_book_seqs(live.export())
