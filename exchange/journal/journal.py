"""The journal: sequenced records appended in batches to a segment store, checked on open.

Opening scans every segment and checks each record's length, CRC, sequence number and
chain. A torn tail (a crash during the last write: the newest segment ends in a partial
or damaged record with no intact record after it) is cut off and logged; it was never
acknowledged. A tail is taken for torn only past every point known durable: the durable
watermark (watermark.py) and the newest snapshot's seq (given by recovery); a journal
that ends before either lost acknowledged records. Anything else that is wrong is refused
with JournalCorruptError naming the segment and offset: nothing is ever skipped silently.

A segment starts with a header:

    offset  size  field
    0       4     magic b"EXJ1"
    4       2     version (u16) = 2 (1: written before records carried batch marks; still
                  read, each of its records taken for a batch of its own, never appended to)
    6       2     reserved, 0
    8       8     first_seq: the seq of its first record (u64)
    16      4     prev_chain: the chain value of the record before it (u32)
    20      4     CRC-32 of bytes 0..20

then records (see records.py) with consecutive sequence numbers.
"""

import logging
import struct
import time
import zlib
from collections.abc import Callable, Iterator

import msgspec

from exchange.journal import watermark
from exchange.journal.records import (
    BATCH_END,
    CHAIN_SEED,
    CRC_START,
    LENGTH_MASK,
    MAX_PAYLOAD,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    SEQ_AT,
    chain_after,
    frame,
    record_crc,
)
from exchange.journal.storage import MARK_FILE, SEGMENT_SUFFIX, SegmentStore
from exchange.journal.watermark import NOTHING_DURABLE, Mark

log = logging.getLogger(__name__)

MAGIC = b"EXJ1"
VERSION = 2
UNMARKED_VERSION = 1  # segments whose records carry no batch marks
READABLE_VERSIONS = (UNMARKED_VERSION, VERSION)
SEGMENT_HEADER = struct.Struct("<4sHHQII")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size
_HEADER_COVERED = struct.Struct("<4sHHQI")
_SEQ = struct.Struct("<Q")
# A segment is closed once it passes this size; one batch may carry it past (a batch is
# bounded by the sequencer's MAX_BATCH records).
SEGMENT_TARGET_BYTES = 64 * 1024 * 1024
# How many sequence numbers past a damaged record a scan looks for an intact one, to
# tell damage (intact records follow) from a torn tail (nothing intact follows).
LOOKAHEAD_RECORDS = 64
# The watermark trails the newest sync by at most this long while writes go on (and is
# brought up to date within it once they stop): an extra small fsync a second at most,
# against a window in which a cut of synced records could pass for a torn tail.
MARK_EVERY_S = 1.0


class DurablePoint(msgspec.Struct, frozen=True):
    """A seq known durable from outside the segments, and what says so (for messages)."""

    seq: int
    source: str


class JournalCorruptError(Exception):
    """The journal is damaged somewhere a crash cannot explain; recovery must stop."""

    def __init__(self, segment: str, offset: int, reason: str) -> None:
        super().__init__(f"journal segment {segment} at offset {offset}: {reason}")
        self.segment = segment
        self.offset = offset
        self.reason = reason


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def segment_header(first_seq: int, prev_chain: int, version: int = VERSION) -> bytes:
    covered = _HEADER_COVERED.pack(MAGIC, version, 0, first_seq, prev_chain)
    return covered + struct.pack("<I", zlib.crc32(covered))


Visitor = Callable[[int, memoryview], None]


class Record:
    """A record read back: its sequence number and payload, where it lies, and whether it
    was the last of its write (its durable batch)."""

    __slots__ = ("batch_end", "offset", "payload", "segment", "seq")

    def __init__(
        self, seq: int, payload: memoryview, segment: str, offset: int, batch_end: bool
    ) -> None:
        self.seq = seq
        self.payload = payload
        self.segment = segment
        self.offset = offset
        self.batch_end = batch_end


