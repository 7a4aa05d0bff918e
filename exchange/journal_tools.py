"""`exchange journal verify` and `exchange journal inspect`: read-only looks at a data dir.

Neither changes anything on disk, not even a directory: a torn tail is reported, not cut
(the server cuts it on its next start, as it was never acknowledged).
"""

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import msgspec

from exchange.journal.journal import Journal, JournalCorruptError
from exchange.journal.records import decode_entry
from exchange.journal.storage import FileSegmentStore
from exchange.recovery import JOURNAL_DIR, RecoveryError, recover

# `inspect` prints at most this many records unless told otherwise.
DEFAULT_INSPECT_LIMIT = 1_000


def journal_dir_of(path: Path) -> tuple[Path, Path]:
    """(data dir, journal dir) for a path naming either (a journal dir is named so)."""
    if path.name == JOURNAL_DIR and not (path / JOURNAL_DIR).is_dir():
        return path.parent, path
    return path, path / JOURNAL_DIR


def verify(path: Path, out: TextIO = sys.stdout) -> int:
    """Check every record and replay it; 0 when intact, 1 when damaged or missing."""
    data_dir, journal_dir = journal_dir_of(path)
    if not journal_dir.is_dir():
        print(f"error: no journal in {path} (expected {journal_dir})", file=out)
        return 1
    # Replay everything the journal still holds; a snapshot only where it was pruned.
    try:
        store = FileSegmentStore(journal_dir, durable=False, create=False)
        first_seq = Journal.open(store, repair=False).first_seq
        recovered = recover(data_dir, durable=False, repair=False, use_snapshots=first_seq > 1)
    except (JournalCorruptError, RecoveryError) as problem:
        print(f"damaged: {problem}", file=out)
        return 1
    journal = recovered.journal
    records = journal.last_seq - journal.first_seq + 1
    print(f"records: {records}", file=out)
    print(f"first seq: {journal.first_seq}", file=out)
    print(f"last seq: {journal.last_seq}", file=out)
    print(f"replayed from: {recovered.snapshot_seq + 1}", file=out)
    print(f"state hash: {recovered.engine.state_hash()}", file=out)
    if journal.truncated_bytes:
        print(
            f"torn tail: {journal.truncated_bytes} bytes after the last record, never "
            "acknowledged; the server cuts it on its next start",
            file=out,
        )
    journal.close()
    return 0


def inspect(path: Path, from_seq: int, limit: int, out: TextIO = sys.stdout) -> int:
    """One JSON object a line: seq, command and events of each record from `from_seq`."""
    _, journal_dir = journal_dir_of(path)
    try:
        store = FileSegmentStore(journal_dir, durable=False, create=False)
        journal = Journal.open(store, repair=False)
    except FileNotFoundError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    except JournalCorruptError as problem:
        print(f"damaged: {problem}", file=sys.stderr)
        return 1
    encoder = msgspec.json.Encoder()
    try:
        out.writelines(_entries(journal, from_seq, limit, encoder))
    except msgspec.DecodeError as problem:
        print(f"damaged: a record does not decode: {problem}", file=sys.stderr)
        return 1
    finally:
        journal.close()
    return 0


def _entries(
    journal: Journal, from_seq: int, limit: int, encoder: msgspec.json.Encoder
) -> Iterator[str]:
    for count, record in enumerate(journal.read_from(from_seq)):
        if count >= limit:
            return
        entry = decode_entry(record.payload)
        line = {"seq": entry.seq, "command": entry.command, "events": entry.events}
        yield encoder.encode(line).decode() + "\n"
