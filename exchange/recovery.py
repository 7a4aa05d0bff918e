"""Bringing a data directory back to the state it acknowledged, and checking a journal.

Recovery loads the newest snapshot that checks out, then replays every journal record
after it: each command is applied again and must produce exactly the events recorded
with it, or recovery refuses (the build or the journal is not what wrote it).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from exchange.domain.commands import Command
from exchange.domain.engine import Engine
from exchange.journal.journal import DurablePoint, Journal
from exchange.journal.records import decode_entry
from exchange.journal.snapshots import SnapshotStore
from exchange.journal.storage import FileSegmentStore
from exchange.runtime import gc_paused

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
SNAPSHOT_DIR = "snapshots"
# Progress is logged every this many replayed records, so a long replay is never silent.
PROGRESS_EVERY = 250_000


class RecoveryError(Exception):
    """The data directory cannot be brought back faithfully; nothing was changed in it."""


@dataclass
class Recovered:
    engine: Engine
    journal: Journal
    snapshots: SnapshotStore
    snapshot_seq: int
    replayed: int
    seconds: float

    def summary(self) -> str:
        rate = self.replayed / self.seconds if self.seconds > 0 else 0.0
        return (
            f"recovered to seq {self.journal.last_seq}: snapshot at seq {self.snapshot_seq}, "
            f"{self.replayed} records replayed in {self.seconds:.2f}s ({rate:,.0f}/s), "
            f"torn tail cut: {self.journal.truncated_bytes} bytes"
        )


def recover(
    data_dir: Path,
    *,
    durable: bool = True,
    use_snapshots: bool = True,
    repair: bool = True,
    clock: Callable[[], float] = time.monotonic,
    snapshots_durable: bool = True,
) -> Recovered:
    """The engine as the data directory acknowledged it, and the journal ready to append.
    With repair=False nothing on disk changes (a torn tail is left and not replayed).

    The journal is checked and replayed in one pass over the disk. Every snapshot was
    put in place only once its record was durable, so the newest snapshot's seq is a
    point the journal must reach: one that ends before it lost acknowledged records, and
    is refused (JournalCorruptError), never cut; the snapshot is never deleted for it.
    Under `--durability none` (`snapshots_durable=False`) nothing was durable: a snapshot
    past the journal's end (a power cut took its records) is deleted and the pass made
    once more from an older one. `clock` paces the journal's durable watermark."""
    started = time.perf_counter()
    # Without repair nothing on disk may change, not even a directory created.
    snapshots = SnapshotStore(data_dir / SNAPSHOT_DIR, durable=durable, create=repair)
    journal_store = FileSegmentStore(data_dir / JOURNAL_DIR, durable=durable, create=repair)
    floor = _newest_snapshot(snapshots) if snapshots_durable else None
    for _ in range(2):  # a second pass only after deleting a snapshot past the end
        loaded = snapshots.load_newest() if use_snapshots else None
        engine, snapshot_seq = (loaded[0], loaded[1]) if loaded else (Engine(), 0)
        replayer = Replayer(engine, snapshot_seq + 1)
        with gc_paused():  # 7% of a replay went to rescanning objects that all live on
            journal = Journal.open(
                journal_store, repair=repair, visit=replayer, visit_from=snapshot_seq + 1,
                durable=floor, clock=clock,
            )  # fmt: skip
        if snapshot_seq <= journal.last_seq:
            break
        journal.store.close()
        if not repair:
            msg = f"snapshot at seq {snapshot_seq} is past the journal's end {journal.last_seq}"
            raise RecoveryError(msg)
        snapshots.discard_after(journal.last_seq)
    if journal.first_seq > snapshot_seq + 1:
        journal.store.close()
        raise RecoveryError(_gap_message(snapshot_seq, journal.first_seq))
    recovered = Recovered(
        engine, journal, snapshots, snapshot_seq, replayer.count, time.perf_counter() - started
    )
    log.info("%s", recovered.summary())
    return recovered


def _newest_snapshot(snapshots: SnapshotStore) -> DurablePoint | None:
    """The newest snapshot's seq, usable or not: its record was durable when it was made."""
    seqs = snapshots.seqs()
    if not seqs:
        return None
    return DurablePoint(seqs[0], f"snapshot {snapshots.path(seqs[0])} was taken at seq {seqs[0]}")


def _gap_message(snapshot_seq: int, first_seq: int) -> str:
    return (
        f"the journal continues at seq {first_seq} but the newest usable snapshot is at seq "
        f"{snapshot_seq}: records {snapshot_seq + 1}..{first_seq - 1} are gone"
    )


class _ReplayEntry(msgspec.Struct, array_like=True, gc=False):
    """A JournalEntry with its events left encoded: replay compares bytes, not structs."""

    seq: int
    command: Command
    events: msgspec.Raw
    origin: str = ""  # ignored: who sent it changes nothing in the state


class Replayer:
    """Applies journal records to an engine as the journal's check reaches them, and
    refuses any record whose replay gives other events than the journal holds."""

    def __init__(self, engine: Engine, first_seq: int) -> None:
        self.engine = engine
        self.next_seq = first_seq
        self.count = 0
        self._apply = engine.apply
        self._decode = msgspec.msgpack.Decoder(_ReplayEntry).decode
        self._encode = msgspec.msgpack.Encoder().encode

    def __call__(self, seq: int, payload: memoryview) -> None:
        if seq != self.next_seq:
            raise RecoveryError(_gap_message(self.next_seq - 1, seq))
        entry = self._decode(payload)
        if entry.seq != seq:
            raise RecoveryError(f"record {seq} holds entry seq {entry.seq}")
        events = self._apply(entry.command)
        # Raw compares with memcmp; a memoryview would compare byte by byte in Python.
        # Only when the bytes differ are the recorded events decoded and compared as
        # values: a record written before an event gained a field (added last, with a
        # default: TradeExecuted's fees) encodes shorter but decodes equal.
        if entry.events != msgspec.Raw(self._encode(events)) and (
            (recorded := decode_entry(payload).events) != events
        ):
            msg = (
                f"replay of seq {seq} ({type(entry.command).__name__}) gave other events "
                f"than the journal holds: recorded {recorded!r}, replayed {events!r}"
            )
            raise RecoveryError(msg)
        self.next_seq = seq + 1
        self.count += 1
        if self.count % PROGRESS_EVERY == 0:
            log.info("replayed %d records (seq %d)", self.count, seq)
