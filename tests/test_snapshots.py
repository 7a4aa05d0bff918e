"""Snapshots restore the exact engine state, and a bad one is never trusted.

SnapshotStore: a written snapshot loads back to the same state hash; a corrupt newest one
is skipped for the older one, all corrupt gives None; pruning keeps the newest two and
removes stale temp files. Recovery of a data directory written by the Sequencer: snapshot
plus replay reaches the same state as a full replay and as the live engine, also when the
newest snapshot is damaged or lies past a torn journal tail.
"""

import asyncio
import hashlib
import itertools
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from exchange.domain.commands import Command
from exchange.domain.engine import Engine
from exchange.domain.state import encode_state, export_state
from exchange.journal import journal as journal_module
from exchange.journal.journal import JournalCorruptError
from exchange.journal.snapshots import KEEP_SNAPSHOTS, SnapshotStore
from exchange.journal.storage import MARK_FILE, FileSegmentStore
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, RecoveryError, recover
from exchange.sequencer import Sequencer
from tests.streams import START_TS, mixed_stream

SEED = 11
# The snapshot header as snapshots.py lays it out: magic, version, reserved, seq, SHA-256
# of the payload, payload length; then a CRC-32 of those bytes and the payload.
COVERED = struct.Struct("<4sHHQ32sQ")
HEADER_BYTES = COVERED.size + 4


def engines_along(seed: int, count: int, at: list[int]) -> dict[int, Engine]:
    """Engines that applied the first n commands of a mixed stream, for each n in `at`."""
    commands = mixed_stream(seed, count)
    out: dict[int, Engine] = {}
    for n in at:
        engine = Engine()
        for command in commands[:n]:
            engine.apply(command)
        out[n] = engine
    return out


# --- damage done to a snapshot file ------------------------------------------------------


def reseal(data: bytes, **fields: int | bytes) -> bytes:
    """The snapshot with header fields changed and its CRC made right again, so only the
    changed field is wrong."""
    names = ("magic", "version", "reserved", "seq", "digest", "length")
    values = dict(zip(names, COVERED.unpack_from(data), strict=True))
    values.update(fields)
    covered = COVERED.pack(*values.values())
    payload = data[HEADER_BYTES:]
    return covered + struct.pack("<I", zlib.crc32(payload, zlib.crc32(covered))) + payload


def flip_payload_byte(data: bytes) -> bytes:
    middle = HEADER_BYTES + (len(data) - HEADER_BYTES) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def truncate_payload(data: bytes) -> bytes:
    return data[:-10]


def cut_inside_header(data: bytes) -> bytes:
    return data[:30]


def empty(data: bytes) -> bytes:
    return b""


def wrong_hash_in_header(data: bytes) -> bytes:
    return reseal(data, digest=hashlib.sha256(b"some other state").digest())


def wrong_seq_in_header(data: bytes) -> bytes:
    return reseal(data, seq=COVERED.unpack_from(data)[3] + 1)


def bad_magic(data: bytes) -> bytes:
    return reseal(data, magic=b"NOPE")


def header_crc_only_damaged(data: bytes) -> bytes:
    return data[:20] + bytes([data[20] ^ 0xFF]) + data[21:]  # a digest byte, CRC not redone


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "a flipped payload byte": flip_payload_byte,
    "a truncated payload": truncate_payload,
    "cut inside the header": cut_inside_header,
    "an empty file": empty,
    "a wrong state hash in the header": wrong_hash_in_header,
    "a wrong seq in the header": wrong_seq_in_header,
    "bad magic": bad_magic,
    "a header failing its checksum": header_crc_only_damaged,
}


def damage(path: Path, how: str) -> None:
    path.write_bytes(DAMAGE[how](path.read_bytes()))


# --- the snapshot store ------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines() -> dict[int, Engine]:
    return engines_along(SEED, 600, [100, 300, 500, 600])


def test_a_written_snapshot_loads_with_the_same_state_hash(
    tmp_path: Path, engines: dict[int, Engine]
) -> None:
    store = SnapshotStore(tmp_path)
    engine = engines[600]
    store.write(600, export_state(engine))

    loaded = store.load_newest()

    assert loaded is not None
    restored, seq, state_hash = loaded
    assert (seq, state_hash) == (600, engine.state_hash())
    assert restored.state_hash() == engine.state_hash()
    assert [p.name for p in tmp_path.iterdir()] == [store.path(600).name], "no temp file left"


