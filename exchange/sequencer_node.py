"""`exchange sequencer --nats URL --data-dir DIR`: the serial core as a process of its own.

It takes typed, bounded commands off a core NATS subject (decoded once: the decode is the
validation), sequences and applies them, journals them locally with fsync group commit
as `exchange serve` does, and publishes each durable batch, as the journal holds it, to
the JetStream stream every gateway follows (exchange/natswire.py). It does no JSON,
talks to no client and keeps no read model.

One process a turn: a standby (exchange/standby.py) until it takes the leader lease
(exchange/lease.py), then the leader until it stops, or steps down when its append is
fenced (exchange/fence.py) or its lease lost: then its journal is cut to what the stream
holds and it is a standby again. Taking the lead it first publishes what its journal
holds and the stream does not (a crash between a sync and a publish), and so it does
whenever it finds the stream lost records while it leads (StreamPublisher.refill).

A command it cannot take is refused to its gateway at once (BUSY while the
stream falls behind by MAX_UNPUBLISHED_BATCHES, or the queue is full); a message that is
not a command (malformed, too big, another wire version) is logged and dropped: never
journaled, never fatal.
"""

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from exchange import compiled_core, nodestatus
from exchange import natswire as w
from exchange.bus import BusyError, InvalidCommandError, SequencerStoppedError
from exchange.datadir import DataDirError, claim
from exchange.enginebucket import NoSnapshotError, SnapshotSharing, overtaken, recover_or_fetch
from exchange.fence import FencedAppender, FencedError, StreamLostError
from exchange.journal.faulty import SyncFailsWhen
from exchange.journal.journal import Journal, JournalCorruptError
from exchange.journal.records import decode_entry
from exchange.journal.rewind import RewindError
from exchange.lease import REFRESH_EVERY_S, Lease, ensure_bucket
from exchange.natsstream import close_quietly, ensure_stream, log_nats_error
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, RecoveryError
from exchange.runtime import stop_on_signals
from exchange.sequencer import GATHER_MS, SNAPSHOT_EVERY, Sequencer, stop_and_wait
from exchange.standby import Diverged, Follower, FollowError, Stopped, follow, rewind_journal
from exchange.streamfloor import StreamFloor
from exchange.streamtrim import TRIM_MARGIN_MESSAGES

log = logging.getLogger(__name__)

# Durable batches waiting for the stream's ack, at most: past it new commands are
# refused BUSY until the stream catches up (memory stays bounded while NATS is away).
MAX_UNPUBLISHED_BATCHES = 1_024
# Between attempts to publish a batch the stream refused or did not ack.
PUBLISH_RETRY_S = 0.5
# How long one publish may wait for the stream's ack.
PUBLISH_TIMEOUT_S = 5.0
# How often an idle publisher looks whether the stream still holds what it published
# (one small request; a stream lost while no order comes is refilled within it).
STREAM_CHECK_S = 1.0
# Connecting to NATS at start: how long before giving up with one line.
CONNECT_TIMEOUT_S = 10.0
# Lines a second about bad messages on the command subject (the rest are counted).
BAD_MESSAGE_LINES_PER_S = 5
# Turns in a row a standby may be overtaken by the stream's trim (and fetch a snapshot
# again) before it ever reached the stream's end: once is a node away for a while, twice
# bad luck; this many means its fetch, install and catch-up take longer than the stream
# keeps (about two snapshot intervals), and fetching again would go on for ever.
MAX_OVERTAKEN_IN_A_ROW = 3


@dataclass(frozen=True)
class NodeOptions:
    nats_urls: list[str]
    data_dir: Path
    durability: str = "fsync"
    node_id: str = "sequencer-1"
    gather_ms: float = GATHER_MS
    snapshot_every: int = SNAPSHOT_EVERY  # records between engine snapshots
    trim_margin: int = TRIM_MARGIN_MESSAGES  # stream messages never trimmed
    # Tests only (the hidden --fail-sync-when): leading, every fsync fails once it exists.
    fail_sync_when: Path | None = None


class StreamRefillError(Exception):
    """The stream lost records this journal no longer holds."""


