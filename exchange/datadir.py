"""Who may use a data directory: one process at a time, and only if it can write there.

`exchange serve` claims the directory before it recovers anything or opens its port: it
takes an exclusive `flock` on DATA_DIR/lock for the life of the process (the kernel drops
it when the process dies, however it dies) and writes its pid there so a second claimant
can name the holder. Two servers on one journal each believed they were its only writer
and one lost an acknowledged order; the lock makes the second one exit at once instead.
Then every directory the server writes to is probed with a real write and fsync, so a
read-only or full disk is refused before a client is told anything.
"""

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"
_PROBE_PREFIX = ".write-probe-"
# A pid, a newline: anything longer in the lock file is not ours.
_HOLDER_MAX_BYTES = 32


class DataDirError(Exception):
    """The data directory cannot be used by this process; the message says why."""


class DataDirLock:
    """The held lock; released on `release()` or when the process exits."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def claim(data_dir: Path, subdirs: tuple[str, ...] = ()) -> DataDirLock:
    """Lock `data_dir` for this process and check that it and `subdirs` (created if
    missing) take a synced write. Raises DataDirError naming the problem."""
    lock = _lock(data_dir)
    try:
        for directory in (data_dir, *(data_dir / name for name in subdirs)):
            _probe_write(directory)
    except DataDirError:
        lock.release()
        raise
    return lock


def _lock(data_dir: Path) -> DataDirLock:
    path = data_dir / LOCK_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as problem:
        raise DataDirError(_not_writable(data_dir, problem)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise DataDirError(
            f"data directory {data_dir} is in use by process {holder} (it holds {path}); "
            "stop that server first or use another --data-dir"
        ) from None
    except OSError as problem:
        os.close(fd)
        raise DataDirError(f"cannot lock {path}: {problem.strerror}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as problem:
        os.close(fd)
        raise DataDirError(_not_writable(data_dir, problem)) from None
    return DataDirLock(path, fd)


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote, as text ("unknown" if it has not written it yet)."""
    with contextlib.suppress(OSError):
        text = os.pread(fd, _HOLDER_MAX_BYTES, 0).decode("ascii", "replace").strip()
        if text.isascii() and text.isdigit():
            return text
    return "unknown"


def _probe_write(directory: Path) -> None:
    """Create, write, fsync and remove a file in `directory`: what the journal and the
    snapshots will need, tried before anything depends on it."""
    probe = directory / f"{_PROBE_PREFIX}{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as problem:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise DataDirError(_not_writable(directory, problem)) from None


def _not_writable(directory: Path, problem: OSError) -> str:
    return f"data directory {directory} is not writable: {problem.strerror or problem}"
