"""Engine snapshots shared through the cluster's ENGINE_BUCKET (exchange/buckets.py): the
leader puts its own there, and a node whose journal ends before the stream's first record
starts from one (exchange/snapshotinstall.py) instead of the stream's beginning.

Putting (SnapshotSharing, while a node leads): every SHARE_CHECK_S it looks at its own
snapshot directory (the sequencer takes a snapshot every SNAPSHOT_EVERY records, in a
forked child); the newest snapshot whose record the stream has acknowledged through this
leader's fence (so it is the stream's history, not a tail a fence would cut) and that is
newer than the bucket's newest is put as `engine-<seq>-<stream message after which to
follow>`, the file's bytes as they are; all but the newest KEEP_ENGINE_SNAPSHOTS are
deleted, and the stream is trimmed (exchange/streamtrim.py).

Fetching (recover_or_fetch, as a node starts each turn): after recovery, a journal that
ends before the stream's first record takes the newest snapshot in the bucket that checks
out: the stream still continues it (the message after the one its name gives holds the
next record), the object store's SHA-256, then the snapshot's own checks (CRC-32, state
hash, the state restored) as it is installed. One line says which; an unusable one is
logged and the next older tried; none usable stops the node with one line.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from exchange import natswire as w
from exchange.buckets import (
    ENGINE_BUCKET,
    Placed,
    TooBigError,
    engine_snapshots,
    get_file,
    open_bucket,
    put_file,
    stream_id,
)
from exchange.journal.snapshots import SnapshotStore
from exchange.natsstream import continues_at, first_record, follow_point
from exchange.recovery import Recovered, recover
from exchange.snapshotinstall import (
    InstallError,
    discard_staged,
    finish_install,
    install_staged,
    stage,
)
from exchange.standby import unless_stopped
from exchange.streamfloor import StreamFloor
from exchange.streamtrim import TRIM_MARGIN_MESSAGES, trim

log = logging.getLogger(__name__)

# Snapshots kept in the bucket: the newest, and two to fall back on should it be damaged
# (the trim keeps the stream usable from the second newest: exchange/streamtrim.py).
KEEP_ENGINE_SNAPSHOTS = 3
# How often the leader looks for a new snapshot of its own: one directory listing; a
# snapshot comes every SNAPSHOT_EVERY records (a second or more at full load).
SHARE_CHECK_S = 1.0
# One put or get of a snapshot, or a look at the bucket, at most (a get whose chunks were
# deleted meanwhile would otherwise wait for ever).
TRANSFER_TIMEOUT_S = 60.0
# Between looks at the stream's start while NATS does not answer.
LOOK_RETRY_S = 0.5
# A snapshot bigger than this is neither put nor fetched (not one of ours, or a state past
# what a node should load: its bytes are read once to be checked and restored).
MAX_SNAPSHOT_BYTES = 4 * 1024**3


class NoSnapshotError(Exception):
    """The journal ends before the stream's first record and no snapshot fits."""


async def behind(js: JetStreamContext, last_seq: int) -> int | None:
    """The stream's first record, if a journal ending at `last_seq` ends before it (the
    records between were trimmed from the stream); None when the stream continues it."""
    first = await first_record(js)
    return first if first is not None and last_seq + 1 < first else None


async def overtaken(js: JetStreamContext, last_seq: int, stop: asyncio.Event) -> bool:
    """Whether a standby whose journal ends at `last_seq` was overtaken by the stream's
    trim while it followed. A NATS that does not answer is asked again every
    LOOK_RETRY_S (a standby outlives NATS outages); Stopped once `stop` is set."""
    while True:  # until NATS answers, or the stop
        try:
            return await unless_stopped(behind(js, last_seq), stop) is not None
        except (nats.errors.Error, TimeoutError, OSError) as problem:
            log.warning("cannot see where the stream starts (%r); retrying", problem)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LOOK_RETRY_S)


async def recover_or_fetch(
    js: JetStreamContext, data_dir: Path, durable: bool, floor: StreamFloor | None = None
) -> tuple[Recovered, int]:
    """Recover `data_dir` (an install a crash interrupted finished first); a journal that
    ends before the stream's first record is replaced by the newest fetched snapshot that
    fits. Returns what was recovered and the stream message to follow after (0: the
    stream's first); `floor` is told where the stream starts. Raises NoSnapshotError.
    Recovery and installs run in a thread: a long restore never stalls the loop (the
    node's heartbeats, its stop signal)."""
    await asyncio.to_thread(finish_install, data_dir, durable=durable)
    recovered = await asyncio.to_thread(
        recover, data_dir, durable=durable, snapshots_durable=durable
    )
    while True:  # until NATS answers (a node rejoining while NATS is away waits for it)
        try:
            stream_first = await first_record(js)
            break
        except (nats.errors.Error, TimeoutError, OSError) as problem:
            log.warning("cannot see where the stream starts (%r); retrying", problem)
            await asyncio.sleep(LOOK_RETRY_S)
    if floor is not None:
        floor.saw(stream_first)
    if stream_first is None or recovered.journal.last_seq + 1 >= stream_first:
        return recovered, 0
    first = stream_first
    last_seq = recovered.journal.last_seq
    recovered.journal.close()
    log.warning("the journal ends at seq %d, the stream's first record is seq %d: fetching "
                "an engine snapshot from %s", last_seq, first, ENGINE_BUCKET)  # fmt: skip
    placed = await fetch(js, data_dir, durable)
    if placed is None:
        msg = (f"the journal ends at seq {last_seq}, before the stream's first record "
               f"{first}, and {ENGINE_BUCKET} holds no snapshot that fits the stream")  # fmt: skip
        raise NoSnapshotError(msg)
    recovered = await asyncio.to_thread(
        recover, data_dir, durable=durable, snapshots_durable=durable
    )
    return recovered, placed.after