def unpublished_batches(journal: Journal, after: int) -> Iterator[tuple[int, list[bytes]]]:
    """The journal's records after seq `after`, in the journal's batches, one batch at a
    time (after a lost stream that is the whole journal: never all of it in memory)."""
    current: list[bytes] = []
    first = after + 1
    for record in journal.read_from(after + 1):  # bounded by the journal
        current.append(bytes(record.payload))
        if record.batch_end:
            yield first, current
            first, current = record.seq + 1, []
    if current:  # a write a crash cut short was cut on open; this is only belt and braces
        yield first, current


async def _always() -> bool:
    return True


class StreamPublisher:
    """Publishes durable batches to the stream in seq order, each message retried until
    the stream acks it, through this leadership's fence (exchange/fence.py): a refusal
    (FencedError) ends `run` and goes to the node, which steps down.

    A stream that lost records (its store deleted, made again empty) refuses the next
    message too (StreamLostError): the publisher then refills it from the journal and goes
    on. Between batches it looks at the stream every STREAM_CHECK_S, so a lost stream is
    refilled without waiting for the next order, and a stream another leader appended to
    is seen (fenced) without waiting for the next append."""

    def __init__(
        self, js: JetStreamContext, appender: FencedAppender, journal: Journal,
        confirm_lead: Callable[[], Awaitable[bool]] = _always,
    ) -> None:  # fmt: skip
        self.js = js
        self.appender = appender
        self.journal = journal
        # Asked before a stream shorter than this leader left it is taken for lost and
        # refilled: only the lease's holder may (Lease.confirm).
        self.confirm_lead = confirm_lead
        self._queue: deque[tuple[int, list[bytes]]] = deque()  # <= MAX_UNPUBLISHED_BATCHES
        self._ready = asyncio.Event()
        self.published_seq = 0
        self.closing = False
        self.held_seq = 0  # the last record the stream holds, as the last ack or look said

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def enqueue(self, first_seq: int, payloads: list[bytes]) -> None:
        """From the sequencer, as a batch becomes durable (intake keeps the bound)."""
        self._queue.append((first_seq, list(payloads)))
        self._ready.set()

    def take_backlog(self) -> list[tuple[int, list[bytes]]]:
        """The durable batches not yet in the stream, handed over (after a fence: they
        will never be acknowledged)."""
        held, self._queue = list(self._queue), deque()
        return held

    async def run(self) -> None:
        while True:  # until cancelled; each turn publishes what is queued
            if not self._queue:
                if self.closing:
                    return
                self._ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), STREAM_CHECK_S)
                if not self._queue and not self.closing:
                    await self.refill(self.published_seq)
                continue
            first_seq, payloads = self._queue[0]
            await self.publish(first_seq, payloads)
            self._queue.popleft()

    async def publish(self, first_seq: int, payloads: list[bytes]) -> None:
        while not await self._publish_batch(first_seq, payloads):  # until it is stored
            await self.refill(first_seq - 1)
        self.published_seq = first_seq + len(payloads) - 1

    async def _publish_batch(self, first_seq: int, payloads: list[bytes]) -> bool:
        """False when the stream lost records before it (a refill must come first)."""
        messages = w.batch_messages(first_seq, payloads)
        ends = [start - 1 for start, _ in messages[1:]] + [first_seq + len(payloads) - 1]
        for (start, data), end in zip(messages, ends, strict=True):
            if end <= self.held_seq:
                continue  # stored already (a refill found it there)
            while True:  # until acked: the stream must hold every durable batch, in order
                try:
                    await self.appender.append(start, data, PUBLISH_TIMEOUT_S)
                    break
                except StreamLostError:
                    return False
                except FencedError:
                    raise
                except Exception as problem:  # noqa: BLE001 - NATS away: retry
                    log.warning("stream publish of seq %d failed (%r); retrying", start, problem)
                    await asyncio.sleep(PUBLISH_RETRY_S)
            self.held_seq = end
        return True

    async def refill(self, upto: int) -> None:
        """Make the stream hold every record to `upto` (all published before): look at
        how far it reaches and publish what it lost from the journal, in its batches.
        FencedError when another leader appended: the stream reaches past this leader's
        last message with records in it, holds records past its journal, or its last
        record is not this journal's; or the lease is no longer this node's when the
        stream is found short."""
        while True:  # until the stream reaches `upto`; each turn looks, then refills
            stream_seq, held_seq, last_record = await self._look()
            known = self.appender.last_stream_seq
            if stream_seq == known and held_seq == self.held_seq and held_seq >= upto:
                return  # as this leader's last append left it
            if (held_seq and stream_seq > known) or held_seq > self.journal.last_seq:
                msg = (f"the stream reaches message {stream_seq} (record {held_seq}), past "
                       f"this leader's message {known} (record {self.journal.last_seq}): "
                       "another sequencer appended")  # fmt: skip
                raise FencedError(msg)
            if not self._journal_holds(held_seq, last_record):
                msg = f"the stream's record {held_seq} is not this journal's: another leader's"
                raise FencedError(msg)
            if stream_seq == known and held_seq >= upto:
                self.held_seq = held_seq
                return
            # Short of what this leader left (lost, or emptied by a purge): refill it,
            # if this node still holds the lease (a stale leader must not).
            if not await self._confirm_lead():
                msg = "the stream is short of this leader's appends and the lease is another's"
                raise FencedError(msg)
            self.appender.last_stream_seq, self.held_seq = stream_seq, held_seq
            if held_seq >= upto:
                return
            # New message ids: a purged stream keeps the old ones' duplicate window, which
            # would answer the refill "duplicate" and store nothing.
            self.appender.generation += 1
            log.warning("the stream holds records to seq %d, the journal to %d: "
                        "publishing the rest from the journal", held_seq, upto)  # fmt: skip
            if not await self._refill_from_journal(upto):
                continue  # lost again meanwhile: look again
            log.warning("the stream holds records to seq %d again", upto)
            return

    async def _confirm_lead(self) -> bool:
        while True:  # until NATS answers
            try:
                return await self.confirm_lead()
            except Exception as problem:  # noqa: BLE001 - NATS away: retry
                log.warning("cannot read the leader lease (%r); retrying", problem)
                await asyncio.sleep(PUBLISH_RETRY_S)

    def _journal_holds(self, seq: int, payload: bytes | None) -> bool:
        """Whether the journal's record `seq` is `payload` (True when it cannot tell: no
        record in the stream, or the journal pruned below it)."""
        if payload is None or not self.journal.first_seq <= seq <= self.published_seq:
            return True
        for record in self.journal.read_from(seq):  # the first is the one
            return bytes(record.payload) == payload
        return True

    async def _look(self) -> tuple[int, int, bytes | None]:
        """(the stream's last message, the last record it holds, that record's bytes),
        the stream made again if lost."""
        while True:  # until NATS answers
            try:
                await ensure_stream(self.js)
                stream_seq = (await self.js.stream_info(w.STREAM)).state.last_seq
                try:
                    last = await self.js.get_last_msg(w.STREAM, w.BATCHES)
                except NotFoundError:
                    return stream_seq, 0, None
                batch = w.decode_batch(last.data or b"")
                held = batch.first_seq + len(batch.records) - 1
                return stream_seq, held, bytes(batch.records[-1]) if batch.records else None
            except Exception as problem:  # noqa: BLE001 - NATS away: retry
                log.warning("cannot see how far the stream reaches (%r); retrying", problem)
                await asyncio.sleep(PUBLISH_RETRY_S)

    async def _refill_from_journal(self, upto: int) -> bool:
        after = self.held_seq
        if after == 0 and self.journal.first_seq > 1:
            # Lost whole: refilled from the journal's first record, at or before where the
            # stream started (a journal is never pruned past it: exchange/streamfloor.py);
            # the stream then starts there, as a trimmed one does.
            after = self.journal.first_seq - 1
            log.warning("the stream lost every record: refilled from the journal's "
                        "first, seq %d (those before are in snapshots)", after + 1)  # fmt: skip
        elif after + 1 < self.journal.first_seq:
            msg = (f"the stream lost seq {after + 1}, which the journal no longer "
                   f"holds (a snapshot pruned it to seq {self.journal.first_seq}): the "
                   "stream cannot be refilled")  # fmt: skip
            raise StreamRefillError(msg)
        for first_seq, payloads in unpublished_batches(self.journal, after):
            if not await self._publish_batch(first_seq, payloads):
                return False
            if first_seq + len(payloads) - 1 >= upto:
                # Read no further: what follows is queued, and the journal's thread may
                # be appending to it now (read_from reads while no one appends).
                return True
        return True

    def close(self) -> None:
        self.closing = True
        self._ready.set()


