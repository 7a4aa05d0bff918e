"""The storage contract under the journal, and its file implementation.

A store holds named segments, in name order; bytes are only ever appended to the
newest one. `sync` makes everything appended so far durable; until then a crash may
drop or tear it. The journal needs nothing else, so a replicated or a fault-injecting
store fits behind the same few calls (tests/test_journal_contract.py checks both). Beside
the segments a store keeps the durable watermark's few bytes (exchange.journal.watermark).
"""

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
MARK_FILE = "durable.mark"


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (files created, renamed, deleted) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentStore(Protocol):
    def list_segments(self) -> list[str]:
        """Segment names in order, oldest first."""
        ...

    def read(self, name: str) -> bytes:
        """A segment's bytes as stored (durable or not)."""
        ...

    def create(self, name: str, header: bytes) -> None:
        """Start a new newest segment holding `header`; later appends go to it."""
        ...

    def append(self, data: bytes) -> None:
        """Add bytes to the end of the newest segment."""
        ...

    def sync(self) -> None:
        """Make every byte appended or created so far survive a crash."""
        ...

    def sync_segments(self, names: list[str]) -> None:
        """Make these segments' bytes, and their directory entries, survive a crash
        (whoever wrote them: an earlier process may have left them in the page cache)."""
        ...

    def truncate(self, name: str, size: int) -> None:
        """Cut a segment to `size` bytes, durably (used on a torn tail)."""
        ...

    def delete(self, name: str) -> None:
        """Remove a segment (pruning what a snapshot covers), durably."""
        ...

    def read_mark(self) -> bytes:
        """The watermark's bytes as stored (b"" when none was ever written)."""
        ...

    def write_mark(self, offset: int, data: bytes) -> None:
        """Write the watermark's bytes at `offset` and make them durable (a store that
        does not sync keeps no watermark: it promises nothing durable)."""
        ...

    def close(self) -> None: ...


class FileSegmentStore:
    """Segments as files in one directory. `durable=False` skips fsync (benchmarks)."""

    def __init__(self, directory: Path, *, durable: bool = True, create: bool = True) -> None:
        self.directory = directory
        self.durable = durable
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        elif not directory.is_dir():
            raise FileNotFoundError(f"no journal directory {directory}")
        self._fd: int | None = None
        self._mark_fd: int | None = None
        # An earlier process may have created entries it never synced: the first sync
        # makes the directory durable too.
        self._dir_dirty = True
        # The journal thread syncs while the snapshot thread may delete old segments: a
        # sync must not return while another thread's directory fsync is still running.
        self._dir_lock = threading.Lock()

    def list_segments(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob(f"*{SEGMENT_SUFFIX}"))

    def read(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def create(self, name: str, header: bytes) -> None:
        if self._fd is not None and self.durable:
            os.fdatasync(self._fd)  # sync promises every byte so far, not just the newest file's
        self._close_fd()
        self._fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with self._dir_lock:
            self._dir_dirty = True
        self.append(header)

    def open_last(self) -> None:
        """Continue appending to the newest existing segment."""
        self._close_fd()
        names = self.list_segments()
        if names:
            self._fd = os.open(self.directory / names[-1], os.O_WRONLY | os.O_APPEND)

    def append(self, data: bytes) -> None:
        if self._fd is None:
            self.open_last()
        fd = self._fd
        assert fd is not None, "append needs a segment: create one first"
        view = memoryview(data)
        while view:  # a regular file takes it all at once; bounded by len(data) anyway
            written = os.write(fd, view)
            view = view[written:]

    def sync(self) -> None:
        if not self.durable:
            return
        if self._fd is None:
            # Bytes an earlier process wrote to the newest segment may still be only in
            # the page cache: "everything so far" includes them.
            self.open_last()
        if self._fd is not None:
            os.fdatasync(self._fd)
        self._sync_directory(only_if_dirty=True)

    def sync_segments(self, names: list[str]) -> None:
        if not self.durable:
            return
        for name in names:
            fd = os.open(self.directory / name, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        self._sync_directory()

    def truncate(self, name: str, size: int) -> None:
        path = self.directory / name
        with path.open("r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())
        self._close_fd()

    def delete(self, name: str) -> None:
        (self.directory / name).unlink()
        self._sync_directory()

    def read_mark(self) -> bytes:
        try:
            return (self.directory / MARK_FILE).read_bytes()
        except FileNotFoundError:
            return b""

    def write_mark(self, offset: int, data: bytes) -> None:
        if not self.durable:
            return
        if self._mark_fd is None:
            path = self.directory / MARK_FILE
            created = not path.exists()
            self._mark_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if created:
                with self._dir_lock:
                    self._dir_dirty = True
        os.pwrite(self._mark_fd, data, offset)
        os.fdatasync(self._mark_fd)
        self._sync_directory(only_if_dirty=True)

    def close(self) -> None:
        self._close_fd()
        if self._mark_fd is not None:
            os.close(self._mark_fd)
            self._mark_fd = None

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _sync_directory(self, *, only_if_dirty: bool = False) -> None:
        with self._dir_lock:
            if only_if_dirty and not self._dir_dirty:
                return
            self._dir_dirty = False
            if self.durable:
                fsync_directory(self.directory)
