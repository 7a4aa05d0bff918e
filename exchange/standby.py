"""A standby sequencer's warm copy: it follows the stream, applies every record to its own
engine, and keeps its own fsync'd journal and snapshots, so a takeover needs no replay.

Each record from the stream is applied as recovery replays one (exchange/recovery.py's
Replayer): the command applied must give exactly the events recorded with it, or the
standby stops (FollowError: this build or this state is not what wrote the stream). The
records of a durable batch (one stream message, or several for a very large batch, the
last marked as its end) are then written to the local journal in one write, so its bytes,
seqs and batch ends are the leader's own.

A node that starts with records in its journal checks them against the stream as the
stream reaches them, byte for byte: the first one that differs (and all after it) was
never acknowledged, since an answer needs the record in the stream: `Diverged` tells the
node to cut its journal there and recover again (exchange/journal/rewind.py).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from exchange import natswire as w
from exchange.domain.state import EngineState, export_state
from exchange.journal.rewind import rewind
from exchange.journal.snapshots import SnapshotStore
from exchange.journal.storage import FileSegmentStore
from exchange.lease import TRY_EVERY_S, Lease
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, Recovered, RecoveryError, Replayer
from exchange.sequencer import SNAPSHOT_EVERY
from exchange.streamfloor import StreamFloor

if TYPE_CHECKING:
    from exchange.journal.journal import Record

log = logging.getLogger(__name__)

# What a standby rides out, looking again every TRY_EVERY_S: NATS away, a NATS node lost
# (its connection moves to another node), a stream or bucket electing a new leader.
NATS_AWAY = (nats.errors.Error, TimeoutError)
# Stream messages fetched in one `step` at most, before the caller looks at its lease and
# its stop signal again (a catch-up over a long stream stays responsive).
MESSAGES_PER_STEP = 256


T = TypeVar("T")


class Stopped(Exception):  # noqa: N818 - an outcome, not a failure
    """The stop signal came while a wait for NATS was still unanswered."""


async def unless_stopped(waiting: Awaitable[T], stop: asyncio.Event) -> T:
    """What `waiting` gives; Stopped (it cancelled) if `stop` is set first: a NATS that
    does not answer never holds up a stop for a request's timeout."""
    task = asyncio.ensure_future(waiting)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():
        raise Stopped
    return task.result()


class ReadySayer(Protocol):
    def say_ready(self, text: str) -> None: ...


class FollowError(Exception):
    """The stream cannot be followed faithfully (another build's events, a gap)."""


