"""The read side across restarts: its snapshots, and rebuilding it from one plus the journal.

The engine's snapshots hold no history (ended orders, fills, trades, candles, market-data
seqs), and the journal segments they cover are pruned; so the read side keeps snapshots
of its own in `DATA_DIR/read/`. A file `read-<seq>.snap` holds the read state after
record `seq`, taken at the end of a durable batch:

    offset  size  field
    0       4     magic b"EXR1"
    4       4     CRC-32 of bytes 8..24 and the payload
    8       8     seq (u64)
    16      8     payload length (u64)
    24      ...   payload: the ReadSnapshot, MessagePack

written to a temporary file, synced, renamed into place, the directory synced. One is taken
at the first batch end at or after each engine snapshot (so the newest read snapshot is
never older than the oldest engine snapshot kept, whose covered segments alone are pruned),
in a forked child so the loop never stops to export; and one at a clean shutdown.

On start the newest read snapshot that checks out is loaded and every journal record
after it is applied, its batches ended where the journal marks them (records.py), so
the market-data seqs come back as clients were sent them, after a crash too (a segment
of the journal's first version has no marks: each of its records is a batch). Failing
that (no usable snapshot, and the segments before the journal's first record pruned),
the read side starts from the recovered engine's state and says so in the log: history
before the restart is lost.
"""

import hashlib
import logging
import os
import struct
import zlib
from pathlib import Path

import msgspec

from exchange import forked_snapshot
from exchange.domain.engine import Engine
from exchange.domain.events import Event
from exchange.journal.journal import Journal
from exchange.journal.snapshots import seqs_named
from exchange.journal.storage import fsync_directory
from exchange.runtime import gc_paused
from gateway.readstate import ReadSnapshot, ReadState

log = logging.getLogger(__name__)

READ_SNAPSHOT_DIR = "read"
MAGIC = b"EXR1"
HEADER = struct.Struct("<4sIQQ")
_COVERED = struct.Struct("<QQ")
PREFIX = "read-"
SUFFIX = ".snap"
# The newest two are kept: the older is the fallback should the newest be unusable, and
# it is never older than the oldest engine snapshot kept (see the module's docstring).
KEEP_READ_SNAPSHOTS = 2
# Progress is logged every this many replayed records, so a long rebuild is never silent.
PROGRESS_EVERY = 250_000

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ReadSnapshot).decode


class _EventsOf(msgspec.Struct, array_like=True, gc=False):
    """A journal entry with its command left encoded: the read side needs only events."""

    seq: int
    command: msgspec.Raw
    events: list[Event]


_decode_entry = msgspec.msgpack.Decoder(_EventsOf).decode


class ReadSnapshotStore:
    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        self.directory = directory
        self.durable = durable
        directory.mkdir(parents=True, exist_ok=True)

    def seqs(self) -> list[int]:
        """Sequence numbers of the snapshots present, newest first."""
        return seqs_named(self.directory, PREFIX, SUFFIX)

    def path(self, seq: int) -> Path:
        return self.directory / f"{PREFIX}{seq:020d}{SUFFIX}"

    def write(self, snapshot: ReadSnapshot) -> Path:
        """Write atomically and prune the older ones; returns the path."""
        final = self.path(snapshot.seq)
        temporary = final.with_suffix(f".{os.getpid()}.tmp")
        with temporary.open("wb") as f:
            f.writelines(encode_snapshot(snapshot))
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        temporary.replace(final)
        self.prune()
        if self.durable:
            fsync_directory(self.directory)
        return final

    def prune(self) -> None:
        for seq in self.seqs()[KEEP_READ_SNAPSHOTS:]:
            self.path(seq).unlink(missing_ok=True)

    def load_newest(self, max_seq: int) -> ReadState | None:
        """The newest snapshot at or before `max_seq` (the journal's end) that checks out."""
        for seq in self.seqs():
            if seq > max_seq:
                # Its records are gone (a power cut under --durability none): new commands
                # will take those seqs, so it would describe another history. Deleted.
                self.path(seq).unlink()
                log.warning(
                    "read snapshot at seq %d is past the journal's end %d: deleted", seq, max_seq
                )
                continue
            try:
                return self._load(seq)
            except (OSError, ValueError, msgspec.DecodeError) as problem:
                log.error("read snapshot %s unusable, trying an older one: %s", seq, problem)
        return None

    def _load(self, seq: int) -> ReadState:
        return decode_snapshot(self.path(seq).read_bytes(), seq)


def encode_snapshot(snapshot: ReadSnapshot) -> tuple[bytes, bytes]:
    """A read snapshot in the layout of the module's docstring: (header, payload)."""
    payload = _encode(snapshot)
    covered = _COVERED.pack(snapshot.seq, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(covered))
    return HEADER.pack(MAGIC, crc, snapshot.seq, len(payload)), payload


def state_digest(state: ReadState) -> str:
    """SHA-256 of the state's snapshot payload: two read sides with the same digest
    answer every read alike (books, both market-data seqs, orders, fills, candles,
    balances). Exports the whole state: for a stop, or a test, not for the loop's turn."""
    return hashlib.sha256(_encode(state.export())).hexdigest()


