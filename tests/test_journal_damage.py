"""Damage to journal files on disk gets exactly the documented answer.

A journal of four segments of five records each is written to real files, then bytes
are changed for real. A torn tail (the newest segment ends in a partial or damaged
record with no intact record after it) is cut on open; anything else is refused with
JournalCorruptError naming the segment and offset, and the files are left as they were.
"""

import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from exchange.journal import journal as journal_module
from exchange.journal.journal import (
    SEGMENT_HEADER_SIZE,
    Journal,
    JournalCorruptError,
    segment_name,
)
from exchange.journal.records import RECORD_HEADER_SIZE, frame
from exchange.journal.storage import MARK_FILE, FileSegmentStore

PAYLOAD_BYTES = 100
RECORD_BYTES = RECORD_HEADER_SIZE + PAYLOAD_BYTES
RECORDS_PER_SEGMENT = 5
SEGMENTS = 4
LAST_SEQ = RECORDS_PER_SEGMENT * SEGMENTS
# A segment is closed once it passes this size: after its fifth 120-byte record.
SEGMENT_TARGET_BYTES = SEGMENT_HEADER_SIZE + (RECORDS_PER_SEGMENT - 1) * RECORD_BYTES + 1
MIDDLE, LAST = 1, SEGMENTS - 1  # segment indexes


def payload_for(seq: int) -> bytes:
    return f"record {seq:04d} ".encode().ljust(PAYLOAD_BYTES, b"#")


def record_offset(index: int) -> int:
    """Where the index-th record (from 0) of any segment starts: all records are equal."""
    return SEGMENT_HEADER_SIZE + index * RECORD_BYTES


@dataclass
class Files:
    directory: Path

    def name(self, segment: int) -> str:
        return segment_name(segment * RECORDS_PER_SEGMENT + 1)

    def path(self, segment: int) -> Path:
        return self.directory / self.name(segment)

    def contents(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.directory.iterdir())}

    def flip(self, segment: int, offset: int) -> None:
        data = bytearray(self.path(segment).read_bytes())
        data[offset] ^= 0xFF
        self.path(segment).write_bytes(bytes(data))

    def rewrite_header(self, segment: int, **fields: int | bytes) -> None:
        """Change header fields and seal the header with a correct CRC again, so only the
        field itself is wrong."""
        data = bytearray(self.path(segment).read_bytes())
        layout = struct.Struct("<4sHHQI")
        names = ("magic", "version", "reserved", "first_seq", "prev_chain")
        values = dict(zip(names, layout.unpack_from(data), strict=True))
        values.update(fields)
        covered = layout.pack(*values.values())
        data[: layout.size + 4] = covered + struct.pack("<I", zlib.crc32(covered))
        self.path(segment).write_bytes(bytes(data))

    def open(self) -> Journal:
        return Journal.open(FileSegmentStore(self.directory))

    def refused(self) -> JournalCorruptError:
        """Open, expect a refusal, and check nothing on disk was changed by it."""
        before = self.contents()
        with pytest.raises(JournalCorruptError) as refusal:
            self.open()
        assert self.contents() == before, "a refused journal must be left as it was"
        return refusal.value


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Files:
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", SEGMENT_TARGET_BYTES)
    directory = tmp_path / "journal"
    journal = Journal.open(FileSegmentStore(directory))
    for seq in range(1, LAST_SEQ):
        journal.write_batch([payload_for(seq)])
    journal.close()  # the watermark names seq LAST_SEQ - 1
    # The last write, then a crash: synced, but the watermark was not due (the clock
    # stands still), so a cut inside it may be a torn write.
    journal = Journal.open(FileSegmentStore(directory), clock=lambda: 0.0)
    journal.write_batch([payload_for(LAST_SEQ)])
    journal.store.close()
    built = Files(directory)
    segments = sorted(p.name for p in directory.iterdir() if p.name != MARK_FILE)
    assert segments == [built.name(i) for i in range(SEGMENTS)]
    assert all(built.path(i).stat().st_size == record_offset(5) for i in range(SEGMENTS))
    return built


def check_intact(journal: Journal, last_seq: int) -> None:
    assert journal.last_seq == last_seq
    got = [(r.seq, bytes(r.payload)) for r in journal.read_from(1)]
    assert got == [(seq, payload_for(seq)) for seq in range(1, last_seq + 1)]


def test_the_undamaged_journal_opens_whole(files: Files) -> None:
    journal = files.open()
    assert journal.truncated_bytes == 0
    check_intact(journal, LAST_SEQ)


