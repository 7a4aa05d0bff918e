"""`exchange sequencer --nats URL --data-dir DIR`: the serial core as a process of its own.

It takes typed, bounded commands off a core NATS subject (decoded once: the decode is the
validation), sequences and applies them, journals them locally with fsync group commit
as `exchange serve` does, and publishes each durable batch, as the journal holds it, to
the JetStream stream every gateway follows (exchange/natswire.py). It does no JSON,
talks to no client and keeps no read model. On start it first publishes what its journal
holds and the stream does not (a crash between a sync and a publish), in the journal's
batches, and so it does whenever the stream is found to have lost records while it
runs (StreamPublisher.refill). A command it cannot take is refused to its gateway at
once (BUSY while the stream falls behind by MAX_UNPUBLISHED_BATCHES, or the queue is
full); a message that is not a command (malformed, too big, another wire version) is
logged and dropped: never journaled, never fatal.
"""

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from exchange import natswire as w
from exchange import nodestatus
from exchange.bus import BusyError, InvalidCommandError, SequencerStoppedError
from exchange.datadir import DataDirError, claim
from exchange.journal.journal import Journal, JournalCorruptError
from exchange.natsstream import ensure_stream, last_published_seq, log_nats_error
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, RecoveryError
from exchange.runtime import stop_on_signals
from exchange.sequencer import GATHER_MS, Sequencer, recover_sequencer, stop_and_wait

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
# JetStream's error code for a publish whose Nats-Expected-Last-Sequence is not the
# stream's last message.
WRONG_LAST_SEQUENCE = 10071
# Connecting to NATS at start: how long before giving up with one line.
CONNECT_TIMEOUT_S = 10.0
# Lines a second about bad messages on the command subject (the rest are counted).
BAD_MESSAGE_LINES_PER_S = 5


@dataclass(frozen=True)
class NodeOptions:
    nats_urls: list[str]
    data_dir: Path
    durability: str = "fsync"
    node_id: str = "sequencer-1"
    gather_ms: float = GATHER_MS


class StreamAheadError(Exception):
    """The stream holds records this journal does not: another sequencer wrote them."""


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


class StreamPublisher:
    """Publishes durable batches to the stream in seq order, each message retried until
    the stream acks it (its Nats-Msg-Id makes a retry of a stored message a no-op).

    Each message names the stream's last message as this publisher knows it (JetStream's
    Nats-Expected-Last-Sequence), so a stream that lost records (its store deleted, a
    tail lost, made again empty) refuses the message instead of storing it past a hole;
    the publisher then refills the stream from the journal and goes on. Between batches
    it looks at the stream every STREAM_CHECK_S, so a lost stream is refilled without
    waiting for the next order."""

    def __init__(self, js: JetStreamContext, journal: Journal) -> None:
        self.js = js
        self.journal = journal
        self._queue: deque[tuple[int, list[bytes]]] = deque()  # <= MAX_UNPUBLISHED_BATCHES
        self._ready = asyncio.Event()
        self.published_seq = 0
        self.closing = False
        self.stream_seq = 0  # the stream's last message, as the last ack or look said
        self.held_seq = 0  # the last record the stream holds, as the last ack or look said

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def enqueue(self, first_seq: int, payloads: list[bytes]) -> None:
        """From the sequencer, as a batch becomes durable (intake keeps the bound)."""
        self._queue.append((first_seq, list(payloads)))
        self._ready.set()

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
                headers = {"Nats-Msg-Id": f"batch-{start}",
                           "Nats-Expected-Last-Sequence": str(self.stream_seq)}  # fmt: skip
                try:
                    ack = await self.js.publish(
                        w.BATCHES, data, stream=w.STREAM, timeout=PUBLISH_TIMEOUT_S,
                        headers=headers,
                    )  # fmt: skip
                    break
                except Exception as problem:  # noqa: BLE001 - NATS away: retry
                    if stream_lost(problem):
                        return False
                    log.warning("stream publish of seq %d failed (%r); retrying", start, problem)
                    await asyncio.sleep(PUBLISH_RETRY_S)
            self.stream_seq, self.held_seq = ack.seq, end
        return True

    async def refill(self, upto: int) -> None:
        """Make the stream hold every record to `upto` (all published before): look at
        how far it reaches and publish what it lost from the journal, in its batches."""
        while True:  # until the stream reaches `upto`; each turn looks, then refills
            while True:  # until NATS answers
                try:
                    await ensure_stream(self.js)
                    self.stream_seq = (await self.js.stream_info(w.STREAM)).state.last_seq
                    self.held_seq = await last_published_seq(self.js)
                    break
                except Exception as problem:  # noqa: BLE001 - NATS away: retry
                    log.warning("cannot see how far the stream reaches (%r); retrying", problem)
                    await asyncio.sleep(PUBLISH_RETRY_S)
            if self.held_seq > self.journal.last_seq:
                msg = (f"the stream holds records to seq {self.held_seq}, this journal only "
                       f"to {self.journal.last_seq}: another sequencer wrote them")  # fmt: skip
                raise StreamAheadError(msg)
            if self.held_seq >= upto:
                return
            log.warning("the stream holds records to seq %d, the journal to %d: "
                        "publishing the rest from the journal", self.held_seq, upto)  # fmt: skip
            if not await self._refill_from_journal(upto):
                continue  # lost again meanwhile: look again
            log.warning("the stream holds records to seq %d again", upto)
            return

    async def _refill_from_journal(self, upto: int) -> bool:
        if self.held_seq + 1 < self.journal.first_seq:
            msg = (f"the stream lost seq {self.held_seq + 1}, which the journal no longer "
                   f"holds (a snapshot pruned it to seq {self.journal.first_seq}): the "
                   "stream cannot be refilled")  # fmt: skip
            raise StreamRefillError(msg)
        for first_seq, payloads in unpublished_batches(self.journal, self.held_seq):
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


