"""Recovery never throws away what was durable: the cases a hostile tester found.

A data directory is written by a real sequencer (a snapshot as it stops, a durable
watermark beside the journal), then its files are really cut or deleted. A journal that
ends before a point known durable (the watermark's record, the newest snapshot's seq) is
refused by recovery and by `exchange journal verify`, naming the file, the offset and the
seq known durable; nothing is cut and no snapshot is deleted. A tail past every durable
point is still a torn write and is still cut (tests/test_journal_damage.py has the rest).
"""

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from exchange.domain.engine import Engine
from exchange.journal import journal as journal_module
from exchange.journal import watermark
from exchange.journal.faulty import FaultySegmentStore
from exchange.journal.journal import Journal, JournalCorruptError
from exchange.journal.storage import MARK_FILE, FileSegmentStore
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, recover
from exchange.sequencer import Sequencer
from tests.streams import START_TS, mixed_stream
from tests.test_cli import exchange

COMMANDS = 400
# Bounds a wait for the sequencer's idle watermark write (a safety net, not a timing).
WAIT_S = 10.0


async def write_data_dir(data_dir: Path, *, snapshot: bool) -> int:
    """COMMANDS commands through a sequencer that stops cleanly; returns the last seq."""
    recovered = recover(data_dir)
    sequencer = Sequencer(
        recovered.engine, recovered.journal, recovered.snapshots if snapshot else None,
        clock=itertools.count(START_TS, 1_000).__next__, max_batch=32,
    )  # fmt: skip
    task = asyncio.create_task(sequencer.run())
    await asyncio.gather(*(sequencer.submit(c) for c in mixed_stream(11, COMMANDS)))
    await sequencer.stop()
    await task
    return sequencer.durable_seq


def segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / JOURNAL_DIR).glob("*.seg"))


def snapshots(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / SNAPSHOT_DIR).glob("*.snap"))


def refused(data_dir: Path) -> JournalCorruptError:
    """Recovery refuses, and so does verify (exit 1, with the same reason)."""
    with pytest.raises(JournalCorruptError) as refusal:
        recover(data_dir)
    done = exchange("journal", "verify", str(data_dir))
    assert done.returncode == 1, done.stdout + done.stderr
    assert refusal.value.reason in done.stdout
    return refusal.value


async def test_a_deleted_segment_with_its_snapshot_kept_is_refused(tmp_path: Path) -> None:
    """Case (a): the snapshot says seq N was durable; an empty journal lost 1..N."""
    last_seq = await write_data_dir(tmp_path, snapshot=True)
    (snapshot,) = snapshots(tmp_path)
    for segment in segments(tmp_path):
        segment.unlink()
    (tmp_path / JOURNAL_DIR / MARK_FILE).unlink()  # only the snapshot remembers

    refusal = refused(tmp_path)

    assert f"seq {last_seq}" in refusal.reason
    assert snapshot in refusal.reason
    assert f"acknowledged records 1..{last_seq} are missing" in refusal.reason
    assert snapshots(tmp_path) == [snapshot], "the snapshot is never deleted for it"


