"""Installing a fetched engine snapshot as a data directory's new start
(exchange/snapshotinstall.py): recovery then stands at the snapshot's seq with its state,
the journal appends from the next seq and reopens; the old journal and snapshots are
gone; a crash at any step leaves a directory that starts (the install finished, or never
begun); a snapshot that does not check out changes nothing."""

import shutil
from pathlib import Path

import pytest

from exchange.domain.engine import Engine
from exchange.domain.state import export_state
from exchange.journal.journal import Journal
from exchange.journal.records import JournalEntry, encode_entry
from exchange.journal.snapshots import SnapshotStore
from exchange.journal.storage import FileSegmentStore
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, recover
from exchange.snapshotinstall import FETCHED, STAGING, InstallError, finish_install, install
from tests.streams import mixed_stream

SEED = 15
SNAPSHOT_SEQ = 120  # the fetched snapshot's record
OLD_RECORDS = 30  # what the node's own journal held: behind the snapshot
AFTER = 40  # records the node journals after the install


def engine_and_payloads(count: int) -> tuple[Engine, list[bytes]]:
    """The engine after the first `count` commands of one stream, and their records."""
    engine = Engine()
    commands = mixed_stream(SEED, SNAPSHOT_SEQ + AFTER)[:count]
    payloads = [
        encode_entry(JournalEntry(seq, command, engine.apply(command)))
        for seq, command in enumerate(commands, start=1)
    ]
    return engine, payloads


def snapshot_bytes(tmp_path: Path, seq: int) -> tuple[bytes, str]:
    engine, _ = engine_and_payloads(seq)
    store = SnapshotStore(tmp_path / "elsewhere")
    return store.write(seq, export_state(engine)).read_bytes(), engine.state_hash()


def old_node(data_dir: Path) -> None:
    """A data dir whose journal ends at OLD_RECORDS, with a snapshot at 20."""
    _engine, payloads = engine_and_payloads(OLD_RECORDS)
    journal = Journal.open(FileSegmentStore(data_dir / JOURNAL_DIR))
    journal.write_batch(payloads[:20])
    SnapshotStore(data_dir / SNAPSHOT_DIR).write(20, export_state(_engine_at(20)))
    journal.write_batch(payloads[20:])
    journal.close()


def _engine_at(count: int) -> Engine:
    return engine_and_payloads(count)[0]


def check_installed(data_dir: Path, state_hash: str) -> None:
    """Recovery stands at the snapshot; records after it append and survive a reopen."""
    recovered = recover(data_dir)
    assert (recovered.snapshot_seq, recovered.journal.last_seq) == (SNAPSHOT_SEQ, SNAPSHOT_SEQ)
    assert recovered.engine.state_hash() == state_hash
    assert recovered.replayed == 0
    engine, payloads = engine_and_payloads(SNAPSHOT_SEQ + AFTER)
    recovered.journal.write_batch(payloads[SNAPSHOT_SEQ : SNAPSHOT_SEQ + 10])
    recovered.journal.write_batch(payloads[SNAPSHOT_SEQ + 10 :])
    recovered.journal.close()
    again = recover(data_dir)
    assert again.journal.last_seq == SNAPSHOT_SEQ + AFTER
    assert again.engine.state_hash() == engine.state_hash()
    assert SnapshotStore(data_dir / SNAPSHOT_DIR).seqs() == [SNAPSHOT_SEQ], "the old ones gone"
    again.journal.close()


def test_an_installed_snapshot_is_the_new_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    old_node(data_dir)
    data, state_hash = snapshot_bytes(tmp_path, SNAPSHOT_SEQ)
    assert install(data_dir, SNAPSHOT_SEQ, data) == state_hash
    assert not (data_dir / FETCHED).exists()
    assert not (data_dir / STAGING).exists()
    check_installed(data_dir, state_hash)


def test_an_empty_data_dir_takes_a_snapshot(tmp_path: Path) -> None:
    data_dir = tmp_path / "new"
    data_dir.mkdir()
    data, state_hash = snapshot_bytes(tmp_path, SNAPSHOT_SEQ)
    install(data_dir, SNAPSHOT_SEQ, data)
    check_installed(data_dir, state_hash)


@pytest.mark.parametrize("moved", [(), (JOURNAL_DIR,), (JOURNAL_DIR, SNAPSHOT_DIR)])
def test_a_crash_after_the_commit_is_finished_on_the_next_start(
    tmp_path: Path, moved: tuple[str, ...]
) -> None:
    """The install committed (fetched/ in place), then a crash with none, one or both of
    its directories moved: finish_install completes it."""
    data_dir = tmp_path / "node"
    old_node(data_dir)
    data, state_hash = snapshot_bytes(tmp_path, SNAPSHOT_SEQ)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    install(scratch, SNAPSHOT_SEQ, data)
    fetched = data_dir / FETCHED
    fetched.mkdir()
    for name in (JOURNAL_DIR, SNAPSHOT_DIR):
        if name in moved:
            shutil.rmtree(data_dir / name)
            shutil.copytree(scratch / name, data_dir / name)
        else:
            shutil.copytree(scratch / name, fetched / name)
    assert finish_install(data_dir)
    assert not fetched.exists()
    check_installed(data_dir, state_hash)


def test_a_crash_before_the_commit_leaves_the_old_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    old_node(data_dir)
    (data_dir / STAGING / SNAPSHOT_DIR).mkdir(parents=True)
    (data_dir / STAGING / SNAPSHOT_DIR / "half-written").write_bytes(b"x")
    assert not finish_install(data_dir)
    assert not (data_dir / STAGING).exists()
    recovered = recover(data_dir)
    assert recovered.journal.last_seq == OLD_RECORDS
    recovered.journal.close()


def test_a_snapshot_that_does_not_check_out_changes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    old_node(data_dir)
    data, _ = snapshot_bytes(tmp_path, SNAPSHOT_SEQ)
    damaged = data[:-1] + bytes([data[-1] ^ 0xFF])
    with pytest.raises(InstallError):
        install(data_dir, SNAPSHOT_SEQ, damaged)
    with pytest.raises(InstallError):
        install(data_dir, SNAPSHOT_SEQ + 1, data)  # another seq than it says
    assert not (data_dir / STAGING).exists()
    recovered = recover(data_dir)
    assert recovered.journal.last_seq == OLD_RECORDS
    recovered.journal.close()
