"""Bringing a data directory back to the state it acknowledged, and checking a journal.

Recovery loads the newest snapshot that checks out, then replays every journal record
after it: each command is applied again and must produce exactly the events recorded
with it, or recovery refuses (the build or the journal is not what wrote it).
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from exchange.domain.engine import Engine
from exchange.journal.journal import Journal
from exchange.journal.records import decode_entry
from exchange.journal.snapshots import SnapshotStore
from exchange.journal.storage import FileSegmentStore

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
    data_dir: Path, *, durable: bool = True, use_snapshots: bool = True, repair: bool = True
) -> Recovered:
    """The engine as the data directory acknowledged it, and the journal ready to append.
    With repair=False nothing on disk changes (a torn tail is left and not replayed)."""
    started = time.perf_counter()
    journal_store = FileSegmentStore(data_dir / JOURNAL_DIR, durable=durable)
    journal = Journal.open(journal_store, repair=repair)
    snapshots = SnapshotStore(data_dir / SNAPSHOT_DIR, durable=durable)
    if repair:
        snapshots.discard_after(journal.last_seq)
    loaded = snapshots.load_newest(max_seq=journal.last_seq) if use_snapshots else None
    engine, snapshot_seq = (loaded[0], loaded[1]) if loaded else (Engine(), 0)
    if journal.first_seq > snapshot_seq + 1:
        msg = (
            f"the journal starts at seq {journal.first_seq} but the newest usable snapshot "
            f"is at seq {snapshot_seq}: records {snapshot_seq + 1}..{journal.first_seq - 1} "
            "are gone"
        )
        raise RecoveryError(msg)
    replayed = replay(engine, journal, snapshot_seq + 1)
    recovered = Recovered(
        engine, journal, snapshots, snapshot_seq, replayed, time.perf_counter() - started
    )
    log.info("%s", recovered.summary())
    return recovered


def replay(engine: Engine, journal: Journal, from_seq: int) -> int:
    """Re-apply every record from `from_seq`; returns how many. Refuses a mismatch."""
    count = 0
    apply = engine.apply
    for record in journal.read_from(from_seq):
        entry = decode_entry(record.payload)
        if entry.seq != record.seq:
            msg = f"record {record.seq} in {record.segment} holds entry seq {entry.seq}"
            raise RecoveryError(msg)
        events = apply(entry.command)
        if events != entry.events:
            msg = (
                f"replay of seq {record.seq} ({type(entry.command).__name__}) gave other events "
                f"than the journal holds: recorded {entry.events!r}, replayed {events!r}"
            )
            raise RecoveryError(msg)
        count += 1
        if count % PROGRESS_EVERY == 0:
            log.info("replayed %d records (seq %d)", count, record.seq)
    return count