# --- damage before the end: refused, naming the place ------------------------------------

RECORD_FIELDS = {"crc": 0, "chain": 4, "length": 8, "seq": 12, "payload": 20 + 50}


@pytest.mark.parametrize("field", RECORD_FIELDS)
@pytest.mark.parametrize("segment", [0, MIDDLE])
def test_a_flipped_byte_in_a_record_of_an_older_segment_is_refused_at_that_record(
    files: Files, segment: int, field: str
) -> None:
    damaged = record_offset(2)
    files.flip(segment, damaged + RECORD_FIELDS[field])
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(segment), damaged), str(refusal)


@pytest.mark.parametrize("field", RECORD_FIELDS)
@pytest.mark.parametrize("record", [0, 2, 3])
def test_a_flipped_byte_in_the_last_segment_with_intact_records_after_is_refused_not_cut(
    files: Files, record: int, field: str
) -> None:
    damaged = record_offset(record)
    size = files.path(LAST).stat().st_size
    files.flip(LAST, damaged + RECORD_FIELDS[field])
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(LAST), damaged), str(refusal)
    assert "intact record follows" in refusal.reason
    assert files.path(LAST).stat().st_size == size, "not truncated"


def test_the_refusal_message_names_the_segment_and_offset(files: Files) -> None:
    files.flip(MIDDLE, record_offset(2) + 70)
    message = str(files.refused())
    assert files.name(MIDDLE) in message
    assert f"offset {record_offset(2)}" in message
    assert "checksum" in message


@pytest.mark.parametrize("segment", [0, MIDDLE, LAST])
def test_two_swapped_records_are_refused(files: Files, segment: int) -> None:
    data = bytearray(files.path(segment).read_bytes())
    first, second = record_offset(2), record_offset(3)
    data[first:second], data[second : second + RECORD_BYTES] = (
        data[second : second + RECORD_BYTES],
        data[first:second],
    )
    files.path(segment).write_bytes(bytes(data))
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(segment), first), str(refusal)


def test_a_record_replaced_by_an_intact_one_from_another_history_breaks_the_chain(
    files: Files,
) -> None:
    seq = MIDDLE * RECORDS_PER_SEGMENT + 3
    forged, _ = frame(seq, payload_for(seq).replace(b"#", b"!"), prev_chain=12345)
    data = bytearray(files.path(MIDDLE).read_bytes())
    data[record_offset(2) : record_offset(3)] = forged
    files.path(MIDDLE).write_bytes(bytes(data))
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(MIDDLE), record_offset(2))
    assert "chain" in refusal.reason


def test_a_deleted_middle_segment_is_refused_naming_the_next_one(files: Files) -> None:
    files.path(MIDDLE).unlink()
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(MIDDLE + 1), 0), str(refusal)
    assert "gap" in refusal.reason


def test_a_segment_from_another_journal_breaks_the_chain_between_segments(
    files: Files,
) -> None:
    files.rewrite_header(LAST, prev_chain=12345)
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(LAST), 0), str(refusal)
    assert "chain" in refusal.reason


# How the header is changed, and what the refusal must say.
HEADER_DAMAGE: dict[str, tuple[dict[str, int | bytes], str]] = {
    "bad magic": ({"magic": b"XXXX"}, "bad magic b'XXXX'"),
    "wrong version": ({"version": 3}, "segment version 3"),
}


@pytest.mark.parametrize("damage", HEADER_DAMAGE)
@pytest.mark.parametrize("segment", [0, MIDDLE, LAST])
def test_a_segment_header_with_bad_magic_or_version_is_refused(
    files: Files, segment: int, damage: str
) -> None:
    fields, said = HEADER_DAMAGE[damage]
    files.rewrite_header(segment, **fields)
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(segment), 0), str(refusal)
    assert said in refusal.reason


@pytest.mark.parametrize("segment", [0, MIDDLE, LAST])
def test_a_segment_header_failing_its_checksum_is_refused(files: Files, segment: int) -> None:
    files.flip(segment, 10)  # inside first_seq
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(segment), 0), str(refusal)
    assert "checksum" in refusal.reason


@pytest.mark.parametrize("segment", [MIDDLE, LAST])
def test_a_segment_named_unlike_its_header_is_refused(files: Files, segment: int) -> None:
    renamed = files.directory / segment_name(segment * RECORDS_PER_SEGMENT + 2)
    files.path(segment).rename(renamed)
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (renamed.name, 0), str(refusal)
    assert "the name says" in refusal.reason