async def fetch(js: JetStreamContext, data_dir: Path, durable: bool) -> Placed | None:
    """Install the newest snapshot in the bucket that checks out; None (logged) if none."""
    bucket = await open_bucket(js, ENGINE_BUCKET)
    async with asyncio.timeout(TRANSFER_TIMEOUT_S):
        # Only this stream's: one left from a stream since made again (its positions
        # another history's) is passed over.
        stream = stream_id(await js.stream_info(w.STREAM))
        present = await engine_snapshots(bucket, stream)
    for placed in present:  # bounded: the bucket keeps KEEP_ENGINE_SNAPSHOTS
        try:
            async with asyncio.timeout(TRANSFER_TIMEOUT_S):
                await _get(js, bucket, placed, data_dir)
            state_hash = await asyncio.to_thread(
                install_staged, data_dir, placed.seq, durable=durable
            )
        except (
            InstallError, ValueError, OSError, nats.errors.Error, TimeoutError,
            msgspec.DecodeError, w.VersionError, TooBigError,
        ) as problem:  # fmt: skip
            await asyncio.to_thread(discard_staged, data_dir)
            log.error("engine snapshot %s unusable, trying an older one: %r", placed.name, problem)
            continue
        log.warning(
            "installed engine snapshot %s (seq %d, state hash %s); following the stream "
            "after message %d", placed.name, placed.seq, state_hash, placed.after,
        )  # fmt: skip
        return placed
    log.error("no usable engine snapshot in %s", ENGINE_BUCKET)
    return None


async def _get(js: JetStreamContext, bucket: ObjectStore, placed: Placed, data_dir: Path) -> None:
    """Fetch it into the data directory's staging file (never whole in memory)."""
    if not await continues_at(js, placed.seq, placed.after):
        raise ValueError(f"the stream does not continue it after message {placed.after}")
    path = await asyncio.to_thread(stage, data_dir, placed.seq)
    await get_file(js, bucket, placed.name, path, MAX_SNAPSHOT_BYTES)  # checks the SHA-256


class SnapshotSharing:
    """The leader's part: put its snapshots in the bucket, then trim the stream and tell
    `floor` where it starts now (the journal is pruned no further). `held` gives the last
    record the stream acknowledged through this leader's fence."""

    def __init__(
        self, js: JetStreamContext, snapshots: SnapshotStore, held: Callable[[], int],
        floor: StreamFloor, margin: int = TRIM_MARGIN_MESSAGES,
    ) -> None:  # fmt: skip
        self.js = js
        self.snapshots = snapshots
        self.held = held
        self.floor = floor
        self.margin = margin
        self.shared_seq = 0  # the newest snapshot put (or found in the bucket)
        self.shared_stream = ""  # on this stream (stream_id): one made again gets its own
        self._bucket: ObjectStore | None = None

    async def run(self) -> None:
        while True:  # until cancelled (the node stops leading)
            await asyncio.sleep(SHARE_CHECK_S)
            try:
                async with asyncio.timeout(TRANSFER_TIMEOUT_S):
                    await self.share()
            except (
                OSError, nats.errors.Error, TimeoutError, msgspec.DecodeError, w.VersionError
            ) as problem:  # fmt: skip
                log.warning("engine snapshot sharing failed (%r); trying again", problem)
            except Exception:  # a bug here must not stop the leader: the stream only grows
                log.exception("engine snapshot sharing failed; trying again")

    async def share(self) -> bool:
        """Put the newest acknowledged snapshot if the bucket lacks it, then trim; True
        if one was put."""
        held = self.held()
        ready = [seq for seq in self.snapshots.seqs() if seq <= held]
        if not ready:
            return False
        stream = stream_id(await self.js.stream_info(w.STREAM))
        if ready[0] <= self.shared_seq and stream == self.shared_stream:
            return False
        seq = ready[0]
        if self._bucket is None:
            self._bucket = await open_bucket(self.js, ENGINE_BUCKET)
        bucket = self._bucket
        every = await engine_snapshots(bucket)
        present = [p for p in every if p.stream == stream]
        foreign = [p for p in every if p.stream != stream]  # of a stream since lost: useless
        put = not present or seq > present[0].seq
        if put:
            after = await follow_point(self.js, seq)
            if after is None:  # the stream no longer holds it (lost, being refilled)
                log.warning("engine snapshot at seq %d not put: the stream does not hold "
                            "record %d", seq, seq)  # fmt: skip
                return False
            path = self.snapshots.path(seq)
            placed = Placed(seq, after, stream)
            try:
                await put_file(bucket, placed.name, path, MAX_SNAPSHOT_BYTES)
            except TooBigError as problem:  # no node could fetch it: the stream is not trimmed
                log.error("engine snapshot not shared: %s", problem)
                self.shared_seq, self.shared_stream = seq, stream
                return False
            except NotFoundError:
                self._bucket = None  # the bucket is gone: opened (made) again next time
                raise
            log.info("engine snapshot %s put in %s (%d bytes)", placed.name, ENGINE_BUCKET,
                     path.stat().st_size)  # fmt: skip
            present = sorted({*present, placed}, reverse=True)
        for old in present[KEEP_ENGINE_SNAPSHOTS:] + foreign:  # bounded: a few past the kept
            with contextlib.suppress(NotFoundError):
                await bucket.delete(old.name)
        await trim(self.js, bucket, self.margin)
        await self.floor.look(self.js)
        # Only now: a trim that failed is tried again.
        self.shared_seq, self.shared_stream = seq, stream
        return put