class Framed(msgspec.Struct, frozen=True):
    """A batch of records framed for one write, and where they leave the journal."""

    data: bytes
    first_seq: int
    last_seq: int
    last_chain: int


class Journal:
    """Append-only access to a checked store. Not thread-safe: one writer at a time."""

    def __init__(
        self,
        store: SegmentStore,
        *,
        repair: bool = True,
        visit: Visitor | None = None,
        visit_from: int = 1,
        durable: DurablePoint | None = None,
        clock: Callable[[], float] = time.monotonic,
        mark_every_s: float = MARK_EVERY_S,
    ) -> None:
        self.store = store
        self.repair = repair
        self._visit = visit
        self._visit_from = visit_from
        self.first_seq = 1  # the seq the oldest remaining segment starts at
        self.last_seq = 0
        self.last_chain = CHAIN_SEED
        self.truncated_bytes = 0  # a torn tail's size: cut when repairing, else left
        self._active_size = 0
        self._active: str | None = None
        self._active_version = VERSION
        self._torn_segment: str | None = None  # left in place when not repairing
        # What must survive: the watermark's record, and `durable` (the newest snapshot).
        self._known_durable = durable or DurablePoint(0, "")
        self._mark_on_disk: Mark | None = None
        # The newest record a sync made durable, and the newest the watermark names.
        self.durable_mark = NOTHING_DURABLE
        self.marked = NOTHING_DURABLE
        self._next_slot = 0  # the watermark slot written next (they take turns)
        self._marked_at = 0.0
        self._clock = clock
        self._mark_every_s = mark_every_s

    @classmethod
    def open(
        cls,
        store: SegmentStore,
        *,
        repair: bool = True,
        visit: Visitor | None = None,
        visit_from: int = 1,
        durable: DurablePoint | None = None,
        clock: Callable[[], float] = time.monotonic,
        mark_every_s: float = MARK_EVERY_S,
    ) -> "Journal":
        """Check every segment, cut a torn tail, and get ready to append after it.
        With repair=False nothing is changed: a torn tail is only measured (for verify).
        `visit(seq, payload)` is called for every sound record from `visit_from` on, as
        the check reaches it: recovery replays in the same pass that reads the disk. An
        exception from it stops the open. `durable` is a seq known durable from outside
        (the newest snapshot's): a journal ending before it, or before the watermark, is
        refused rather than cut. After a repairing open everything kept is synced and the
        watermark names its last record."""
        journal = cls(
            store, repair=repair, visit=visit, visit_from=visit_from, durable=durable,
            clock=clock, mark_every_s=mark_every_s,
        )  # fmt: skip
        journal._scan()
        if repair:
            if journal._active is not None:
                # What an earlier process wrote may sit in the page cache only (its last
                # write, or all of it with --durability none): every segment the
                # watermark does not vouch for is synced before it does.
                mark = journal._mark_on_disk
                since = mark.segment if mark is not None else 0
                store.sync_segments([n for n in store.list_segments() if _first_seq_of(n) >= since])
                journal._now_durable()
            journal.write_mark()
        return journal

    # --- writing --------------------------------------------------------------------------

    def frame(self, payloads: list[bytes]) -> Framed:
        """The records for seqs last_seq+1, ... as the bytes of one write. Changes nothing:
        the sequencer frames on its own thread, so the journal's thread holds the GIL for
        no more than the calls around its write and sync."""
        chain = self.last_chain
        seq = self.last_seq
        parts: list[bytes] = []
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            seq += 1
            record, chain = frame(seq, payload, chain, batch_end=i == last)
            parts.append(record)
        return Framed(b"".join(parts), self.last_seq + 1, seq, chain)

    def append_framed(self, framed: Framed) -> None:
        """Write records framed by `frame` since the last append (not yet durable)."""
        if framed.first_seq != self.last_seq + 1:
            at = self.last_seq
            raise ValueError(f"framed from seq {framed.first_seq}, the journal is at {at}")
        if framed.last_seq == self.last_seq:
            return
        if (
            self._active is None
            or self._active_size >= SEGMENT_TARGET_BYTES
            or self._active_version != VERSION  # marked records never join unmarked ones
        ):
            self._roll()
        self.store.append(framed.data)
        self._active_size += len(framed.data)
        self.last_seq = framed.last_seq
        self.last_chain = framed.last_chain

    def append(self, payloads: list[bytes]) -> None:
        """Frame and write records for seqs last_seq+1, ... in one write (not yet durable)."""
        self.append_framed(self.frame(payloads))

    def sync(self) -> None:
        """Make every record appended so far durable (and the watermark, once due)."""
        self.store.sync()
        self._now_durable()
        if self.mark_due_in() == 0.0:
            self.write_mark()

    def write_framed(self, framed: Framed) -> None:
        """Append and make durable: what the sequencer's worker thread runs per batch."""
        self.append_framed(framed)
        self.sync()

    # --- the durable watermark ------------------------------------------------------------

    def mark_due_in(self) -> float | None:
        """Seconds until the watermark should be written (0.0: now); None when it already
        names the newest durable record."""
        if self.durable_mark.seq <= self.marked.seq:
            return None
        return max(0.0, self._marked_at + self._mark_every_s - self._clock())

    def write_mark(self) -> None:
        """Record in the watermark the newest record a sync made durable. Call it only
        from the thread that writes (it shares the store)."""
        mark = self.durable_mark
        self.store.write_mark(watermark.slot_offset(self._next_slot), watermark.encode(mark))
        self._next_slot += 1
        self.marked = mark
        self._marked_at = self._clock()

    def _now_durable(self) -> None:
        if self._active is not None:
            segment = _first_seq_of(self._active)
            self.durable_mark = Mark(self.last_seq, segment, self._active_size, self.last_chain)

    def write_batch(self, payloads: list[bytes]) -> None:
        """Frame, append and make durable in one call."""
        self.write_framed(self.frame(payloads))

    def _roll(self) -> None:
        if self._active is not None:
            # The closed segment must be durable before a newer one can be: a crash must
            # never leave an older segment torn behind a newer one.
            self.store.sync()
        name = segment_name(self.last_seq + 1)
        header = segment_header(self.last_seq + 1, self.last_chain)
        self.store.create(name, header)
        self._active = name
        self._active_size = len(header)
        self._active_version = VERSION

    # --- reading --------------------------------------------------------------------------

    def read_from(self, seq: int = 1) -> Iterator[Record]:
        """Every record with a sequence number >= seq, in order (already checked on open)."""
        names = self.store.list_segments()
        for i, name in enumerate(names):
            if i + 1 < len(names) and _first_seq_of(names[i + 1]) <= seq:
                continue  # the whole segment lies before `seq`
            if name == self._torn_segment:
                return
            data = self.store.read(name)
            view = memoryview(data)
            offset = SEGMENT_HEADER_SIZE
            unmarked = SEGMENT_HEADER.unpack_from(data)[1] == UNMARKED_VERSION
            # The newest segment is sound up to what was checked and appended since.
            end = self._active_size if name == self._active else len(data)
            while offset + RECORD_HEADER_SIZE <= end:
                _, _, field, record_seq = RECORD_HEADER.unpack_from(data, offset)
                length = field & LENGTH_MASK
                start = offset + RECORD_HEADER_SIZE
                if record_seq >= seq:
                    batch_end = unmarked or field & BATCH_END != 0
                    yield Record(record_seq, view[start : start + length], name, offset, batch_end)
                offset = start + length

    def prune_before(self, seq: int) -> list[str]:
        """Delete segments whose records all have sequence numbers below `seq`."""
        names = self.store.list_segments()
        deleted: list[str] = []
        for i, name in enumerate(names[:-1]):  # the newest segment is never pruned
            if _first_seq_of(names[i + 1]) <= seq:
                self.store.delete(name)
                deleted.append(name)
        if deleted:
            self.first_seq = _first_seq_of(names[len(deleted)])
        return deleted

    def close(self) -> None:
        """Close the store, first bringing the watermark up to date (a clean stop)."""
        try:
            if self.repair and self.mark_due_in() is not None:
                self.write_mark()
        except OSError:  # the journal may have broken: its records stand as they are
            log.exception("journal: could not bring the durable watermark up to date")
        finally:
            self.store.close()

    # --- checking on open -----------------------------------------------------------------

    def _scan(self) -> None:
        names = self.store.list_segments()
        self._read_mark(names)
        expected_seq: int | None = None
        chain = CHAIN_SEED
        for i, name in enumerate(names):
            is_last = i == len(names) - 1
            data = self.store.read(name)
            header = self._check_header(name, data, is_last, expected_seq, chain)
            if header is None:  # a torn, never-acknowledged newest segment
                wanted = _first_seq_of(name) if expected_seq is None else expected_seq
                self._refuse_if_durable(name, 0, wanted, f"segment header torn at seq {wanted}")
                self.truncated_bytes = len(data)
                self._torn_segment = name
                if self.repair:
                    self.store.delete(name)
                    self._torn_segment = None  # gone: a later segment may take its name
                    log.warning("journal: removed torn new segment %s (%d bytes)", name, len(data))
                continue
            first_seq, chain = header
            if expected_seq is None:
                self.first_seq = first_seq
            self._active_version = SEGMENT_HEADER.unpack_from(data)[1]
            expected_seq, chain, size = self._check_records(
                name, data, first_seq, chain, is_last
            )
            self._active, self._active_size = name, size
        self.last_seq = (expected_seq or self.first_seq) - 1
        self.last_chain = chain
        if self.last_seq < self._known_durable.seq:
            where = self._active or (names[-1] if names else MARK_FILE)
            what = f"the journal ends at seq {self.last_seq}"
            self._refuse_if_durable(where, self._active_size, self.last_seq + 1, what)

    def _read_mark(self, names: list[str]) -> None:
        """Take the watermark's seq as known durable (a journal from a build before the
        watermark has none: it is written after this open)."""
        found = watermark.decode(self.store.read_mark())
        if found is None:
            self._mark_on_disk = None
            if names:
                log.warning("journal: no durable watermark (%s) yet; one is written now", MARK_FILE)
            return
        mark, slot = found
        self._mark_on_disk = mark
        self._next_slot = slot + 1  # never overwrite the newest mark first
        self.marked = mark
        if mark.seq >= self._known_durable.seq:  # the same seq: name the journal's own mark
            source = (
                f"the durable watermark ({MARK_FILE}) says seq {mark.seq} was durable, ending "
                f"at offset {mark.end} of {segment_name(mark.segment)}"
            )
            self._known_durable = DurablePoint(mark.seq, source)

    def _refuse_if_durable(self, name: str, offset: int, lost_from: int, what: str) -> None:
        """Refuse a cut that would lose seq `lost_from` on, if that was known durable."""
        known = self._known_durable
        if lost_from <= known.seq:
            msg = (
                f"{what}, but {known.source}: acknowledged records {lost_from}..{known.seq} "
                "are missing, which no torn write explains (nothing was cut)"
            )
            raise JournalCorruptError(name, offset, msg)

    def _check_header(
        self, name: str, data: bytes, is_last: bool, expected_seq: int | None, chain: int
    ) -> tuple[int, int] | None:
        """(first_seq, prev_chain) of a sound header; None for a torn newest segment."""
        problem = _header_damage(data)
        if problem is None:
            _, _, _, first_seq, prev_chain, _ = SEGMENT_HEADER.unpack_from(data)
            problem = _header_mismatch(name, first_seq, prev_chain, expected_seq, chain)
            if problem is None:
                return first_seq, prev_chain
            raise JournalCorruptError(name, 0, problem)  # an intact header that does not fit
        # Only a header a crash could have left (cut short, or its bytes not all written)
        # may be torn; an intact header of another magic or version is refused.
        torn_looking = len(data) < SEGMENT_HEADER_SIZE or "checksum" in problem
        wanted = _first_seq_of(name) if expected_seq is None else expected_seq
        if is_last and torn_looking and _intact_record_after(data, 0, wanted) is None:
            return None
        raise JournalCorruptError(name, 0, problem)

    def _check_records(
        self, name: str, data: bytes, seq: int, chain: int, is_last: bool
    ) -> tuple[int, int, int]:
        """Walk the records; returns (next expected seq, chain, size of the sound part).

        In a segment with batch marks a record is visited only once the last record of
        its write is seen whole: a crash can leave the first records of a write whole and
        the rest torn, and that write, never synced, was never acknowledged. Such a part
        is cut with the torn tail (or refused, if it reaches a known-durable point)."""
        offset = SEGMENT_HEADER_SIZE
        end = len(data)
        view = memoryview(data)
        unpack, crc32 = RECORD_HEADER.unpack_from, zlib.crc32
        mark = self._mark_on_disk
        mark_seq = mark.seq if mark is not None else -1
        marked_batches = self._active_version == VERSION
        # The records of the write being read whose last record has not come yet (at most
        # a write's: the sequencer's MAX_BATCH), and where that write began.
        pending: list[tuple[int, int, int]] = []  # (seq, payload start, payload stop)
        write_began = (offset, seq, chain)
        torn: str | None = None
        while offset < end:  # each turn moves past one record, or stops
            # The fast path checks what _record_problem checks, on the bytes as stored:
            # the CRC covers bytes 8..end of the record, the chain its bytes 0..4.
            if offset + RECORD_HEADER_SIZE <= end:
                crc, record_chain, field, record_seq = unpack(data, offset)
                length = field & LENGTH_MASK
                start = offset + RECORD_HEADER_SIZE
                stop = start + length
                if (
                    record_seq == seq
                    and length <= MAX_PAYLOAD
                    and stop <= end
                    and crc == crc32(view[offset + CRC_START : stop])
                    and record_chain == crc32(view[offset : offset + 4], chain)
                ):
                    if seq == mark_seq and mark is not None and record_chain != mark.chain:
                        msg = f"record {seq} is not the one the durable watermark names"
                        raise JournalCorruptError(name, offset, msg)
                    pending.append((seq, start, stop))
                    chain = record_chain
                    seq += 1
                    offset = stop
                    if not marked_batches or field & BATCH_END:
                        self._visit_all(name, view, pending)
                        write_began = (offset, seq, chain)
                    continue
            torn = _record_problem(data, view, offset, seq, chain) or "unreadable record"
            found = _intact_record_after(data, offset + 1, seq)
            if not is_last:
                raise JournalCorruptError(name, offset, torn)
            if found is not None:
                raise JournalCorruptError(
                    name, offset, f"{torn}, but an intact record follows at offset {found}"
                )
            break
        if pending and not is_last:  # a closed segment ends its writes (they never span)
            self._visit_all(name, view, pending)
        elif pending:
            torn = f"the write of records {write_began[1]}..{seq - 1} was cut short ({torn})"
            offset, seq, chain = write_began
        if torn is not None:
            self._refuse_if_durable(name, offset, seq, f"{torn} at seq {seq}")
            self.truncated_bytes = end - offset
            if self.repair:
                self.store.truncate(name, offset)
                log.warning(
                    "journal: cut a torn tail of %d bytes from %s at offset %d (%s)",
                    end - offset, name, offset, torn,
                )  # fmt: skip
        return seq, chain, offset

    def _visit_all(self, name: str, view: memoryview, records: list[tuple[int, int, int]]) -> None:
        """Hand whole writes' records to the visitor, in order, and forget them."""
        visit, visit_from = self._visit, self._visit_from
        if visit is not None:
            for seq, start, stop in records:
                if seq >= visit_from:
                    try:
                        visit(seq, view[start:stop])
                    except msgspec.DecodeError as undecodable:
                        # Intact bytes that this build cannot read: another format.
                        offset = start - RECORD_HEADER_SIZE
                        msg = f"record {seq} does not decode: {undecodable}"
                        raise JournalCorruptError(name, offset, msg) from None
        records.clear()


