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
import re
import time
from pathlib import Path

import pytest

from exchange.domain.engine import Engine
from exchange.journal import journal as journal_module
from exchange.journal import storage as storage_module
from exchange.journal import watermark
from exchange.journal.faulty import FaultySegmentStore
from exchange.journal.journal import Journal, JournalCorruptError, segment_name
from exchange.journal.storage import MARK_FILE, FileSegmentStore
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, recover
from exchange.sequencer import Sequencer
from tests.streams import START_TS, mixed_stream
from tests.test_cli import exchange
from tests.test_journal_power_loss import Scripted

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
    # The last write's records before the cut are whole, but it would go with its end.
    assert re.search(rf"acknowledged records \d+\.\.{last_seq} are missing", refusal.reason)
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

    found = watermark.decode(mark_path.read_bytes())
    assert found is not None
    assert found[0].seq == recovered.journal.last_seq == last_seq


def slots(first: bytes, second: bytes) -> bytes:
    """A mark file's bytes: the second slot a page after the first."""
    return first.ljust(watermark.SLOT_SPACING, b"\0") + second


def test_a_torn_watermark_slot_leaves_the_other_slot_in_force() -> None:
    older = watermark.encode(watermark.Mark(7, 1, 500, 1234))
    newer = watermark.encode(watermark.Mark(9, 1, 700, 5678))
    assert watermark.decode(slots(older, newer)) == (watermark.Mark(9, 1, 700, 5678), 1)
    torn = newer[:20] + bytes(len(newer) - 20)
    assert watermark.decode(slots(older, torn)) == (watermark.Mark(7, 1, 500, 1234), 0)
    assert watermark.decode(torn) is None


def test_a_new_process_writes_first_the_slot_that_does_not_hold_the_newest_mark() -> None:
    """Were it to overwrite the newest mark first, a torn write of it would leave only an
    older one: the check would weaken exactly when a crash had just happened."""
    store = FaultySegmentStore()
    journal = Journal.open(store)
    journal.write_batch([b"one"])
    journal.write_mark()  # slot 1 (the open wrote slot 0)
    newest = bytes(store.mark[watermark.SLOT_SPACING :][: watermark.SLOT_SIZE])
    assert watermark.decode(bytes(store.mark)) == (journal.durable_mark, 1)
    reopened = Journal.open(store)  # writes its first mark at open
    assert bytes(store.mark[watermark.SLOT_SPACING :][: watermark.SLOT_SIZE]) == newest
    found = watermark.decode(bytes(store.mark))
    assert found is not None
    assert (found[1], found[0].seq) == (0, reopened.last_seq)


async def test_the_sequencer_brings_the_watermark_up_to_date_once_writes_stop() -> None:
    """With the journal's clock standing still a sync never finds the watermark due: only
    the sequencer's idle write can bring it to the last record."""
    store = FaultySegmentStore()
    journal = Journal.open(store, clock=lambda: 0.0, mark_every_s=0.01)
    sequencer = Sequencer(Engine(), journal)
    task = asyncio.create_task(sequencer.run())
    await asyncio.gather(*(sequencer.submit(c) for c in mixed_stream(3, 50)))
    deadline = time.monotonic() + WAIT_S
    while (found := watermark.decode(store.read_mark())) is None or (
        found[0].seq < sequencer.last_seq
    ):
        assert time.monotonic() < deadline, f"the watermark stayed at {found}"
        await asyncio.sleep(0.01)
    assert found[0].chain == journal.last_chain
    await sequencer.stop()
    await task


def test_a_new_process_makes_what_an_earlier_one_left_unsynced_durable_before_marking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after creating a segment and before its sync, a process leaves the segment
    and its directory entry in the page cache only. The next process must sync both
    before its watermark vouches for them: its store's first sync also syncs the
    directory, and the open syncs every segment from the watermark's on."""
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", 256)
    first = Journal.open(FileSegmentStore(tmp_path))
    for n in range(6):
        first.write_batch([bytes(200) + bytes([n])])
    marked = first.marked.segment
    first.append([b"never synced"])  # rolls to a new segment, then the process dies
    synced: list[str] = []
    directory_syncs: list[Path] = []
    store = FileSegmentStore(tmp_path)
    real_sync_segments = store.sync_segments

    def spied(names: list[str]) -> None:
        synced.extend(names)
        real_sync_segments(names)

    monkeypatch.setattr(store, "sync_segments", spied)
    monkeypatch.setattr(storage_module, "fsync_directory", directory_syncs.append)

    second = Journal.open(store)

    newest = store.list_segments()[-1]
    assert second.last_seq == 7
    assert synced[-1] == newest
    assert all(int(name.removesuffix(".seg")) >= marked for name in synced)
    assert directory_syncs == [tmp_path]
    found = watermark.decode((tmp_path / MARK_FILE).read_bytes())
    assert found is not None
    assert (found[0].seq, segment_name(found[0].segment)) == (7, newest)


@pytest.mark.parametrize("whole", [0, 1, 3, 4])
def test_a_write_a_crash_tore_goes_whole_and_its_records_are_never_replayed(whole: int) -> None:
    """The crash kept `whole` of the last write's five records whole, then some bytes:
    that write was never synced, so none of it is kept, and recovery's visitor (the
    replay into the engine) never saw a record of it."""
    store = FaultySegmentStore()
    journal = Journal.open(store)
    journal.write_batch([b"before-1", b"before-2"])
    journal.append([f"torn-{n}".encode() for n in range(5)])  # never synced
    records = {r.seq: bytes(r.payload) for r in journal.read_from(1)}
    store.volatile = {
        name: data[: len(data) - sum(20 + len(records[s]) for s in range(3 + whole, 8)) + 9]
        for name, data in store.volatile.items()
    }  # the first `whole` records whole, then 9 bytes of the next
    store.crash("tear", Scripted(10**9))  # keeps what is left of the volatile bytes
    visited: list[int] = []
    reopened = Journal.open(store, visit=lambda seq, _: visited.append(seq))
    assert (reopened.last_seq, visited) == (2, [1, 2])
    assert [bytes(r.payload) for r in reopened.read_from(1)] == [b"before-1", b"before-2"]
