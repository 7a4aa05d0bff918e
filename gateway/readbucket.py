"""Read snapshots shared by a cluster's gateways, in the JetStream object store bucket
READ_BUCKET: what a gateway started late loads instead of replaying the whole stream.

An object `read-<seq>-<stream seq>` holds the read state after record `seq`, in the
layout gateway/readsnapshots.py owns (magic, CRC-32, seq, MessagePack payload); `stream
seq` is the stream message that ended that record's batch (a message holds a whole
batch, so the two differ). Every gateway takes one at the first batch end at or after
each multiple of `every` records (the same batch end on every gateway: the same name), in
a forked child that writes the bytes to a temporary file, so the loop never stops to
export; the parent then puts the file in the bucket unless it is there already, and
deletes all but the newest KEEP_READ_SNAPSHOTS. Several gateways putting the same one
is harmless: same name, same state.

On start a gateway loads the newest one that checks out (the object store's SHA-256
digest, the snapshot's CRC-32 and version, and the stream message it names ends its
batch at its seq) and follows the stream after that message; failing all, it replays the
stream from its first message. At most MAX_IN_FLIGHT snapshots are written or put at once.
"""

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from exchange import buckets, forked_snapshot
from exchange import natswire as w
from exchange.buckets import READ_BUCKET, Stored, TooBigError, get_file, put_file
from gateway.natsbus import NatsBus
from gateway.readmodel import ReadModel
from gateway.readsnapshots import KEEP_READ_SNAPSHOTS, decode_snapshot, encode_snapshot
from gateway.readstate import ReadSnapshot, ReadState

log = logging.getLogger(__name__)

# Records between two shared snapshots: a gateway started late applies at most about this
# many from the stream (half a second at ~200,000 a second), and each gateway exports its
# state once per this many records (in a child: the loop does not wait for it).
READ_SNAPSHOT_EVERY = 100_000
# A snapshot bigger than this is neither put nor loaded (not one of ours, or a read side
# past what a gateway should load: its bytes are read once to be checked and decoded):
# the stream is replayed instead.
MAX_SNAPSHOT_BYTES = 1024**3
# One get or put of a snapshot, or a look at the bucket, at most: a get whose chunks a
# prune purged meanwhile would otherwise wait for them for ever.
TRANSFER_TIMEOUT_S = 60.0
# How often the loop looks whether the snapshot child has exited: a child takes from a
# tenth of a second to a few; finding out 50 ms late costs nothing.
CHILD_POLL_S = 0.05
# Snapshots being written (each by a child holding a copy-on-write view of the state) or
# put, at most; a due one past it is skipped (logged). Two: one is put while the next is
# written, so a burst (a stream refilled from a journal) skips none of its first two.
MAX_IN_FLIGHT = 2


async def open_bucket(js: JetStreamContext) -> ObjectStore:
    """The bucket (made if missing, with as many replicas as the stream has)."""
    return await buckets.open_bucket(js, READ_BUCKET)


async def stored(obs: ObjectStore, stream: str | None = None) -> list[Stored]:
    """The snapshots in the bucket, newest first (other objects are ignored); with
    `stream` (buckets.stream_id), only that stream's."""
    return await buckets.read_snapshots(obs, stream)


