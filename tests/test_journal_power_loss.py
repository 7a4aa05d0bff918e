"""Power loss never costs a synced record and never stops the journal from opening.

Hypothesis drives random batches and syncs into the fault-injecting store (with small
segments, so rollovers happen), cuts the power in each of its crash modes, and checks
that the reopened journal holds every synced record unchanged, then a prefix of what
came after, and takes new records. Explicit cases cover a torn header of a brand new
segment and a crash right after a sync, and the bugs these tests found stay pinned at
the end (one on the file store: what its sync really makes durable).
"""

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exchange.journal import journal as journal_module
from exchange.journal import watermark
from exchange.journal.faulty import CrashMode, FaultySegmentStore
from exchange.journal.journal import (
    SEGMENT_HEADER_SIZE,
    Journal,
    segment_name,
)
from exchange.journal.storage import FileSegmentStore

CRASH_MODES: tuple[CrashMode, ...] = get_args(CrashMode)
MAX_PAYLOAD_BYTES = 3_000


def payload_for(seq: int, size: int) -> bytes:
    return random.Random(seq).randbytes(size)


class Scripted(random.Random):
    """A crash whose random choices are given: each answer to randrange(n) in turn (the
    last one repeats), at most n - 1. For "tear" an answer is how many unsynced bytes of
    a segment survive; for "zero_tail" two answers per segment: that, then how many zero
    bytes follow them."""

    def __init__(self, *answers: int) -> None:
        super().__init__(0)
        self.answers = list(answers)

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        assert stop is None, "the store only ever asks for randrange(n)"
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return min(answer, start - 1)


@dataclass
class Writer:
    """A journal on a faulty store, and what was appended to it and synced."""

    store: FaultySegmentStore = field(default_factory=FaultySegmentStore)
    appended: list[bytes] = field(default_factory=list)
    synced_seq: int = 0
    # 0: the durable watermark is written after every sync (the most it can ever claim)
    mark_every_s: float = journal_module.MARK_EVERY_S

    def __post_init__(self) -> None:
        self.journal = self.open()

    def open(self) -> Journal:
        return Journal.open(self.store, mark_every_s=self.mark_every_s)

    def append(self, sizes: list[int]) -> None:
        first = len(self.appended) + 1
        batch = [payload_for(first + i, size) for i, size in enumerate(sizes)]
        self.journal.append(batch)
        self.appended.extend(batch)

    def sync(self) -> None:
        self.journal.sync()
        self.synced_seq = len(self.appended)

    def newest_segment_is_full(self) -> bool:
        names = self.store.list_segments()
        size = len(self.store.read(names[-1])) if names else 0
        return size >= journal_module.SEGMENT_TARGET_BYTES

    def crash_and_reopen(self, mode: CrashMode, rng: random.Random) -> Journal:
        marked = watermark.decode(self.store.read_mark())
        assert marked is not None
        assert marked[0].seq <= self.synced_seq, "the watermark claims a record never synced"
        self.store.crash(mode, rng)  # a crash: the journal is not closed
        self.journal = self.open()  # must not raise, whatever the crash did
        return self.journal


def check_after_crash(writer: Writer) -> None:
    """Every synced record is back unchanged; what follows is a prefix of the rest; the
    journal takes new records and opens again afterwards."""
    journal = writer.journal
    got = [(r.seq, bytes(r.payload)) for r in journal.read_from(1)]
    assert journal.first_seq == 1, (
        f"a hole: the journal starts at seq {journal.first_seq}, last seq {journal.last_seq}, "
        f"segments {writer.store.list_segments()}"
    )
    assert journal.last_seq >= writer.synced_seq, (
        f"synced up to seq {writer.synced_seq}, only {journal.last_seq} survived"
    )
    assert journal.last_seq <= len(writer.appended)
    assert [seq for seq, _ in got] == list(range(1, journal.last_seq + 1))
    for seq, payload in got:
        assert payload == writer.appended[seq - 1], f"seq {seq} came back changed"

    survived = journal.last_seq
    writer.appended[survived:] = []  # what was lost is gone; new records take its seqs
    writer.append([10, 0, 2_000])
    writer.sync()
    journal.close()
    reopened = Journal.open(writer.store)
    assert reopened.truncated_bytes == 0
    assert reopened.last_seq == survived + 3
    assert [bytes(r.payload) for r in reopened.read_from(1)] == writer.appended