def test_the_newest_of_several_snapshots_is_loaded(
    tmp_path: Path, engines: dict[int, Engine]
) -> None:
    store = SnapshotStore(tmp_path)
    for n in (300, 100, 500):
        store.write(n, export_state(engines[n]))
    loaded = store.load_newest()
    assert loaded is not None
    assert loaded[1:] == (500, engines[500].state_hash())


def test_a_restored_engine_continues_like_the_original(
    tmp_path: Path, engines: dict[int, Engine]
) -> None:
    commands = mixed_stream(SEED, 600)
    store = SnapshotStore(tmp_path)
    store.write(300, export_state(engines[300]))
    loaded = store.load_newest()
    assert loaded is not None
    restored = loaded[0]
    for command in commands[300:600]:
        restored.apply(command)
    assert restored.state_hash() == engines[600].state_hash()


# PlaceOrder as the builds before issue 16 encoded it: the tag and 12 fields, up to
# `max_notional` (the fields added since, such as `expire_at`, come after).
PLACE_ORDER_BEFORE_ISSUE_16 = 13


def as_older_build_wrote(value: object) -> tuple[object, int]:
    """The exported state as a build before issue 16 would have encoded it: each remembered
    PlaceOrder whose added fields are all at their defaults without them (a stop's or a gtd
    order's are kept: no older build could write them), and how many were cut."""
    if isinstance(value, list):
        if (
            value
            and value[0] == "PlaceOrder"
            and len(value) > PLACE_ORDER_BEFORE_ISSUE_16
            and not any(value[PLACE_ORDER_BEFORE_ISSUE_16:])  # (a stop or gtd could not be)
        ):
            return value[:PLACE_ORDER_BEFORE_ISSUE_16], 1
        parts = [as_older_build_wrote(v) for v in value]
        return [p for p, _ in parts], sum(n for _, n in parts)
    if isinstance(value, dict):
        fields = {k: as_older_build_wrote(v) for k, v in value.items()}
        return {k: p for k, (p, _) in fields.items()}, sum(n for _, n in fields.values())
    return value, 0


def test_a_snapshot_an_older_build_wrote_loads(tmp_path: Path, engines: dict[int, Engine]) -> None:
    engine = engines[600]
    state, cut = as_older_build_wrote(msgspec.msgpack.decode(encode_state(export_state(engine))))
    assert cut > 0, "the stream remembers client order ids"
    payload = msgspec.msgpack.encode(state)
    digest = hashlib.sha256(payload).digest()
    covered = COVERED.pack(b"EXS1", 1, 0, 600, digest, len(payload))
    crc = struct.pack("<I", zlib.crc32(payload, zlib.crc32(covered)))
    store = SnapshotStore(tmp_path)
    store.path(600).write_bytes(covered + crc + payload)

    loaded = store.load_newest()

    assert loaded is not None, "an upgrade starts from the old build's last snapshot"
    restored, seq, state_hash = loaded
    assert (seq, state_hash) == (600, engine.state_hash())
    assert restored.state_hash() == engine.state_hash()


@pytest.mark.parametrize("how", DAMAGE)
def test_a_corrupt_newest_snapshot_is_skipped_for_the_older_one(
    tmp_path: Path, engines: dict[int, Engine], how: str
) -> None:
    store = SnapshotStore(tmp_path)
    store.write(300, export_state(engines[300]))
    store.write(500, export_state(engines[500]))
    damage(store.path(500), how)

    loaded = store.load_newest()

    assert loaded is not None, f"with {how} in the newest, the older one should load"
    assert loaded[1:] == (300, engines[300].state_hash())
    assert loaded[0].state_hash() == engines[300].state_hash()


@pytest.mark.parametrize("how", DAMAGE)
def test_all_snapshots_corrupt_loads_nothing(
    tmp_path: Path, engines: dict[int, Engine], how: str
) -> None:
    store = SnapshotStore(tmp_path)
    for n in (100, 300):
        store.write(n, export_state(engines[n]))
        damage(store.path(n), how)
    assert store.load_newest() is None


def test_no_snapshot_loads_nothing(tmp_path: Path) -> None:
    assert SnapshotStore(tmp_path).load_newest() is None