async def test_a_segment_cut_in_half_is_refused_naming_file_offset_and_durable_seq(
    tmp_path: Path,
) -> None:
    """Case (b): no snapshot, only the watermark says how far the journal was durable."""
    last_seq = await write_data_dir(tmp_path, snapshot=False)
    (segment,) = segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.truncate(size // 2)

    refusal = refused(tmp_path)

    assert refusal.segment == segment.name
    assert 0 < refusal.offset <= size // 2
    assert f"durable watermark ({MARK_FILE}) says seq {last_seq} was durable" in refusal.reason
    assert segment.stat().st_size == size // 2, "nothing is cut"


async def test_five_bytes_cut_with_a_snapshot_present_is_refused_and_nothing_deleted(
    tmp_path: Path,
) -> None:
    """Case (c): both the watermark and the snapshot reach the last record."""
    last_seq = await write_data_dir(tmp_path, snapshot=True)
    (snapshot,) = snapshots(tmp_path)
    (segment,) = segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.truncate(size - 5)

    refusal = refused(tmp_path)

    assert refusal.segment == segment.name
    assert f"records {last_seq}..{last_seq} are missing" in refusal.reason
    assert snapshots(tmp_path) == [snapshot]
    assert segment.stat().st_size == size - 5


async def test_a_deleted_newest_segment_is_refused_by_the_watermark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", 4 * 1024)
    last_seq = await write_data_dir(tmp_path, snapshot=False)
    *older, newest = segments(tmp_path)
    assert older, "the journal rolled"
    newest.unlink()

    refusal = refused(tmp_path)

    assert refusal.segment == older[-1].name
    assert f"says seq {last_seq} was durable" in refusal.reason


async def test_a_journal_of_another_history_as_long_as_the_watermark_is_refused(
    tmp_path: Path,
) -> None:
    """Same length, other records: the watermark's chain value tells them apart."""
    await write_data_dir(tmp_path / "one", snapshot=False)
    mark = (tmp_path / "one" / JOURNAL_DIR / MARK_FILE).read_bytes()
    other = tmp_path / "other"
    recovered = recover(other)
    payloads = [
        bytes(r.payload) for r in Journal.open(FileSegmentStore(tmp_path / "one" / JOURNAL_DIR),
                                               repair=False).read_from(1)
    ]  # fmt: skip
    payloads[-1] = payloads[-1][:-1] + bytes([payloads[-1][-1] ^ 1])
    recovered.journal.write_batch(payloads)
    recovered.journal.store.close()  # a crash: no watermark of its own
    (other / JOURNAL_DIR / MARK_FILE).write_bytes(mark)

    with pytest.raises(JournalCorruptError, match="not the one the durable watermark names"):
        Journal.open(FileSegmentStore(other / JOURNAL_DIR))


async def test_a_torn_write_past_the_watermark_is_still_cut(tmp_path: Path) -> None:
    last_seq = await write_data_dir(tmp_path, snapshot=True)
    (segment,) = segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(b"\x07" * 33)  # part of a next write that never completed

    recovered = recover(tmp_path)
    recovered.journal.close()

    assert (recovered.journal.last_seq, recovered.journal.truncated_bytes) == (last_seq, 33)
    assert segment.stat().st_size == size


async def test_a_journal_without_a_watermark_opens_and_gets_one(tmp_path: Path) -> None:
    """A data directory from a build before the watermark: its journal is taken as it is."""
    last_seq = await write_data_dir(tmp_path, snapshot=False)
    mark_path = tmp_path / JOURNAL_DIR / MARK_FILE
    mark_path.unlink()

    recovered = recover(tmp_path)
    recovered.journal.close()

    mark = watermark.decode(mark_path.read_bytes())
    assert mark is not None
    assert mark.seq == recovered.journal.last_seq == last_seq


def test_a_torn_watermark_slot_leaves_the_other_slot_in_force() -> None:
    older = watermark.encode(watermark.Mark(7, 1, 500, 1234))
    newer = watermark.encode(watermark.Mark(9, 1, 700, 5678))
    assert watermark.decode(older + newer) == watermark.Mark(9, 1, 700, 5678)
    torn = newer[:20] + bytes(len(newer) - 20)
    assert watermark.decode(older + torn) == watermark.Mark(7, 1, 500, 1234)
    assert watermark.decode(torn) is None


async def test_the_sequencer_brings_the_watermark_up_to_date_once_writes_stop() -> None:
    """With the journal's clock standing still a sync never finds the watermark due: only
    the sequencer's idle write can bring it to the last record."""
    store = FaultySegmentStore()
    journal = Journal.open(store, clock=lambda: 0.0, mark_every_s=0.01)
    sequencer = Sequencer(Engine(), journal)
    task = asyncio.create_task(sequencer.run())
    await asyncio.gather(*(sequencer.submit(c) for c in mixed_stream(3, 50)))
    deadline = time.monotonic() + WAIT_S
    while (mark := watermark.decode(store.read_mark())) is None or mark.seq < sequencer.last_seq:
        assert time.monotonic() < deadline, f"the watermark stayed at {mark}"
        await asyncio.sleep(0.01)
    assert mark.chain == journal.last_chain
    await sequencer.stop()
    await task