class Intake:
    """The command subject's handler: decode, check, post; refuse what cannot be taken."""

    def __init__(self, nc: NatsClient, sequencer: Sequencer, publisher: StreamPublisher) -> None:
        self.nc = nc
        self.sequencer = sequencer
        self.publisher = publisher
        self.bad_messages = 0
        self._refusing: set[asyncio.Task[None]] = set()  # refusals being sent
        self._lines_second = 0
        self._lines = 0
        # Cleared the moment this node stops leading: what arrives after is not taken.
        self.accepting = True
        sequencer.on_refused = self.refused

    async def handle(self, msg: Msg) -> None:
        try:
            message = w.decode_command(msg.data)
        except (msgspec.DecodeError, w.VersionError) as problem:
            self._bad(msg, problem)
            return
        if not self.accepting:
            for sent in message.commands:  # bounded by MAX_COMMANDS_PER_MESSAGE
                origin = w.origin_of(message.gateway, sent.token)
                self.refuse(origin, "UNAVAILABLE", "this sequencer no longer leads; resend")
            return
        behind = self.publisher.backlog >= MAX_UNPUBLISHED_BATCHES
        post = self.sequencer.post
        for sent in message.commands:  # bounded by MAX_COMMANDS_PER_MESSAGE
            origin = w.origin_of(message.gateway, sent.token)
            if behind:
                self.refuse(origin, "BUSY", "the stream is behind; retry")
                continue
            try:
                post(sent.command, origin, validated=True)
            except BusyError:
                self.refuse(origin, "BUSY", "the exchange is busy; retry")
            except InvalidCommandError as problem:
                self.refuse(origin, "BAD_REQUEST", str(problem))
            except SequencerStoppedError:
                self.refuse(origin, "BUSY", "the exchange is shutting down")

    def refused(self, origin: object, reason: Exception) -> None:
        """Taken, then refused (the sequencer stopped or failed before it was durable):
        its outcome is unknown to the client, who resends with the same client order id."""
        if isinstance(origin, str):
            message = f"the exchange stopped; the outcome is unknown: {reason}"
            self.refuse(origin, "UNAVAILABLE", message)

    def refuse(self, origin: str, code: str, message: str) -> None:
        split = w.split_origin(origin)
        if split is None:
            return
        gateway, token = split
        refusal = w.encode(w.Refusal(w.WIRE_VERSION, token, code, message))
        task = asyncio.get_running_loop().create_task(
            self.nc.publish(w.REFUSED_PREFIX + gateway, refusal)
        )
        self._refusing.add(task)  # kept until done: an unreferenced task may vanish
        task.add_done_callback(self._refused_sent)

    def _refused_sent(self, task: "asyncio.Task[None]") -> None:
        self._refusing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a refusal was not sent: %r (its command is answered UNAVAILABLE "
                        "by its gateway in time)", task.exception())  # fmt: skip

    def _bad(self, msg: Msg, problem: Exception) -> None:
        self.bad_messages += 1
        second = int(time.monotonic())
        if second != self._lines_second:
            self._lines_second, self._lines = second, 0
        if self._lines < BAD_MESSAGE_LINES_PER_S:
            self._lines += 1
            log.warning(
                "refused a message on %s (%d bytes): %s (%d refused so far)",
                msg.subject, len(msg.data), problem, self.bad_messages,
            )  # fmt: skip