def stream_lost(problem: Exception) -> bool:
    """A publish refused because the stream is gone or holds less than this publisher
    stored in it (not a passing outage: a retry of the same message cannot succeed)."""
    if isinstance(problem, NoStreamResponseError | NotFoundError):
        return True
    return isinstance(problem, APIError) and problem.err_code == WRONG_LAST_SEQUENCE


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
        sequencer.on_refused = self.refused

    async def handle(self, msg: Msg) -> None:
        try:
            message = w.decode_command(msg.data)
        except (msgspec.DecodeError, w.VersionError) as problem:
            self._bad(msg, problem)
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
    except (JournalCorruptError, RecoveryError, StreamAheadError, StreamRefillError,
            w.VersionError, msgspec.DecodeError) as problem:  # fmt: skip
        print(f"exchange: the sequencer stops: {problem}", file=sys.stderr, flush=True)
        return 2
    except (OSError, TimeoutError, nats.errors.NoServersError) as problem:
        urls = ",".join(options.nats_urls)
        print(f"exchange: cannot reach NATS at {urls}: {problem}", file=sys.stderr, flush=True)
        return 2
    finally:
        lock.release()


async def _run(options: NodeOptions) -> int:
    recovered, sequencer = recover_sequencer(
        options.data_dir, options.durability, options.gather_ms
    )
    nc = await nats.connect(
        servers=options.nats_urls, name=options.node_id, connect_timeout=CONNECT_TIMEOUT_S,
        max_reconnect_attempts=-1, allow_reconnect=True, error_cb=log_nats_error,
    )  # fmt: skip
    js = nc.jetstream()
    await ensure_stream(js)
    published = await last_published_seq(js)
    if published > recovered.journal.last_seq:
        await nc.close()
        msg = (
            f"the stream holds records to seq {published}, this journal only to "
            f"{recovered.journal.last_seq}: another sequencer wrote them"
        )
        raise StreamAheadError(msg)
    publisher = StreamPublisher(js, recovered.journal)
    await publisher.refill(recovered.journal.last_seq)
    publisher.published_seq = recovered.journal.last_seq
    log.info("stream caught up to seq %d (was %d)", recovered.journal.last_seq, published)
    sequencer.durable_batch_listeners.append(publisher.enqueue)
    intake = Intake(nc, sequencer, publisher)
    loop = asyncio.get_running_loop()
    sequencing = loop.create_task(sequencer.run(), name="sequencer")
    publishing = loop.create_task(publisher.run(), name="stream-publisher")
    subscription = await nc.subscribe(w.COMMANDS, cb=intake.handle)
    heartbeat = loop.create_task(_heartbeats(nc, options.node_id, sequencer), name="heartbeat")
    stop = stop_on_signals()
    print(
        f"exchange sequencer {options.node_id} ready: journal at seq "
        f"{recovered.journal.last_seq}, commands on {w.COMMANDS}, batches to {w.STREAM}",
        flush=True,
    )
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({stopping, sequencing, publishing}, return_when=asyncio.FIRST_COMPLETED)
    await subscription.unsubscribe()
    status = await stop_and_wait(sequencer, sequencing)
    publisher.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(publishing, PUBLISH_TIMEOUT_S * 2)
    if publisher.backlog:
        log.warning(
            "stopping with %d durable batches not yet in the stream: the next start "
            "publishes them from the journal", publisher.backlog,
        )  # fmt: skip
    stopping.cancel()
    heartbeat.cancel()
    await nc.close()
    return status


async def _heartbeats(nc: NatsClient, node_id: str, sequencer: Sequencer) -> None:
    """This node's status for the gateways' /v1/cluster, every STATUS_INTERVAL_S."""
    subject = nodestatus.subject(node_id)
    # Always "leader" for now: one sequencer writes (standbys arrive with issue 15).
    while True:  # until cancelled
        status = nodestatus.NodeStatus(w.WIRE_VERSION, node_id, "leader", sequencer.durable_seq)
        try:
            await nc.publish(subject, nodestatus.encode(status))
        except Exception as problem:  # noqa: BLE001 - NATS away: the next beat retries
            log.debug("status heartbeat failed: %r", problem)
        await asyncio.sleep(nodestatus.STATUS_INTERVAL_S)
