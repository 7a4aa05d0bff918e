"""One contract suite for every segment store: the journal must behave the same on each.

Each test runs against the file store and the fault-injecting in-memory store, through
`Journal.open`: an empty journal, batches read back after a reopen, `read_from`, segment
rollover with consecutive seqs and an unbroken chain, pruning, and appending after a
reopen. The chain is recomputed here from the layout in records.py's docstring.
"""

import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exchange.journal import journal as journal_module
from exchange.journal.faulty import FaultySegmentStore
from exchange.journal.journal import SEGMENT_HEADER_SIZE, Journal, segment_header, segment_name
from exchange.journal.records import CHAIN_SEED, frame
from exchange.journal.storage import FileSegmentStore, SegmentStore

# Small enough that a few dozen records of up to 120 bytes span several segments.
SMALL_SEGMENT_BYTES = 400
RECORD_HEADER = struct.Struct("<IIIQ")  # crc, chain, length, seq: records.py's diagram
SEGMENT_HEADER = struct.Struct("<4sHHQII")  # magic, version, reserved, first_seq, prev_chain, crc


@dataclass
class Backend:
    """A store, and how to reach the same stored bytes again as a process restart would."""

    name: str
    store: SegmentStore
    reopen: Callable[[], SegmentStore]


@pytest.fixture(params=["file", "faulty"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "file":
        directory = tmp_path / "journal"
        opened: list[FileSegmentStore] = []

        def reopen_file() -> SegmentStore:
            opened.append(FileSegmentStore(directory))
            return opened[-1]

        yield Backend("file", reopen_file(), reopen_file)
        for store in opened:
            store.close()
    else:
        faulty = FaultySegmentStore()
        yield Backend("faulty", faulty, lambda: faulty)


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", SMALL_SEGMENT_BYTES)
    return SMALL_SEGMENT_BYTES


def payload_for(seq: int) -> bytes:
    """A payload of 0..119 bytes that depends on nothing but the seq."""
    rng = random.Random(seq)
    return rng.randbytes(rng.randrange(120))


def batches_of(first_seq: int, sizes: list[int]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    seq = first_seq
    for size in sizes:
        out.append([payload_for(s) for s in range(seq, seq + size)])
        seq += size
    return out


def write(journal: Journal, batches: list[list[bytes]]) -> None:
    for batch in batches:
        journal.append(batch)
        journal.sync()


def read_all(journal: Journal, from_seq: int = 1) -> list[tuple[int, bytes]]:
    return [(record.seq, bytes(record.payload)) for record in journal.read_from(from_seq)]


def expected(first_seq: int, last_seq: int) -> list[tuple[int, bytes]]:
    return [(seq, payload_for(seq)) for seq in range(first_seq, last_seq + 1)]


def reopen(backend: Backend, journal: Journal) -> Journal:
    journal.close()
    return Journal.open(backend.reopen())


@dataclass
class StoredRecord:
    segment: str
    offset: int
    seq: int
    payload: bytes
    batch_end: bool  # the top bit of the length field: the last record of its write


def check_layout(store: SegmentStore) -> list[StoredRecord]:
    """Walk every segment as the docstrings lay it out, recomputing each header CRC, record
    CRC and chain value; fails on the first that disagrees. Returns the records found."""
    records: list[StoredRecord] = []
    chain: int | None = None
    next_seq: int | None = None
    for name in store.list_segments():
        data = store.read(name)
        magic, version, _, first_seq, prev_chain, header_crc = SEGMENT_HEADER.unpack_from(data)
        assert (magic, version) == (b"EXJ1", 2), f"{name}: header {magic!r} v{version}"
        assert header_crc == zlib.crc32(data[:20]), f"{name}: header CRC"
        assert name == segment_name(first_seq), f"{name}: header says first seq {first_seq}"
        if next_seq is not None:
            assert first_seq == next_seq, f"{name} starts at {first_seq}, expected {next_seq}"
            assert prev_chain == chain, f"{name}: prev_chain does not continue the chain"
        chain, seq, offset = prev_chain, first_seq, SEGMENT_HEADER_SIZE
        while offset < len(data):
            crc, record_chain, field, record_seq = RECORD_HEADER.unpack_from(data, offset)
            length, batch_end = field & 0x7FFF_FFFF, bool(field >> 31)
            payload = data[offset + RECORD_HEADER.size : offset + RECORD_HEADER.size + length]
            assert len(payload) == length, f"{name}@{offset}: record runs past the end"
            assert record_seq == seq, f"{name}@{offset}: seq {record_seq}, expected {seq}"
            assert crc == zlib.crc32(payload, zlib.crc32(struct.pack("<IQ", field, seq)))
            chain = zlib.crc32(struct.pack("<I", crc), chain)
            assert record_chain == chain, f"{name}@{offset}: chain value"
            records.append(StoredRecord(name, offset, seq, payload, batch_end))
            seq += 1
            offset += RECORD_HEADER.size + length
        next_seq = seq
    return records


# --- an empty journal --------------------------------------------------------------------


def test_an_empty_journal_has_no_records(backend: Backend) -> None:
    journal = Journal.open(backend.store)
    assert (journal.first_seq, journal.last_seq, journal.truncated_bytes) == (1, 0, 0)
    assert read_all(journal) == []
    assert backend.store.list_segments() == []
    journal = reopen(backend, journal)
    assert journal.last_seq == 0


def test_an_empty_batch_writes_nothing(backend: Backend) -> None:
    journal = Journal.open(backend.store)
    journal.append([])
    journal.sync()
    assert journal.last_seq == 0
    assert backend.store.list_segments() == []


# --- writing and reading back ------------------------------------------------------------


def test_synced_batches_read_back_in_order_after_reopen(backend: Backend) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1, 5, 1, 30, 2]))
    assert journal.last_seq == 39
    assert read_all(journal) == expected(1, 39), "readable before the reopen too"

    journal = reopen(backend, journal)
    assert (journal.first_seq, journal.last_seq, journal.truncated_bytes) == (1, 39, 0)
    assert read_all(journal) == expected(1, 39)
    assert [r.seq for r in check_layout(backend.store)] == list(range(1, 40))