async def load_newest(js: JetStreamContext, obs: ObjectStore) -> tuple[ReadState, int] | None:
    """The newest snapshot in the bucket that checks out, as (read state, the stream
    message it follows); None (logged) when there is none."""
    try:
        async with asyncio.timeout(TRANSFER_TIMEOUT_S):
            # Only this stream's: one left from a stream since made again is passed over.
            present = await stored(obs, buckets.stream_id(await js.stream_info(w.STREAM)))
    except (nats.errors.Error, TimeoutError) as problem:
        log.error("cannot list the read snapshots in %s: %r", READ_BUCKET, problem)
        present = []
    for snapshot in present:  # bounded: the bucket keeps KEEP_READ_SNAPSHOTS
        try:
            async with asyncio.timeout(TRANSFER_TIMEOUT_S):
                state = await _load(js, obs, snapshot)
        except (
            ValueError, msgspec.DecodeError, w.VersionError, nats.errors.Error, TimeoutError,
            TooBigError, OSError,
        ) as problem:  # fmt: skip
            log.error("read snapshot %s unusable, trying an older one: %r", snapshot.name, problem)
            continue
        log.info(
            "read side loaded from snapshot %s (seq %d, stream message %d)",
            snapshot.name, snapshot.seq, snapshot.stream_seq,
        )  # fmt: skip
        return state, snapshot.stream_seq
    log.info("no usable read snapshot in %s: replaying the stream from its first message",
             READ_BUCKET)  # fmt: skip
    return None


async def _load(js: JetStreamContext, obs: ObjectStore, snapshot: Stored) -> ReadState:
    # Fetched into a file as its chunks come, then read once to be checked and decoded
    # (a fetch into memory held it two or three times over).
    with tempfile.TemporaryDirectory(prefix="exchange-read-fetch-") as directory:
        path = Path(directory) / snapshot.name
        await get_file(js, obs, snapshot.name, path, MAX_SNAPSHOT_BYTES)  # checks the SHA-256
        data = await asyncio.to_thread(path.read_bytes)
    state = decode_snapshot(data, snapshot.seq)
    del data
    # It must continue this stream: the message it names ends the batch of its seq.
    message = await js.get_msg(w.STREAM, snapshot.stream_seq)
    batch = w.decode_batch(message.data or b"")
    last = batch.first_seq + len(batch.records) - 1
    if not batch.batch_end or last != snapshot.seq:
        raise ValueError(f"stream message {snapshot.stream_seq} ends at seq {last}, not here")
    return state


