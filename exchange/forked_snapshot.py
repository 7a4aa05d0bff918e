"""Snapshots taken by a forked copy of the process, so the event loop never stops to export.

Exporting the engine's state on the loop stalled every client for as long as the export
took: 0.11 s after 200,000 orders with client order ids, 0.8 s after a million (the
remembered ids grow with the traffic). A fork takes a few milliseconds (page tables, not
memory: the child sees the parent's memory as it was, copy-on-write). The child exports
the state as of the fork, writes the snapshot's pending file (synced, not yet in place)
and exits; the parent, once the snapshot's seq is durable in the journal, waits for the
child and puts the file in place. Fork only between two commands: the state must be
that of one seq.

The child runs no event loop, journal, thread or logging of the parent's: it closes every
descriptor it inherited but stderr, exports, writes its own file, then `os._exit`s (no
atexit, no flush of the parent's buffers). Its memory grows by what the export copies
(about the state's size): budget for it.
"""

import os
import signal
import time
import traceback
from collections.abc import Callable

from exchange.domain.engine import Engine
from exchange.domain.state import export_state
from exchange.journal.snapshots import SnapshotStore

# How long the parent waits for a child before it kills it: far more than the export and
# write of a large state take here (~2 s at a million orders), short enough that a hung
# child cannot stop snapshots (and journal pruning) for good.
CHILD_TIMEOUT_S = 300.0
# How often the parent looks whether the child has exited while it waits.
CHILD_POLL_S = 0.01


class ChildFailedError(Exception):
    """The snapshot child exited with an error, or was killed after CHILD_TIMEOUT_S."""


def available() -> bool:
    return hasattr(os, "fork")


def start(engine: Engine, store: SnapshotStore, seq: int) -> int:
    """Fork a child that writes `store`'s pending snapshot of `engine` at `seq`; returns
    its pid. The child exits 0 once the file is written and synced, 1 on any failure (its
    traceback on stderr). Raises OSError when the OS cannot fork now."""
    return start_task(
        lambda: store.write_pending(seq, export_state(engine), os.getpid()),
        f"snapshot child for seq {seq}",
    )


def start_task(task: Callable[[], object], label: str) -> int:
    """Fork a child that runs `task` on the parent's memory as of the fork and exits 0,
    or 1 on any failure (its traceback on stderr, after `label`); returns its pid. Wait
    for it with `finish`. Raises OSError when the OS cannot fork now."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: measured by its work and exit status
        code = 1
        try:
            _detach_from_parent()
            task()
            code = 0
        except BaseException:  # noqa: BLE001 - the child reports anything, then exits
            os.write(2, f"{label}: {traceback.format_exc()}".encode())
        finally:
            os._exit(code)
    return pid


def _detach_from_parent() -> None:  # pragma: no cover - runs in the child
    # A signal for the parent's group must stop the child, not reach the parent's loop
    # through the wakeup fd the child inherited (only the main thread may change these).
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
    except ValueError:
        pass  # forked from another thread: Python never installed the parent's handlers
    # The child's copies of the parent's sockets and files would keep a connection the
    # parent closes (or the listening port) open until the child exits.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))


def finish(pid: int, timeout: float = CHILD_TIMEOUT_S) -> None:
    """Wait for the child (blocks: call it from a worker thread) and raise
    ChildFailedError unless it wrote its snapshot; past `timeout` it is killed."""
    deadline = time.monotonic() + timeout
    while True:  # bounded by the deadline
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                msg = f"snapshot child {pid} exited with {code}"
                raise ChildFailedError(msg)
            return
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            msg = f"snapshot child {pid} killed after {timeout:.0f} s"
            raise ChildFailedError(msg)
        time.sleep(CHILD_POLL_S)