def run(options: NodeOptions) -> int:
    import uvloop  # noqa: PLC0415 - only the roles need it

    try:
        lock = claim(options.data_dir, (JOURNAL_DIR, SNAPSHOT_DIR))
    except DataDirError as problem:
        print(f"exchange: {problem}", file=sys.stderr, flush=True)
        return 2
    try:
        return uvloop.run(_run(options))
    except (JournalCorruptError, RecoveryError, RewindError, StreamRefillError,
            NoSnapshotError, w.VersionError, msgspec.DecodeError) as problem:  # fmt: skip
        print(f"exchange: the sequencer stops: {problem}", file=sys.stderr, flush=True)
        return 2
    except (OSError, TimeoutError, nats.errors.NoServersError) as problem:
        urls = ",".join(options.nats_urls)
        print(f"exchange: cannot reach NATS at {urls}: {problem}", file=sys.stderr, flush=True)
        return 2
    finally:
        lock.release()


@dataclass
class NodeState:
    """What this node's heartbeat says: its role and how far it has applied."""

    node_id: str
    role: nodestatus.Role = "standby"
    applied: Callable[[], int] = lambda: 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ready_said: bool = False

    def become(self, role: nodestatus.Role, applied: Callable[[], int]) -> None:
        self.role, self.applied = role, applied
        self.changed.set()  # a beat at once: /v1/cluster names a new leader without delay

    def say_ready(self, text: str) -> None:
        """The ready line, once: tests and the launcher wait for it."""
        if not self.ready_said:
            self.ready_said = True
            print(
                f"exchange sequencer {self.node_id} ready: {text}; "
                f"core {compiled_core.describe()}",
                flush=True,
            )
        else:
            log.info("%s", text)