def test_prune_keeps_the_newest_two_and_removes_stale_temp_files(
    tmp_path: Path, engines: dict[int, Engine]
) -> None:
    store = SnapshotStore(tmp_path)
    for n in (100, 300, 500, 600):
        store.write(n, export_state(engines[n]))
    stale = store.path(700).with_suffix(".tmp")  # a write that never finished
    stale.write_bytes(b"half a snapshot")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_bytes(b"not ours")

    oldest_kept = store.prune()

    assert KEEP_SNAPSHOTS == 2
    assert oldest_kept == 500
    assert store.seqs() == [600, 500]
    assert not stale.exists()
    assert unrelated.exists(), "only the store's own temp files are removed"
    loaded = store.load_newest()
    assert loaded is not None
    assert loaded[1] == 600


def test_prune_of_two_or_fewer_deletes_nothing(tmp_path: Path, engines: dict[int, Engine]) -> None:
    store = SnapshotStore(tmp_path)
    assert store.prune() is None
    store.write(100, export_state(engines[100]))
    assert store.prune() == 100
    store.write(300, export_state(engines[300]))
    assert store.prune() == 100
    assert store.seqs() == [300, 100]


# --- recovery of a data directory the sequencer wrote ------------------------------------


@dataclass
class Written:
    """A data directory, and the live engine's state hash when its sequencer stopped."""

    data_dir: Path
    live_hash: str
    last_seq: int


async def run_sequencer(
    data_dir: Path,
    commands: list[Command],
    clock: Callable[[], int],
    *,
    with_snapshots: bool,
    snapshot_every: int = 300,
    fork_snapshots: bool = False,
) -> tuple[str, int]:
    """Recover, sequence `commands` to durability, stop; (live state hash, last seq)."""
    recovered = recover(data_dir)
    first_seq = recovered.journal.last_seq + 1
    sequencer = Sequencer(
        recovered.engine,
        recovered.journal,
        recovered.snapshots if with_snapshots else None,
        clock=clock,
        max_batch=64,  # several batches, so snapshots are taken along the way
        snapshot_every=snapshot_every,
        fork_snapshots=fork_snapshots,
    )
    task = asyncio.create_task(sequencer.run())
    futures = [sequencer.submit(command) for command in commands]
    done = await asyncio.gather(*futures)
    assert [d.seq for d in done] == list(range(first_seq, first_seq + len(commands)))
    await sequencer.stop()
    await task
    return sequencer.engine.state_hash(), sequencer.durable_seq


async def write_data_dir(
    data_dir: Path, *, snapshotted: int, unsnapshotted: int, fork_snapshots: bool = False
) -> Written:
    """`snapshotted` commands through a sequencer that takes snapshots (and one as it
    stops), then `unsnapshotted` more through one that takes none: recovery then has a
    snapshot to start from and records to replay after it."""
    commands = mixed_stream(SEED, snapshotted + unsnapshotted)
    split = len(commands) - unsnapshotted
    clock = itertools.count(START_TS, 1_000).__next__
    live_hash, last_seq = await run_sequencer(
        data_dir, commands[:split], clock, with_snapshots=True, fork_snapshots=fork_snapshots
    )
    if unsnapshotted:
        live_hash, last_seq = await run_sequencer(
            data_dir, commands[split:], clock, with_snapshots=False
        )
    return Written(data_dir, live_hash, last_seq)


def recovered_hash(data_dir: Path, *, use_snapshots: bool = True) -> tuple[str, int, int]:
    """(state hash, snapshot seq, records replayed) of a recovery; closes its journal."""
    recovered = recover(data_dir, use_snapshots=use_snapshots)
    try:
        return recovered.engine.state_hash(), recovered.snapshot_seq, recovered.replayed
    finally:
        recovered.journal.close()


def snapshot_store(data_dir: Path) -> SnapshotStore:
    return SnapshotStore(data_dir / SNAPSHOT_DIR)


def journal_segments(data_dir: Path) -> list[str]:
    return FileSegmentStore(data_dir / JOURNAL_DIR).list_segments()


