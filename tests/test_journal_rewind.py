"""Cutting a journal back to a seq (exchange/journal/rewind.py): what a fenced sequencer
does to its tail the stream does not hold. The journal then reopens (watermark and
snapshots agree with its new end), reads back exactly the kept records, and appends after
them with an unbroken chain, wherever the cut falls: inside a segment, at a segment's
first record, or at seq 0."""

from pathlib import Path

import pytest

from exchange.journal import journal as journal_module
from exchange.journal.journal import Journal
from exchange.journal.rewind import RewindError, rewind
from exchange.journal.snapshots import SnapshotStore
from exchange.journal.storage import FileSegmentStore
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR

SMALL_SEGMENT_BYTES = 150  # a segment rolls over every batch or two
BATCHES = [[b"a" * 30, b"b" * 30], [b"c" * 40], [b"d" * 50, b"e" * 50, b"f" * 50], [b"g" * 60]]


def write(directory: Path, batches: list[list[bytes]]) -> None:
    journal = Journal.open(FileSegmentStore(directory))
    for batch in batches:
        journal.write_batch(batch)
    journal.close()


def read(directory: Path) -> list[tuple[int, bytes, bool]]:
    journal = Journal.open(FileSegmentStore(directory))  # refuses a journal left unsound
    records = [(r.seq, bytes(r.payload), r.batch_end) for r in journal.read_from(1)]
    journal.close()
    return records


def payloads(batches: list[list[bytes]]) -> list[bytes]:
    return [p for batch in batches for p in batch]


# (asked to keep, kept): a batch the cut falls inside of goes whole (batches end at 2, 3, 6, 7).
@pytest.mark.parametrize(("keep", "kept"), [(0, 0), (1, 0), (2, 2), (3, 3), (5, 3), (6, 6)])
def test_a_rewound_journal_keeps_exactly_its_prefix_and_appends_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int, kept: int
) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", SMALL_SEGMENT_BYTES)
    directory = tmp_path / JOURNAL_DIR
    write(directory, BATCHES)
    whole = read(directory)
    assert len(whole) == 7
    assert len(FileSegmentStore(directory).list_segments()) > 1
    snapshots = SnapshotStore(tmp_path / SNAPSHOT_DIR)
    done = rewind(FileSegmentStore(directory), snapshots, keep)
    assert (done.kept_seq, done.cut_records) == (kept, 7 - kept)
    assert read(directory) == whole[:kept]
    # Appending goes on from the cut, with the chain of the kept records (checked on open).
    write(directory, [[b"x" * 20, b"y" * 20]])
    after = read(directory)
    assert after[:kept] == whole[:kept]
    assert after[kept:] == [(kept + 1, b"x" * 20, False), (kept + 2, b"y" * 20, True)]


def test_rewinding_past_the_end_changes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / JOURNAL_DIR
    write(directory, BATCHES)
    whole = read(directory)
    done = rewind(FileSegmentStore(directory), SnapshotStore(tmp_path / SNAPSHOT_DIR), 9)
    assert (done.kept_seq, done.cut_records) == (7, 0)
    assert read(directory) == whole


def test_snapshots_past_the_cut_go_with_it(tmp_path: Path) -> None:
    from exchange.domain.engine import Engine
    from exchange.domain.state import export_state

    directory = tmp_path / JOURNAL_DIR
    write(directory, BATCHES)
    snapshots = SnapshotStore(tmp_path / SNAPSHOT_DIR)
    state = export_state(Engine())
    snapshots.write(2, state)
    snapshots.write(6, state)
    rewind(FileSegmentStore(directory), snapshots, 4)
    assert snapshots.seqs() == [2]


def test_a_cut_into_pruned_records_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", SMALL_SEGMENT_BYTES)
    directory = tmp_path / JOURNAL_DIR
    write(directory, BATCHES)
    journal = Journal.open(FileSegmentStore(directory))
    journal.prune_before(6)
    first = journal.first_seq
    journal.close()
    assert first > 1
    with pytest.raises(RewindError, match="pruned"):
        rewind(FileSegmentStore(directory), SnapshotStore(tmp_path / SNAPSHOT_DIR), first - 2)