def test_the_last_record_of_each_write_is_marked_as_its_batch_end(backend: Backend) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1, 5, 1, 30, 2]))
    ends = [1, 6, 7, 37, 39]
    assert [r.seq for r in check_layout(backend.store) if r.batch_end] == ends
    assert [r.seq for r in journal.read_from(1) if r.batch_end] == ends
    assert [r.seq for r in reopen(backend, journal).read_from(1) if r.batch_end] == ends


def test_a_first_version_segment_reads_each_record_as_a_batch_and_is_never_appended_to(
    backend: Backend,
) -> None:
    """Journals written before the batch marks: each record was its own batch as far as
    anyone can tell now; new records go to a new segment of the current version."""
    store = backend.store
    store.create(segment_name(1), segment_header(1, CHAIN_SEED, version=1))
    chain = CHAIN_SEED
    for seq in (1, 2, 3):
        record, chain = frame(seq, payload_for(seq), chain)  # no batch mark
        store.append(record)
    store.sync()
    journal = Journal.open(store)
    assert [(r.seq, r.batch_end) for r in journal.read_from(1)] == [(n, True) for n in (1, 2, 3)]
    write(journal, batches_of(4, [2]))
    assert store.list_segments() == [segment_name(1), segment_name(4)]
    assert [(r.seq, r.batch_end) for r in reopen(backend, journal).read_from(4)] == [
        (4, False), (5, True)
    ]  # fmt: skip


def test_framing_changes_nothing_until_the_framed_batch_is_written(backend: Backend) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [3]))
    framed = journal.frame([b"four", b"five"])  # the sequencer's thread frames...
    assert (journal.last_seq, read_all(journal)) == (3, expected(1, 3))
    journal.write_framed(framed)  # ...the journal's thread writes and syncs
    assert journal.last_seq == 5
    with pytest.raises(ValueError, match="framed from seq 4"):
        journal.write_framed(framed)  # stale: written already, never twice
    journal = reopen(backend, journal)
    assert [(r.seq, bytes(r.payload)) for r in journal.read_from(4)] == [
        (4, b"four"),
        (5, b"five"),
    ]


def test_empty_and_large_payloads_round_trip(backend: Backend) -> None:
    payloads = [b"", b"x", bytes(range(256)) * 40, b"", b"\x00" * 1000]
    journal = Journal.open(backend.store)
    journal.append(payloads)
    journal.sync()
    journal = reopen(backend, journal)
    assert [bytes(r.payload) for r in journal.read_from(1)] == payloads


@pytest.mark.parametrize("start", [1, 2, 17, 30, 31])
def test_read_from_starts_at_the_given_seq(
    backend: Backend, small_segments: int, start: int
) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1] * 30))
    assert len(backend.store.list_segments()) > 3, "the case needs several segments"
    journal = reopen(backend, journal)
    assert read_all(journal, start) == expected(start, 30)


def test_read_from_the_first_seq_of_each_segment(backend: Backend, small_segments: int) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1] * 30))
    journal = reopen(backend, journal)
    for name in backend.store.list_segments():
        first = int(name.removesuffix(".seg"))
        records = list(journal.read_from(first))
        assert (records[0].seq, records[0].segment, records[0].offset) == (
            first,
            name,
            SEGMENT_HEADER_SIZE,
        )


