"""`exchange sequencer --nats URL --data-dir DIR`: the serial core as a process of its own.

It takes typed, bounded commands off a core NATS subject (decoded once: the decode is the
validation), sequences and applies them, journals them locally with fsync group commit
as `exchange serve` does, and publishes each durable batch, as the journal holds it, to
the JetStream stream every gateway follows (exchange/natswire.py). It does no JSON,
talks to no client and keeps no read model. On start it first publishes what its journal
holds and the stream does not (a crash between a sync and a publish), in the journal's
batches. A command it cannot take is refused to its gateway at once (BUSY while the
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

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
    the stream acks it (its Nats-Msg-Id makes a retry of a stored message a no-op)."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._queue: deque[tuple[int, list[bytes]]] = deque()  # <= MAX_UNPUBLISHED_BATCHES
        self._ready = asyncio.Event()
        self.published_seq = 0
        self.closing = False

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
                await self._ready.wait()
                continue
            first_seq, payloads = self._queue[0]
            await self.publish(first_seq, payloads)
            self._queue.popleft()

    async def publish(self, first_seq: int, payloads: list[bytes]) -> None:
        for start, data in w.batch_messages(first_seq, payloads):
            while True:  # until acked: the stream must hold every durable batch, in order
                try:
                    await self.js.publish(
                        w.BATCHES, data, stream=w.STREAM, timeout=PUBLISH_TIMEOUT_S,
                        headers={"Nats-Msg-Id": f"batch-{start}"},
                    )  # fmt: skip
                    break
                except Exception as problem:  # noqa: BLE001 - NATS away: retry
                    log.warning("stream publish of seq %d failed (%r); retrying", start, problem)
                    await asyncio.sleep(PUBLISH_RETRY_S)
        self.published_seq = first_seq + len(payloads) - 1

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
    except (JournalCorruptError, RecoveryError, StreamAheadError, w.VersionError,
            msgspec.DecodeError) as problem:  # fmt: skip
        print(f"exchange: cannot start the sequencer: {problem}", file=sys.stderr, flush=True)
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
    publisher = StreamPublisher(js)
    for first_seq, payloads in unpublished_batches(recovered.journal, published):
        await publisher.publish(first_seq, payloads)
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