class Diverged(Exception):  # noqa: N818 - an outcome, not a failure
    """The local journal holds, from `seq` on, records the stream does not."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"the local journal differs from the stream from seq {seq}")
        self.seq = seq


class _Seq(msgspec.Struct, array_like=True):
    """The first field of a JournalEntry: its seq (the rest is left undecoded)."""

    seq: int


_seq_decoder = msgspec.msgpack.Decoder(_Seq)


class Follower:
    """Applies the stream to a recovered data directory's engine and journal."""

    def __init__(
        self, js: JetStreamContext, recovered: Recovered, snapshot_every: int = SNAPSHOT_EVERY,
        floor: StreamFloor | None = None, stop: asyncio.Event | None = None,
    ) -> None:  # fmt: skip
        self.js = js
        # Its waits for NATS end when this is set (Stopped); never, without one.
        self.stop = stop if stop is not None else asyncio.Event()
        self.caught_up = False  # it has reached the stream's end at least once
        # Where the stream starts: the journal is never pruned past it (a leader refills
        # a lost stream from its journal). The node's own, kept across its turns.
        self.floor = floor if floor is not None else StreamFloor()
        self.engine = recovered.engine
        self.journal = recovered.journal
        self.snapshots = recovered.snapshots
        self.snapshot_every = snapshot_every
        self.last_snapshot_seq = recovered.snapshot_seq
        self.applied_seq = recovered.journal.last_seq  # applied to the engine
        self.stream_seq = 0  # the newest stream message followed
        self.stream_record_seq = 0  # the newest record seen in the stream
        self._replay = Replayer(self.engine, self.applied_seq + 1)
        # The records this node had before it followed, checked against the stream's.
        self._local_last = recovered.journal.last_seq
        self._local: Iterator[Record] = recovered.journal.read_from(recovered.journal.first_seq)
        self._pending: list[bytes] = []  # applied, waiting for their batch's end
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="standby-journal")
        self._snapshot: asyncio.Task[None] | None = None

    @property
    def local_tail(self) -> bool:
        """The journal holds records the stream has not shown yet."""
        return self._local_last > self.stream_record_seq

    async def step(self) -> bool:
        """Follow up to MESSAGES_PER_STEP new stream messages; False when there was none.
        Stopped when its stop is set while NATS has not answered."""
        for done in range(MESSAGES_PER_STEP):
            try:
                msg = await unless_stopped(self.js.get_msg(
                    w.STREAM, seq=self.stream_seq + 1, subject=w.BATCHES, next=True
                ), self.stop)  # fmt: skip
            except NotFoundError:
                self.caught_up = True
                return done > 0
            await self.apply(msg.seq or self.stream_seq + 1, msg.data or b"")
        return True

    async def apply(self, stream_seq: int, data: bytes) -> None:
        """One stream message: its records checked (or applied and journaled)."""
        try:
            batch = w.decode_batch(data)
        except (msgspec.DecodeError, w.VersionError) as problem:
            raise FollowError(f"stream message {stream_seq} does not decode: {problem}") from None
        for raw in batch.records:  # bounded by the message's size
            payload = bytes(raw)
            try:
                seq = _seq_decoder.decode(payload).seq
            except msgspec.DecodeError as problem:
                raise FollowError(f"a record in stream message {stream_seq}: {problem}") from None
            self.stream_record_seq = max(self.stream_record_seq, seq)
            if seq <= self._local_last:
                self._check_local(seq, payload)
            elif seq <= self.applied_seq:
                continue  # stored twice in the stream (a retry): applied once
            elif seq != self.applied_seq + 1:
                raise FollowError(f"the stream skips from seq {self.applied_seq} to {seq}")
            else:
                try:
                    self._replay(seq, memoryview(payload))
                except RecoveryError as problem:
                    raise FollowError(str(problem)) from None
                self._pending.append(payload)
                self.applied_seq = seq
        if batch.batch_end:
            await self.write_pending()
        self.stream_seq = stream_seq

    def _check_local(self, seq: int, payload: bytes) -> None:
        if seq < self.journal.first_seq:
            return  # pruned after a snapshot here: nothing to compare with
        for record in self._local:  # advances to `seq`: the stream comes in seq order
            if record.seq < seq:
                continue
            if record.seq == seq and bytes(record.payload) == payload:
                return
            break
        self._local = iter(())
        raise Diverged(seq)

    async def write_pending(self) -> None:
        """Journal the applied records of the batch in hand as one write (fsync'd); at a
        takeover, the start of a batch whose end the dead leader never published."""
        if not self._pending:
            return
        payloads, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self.journal.write_batch, payloads)
        if self.applied_seq - self.last_snapshot_seq >= self.snapshot_every:
            await self._wait_snapshot()
            self.last_snapshot_seq = self.applied_seq
            state = export_state(self.engine)
            self._snapshot = loop.create_task(self._write_snapshot(self.applied_seq, state))

    async def _write_snapshot(self, seq: int, state: EngineState) -> None:
        loop = asyncio.get_running_loop()
        await self.floor.look(self.js)
        try:  # in the journal's thread: pruning must not race a journal write
            await loop.run_in_executor(self._thread, self._store_snapshot, seq, state)
        except Exception:  # the journal still holds everything; the next one tries again
            log.exception("standby snapshot at seq %d failed", seq)

    def _store_snapshot(self, seq: int, state: EngineState) -> None:
        path = self.snapshots.write(seq, state)
        oldest_kept = self.snapshots.prune()
        pruned = (
            self.journal.prune_before(self.floor.prune_below(oldest_kept))
            if oldest_kept is not None else []
        )  # fmt: skip
        log.info("standby snapshot at seq %d written to %s; %d old segments pruned",
                 seq, path, len(pruned))  # fmt: skip

    async def _wait_snapshot(self) -> None:
        if self._snapshot is not None:
            await self._snapshot
            self._snapshot = None

    async def hand_over(self) -> None:
        """Before leading: everything applied is journaled, and no snapshot is in flight;
        the engine, journal and snapshots are the leader's from here on."""
        await self.write_pending()
        await self._wait_snapshot()
        self._thread.shutdown()

    async def close(self, *, snapshot: bool) -> None:
        """Stop following: with `snapshot`, a snapshot of what is journaled (a clean stop
        starts without replay); the journal closed."""
        self._pending = []  # the batch's end never came: the stream holds it for next time
        await self._wait_snapshot()
        seq = self.journal.last_seq
        if snapshot and seq > 0 and seq == self.applied_seq and self.snapshots.seqs()[:1] != [seq]:
            state = export_state(self.engine)
            await asyncio.get_running_loop().run_in_executor(
                self._thread, self._store_snapshot, seq, state
            )
        self._thread.shutdown()
        self.journal.close()