async def _run(options: NodeOptions) -> int:
    nc = await nats.connect(
        servers=options.nats_urls, name=options.node_id, connect_timeout=CONNECT_TIMEOUT_S,
        max_reconnect_attempts=-1, allow_reconnect=True, error_cb=log_nats_error,
    )  # fmt: skip
    js = nc.jetstream()
    node = NodeState(options.node_id)
    loop = asyncio.get_running_loop()
    heartbeat = loop.create_task(_heartbeats(nc, node), name="heartbeat")
    stop = stop_on_signals()
    durable = options.durability == "fsync"
    floor = StreamFloor()  # where the stream starts, as last seen: the journal keeps it
    overtakes = Overtakes()
    try:
        await ensure_stream(js)
        lease = Lease(await ensure_bucket(js), options.node_id, js)
        while True:  # one turn a role: standby until it leads, leader until it stops or steps down
            # A journal behind the stream's first record starts from a fetched snapshot.
            # As a task, so a stop is heard while it waits for NATS to answer.
            starting = asyncio.ensure_future(
                recover_or_fetch(js, options.data_dir, durable, floor)
            )
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                return 0
            recovered, after = starting.result()
            follower = Follower(js, recovered, options.snapshot_every, floor, stop)
            follower.stream_seq = after
            node.become("standby", lambda f=follower: f.applied_seq)  # type: ignore[misc]
            try:
                leads = await follow(nc, follower, lease, stop, node)
            except Diverged as diverged:
                await follower.close(snapshot=False)
                await rewind_journal(options.data_dir, durable, diverged.seq - 1, str(diverged))
                continue
            except FollowError as problem:
                await follower.close(snapshot=False)
                try:
                    trimmed_past = await overtaken(js, follower.journal.last_seq, stop)
                except Stopped:
                    return 0
                if not trimmed_past:
                    print(f"exchange: standby stopped: {problem}", file=sys.stderr, flush=True)
                    return 2
                if overtakes.too_many(caught_up=follower.caught_up):
                    print(overtakes.why(), file=sys.stderr, flush=True)
                    return 2
                continue  # trimmed past it while it followed: the next turn fetches
            if not leads:
                await follower.close(snapshot=True)
                return 0
            await follower.hand_over()
            outcome = await _lead(nc, js, lease, follower, options, stop, node)
            if outcome.status is not None:
                return outcome.status
            await rewind_journal(options.data_dir, durable, outcome.keep_seq, outcome.reason)
    finally:
        heartbeat.cancel()
        await close_quietly(nc)