# One step: a batch of payload sizes, or None for a sync.
steps = st.lists(
    st.one_of(
        st.none(),
        st.lists(
            st.one_of(st.integers(0, 100), st.integers(0, MAX_PAYLOAD_BYTES)),
            min_size=1,
            max_size=4,
        ),
    ),
    min_size=1,
    max_size=30,
)
segment_targets = st.sampled_from([256, 1_024, 4_096])
crash_settings = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def run_steps(writer: Writer, script: list[list[int] | None], *, sync_before_rollover: bool) -> int:
    """Play the script; returns how many segments were started."""
    for step in script:
        if step is None:
            writer.sync()
            continue
        if sync_before_rollover and writer.newest_segment_is_full():
            writer.sync()
        writer.append(step)
    return len(writer.store.list_segments())


@pytest.mark.parametrize("mode", CRASH_MODES)
@crash_settings
@given(
    script=steps, target=segment_targets, seed=st.integers(0, 2**32 - 1), eager=st.booleans()
)
def test_a_crash_loses_no_synced_record(
    mode: CrashMode, script: list[list[int] | None], target: int, seed: int, eager: bool
) -> None:
    """Random syncs, and a full segment synced before the journal starts the next one, as
    the sequencer's journal thread does (every batch is synced). With `eager` marks the
    watermark names every sync's last record, so a crash right after it must still open."""
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", target):
        writer = Writer(mark_every_s=0.0 if eager else journal_module.MARK_EVERY_S)
        segments = run_steps(writer, script, sync_before_rollover=True)
        unsynced = len(writer.appended) - writer.synced_seq
        new_segment = bool(writer.store.volatile.keys() - writer.store.durable.keys())
        journal = writer.crash_and_reopen(mode, random.Random(seed))
        event(f"segments: {min(segments, 4)}{'+' if segments >= 4 else ''}")
        event(f"unsynced records at the crash: {'some' if unsynced else 'none'}")
        event(f"records lost: {'some' if journal.last_seq < len(writer.appended) else 'none'}")
        event(f"an unsynced new segment at the crash: {new_segment}")
        check_after_crash(writer)


@pytest.mark.parametrize("mode", CRASH_MODES)
@crash_settings
@given(
    script=steps, target=segment_targets, seed=st.integers(0, 2**32 - 1), eager=st.booleans()
)
def test_a_crash_loses_no_synced_record_whatever_the_sync_schedule(
    mode: CrashMode, script: list[list[int] | None], target: int, seed: int, eager: bool
) -> None:
    """The same rule with syncs wherever they fall: the journal syncs a segment before it
    starts the next one, so no schedule can leave an older segment torn."""
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", target):
        writer = Writer(mark_every_s=0.0 if eager else journal_module.MARK_EVERY_S)
        run_steps(writer, script, sync_before_rollover=False)
        writer.crash_and_reopen(mode, random.Random(seed))
        check_after_crash(writer)


@pytest.mark.parametrize("mode", CRASH_MODES)
def test_the_random_scripts_do_roll_segments(mode: CrashMode) -> None:
    """Guards the property tests above: with these sizes several segments are started."""
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", 1_024):
        writer = Writer()
        script: list[list[int] | None] = [[3_000], None, [100, 100], [2_000]] * 3
        segments = run_steps(writer, script, sync_before_rollover=True)
        assert segments >= 6
        writer.crash_and_reopen(mode, random.Random(1))
        check_after_crash(writer)


# --- explicit cases ----------------------------------------------------------------------


def full_synced_segment(writer: Writer) -> None:
    writer.append([600])  # seq 1 fills segment 1 past the 500-byte target
    writer.sync()


@pytest.mark.parametrize("mode", CRASH_MODES)
def test_a_crash_right_after_a_sync_loses_and_cuts_nothing(mode: CrashMode) -> None:
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", 500):
        writer = Writer()
        for sizes in ([600], [0, 10], [3_000], [1, 2, 3]):
            writer.append(sizes)
            writer.sync()
        before = {name: writer.store.read(name) for name in writer.store.list_segments()}
        journal = writer.crash_and_reopen(mode, random.Random(7))
        assert (journal.last_seq, journal.truncated_bytes) == (7, 0)
        assert {name: writer.store.read(name) for name in writer.store.list_segments()} == before
        check_after_crash(writer)


