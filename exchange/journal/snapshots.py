"""Snapshots of the engine's state: written atomically, checked before they are trusted.

A snapshot file `snapshot-<seq>.snap` holds the state after record `seq`:

    offset  size  field
    0       4     magic b"EXS1"
    4       2     version (u16) = 1
    6       2     reserved, 0
    8       8     seq (u64)
    16      32    SHA-256 of the payload: the engine's state hash at seq
    48      8     payload length (u64)
    56      4     CRC-32 of bytes 0..56 and the payload
    60      ...   payload: the exported EngineState, MessagePack

It is written to a temporary file, fsynced, renamed into place and the directory
fsynced, so a crash leaves either the old set of snapshots or the new one. On load,
one whose checksum, hash or restored state does not match is skipped (and logged) in
favour of an older one, or of a full replay. A snapshot written by an older build (the
fields added since absent from its payload) loads when the restored state equals its
payload as this build encodes it: that is how a data directory moves to a new build.

Retention: the newest KEEP_SNAPSHOTS are kept (the older one is the fallback should the
newest be unusable); journal segments wholly covered by the oldest kept one are pruned.
"""

import hashlib
import logging
import os
import struct
import zlib
from pathlib import Path

from exchange.domain.engine import Engine
from exchange.domain.state import EngineState, decode_state, encode_state, restore_state
from exchange.journal.storage import fsync_directory

log = logging.getLogger(__name__)

MAGIC = b"EXS1"
VERSION = 1
HEADER = struct.Struct("<4sHHQ32sQI")
_COVERED = struct.Struct("<4sHHQ32sQ")
PREFIX = "snapshot-"
SUFFIX = ".snap"
KEEP_SNAPSHOTS = 2


def seqs_named(directory: Path, prefix: str, suffix: str) -> list[int]:
    """The seqs of the files `<prefix><digits><suffix>` in `directory`, newest first (none
    when it does not exist); a name whose middle is not ASCII digits is not one of them."""
    found: list[int] = []
    if not directory.is_dir():
        return found
    for path in directory.glob(f"{prefix}*{suffix}"):
        digits = path.name.removeprefix(prefix).removesuffix(suffix)
        if digits.isascii() and digits.isdigit():
            found.append(int(digits))
    return sorted(found, reverse=True)


class SnapshotStore:
    def __init__(self, directory: Path, *, durable: bool = True, create: bool = True) -> None:
        self.directory = directory
        self.durable = durable
        if create:
            directory.mkdir(parents=True, exist_ok=True)

    def seqs(self) -> list[int]:
        """Sequence numbers of the snapshots present, newest first."""
        return seqs_named(self.directory, PREFIX, SUFFIX)

    def path(self, seq: int) -> Path:
        return self.directory / f"{PREFIX}{seq:020d}{SUFFIX}"

    def write(self, seq: int, state: EngineState) -> Path:
        """Write atomically; returns the path. Runs in a worker thread in the server."""
        self.write_pending(seq, state, os.getpid())
        return self.commit(seq, os.getpid())

    def write_pending(self, seq: int, state: EngineState, writer: int) -> Path:
        """Write the snapshot to a temporary file of its own (named by `writer`, a pid),
        synced but not in place: the server's forked snapshot child does this while
        record `seq` may not be durable yet."""
        payload = encode_state(state)
        digest = hashlib.sha256(payload).digest()
        covered = _COVERED.pack(MAGIC, VERSION, 0, seq, digest, len(payload))
        crc = zlib.crc32(payload, zlib.crc32(covered))
        temporary = self.pending_path(seq, writer)
        with temporary.open("wb") as f:
            f.write(covered + struct.pack("<I", crc))
            f.write(payload)
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        return temporary

    def commit(self, seq: int, writer: int) -> Path:
        """Put `writer`'s pending snapshot in place (once record `seq` is durable)."""
        final = self.path(seq)
        self.pending_path(seq, writer).replace(final)
        self._sync_directory()
        return final

    def pending_path(self, seq: int, writer: int) -> Path:
        """A writer's own temporary file: a writer left over from a crashed run can never
        share it with the next run's (prune deletes every leftover one)."""
        return self.path(seq).with_suffix(f".{writer}.tmp")

    def prune(self) -> int | None:
        """Delete all but the newest KEEP_SNAPSHOTS; returns the oldest kept seq."""
        seqs = self.seqs()
        for seq in seqs[KEEP_SNAPSHOTS:]:
            self.path(seq).unlink()
        for stale in self.directory.glob(f"{PREFIX}*.tmp"):
            stale.unlink()  # a write the process did not finish
        if len(seqs) > KEEP_SNAPSHOTS:
            self._sync_directory()
        kept = seqs[:KEEP_SNAPSHOTS]
        return kept[-1] if kept else None

    def discard_after(self, seq: int) -> list[int]:
        """Delete snapshots past `seq`. Only under `--durability none`, where a snapshot
        promised nothing: a power cut can keep it and lose the journal's records it covers,
        whose seqs new commands will take (with durability, such a journal is refused)."""
        stale = [s for s in self.seqs() if s > seq]
        for s in stale:
            self.path(s).unlink()
            log.warning("snapshot at seq %d is past the journal's end %d: deleted", s, seq)
        if stale:
            self._sync_directory()
        return stale

    def load_newest(self) -> tuple[Engine, int, str] | None:
        """(engine, seq, state hash) from the newest snapshot that checks out, or None.
        A snapshot is never deleted here: one that fails its checks is left for a person
        to look at, and its seq still bounds what the journal must hold (recovery.py)."""
        for seq in self.seqs():
            try:
                engine, state_hash = self._load(seq)
            except (OSError, ValueError, KeyError) as problem:
                log.error("snapshot %s unusable, trying an older one: %s", self.path(seq), problem)
                continue
            return engine, seq, state_hash
        return None

    def _load(self, seq: int) -> tuple[Engine, str]:
        data = self.path(seq).read_bytes()
        if len(data) < HEADER.size:
            raise ValueError(f"cut short ({len(data)} bytes)")
        magic, version, _, header_seq, digest, length, crc = HEADER.unpack_from(data)
        payload = data[HEADER.size :]
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"not a version {VERSION} snapshot ({magic!r}, {version})")
        if header_seq != seq or length != len(payload):
            raise ValueError(f"header says seq {header_seq} and {length} bytes")
        if crc != zlib.crc32(payload, zlib.crc32(data[: _COVERED.size])):
            raise ValueError("checksum mismatch")
        if hashlib.sha256(payload).digest() != digest:
            raise ValueError("state hash does not match the payload")
        state = decode_state(payload)
        engine = restore_state(state)
        restored_hash = engine.state_hash()
        # A snapshot an older build wrote lacks the fields added since (they decode to their
        # defaults, and this build writes them): the restore must then reproduce the payload
        # as this build encodes it, so an upgrade starts from the old build's last snapshot.
        if restored_hash not in {digest.hex(), hashlib.sha256(encode_state(state)).hexdigest()}:
            raise ValueError("the restored engine's state hash differs from the snapshot's")
        return engine, restored_hash

    def _sync_directory(self) -> None:
        if self.durable:
            fsync_directory(self.directory)