def _first_seq_of(name: str) -> int:
    return int(name.removesuffix(SEGMENT_SUFFIX))


def _header_damage(data: bytes) -> str | None:
    """What is wrong with the header's bytes themselves (a crash can tear a new one)."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return f"segment header cut short ({len(data)} bytes)"
    magic, version, _, _, _, crc = SEGMENT_HEADER.unpack_from(data)
    if crc != zlib.crc32(data[: _HEADER_COVERED.size]):
        return f"segment header checksum mismatch (magic {magic!r})"
    if magic != MAGIC:
        return f"bad magic {magic!r}, not a journal segment"
    if version not in READABLE_VERSIONS:
        return f"segment version {version}, this build reads {READABLE_VERSIONS}"
    return None


def _header_mismatch(
    name: str, first_seq: int, prev_chain: int, expected_seq: int | None, chain: int
) -> str | None:
    """How an intact header fails to continue the journal (no crash explains that)."""
    if first_seq != _first_seq_of(name):
        return f"header says first seq {first_seq}, the name says {_first_seq_of(name)}"
    if expected_seq is not None and first_seq != expected_seq:
        return f"sequence gap: segment starts at {first_seq}, expected {expected_seq}"
    if expected_seq is not None and prev_chain != chain:
        return "chain broken between segments"
    return None


def _record_problem(
    data: bytes, view: memoryview, offset: int, seq: int, chain: int
) -> str | None:
    if offset + RECORD_HEADER_SIZE > len(data):
        return f"record header cut short ({len(data) - offset} bytes)"
    crc, record_chain, field, record_seq = RECORD_HEADER.unpack_from(data, offset)
    length = field & LENGTH_MASK
    if length > MAX_PAYLOAD:
        return f"record length {length} past the bound {MAX_PAYLOAD}"
    start = offset + RECORD_HEADER_SIZE
    if start + length > len(data):
        return f"record cut short ({len(data) - start} of {length} payload bytes)"
    if crc != record_crc(field, record_seq, view[start : start + length]):
        return "record checksum mismatch"
    if record_seq != seq:
        return f"sequence {record_seq} where {seq} was expected"
    if record_chain != chain_after(crc, chain):
        return "chain broken: the record does not follow the one before it"
    return None


def _intact_record_after(data: bytes, start: int, seq: int) -> int | None:
    """Offset of an intact record for one of the next few sequence numbers at or after
    `start`, found by looking for their encoded seq field; None when there is none."""
    view = memoryview(data)
    for candidate in range(seq, seq + LOOKAHEAD_RECORDS):
        needle = _SEQ.pack(candidate)
        at = data.find(needle, start + SEQ_AT)
        while at != -1:  # bounded: each find moves forward through the data
            offset = at - SEQ_AT
            if offset + RECORD_HEADER_SIZE > len(data):
                break
            crc, _, field, record_seq = RECORD_HEADER.unpack_from(data, offset)
            length = field & LENGTH_MASK
            payload_start = offset + RECORD_HEADER_SIZE
            if (
                record_seq == candidate
                and length <= MAX_PAYLOAD
                and payload_start + length <= len(data)
                and crc == record_crc(field, record_seq, view[payload_start:][:length])
            ):
                return offset
            at = data.find(needle, at + 1)
    return None
