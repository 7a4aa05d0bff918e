"""Fault-injecting segment stores, for tests.

FaultySegmentStore is an in-memory store that simulates power loss. It keeps, per
segment, the bytes a sync made durable and the bytes appended since. `crash()` loses the
volatile part as a power cut would: all of it, or a torn prefix of it, or a prefix
followed by zeros where a page made it to disk empty. What a sync made durable is never
lost; that is the promise the journal builds on.

SyncFailsWhen wraps a real store so that every sync fails (EIO, as a failing disk's
fsync does) once a trigger file exists: a real `exchange sequencer` process whose local
fsync fails, when a test arms it (the hidden, test-only `--fail-sync-when PATH`).
"""

import errno
import random
from pathlib import Path
from typing import Literal

from exchange.journal.storage import SegmentStore

CrashMode = Literal["drop", "tear", "zero_tail"]


class FaultySegmentStore:
    def __init__(self) -> None:
        self.durable: dict[str, bytearray] = {}
        self.volatile: dict[str, bytearray] = {}
        self._unsynced_names: set[str] = set()
        self.syncs = 0
        self.mark = bytearray()  # write_mark syncs, so the watermark is always durable

    def list_segments(self) -> list[str]:
        return sorted(self.durable.keys() | self.volatile.keys())

    def read(self, name: str) -> bytes:
        return bytes(self.durable.get(name, b"")) + bytes(self.volatile.get(name, b""))

    def create(self, name: str, header: bytes) -> None:
        assert name not in self.durable, f"segment {name} exists"
        self.volatile[name] = bytearray(header)
        self._unsynced_names.add(name)

    def append(self, data: bytes) -> None:
        names = self.list_segments()
        assert names, "append needs a segment: create one first"
        self.volatile.setdefault(names[-1], bytearray()).extend(data)

    def sync(self) -> None:
        self.syncs += 1
        for name, data in self.volatile.items():
            self.durable.setdefault(name, bytearray()).extend(data)
        self.volatile.clear()
        self._unsynced_names.clear()

    def sync_segments(self, names: list[str]) -> None:
        self.syncs += 1
        for name in names:
            self.durable.setdefault(name, bytearray()).extend(self.volatile.pop(name, b""))
            self._unsynced_names.discard(name)

    def truncate(self, name: str, size: int) -> None:
        whole = bytearray(self.read(name))
        self.durable[name] = whole[:size]
        self.volatile.pop(name, None)

    def delete(self, name: str) -> None:
        self.durable.pop(name, None)
        self.volatile.pop(name, None)

    def read_mark(self) -> bytes:
        return bytes(self.mark)

    def write_mark(self, offset: int, data: bytes) -> None:
        if len(self.mark) < offset + len(data):
            self.mark.extend(bytes(offset + len(data) - len(self.mark)))
        self.mark[offset : offset + len(data)] = data

    def close(self) -> None:
        """Closing writes nothing back: only sync makes bytes durable."""

    def durable_copy(self) -> "FaultySegmentStore":
        """A new store holding only what is durable now: this one after a total loss."""
        copy = FaultySegmentStore()
        copy.durable = {name: bytearray(data) for name, data in self.durable.items()}
        copy.mark = bytearray(self.mark)
        return copy

    def crash(self, mode: CrashMode, rng: random.Random) -> None:
        """Lose what was not synced, the way `mode` says."""
        for name, data in self.volatile.items():
            if name in self._unsynced_names and mode == "drop":
                continue  # the new file's directory entry never reached the disk
            kept = bytearray()
            if mode == "tear" and data:
                kept = data[: rng.randrange(len(data))]
            elif mode == "zero_tail" and data:
                cut = rng.randrange(len(data))
                kept = data[:cut] + bytes(rng.randrange(len(data) - cut + 1))
            if kept or name in self.durable:
                self.durable.setdefault(name, bytearray()).extend(kept)
        self.volatile.clear()
        self._unsynced_names.clear()


class SyncFailsWhen:
    """`store`, except that sync raises OSError(EIO) while `trigger` exists (a stat per
    sync: only ever in tests). What was appended stays appended, as on a real disk whose
    fsync failed: the bytes may be in the page cache, never known durable."""

    def __init__(self, store: SegmentStore, trigger: Path) -> None:
        self.store = store
        self.trigger = trigger

    def _fail_if_armed(self) -> None:
        if self.trigger.exists():
            raise OSError(errno.EIO, f"injected fsync failure ({self.trigger} exists)")

    def list_segments(self) -> list[str]:
        return self.store.list_segments()

    def read(self, name: str) -> bytes:
        return self.store.read(name)

    def create(self, name: str, header: bytes) -> None:
        self.store.create(name, header)

    def append(self, data: bytes) -> None:
        self.store.append(data)

    def sync(self) -> None:
        self._fail_if_armed()
        self.store.sync()

    def sync_segments(self, names: list[str]) -> None:
        self._fail_if_armed()
        self.store.sync_segments(names)

    def truncate(self, name: str, size: int) -> None:
        self.store.truncate(name, size)

    def delete(self, name: str) -> None:
        self.store.delete(name)

    def read_mark(self) -> bytes:
        return self.store.read_mark()

    def write_mark(self, offset: int, data: bytes) -> None:
        self.store.write_mark(offset, data)

    def close(self) -> None:
        self.store.close()