# --- a torn tail: cut ----------------------------------------------------------------------


# How many bytes of the last record reached the disk: inside its header, then its payload.
TORN_AT = [1, RECORD_HEADER_SIZE - 1, RECORD_HEADER_SIZE, RECORD_BYTES // 2, RECORD_BYTES - 1]


@pytest.mark.parametrize("kept", TORN_AT)
def test_a_last_record_cut_short_is_truncated_on_open(files: Files, kept: int) -> None:
    path = files.path(LAST)
    whole = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(whole - RECORD_BYTES + kept)

    journal = files.open()

    assert journal.truncated_bytes == kept
    check_intact(journal, LAST_SEQ - 1)
    assert path.stat().st_size == whole - RECORD_BYTES, "the torn record is cut on disk"
    journal.close()
    verified = Journal.open(FileSegmentStore(files.directory), repair=False)
    assert verified.truncated_bytes == 0, "a second look finds nothing to cut"
    check_intact(verified, LAST_SEQ - 1)


def test_verify_measures_a_torn_tail_without_cutting_it(files: Files) -> None:
    path = files.path(LAST)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - RECORD_BYTES // 2)
    before = files.contents()
    journal = Journal.open(FileSegmentStore(files.directory), repair=False)
    assert journal.truncated_bytes == RECORD_BYTES - RECORD_BYTES // 2
    check_intact(journal, LAST_SEQ - 1)
    assert files.contents() == before


def test_appending_after_a_cut_tail_reuses_the_lost_seq(files: Files) -> None:
    path = files.path(LAST)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 7)
    journal = files.open()
    journal.write_batch([payload_for(LAST_SEQ)])
    journal.close()
    check_intact(files.open(), LAST_SEQ)


def test_damage_in_the_very_last_record_is_taken_for_a_torn_write(files: Files) -> None:
    """Nothing intact follows it, so it cannot be told from a crash mid-write: it is cut."""
    files.flip(LAST, record_offset(4) + 70)
    journal = files.open()
    assert journal.truncated_bytes == RECORD_BYTES
    check_intact(journal, LAST_SEQ - 1)


def garbage_random() -> bytes:
    return random.Random(5).randbytes(300)


def garbage_zeros() -> bytes:
    return bytes(4096)


def garbage_half_record() -> bytes:
    record, _ = frame(LAST_SEQ + 1, payload_for(LAST_SEQ + 1), prev_chain=0)
    return record[: RECORD_BYTES // 2]


def garbage_record_with_a_bad_checksum() -> bytes:
    record = bytearray(frame(LAST_SEQ + 1, payload_for(LAST_SEQ + 1), prev_chain=0)[0])
    record[50] ^= 1
    return bytes(record)


GARBAGE = {
    "random bytes": garbage_random,
    "zeros": garbage_zeros,
    "half a record": garbage_half_record,
    "a record with a bad checksum": garbage_record_with_a_bad_checksum,
}


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_after_the_last_record_without_an_intact_record_is_cut(
    files: Files, garbage: str
) -> None:
    path = files.path(LAST)
    whole = path.read_bytes()
    tail = GARBAGE[garbage]()
    path.write_bytes(whole + tail)

    journal = files.open()

    assert journal.truncated_bytes == len(tail)
    assert path.read_bytes() == whole
    check_intact(journal, LAST_SEQ)


def test_garbage_followed_by_an_intact_record_is_refused(files: Files) -> None:
    """The contrast: an intact record after the damage means it is not a torn write."""
    path = files.path(LAST)
    whole = path.read_bytes()
    intact, _ = frame(LAST_SEQ + 1, payload_for(LAST_SEQ + 1), prev_chain=0)
    path.write_bytes(whole + random.Random(5).randbytes(50) + intact)
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(LAST), len(whole)), str(refusal)
    assert f"intact record follows at offset {len(whole) + 50}" in refusal.reason


def test_a_newest_segment_of_another_format_is_refused_not_removed(files: Files) -> None:
    """A whole, checksummed header with another magic is no crash's doing, even when no
    record after it can be read: refuse it rather than delete it as a torn new segment."""
    files.rewrite_header(LAST, magic=b"XXXX")
    path = files.path(LAST)
    path.write_bytes(path.read_bytes()[:SEGMENT_HEADER_SIZE] + b"\x00" * 100)
    refusal = files.refused()
    assert (refusal.segment, refusal.offset) == (files.name(LAST), 0), str(refusal)
    assert path.exists()