def decode_snapshot(data: bytes, seq: int) -> ReadState:
    """The read state a snapshot of record `seq` holds; raises ValueError (damaged, cut
    short, another seq or version) or msgspec.DecodeError."""
    if len(data) < HEADER.size:
        raise ValueError(f"cut short ({len(data)} bytes)")
    magic, crc, header_seq, length = HEADER.unpack_from(data)
    payload = memoryview(data)[HEADER.size :]
    if magic != MAGIC or header_seq != seq or length != len(payload):
        raise ValueError(f"header says {magic!r}, seq {header_seq}, {length} bytes")
    if crc != zlib.crc32(payload, zlib.crc32(_COVERED.pack(header_seq, length))):
        raise ValueError("checksum mismatch")
    snapshot = _decode(payload)
    if snapshot.seq != seq:
        raise ValueError(f"payload of seq {snapshot.seq}")
    return ReadState.restore(snapshot)


def recover_read(store: ReadSnapshotStore, journal: Journal, engine: Engine) -> ReadState:
    """The read side as of the journal's last record: the newest usable read snapshot,
    then every record after it, each its own batch (see the module's docstring)."""
    state = store.load_newest(journal.last_seq)
    if state is None or state.durable_seq + 1 < journal.first_seq:
        if journal.first_seq > 1:
            log.warning(
                "no read snapshot continues the journal (it starts at seq %d): the read "
                "side starts from the engine's state; ended orders, fills, trades, candles "
                "and market-data seqs from before are lost",
                journal.first_seq,
            )
            state = ReadState.from_engine(engine)
            state.durable_seq = journal.last_seq
            return state
        state = ReadState()
    replayed = 0
    open_batch = False
    with gc_paused():  # everything built here lives on
        for record in journal.read_from(state.durable_seq + 1):
            entry = _decode_entry(record.payload)
            state.apply(entry.seq, entry.events)
            open_batch = not record.batch_end
            if record.batch_end:  # as clients were sent it: one update a batch and symbol
                state.end_batch()
            replayed += 1
            if replayed % PROGRESS_EVERY == 0:
                log.info("read side: replayed %d records (seq %d)", replayed, entry.seq)
    if open_batch:  # a crash kept part of a write (never acknowledged): it ends here
        state.end_batch()
    log.info("read side rebuilt to seq %d (%d records replayed)", state.durable_seq, replayed)
    return state


class ReadSnapshots:
    """When the read side's snapshots are taken: at the first batch end at or after each
    engine snapshot's seq (`due`), by a forked child; and at shutdown, in place. A due
    snapshot is never put off for a child still writing an older one: the next engine
    snapshot prunes what the older one covers only."""

    def __init__(self, store: ReadSnapshotStore, *, fork: bool = True) -> None:
        self.store = store
        self.fork = fork and forked_snapshot.available()
        newest = store.seqs()
        self.taken_seq = newest[0] if newest else 0  # the newest one written or started
        self.written_seq = self.taken_seq  # the newest one known written
        # (seq, pid) of the children writing; more than one only if writing one took
        # longer than SNAPSHOT_EVERY records (reaped at each batch end).
        self._children: list[tuple[int, int]] = []

    def maybe_take(self, state: ReadState, due: int) -> None:
        """At a batch end: reap finished children; take a snapshot if one is due."""
        if self._children:
            self._reap(block=False)
        if due <= self.taken_seq or state.durable_seq < due:
            return
        self.taken_seq = seq = state.durable_seq
        if self.fork:
            try:
                pid = forked_snapshot.start_task(
                    lambda: self.store.write(state.export()), f"read snapshot child for seq {seq}"
                )
            except OSError:
                log.exception("could not fork a read snapshot child; writing it here instead")
            else:
                self._children.append((seq, pid))
                return
        self.store.write(state.export())
        self.written_seq = max(self.written_seq, seq)

    def take_now(self, state: ReadState) -> None:
        """At shutdown (nothing applies records any more): wait for the children, then
        write the state unless it is written already."""
        self._reap(block=True)
        if state.durable_seq > self.written_seq:
            self.store.write(state.export())
            self.written_seq = self.taken_seq = state.durable_seq

    def _reap(self, *, block: bool) -> None:
        """Reap the children that have exited (all of them, waiting, with `block`); a
        failed one is logged (the next due snapshot is the next chance)."""
        running = []
        for seq, pid in self._children:  # bounded: one a due snapshot still being written
            try:
                if block:
                    forked_snapshot.finish(pid)
                else:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if not done:
                        running.append((seq, pid))
                        continue
                    if os.waitstatus_to_exitcode(status) != 0:
                        msg = f"read snapshot child {pid} failed"
                        raise forked_snapshot.ChildFailedError(msg)
                self.written_seq = max(self.written_seq, seq)
            except forked_snapshot.ChildFailedError:
                log.exception("read snapshot at seq %d failed", seq)
        self._children = running