@pytest.mark.parametrize("forked", [False, True], ids=["exported on the loop", "forked"])
async def test_snapshot_plus_replay_reaches_the_state_of_a_full_replay(
    tmp_path: Path, forked: bool
) -> None:
    # Forked: each snapshot is the child's copy of the state at its seq, though the parent
    # went on applying commands while the child exported and wrote it.
    written = await write_data_dir(
        tmp_path, snapshotted=1_500, unsnapshotted=400, fork_snapshots=forked
    )
    snapshots = snapshot_store(tmp_path).seqs()
    assert len(snapshots) == KEEP_SNAPSHOTS, f"expected pruned periodic snapshots: {snapshots}"
    newest = snapshots[0]

    state_hash, snapshot_seq, replayed = recovered_hash(tmp_path)
    full_hash, full_from, full_replayed = recovered_hash(tmp_path, use_snapshots=False)

    assert (snapshot_seq, replayed) == (newest, written.last_seq - newest)
    assert replayed == 400
    assert (full_from, full_replayed) == (0, written.last_seq)
    assert state_hash == full_hash == written.live_hash


async def test_when_the_os_cannot_fork_the_snapshot_is_exported_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from exchange import forked_snapshot

    def cannot_fork(*_: object) -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(forked_snapshot, "start", cannot_fork)
    written = await write_data_dir(tmp_path, snapshotted=1_000, unsnapshotted=0,
                                   fork_snapshots=True)  # fmt: skip
    assert len(snapshot_store(tmp_path).seqs()) == KEEP_SNAPSHOTS
    assert recovered_hash(tmp_path)[0] == written.live_hash


@pytest.mark.parametrize(
    "how", ["a flipped payload byte", "a truncated payload", "a wrong state hash in the header"]
)
async def test_a_corrupt_newest_snapshot_still_recovers_to_the_same_state(
    tmp_path: Path, how: str
) -> None:
    written = await write_data_dir(tmp_path, snapshotted=1_500, unsnapshotted=400)
    newest, older = snapshot_store(tmp_path).seqs()
    damage(snapshot_store(tmp_path).path(newest), how)

    state_hash, snapshot_seq, replayed = recovered_hash(tmp_path)

    assert (snapshot_seq, replayed) == (older, written.last_seq - older)
    assert state_hash == written.live_hash == recovered_hash(tmp_path, use_snapshots=False)[0]


async def test_with_every_snapshot_corrupt_recovery_replays_the_whole_journal(
    tmp_path: Path,
) -> None:
    written = await write_data_dir(tmp_path, snapshotted=800, unsnapshotted=100)
    store = snapshot_store(tmp_path)
    for seq in store.seqs():
        damage(store.path(seq), "a flipped payload byte")
    assert recovered_hash(tmp_path) == (written.live_hash, 0, written.last_seq)


async def test_a_journal_cut_below_the_newest_snapshot_is_refused_and_the_snapshot_kept(
    tmp_path: Path,
) -> None:
    """The snapshot was put in place only after its record was durable: a journal that no
    longer reaches it lost acknowledged records, whatever the cut looks like."""
    written = await write_data_dir(tmp_path, snapshotted=800, unsnapshotted=0)
    store = snapshot_store(tmp_path)
    newest, older = store.seqs()
    assert newest == written.last_seq, "the sequencer snapshots as it stops"
    (tmp_path / JOURNAL_DIR / MARK_FILE).unlink()  # only the snapshot says how far it went
    segment = tmp_path / JOURNAL_DIR / journal_segments(tmp_path)[-1]
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.truncate(size - 5)

    with pytest.raises(JournalCorruptError) as refusal:
        recover(tmp_path)

    assert refusal.value.segment == segment.name
    assert f"snapshot {store.path(newest)} was taken at seq {newest}" in str(refusal.value)
    assert store.seqs() == [newest, older], "no snapshot is deleted"
    assert segment.stat().st_size == size - 5, "nothing is cut"


async def test_the_older_snapshot_covers_every_pruned_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", 8 * 1024)
    written = await write_data_dir(tmp_path, snapshotted=1_500, unsnapshotted=200)
    first_segment = journal_segments(tmp_path)[0]
    assert int(first_segment.removesuffix(".seg")) > 1, "old segments were pruned"
    store = snapshot_store(tmp_path)
    newest, older = store.seqs()

    damage(store.path(newest), "a flipped payload byte")
    state_hash, snapshot_seq, _ = recovered_hash(tmp_path)
    assert (state_hash, snapshot_seq) == (written.live_hash, older)

    damage(store.path(older), "a flipped payload byte")
    with pytest.raises(RecoveryError, match="are gone"):
        recover(tmp_path)