async def follow(
    nc: NatsClient, follower: Follower, lease: Lease, stop: asyncio.Event, node: "ReadySayer"
) -> bool:
    """Follow the stream until this node takes the lease (True, once it has applied the
    stream to its end) or `stop` is set (False). A stream message wakes it; without one
    it looks again every TRY_EVERY_S, when it also tries to take a lapsed lease. Every wait
    for NATS ends at `stop` (a standby stops at once, NATS away or not)."""
    wake = asyncio.Event()
    follower.stop = stop

    async def woken(_: Msg) -> None:
        wake.set()

    loop = asyncio.get_running_loop()
    subscription = await nc.subscribe(w.BATCHES, cb=woken)
    next_try = 0.0
    try:
        while not stop.is_set():  # each turn follows what is new, or waits for it
            wake.clear()
            try:
                if await follower.step():
                    continue
            except NATS_AWAY as problem:
                # NATS away (restarting, a node lost): look again later, as a standby
                # must outlive any outage to be there for a takeover.
                log.warning("cannot read the stream (%r); trying again", problem)
                await _either(stop, asyncio.Event(), TRY_EVERY_S)
                continue
            if loop.time() >= next_try:
                next_try = loop.time() + TRY_EVERY_S
                taken = await _try_take(lease, stop)
                if taken:
                    await _read_to_end(follower, stop)
                    if stop.is_set():
                        break
                    log.info("took the leader lease at stream seq %d (applied seq %d)",
                             follower.stream_seq, follower.applied_seq)  # fmt: skip
                    return True
                if taken is False:  # another node holds it (not a NATS error: unknown)
                    node.say_ready(f"standby, applied to seq {follower.applied_seq}")
            await _either(wake, stop, TRY_EVERY_S)
    except Stopped:
        log.info("stopped while waiting for NATS to answer")
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
    return False


async def _try_take(lease: Lease, stop: asyncio.Event) -> bool | None:
    """Whether the lease was taken; None when NATS did not say (the next try retries);
    Stopped at `stop`. The ready line waits for a clear answer: a lone node that says
    "standby" because its first try timed out would have its starter send commands no
    one takes."""
    try:
        return await unless_stopped(lease.try_take(), stop)
    except Stopped:
        raise
    except Exception as problem:  # noqa: BLE001 - NATS away: the next try retries
        log.warning("could not try the leader lease: %r", problem)
        return None


async def _read_to_end(follower: Follower, stop: asyncio.Event) -> None:
    """Apply the stream to the end it has now (NATS errors retried: the lease is taken)."""
    while not stop.is_set():  # until read to its end, or stopped
        try:
            info = await unless_stopped(follower.js.stream_info(w.STREAM), stop)
            target = info.state.last_seq
            while follower.stream_seq < target and await follower.step():
                pass  # bounded: the stream's end was read just now
            return
        except NATS_AWAY as problem:
            log.warning("cannot read the stream to its end (%r); trying again", problem)
            await _either(stop, asyncio.Event(), TRY_EVERY_S)


async def _either(one: asyncio.Event, other: asyncio.Event, timeout: float) -> None:
    """Until either is set, or `timeout` seconds."""
    waits = {asyncio.ensure_future(one.wait()), asyncio.ensure_future(other.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def rewind_journal(data_dir: Path, durable: bool, keep_seq: int, reason: str) -> None:
    """Cut the closed journal of `data_dir` back to `keep_seq` (what the stream holds)."""
    store = FileSegmentStore(data_dir / JOURNAL_DIR, durable=durable)
    snapshots = SnapshotStore(data_dir / SNAPSHOT_DIR, durable=durable)
    done = await asyncio.to_thread(rewind, store, snapshots, keep_seq)
    log.warning(
        "rejoins as a standby (%s): cut %d records past seq %d from the journal (the "
        "stream does not hold them: never acknowledged)", reason, done.cut_records, done.kept_seq,
    )  # fmt: skip
