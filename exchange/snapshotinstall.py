"""Installing a fetched engine snapshot as a sequencer data directory's new start.

A node whose journal ends before the stream's first record (a new node with an empty
disk, or one away while the stream was trimmed past it) cannot catch up from the stream:
it installs an engine snapshot fetched from the cluster's bucket (exchange/enginebucket.py)
instead. The directory then holds that snapshot (exchange/journal/snapshots.py's file, as
fetched) and a journal that begins right after its seq: one empty segment whose first seq
is seq+1, and a watermark naming seq. Recovery loads the snapshot and the journal goes on
from there, as after a snapshot pruned the older segments. Its old journal and snapshots
are gone: they end before the stream's first record, so no record of theirs can be
checked against the stream any more.

A crash at any point leaves a directory a start can use: everything is written and synced
in DATA/fetched.tmp/ and checked (the snapshot loaded as recovery will load it), then
renamed to DATA/fetched/, the commit point; then the old journal and snapshots are
deleted and the fetched ones moved into place (finish_install). A start finishes an
install it finds committed, and deletes an uncommitted one.
"""

import logging
import os
import shutil
from pathlib import Path

from exchange.journal import watermark
from exchange.journal.journal import SEGMENT_HEADER_SIZE, segment_header, segment_name
from exchange.journal.records import CHAIN_SEED
from exchange.journal.snapshots import SnapshotStore
from exchange.journal.storage import FileSegmentStore, fsync_directory
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR

log = logging.getLogger(__name__)

STAGING = "fetched.tmp"
FETCHED = "fetched"


class InstallError(Exception):
    """The fetched snapshot does not check out; nothing in the data directory changed."""


def install(data_dir: Path, seq: int, snapshot: bytes, *, durable: bool = True) -> str:
    """Make `snapshot` (a snapshot file's bytes, the state after record `seq`) the start
    of `data_dir`, replacing its journal and snapshots; returns the state hash. The data
    directory must be claimed, and no journal of it open."""
    stage(data_dir, seq).write_bytes(snapshot)
    return install_staged(data_dir, seq, durable=durable)


def stage(data_dir: Path, seq: int) -> Path:
    """Where the snapshot file of record `seq` is fetched to before `install_staged`
    (the staging directory emptied): a fetch writes it there as its chunks come."""
    staging = data_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    return SnapshotStore(staging / SNAPSHOT_DIR, durable=False).path(seq)


def discard_staged(data_dir: Path) -> None:
    """A fetch that failed: its staging directory goes."""
    shutil.rmtree(data_dir / STAGING, ignore_errors=True)


def install_staged(data_dir: Path, seq: int, *, durable: bool = True) -> str:
    """`install`, of the snapshot file `stage(data_dir, seq)` named, written there."""
    staging = data_dir / STAGING
    snapshots = SnapshotStore(staging / SNAPSHOT_DIR, durable=durable)
    path = snapshots.path(seq)
    if durable:
        with path.open("rb+") as f:
            os.fsync(f.fileno())
    loaded = snapshots.load_newest()  # its checks: CRC-32, state hash, the state restored
    if loaded is None or loaded[1] != seq:
        shutil.rmtree(staging, ignore_errors=True)
        raise InstallError(f"the snapshot at seq {seq} does not check out (logged above)")
    store = FileSegmentStore(staging / JOURNAL_DIR, durable=durable)
    # The records before seq+1 are not here: the chain starts afresh (it guards this
    # journal's own bytes; the stream carries records, not chains).
    store.create(segment_name(seq + 1), segment_header(seq + 1, CHAIN_SEED))
    store.sync()
    mark = watermark.Mark(seq, seq + 1, SEGMENT_HEADER_SIZE, CHAIN_SEED)
    for slot in range(watermark.SLOTS):
        store.write_mark(watermark.slot_offset(slot), watermark.encode(mark))
    store.close()
    if durable:
        for directory in (staging / SNAPSHOT_DIR, staging / JOURNAL_DIR, staging):
            fsync_directory(directory)
    staging.rename(data_dir / FETCHED)
    if durable:
        fsync_directory(data_dir)
    finish_install(data_dir, durable=durable)
    return loaded[2]


def finish_install(data_dir: Path, *, durable: bool = True) -> bool:
    """Put a committed install in place (True if there was one); delete an uncommitted
    one. Safe to run again after a crash in the middle of it."""
    shutil.rmtree(data_dir / STAGING, ignore_errors=True)
    fetched = data_dir / FETCHED
    if not fetched.is_dir():
        return False
    for name in (JOURNAL_DIR, SNAPSHOT_DIR):  # moved only while still in `fetched`
        if (fetched / name).is_dir():
            shutil.rmtree(data_dir / name, ignore_errors=True)
            (fetched / name).rename(data_dir / name)
            if durable:
                fsync_directory(data_dir)
    fetched.rmdir()
    if durable:
        fsync_directory(data_dir)
    log.warning("installed the fetched snapshot in %s (its old journal and snapshots gone)",
                data_dir)  # fmt: skip
    return True