def test_read_from_past_the_end_yields_nothing(backend: Backend) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [5]))
    assert read_all(journal, 6) == []
    assert read_all(journal, 1_000) == []


# --- segments ----------------------------------------------------------------------------


def test_rollover_keeps_seqs_consecutive_and_the_chain_unbroken(
    backend: Backend, small_segments: int
) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1, 3, 1, 1, 7, 2, 1, 1, 4, 1, 1, 1, 6]))
    names = backend.store.list_segments()
    assert len(names) >= 4, f"expected several segments, got {names}"

    records = check_layout(backend.store)
    assert [r.seq for r in records] == list(range(1, 31))
    assert [r.payload for r in records] == [payload_for(seq) for seq in range(1, 31)]
    assert {r.segment for r in records} == set(names), "every segment holds records"

    journal = reopen(backend, journal)
    assert journal.last_seq == 30
    assert read_all(journal) == expected(1, 30)


def test_a_segment_closes_only_once_it_reaches_the_target_size(
    backend: Backend, small_segments: int
) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1] * 40))
    names = backend.store.list_segments()
    for name in names[:-1]:
        assert len(backend.store.read(name)) >= small_segments, f"{name} closed early"


def test_one_batch_stays_in_one_segment_even_past_the_target(
    backend: Backend, small_segments: int
) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [50]))
    assert backend.store.list_segments() == [segment_name(1)]
    write(journal, batches_of(51, [1]))
    assert backend.store.list_segments() == [segment_name(1), segment_name(51)]


# --- pruning -----------------------------------------------------------------------------


def test_prune_before_deletes_only_whole_segments_below_the_seq(
    backend: Backend, small_segments: int
) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1] * 40))
    names = backend.store.list_segments()
    firsts = [int(name.removesuffix(".seg")) for name in names]
    assert len(names) >= 5
    prune_at = firsts[3] + 1  # inside the fourth segment: three whole segments lie below

    deleted = journal.prune_before(prune_at)

    assert deleted == names[:3]
    assert backend.store.list_segments() == names[3:]
    assert journal.first_seq == firsts[3]
    assert read_all(journal, journal.first_seq) == expected(firsts[3], 40)
    journal = reopen(backend, journal)
    assert (journal.first_seq, journal.last_seq) == (firsts[3], 40)
    assert read_all(journal, prune_at) == expected(prune_at, 40)


def test_prune_before_a_segments_first_seq_keeps_that_segment(
    backend: Backend, small_segments: int
) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1] * 40))
    names = backend.store.list_segments()
    second_first = int(names[1].removesuffix(".seg"))
    assert journal.prune_before(second_first - 1) == []
    assert journal.prune_before(second_first) == names[:1]
    assert backend.store.list_segments() == names[1:]


def test_prune_never_deletes_the_newest_segment(backend: Backend, small_segments: int) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1] * 40))
    names = backend.store.list_segments()

    deleted = journal.prune_before(10_000)

    assert deleted == names[:-1]
    assert backend.store.list_segments() == names[-1:]
    journal = reopen(backend, journal)
    assert (journal.first_seq, journal.last_seq) == (int(names[-1].removesuffix(".seg")), 40)
    write(journal, batches_of(41, [1] * 5))
    journal = reopen(backend, journal)
    assert read_all(journal, journal.first_seq) == expected(journal.first_seq, 45)


def test_prune_of_a_single_segment_journal_deletes_nothing(backend: Backend) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [10]))
    assert journal.prune_before(1_000) == []
    assert journal.first_seq == 1
    assert read_all(journal) == expected(1, 10)


# --- continuing after a reopen -----------------------------------------------------------


def test_appending_after_a_reopen_continues_the_chain(
    backend: Backend, small_segments: int
) -> None:
    journal = Journal.open(backend.store)
    write(journal, batches_of(1, [1, 2, 3]))
    last = 6
    for sizes in ([1] * 5, [2, 3], [8]):  # three restarts, each appending more
        journal = reopen(backend, journal)
        assert journal.last_seq == last
        write(journal, batches_of(last + 1, sizes))
        last += sum(sizes)

    journal = reopen(backend, journal)
    assert journal.last_seq == last == 24
    assert read_all(journal) == expected(1, 24)
    assert [r.seq for r in check_layout(backend.store)] == list(range(1, 25))


def test_appending_after_a_reopen_fills_the_newest_segment_before_rolling(
    backend: Backend, small_segments: int
) -> None:
    journal = Journal.open(backend.store)
    write(journal, [[b"a" * 10]])
    journal = reopen(backend, journal)
    write(journal, [[b"b" * 10]])
    assert backend.store.list_segments() == [segment_name(1)], "room left: no new segment"
    journal = reopen(backend, journal)
    assert [bytes(r.payload) for r in journal.read_from(1)] == [b"a" * 10, b"b" * 10]