class Overtakes:
    """Turns in a row the stream's trim overtook this standby before it ever reached the
    stream's end (each then fetches a snapshot again), bounded by `limit`."""

    def __init__(self, limit: int = MAX_OVERTAKEN_IN_A_ROW) -> None:
        self.limit = limit
        self.count = 0

    def too_many(self, *, caught_up: bool) -> bool:
        """Count one more (a turn that reached the stream's end starts the count again);
        True when the node should stop fetching (`why` says why)."""
        self.count = 1 if caught_up else self.count + 1
        return self.count >= self.limit

    def why(self) -> str:
        return (f"exchange: standby stopped: the stream's trim overtook it {self.count} times "
                "in a row before it caught up (fetching and installing a snapshot, then "
                "catching up, take longer than the stream keeps: about two snapshot intervals "
                "of the leader's load); give it a faster disk or network, or start it when "
                "the load is lower")


@dataclass(frozen=True)
class LeadOutcome:
    status: int | None  # the exit status after a stop; None: stepped down
    keep_seq: int = 0  # what the stream holds of this leader's records: kept
    reason: str = ""


async def _lead(
    nc: NatsClient, js: JetStreamContext, lease: Lease, follower: Follower,
    options: NodeOptions, stop: asyncio.Event, node: NodeState,
) -> LeadOutcome:  # fmt: skip
    """Lead from the stream's end until stopped (an exit status) or fenced, or the lease
    lost (stepped down: what to keep of the journal)."""
    journal = follower.journal
    if options.fail_sync_when is not None:
        journal.store = SyncFailsWhen(journal.store, options.fail_sync_when)
    sequencer = Sequencer(
        follower.engine, journal, follower.snapshots,
        gather_seconds=options.gather_ms / 1_000, fork_snapshots=True,
        snapshot_every=options.snapshot_every,
    )  # fmt: skip
    sequencer.prune_below = follower.floor.prune_below  # what a refill may still need
    appender = FencedAppender(js, follower.stream_seq, f"{options.node_id}-{lease.revision}")
    publisher = StreamPublisher(js, appender, journal, confirm_lead=lease.confirm)
    published = publisher.published_seq = publisher.held_seq = follower.stream_record_seq
    loop = asyncio.get_running_loop()
    # Kept from now on: a long refill must not let the lease lapse (another node would
    # lead on a stream that lacks what this one is putting back).
    keeping = loop.create_task(_keep_lease(lease), name="lease")
    # A crash between a sync and a publish, or a lost stream: the journal's tail first
    # (as a task, so a stop meanwhile is heard: the refill retries while NATS is away).
    refilling = loop.create_task(publisher.refill(journal.last_seq), name="refill")
    stopped = loop.create_task(stop.wait())
    await asyncio.wait({refilling, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not refilling.done():
        for task in (refilling, keeping):
            task.cancel()
        journal.close()
        with contextlib.suppress(Exception):
            await lease.release()
        log.warning("stopped before the stream held this journal's tail: it is published "
                    "when this node leads again")  # fmt: skip
        return LeadOutcome(0)
    try:
        refilling.result()
        publisher.published_seq = journal.last_seq
    except FencedError as refused:
        keeping.cancel()
        journal.close()
        log.warning("%s; steps down", refused)
        # Nothing is cut here: what this journal holds past the stream may have been
        # acknowledged from a stream that was lost. Following the stream as a standby
        # compares its records with the stream's and cuts from the first that differs.
        return LeadOutcome(None, journal.last_seq, str(refused))
    sequencer.durable_batch_listeners.append(publisher.enqueue)
    intake = Intake(nc, sequencer, publisher)
    sequencing = loop.create_task(sequencer.run(), name="sequencer")
    publishing = loop.create_task(publisher.run(), name="stream-publisher")
    sharing = loop.create_task(SnapshotSharing(
        js, follower.snapshots, lambda: publisher.held_seq, follower.floor, options.trim_margin,
    ).run(), name="engine-snapshots")  # fmt: skip
    subscription = await nc.subscribe(w.COMMANDS, cb=intake.handle)
    # The server has the subscription before this node says it leads (a command sent right
    # after the ready line would otherwise find no one on the subject).
    with contextlib.suppress(Exception):
        await nc.flush(int(PUBLISH_TIMEOUT_S))
    node.become("leader", lambda: sequencer.durable_seq)
    node.say_ready(
        f"leader from seq {journal.last_seq} (stream had {published}), commands on "
        f"{w.COMMANDS}, batches to {w.STREAM}"
    )
    stopping = loop.create_task(stop.wait())
    await asyncio.wait(
        {stopping, sequencing, publishing, keeping}, return_when=asyncio.FIRST_COMPLETED
    )
    intake.accepting = False  # at once: nothing more is taken
    sharing.cancel()  # a snapshot put or a trim cut short is harmless
    stopping.cancel()
    with contextlib.suppress(Exception):
        await subscription.unsubscribe()
    fenced = _fence_of(publishing)
    if fenced is None and keeping.done() and not keeping.cancelled():
        reason = "the leader lease was lost (another node leads)"
        log.warning("%s; finishing what it took, through the fence", reason)
        await stop_and_wait(sequencer, sequencing)
        publisher.close()
        with contextlib.suppress(TimeoutError, FencedError):
            await asyncio.wait_for(asyncio.shield(publishing), PUBLISH_TIMEOUT_S * 2)
        fenced = _fence_of(publishing)
        if fenced is None:
            return await _step_down(intake, publisher, sequencing, publishing, keeping, reason)
    if fenced is not None:
        log.warning("%s; steps down", fenced)
        return await _step_down(intake, publisher, sequencing, publishing, keeping, str(fenced))
    keeping.cancel()
    status = await stop_and_wait(sequencer, sequencing)
    publisher.close()
    with contextlib.suppress(TimeoutError, FencedError):
        await asyncio.wait_for(publishing, PUBLISH_TIMEOUT_S * 2)
    if publisher.backlog:
        log.warning(
            "stopping with %d durable batches not yet in the stream: the next start "
            "publishes them from the journal", publisher.backlog,
        )  # fmt: skip
    await lease.release()
    return LeadOutcome(status)


def _fence_of(publishing: "asyncio.Task[None]") -> FencedError | None:
    if publishing.done() and not publishing.cancelled():
        problem = publishing.exception()
        if isinstance(problem, FencedError):
            return problem
    return None


async def _step_down(
    intake: Intake, publisher: StreamPublisher, sequencing: "asyncio.Task[None]",
    publishing: "asyncio.Task[None]", keeping: "asyncio.Task[bool]", reason: str,
) -> LeadOutcome:  # fmt: skip
    """Stop leading at once: what the sequencer holds is refused (UNAVAILABLE, through
    Intake.refused), and so is every durable batch the stream did not take (never
    acknowledged: a gateway answers only from the stream); the journal keeps only what
    the stream holds."""
    for task in (sequencing, publishing, keeping):
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    held = publisher.take_backlog()
    for _, payloads in held:  # bounded by MAX_UNPUBLISHED_BATCHES
        for payload in payloads:
            origin = decode_entry(payload).origin
            if origin:
                intake.refuse(origin, "UNAVAILABLE", "the sequencer lost the lead; resend")
    count = sum(len(p) for _, p in held)
    log.warning("steps down (%s): %d durable records not in the stream refused UNAVAILABLE",
                reason, count)  # fmt: skip
    return LeadOutcome(None, publisher.published_seq, reason)


async def _keep_lease(lease: Lease) -> bool:
    """Refresh the lease until it is lost (returns False then)."""
    while True:  # until lost or cancelled
        await asyncio.sleep(REFRESH_EVERY_S)
        try:
            if not await lease.refresh():
                return False
        except Exception as problem:  # noqa: BLE001 - NATS away: the fence still holds
            log.warning("leader lease refresh failed (%r); retrying", problem)


async def _heartbeats(nc: NatsClient, node: NodeState) -> None:
    """This node's status for the gateways' /v1/cluster, every STATUS_INTERVAL_S and at
    once when its role changes."""
    subject = nodestatus.subject(node.node_id)
    while True:  # until cancelled
        node.changed.clear()
        status = nodestatus.NodeStatus(w.WIRE_VERSION, node.node_id, node.role, node.applied())
        try:
            await nc.publish(subject, nodestatus.encode(status))
        except Exception as problem:  # noqa: BLE001 - NATS away: the next beat retries
            log.debug("status heartbeat failed: %r", problem)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(node.changed.wait(), nodestatus.STATUS_INTERVAL_S)