@pytest.mark.parametrize("keep", [1, 12, SEGMENT_HEADER_SIZE - 1])
def test_a_torn_header_of_a_new_segment_is_removed(keep: int) -> None:
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", 500):
        writer = Writer()
        full_synced_segment(writer)
        writer.append([100, 100])  # rolls: segment 2 is new and never synced
        assert writer.store.list_segments() == [segment_name(1), segment_name(2)]

        journal = writer.crash_and_reopen("tear", Scripted(keep))

        assert writer.store.list_segments() == [segment_name(1)]
        assert (journal.last_seq, journal.truncated_bytes) == (1, keep)
        check_after_crash(writer)
        assert writer.store.list_segments() == [segment_name(1), segment_name(2)]


@pytest.mark.parametrize("zeros", [5, SEGMENT_HEADER_SIZE, 100])
def test_a_new_segment_that_reached_the_disk_as_zeros_is_removed(zeros: int) -> None:
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", 500):
        writer = Writer()
        full_synced_segment(writer)
        writer.append([100])
        journal = writer.crash_and_reopen("zero_tail", Scripted(0, zeros))
        assert (journal.truncated_bytes, journal.last_seq) == (zeros, 1)
        assert writer.store.list_segments() == [segment_name(1)]
        check_after_crash(writer)


def test_a_new_segment_with_its_header_but_no_whole_record_keeps_its_header() -> None:
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", 500):
        writer = Writer()
        full_synced_segment(writer)
        writer.append([100])
        journal = writer.crash_and_reopen("tear", Scripted(SEGMENT_HEADER_SIZE + 30))
        assert writer.store.read(segment_name(2))[:4] == b"EXJ1"
        assert len(writer.store.read(segment_name(2))) == SEGMENT_HEADER_SIZE
        assert (journal.last_seq, journal.truncated_bytes) == (1, 30)
        check_after_crash(writer)


def test_a_never_synced_first_segment_may_vanish_entirely() -> None:
    writer = Writer()
    writer.append([5, 5])
    journal = writer.crash_and_reopen("drop", random.Random(0))
    assert writer.store.list_segments() == []
    assert journal.last_seq == 0
    check_after_crash(writer)


# --- bugs these tests found, pinned ---------------------------------------------------


def test_unsynced_records_before_a_rollover_are_a_torn_tail() -> None:
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", 500):
        writer = Writer()
        full_synced_segment(writer)
        writer.append([600])  # seq 2 rolls into segment 2, not synced
        writer.append([600])  # seq 3 rolls into segment 3 while segment 2 is unsynced
        # Segment 2 keeps 300 bytes (seq 2 cut short), segment 3 its header and more.
        writer.crash_and_reopen("tear", Scripted(300))
        check_after_crash(writer)


def test_a_lost_unsynced_segment_leaves_no_hole_before_a_later_one() -> None:
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", 500):
        writer = Writer()
        writer.append([600])  # seq 1 in segment 1, which is never synced
        writer.append([10])  # seq 2 rolls into segment 2
        # Segment 1 loses every byte; segment 2 keeps its header and part of seq 2.
        writer.crash_and_reopen("tear", Scripted(0, SEGMENT_HEADER_SIZE + 5))
        check_after_crash(writer)


def test_records_appended_after_a_torn_segment_was_removed_are_readable_at_once() -> None:
    with mock.patch.object(journal_module, "SEGMENT_TARGET_BYTES", 500):
        writer = Writer()
        full_synced_segment(writer)
        writer.append([100])
        journal = writer.crash_and_reopen("tear", Scripted(10))  # segment 2 removed
        writer.append([100])  # seq 2 again, in a new segment 2
        writer.sync()
        assert [r.seq for r in journal.read_from(1)] == [1, 2]


def test_file_store_sync_makes_bytes_appended_to_an_earlier_segment_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: set[int] = set()  # inodes of the files fsynced

    def spying(real: Callable[[int], None]) -> Callable[[int], None]:
        def call(fd: int) -> None:
            synced.add(os.fstat(fd).st_ino)
            real(fd)

        return call

    monkeypatch.setattr(os, "fsync", spying(os.fsync))
    monkeypatch.setattr(os, "fdatasync", spying(os.fdatasync))
    store = FileSegmentStore(tmp_path)
    store.create("1.seg", b"header 1")
    store.append(b"a record for segment 1, not yet synced")
    store.create("2.seg", b"header 2")
    store.sync()  # "make every byte appended or created so far survive a crash"
    store.close()
    assert (tmp_path / "1.seg").stat().st_ino in synced, "segment 1 was never fsynced"
    assert (tmp_path / "2.seg").stat().st_ino in synced