class SharedSnapshots:
    """This gateway's part in keeping the bucket's snapshots (see the module's docstring).
    Made once the gateway caught up with the stream; `after_batch` at each batch end (a
    ReadModel after-batch hook); `close` at the end."""

    def __init__(
        self, obs: ObjectStore, read: ReadModel, bus: NatsBus, newest: int, every: int
    ) -> None:
        self.obs = obs
        self.read = read
        self.bus = bus
        self.every = every
        seq = read.durable_seq
        # A bucket far behind (empty, or its snapshots unusable) gets one at the next batch
        # end; else at the first batch end past the next multiple of `every`.
        self.next_due = seq if seq >= newest + every else (seq // every + 1) * every
        self._directory = Path(tempfile.mkdtemp(prefix="exchange-read-snapshots-"))
        self._tasks: set[asyncio.Task[None]] = set()  # <= MAX_IN_FLIGHT
        self._putting = asyncio.Lock()  # one put at a time, in the order taken

    def after_batch(self) -> None:
        state = self.read.state
        if state.durable_seq < self.next_due:
            return
        taken = Stored(state.durable_seq, self.bus.stream_seq)
        self.next_due = (taken.seq // self.every + 1) * self.every
        if len(self._tasks) >= MAX_IN_FLIGHT:
            log.warning("read snapshot at seq %d skipped: %d not put yet", taken.seq, MAX_IN_FLIGHT)
            return
        path = self._directory / f"{taken.name}.tmp"
        pid = 0
        if forked_snapshot.available():
            try:
                pid = forked_snapshot.start_task(
                    lambda: _write(path, state.export()), f"read snapshot child for {taken.name}"
                )
            except OSError as problem:
                log.error("read snapshot at seq %d skipped: cannot fork: %r", taken.seq, problem)
                return
        else:  # no fork here: written on the loop (it stalls for the export)
            _write(path, state.export())
        task = asyncio.get_running_loop().create_task(
            self._finish(taken, pid, path), name=f"put {taken.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, taken: Stored, pid: int, path: Path) -> None:
        try:
            if pid:
                await _wait_for_child(pid)
            async with asyncio.timeout(TRANSFER_TIMEOUT_S):
                info = await self.bus.js.stream_info(w.STREAM)
            taken = dataclasses.replace(taken, stream=buckets.stream_id(info))
            async with self._putting:
                self.obs, _ = await put_reopening(self.bus.js, self.obs, taken, path)
        except (
            forked_snapshot.ChildFailedError, OSError, nats.errors.Error, TimeoutError,
            TooBigError,
        ) as e:  # fmt: skip
            log.error("read snapshot %s not put: %r", taken.name, e)
        finally:
            path.unlink(missing_ok=True)

    async def close(self) -> None:
        """Stop the snapshots being written or put (their children killed); clean up."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        shutil.rmtree(self._directory, ignore_errors=True)


async def put_snapshot(obs: ObjectStore, taken: Stored, path: Path) -> bool:
    """Put the snapshot file at `path` in the bucket unless it is there already (another
    gateway put it) or older than the newest KEEP_READ_SNAPSHOTS; then delete all but
    those. True if this call put it."""
    async with asyncio.timeout(TRANSFER_TIMEOUT_S):
        every = await stored(obs)
        present = [s for s in every if s.stream == taken.stream]
        foreign = [s for s in every if s.stream != taken.stream]  # of a stream since lost
        kept = present[:KEEP_READ_SNAPSHOTS]
        put = taken not in present and (len(kept) < KEEP_READ_SNAPSHOTS or taken > kept[-1])
        if put:
            await put_file(obs, taken.name, path, MAX_SNAPSHOT_BYTES)
            log.info("read snapshot %s put in %s", taken.name, READ_BUCKET)
            present = sorted({*present, taken}, reverse=True)
        else:
            log.info("read snapshot %s not put: in the bucket already, or older", taken.name)
        for old in present[KEEP_READ_SNAPSHOTS:] + foreign:  # bounded: a few past the kept
            with contextlib.suppress(NotFoundError):  # another gateway deleted it
                await obs.delete(old.name)
    return put


async def put_reopening(
    js: JetStreamContext, obs: ObjectStore, taken: Stored, path: Path
) -> tuple[ObjectStore, bool]:
    """`put_snapshot`, through a bucket handle made again (and the bucket with it) when
    the bucket is gone (its NATS store lost, or deleted): a handle kept from start would
    otherwise fail every put for good. Returns the handle to keep, and whether it put."""
    try:
        return obs, await put_snapshot(obs, taken, path)
    except NotFoundError:
        if not await _bucket_gone(js):
            raise
    log.warning("the read snapshot bucket %s is gone (the NATS store lost?): made again",
                READ_BUCKET)  # fmt: skip
    obs = await open_bucket(js)
    return obs, await put_snapshot(obs, taken, path)


async def _bucket_gone(js: JetStreamContext) -> bool:
    try:
        await js.stream_info(f"OBJ_{READ_BUCKET}")
    except NotFoundError:
        return True
    return False


def _write(path: Path, snapshot: ReadSnapshot) -> None:
    with path.open("wb") as f:
        f.writelines(encode_snapshot(snapshot))


async def _wait_for_child(pid: int) -> None:
    """Until the snapshot child exits: raises ChildFailedError if it failed or outlived
    forked_snapshot.CHILD_TIMEOUT_S (then it is killed, as it is if this is cancelled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + forked_snapshot.CHILD_TIMEOUT_S
    try:
        while loop.time() < deadline:  # bounded by the deadline
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                if code != 0:
                    msg = f"read snapshot child {pid} exited with {code}"
                    raise forked_snapshot.ChildFailedError(msg)
                return
            await asyncio.sleep(CHILD_POLL_S)
    except asyncio.CancelledError:
        _kill(pid)
        raise
    _kill(pid)
    msg = f"read snapshot child {pid} killed after {forked_snapshot.CHILD_TIMEOUT_S:.0f} s"
    raise forked_snapshot.ChildFailedError(msg)


def _kill(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
