"""The JetStream stream of durable batches, as both roles need it: made if missing, and how
far it reaches. (The gateway side may not import the sequencer's process module.)"""

import asyncio
import logging

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from exchange import natswire as w

log = logging.getLogger(__name__)

# A stop's close of the NATS connection, at most (nats-py flushes what is pending).
CLOSE_TIMEOUT_S = 5.0
# Looks at the stream's first message in a row that a trim can pass between reading the
# stream's start and reading that message (a trim comes once a snapshot interval at most,
# so a second look nearly always holds; past this many, the caller's retry takes over).
FIRST_RECORD_LOOKS = 4


async def close_quietly(nc: NatsClient) -> None:
    """Close the connection at a stop, whatever state it is in: nats-py's close of a
    connection that is reconnecting (NATS away) fails writing its pending data to the
    closed socket, which would turn a clean stop into a traceback and status 1."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await nc.close()
    except Exception as problem:  # noqa: BLE001 - the process is stopping either way
        log.warning("the NATS connection did not close cleanly: %r", problem)


async def log_nats_error(problem: Exception) -> None:
    """nats-py's error callback: one line a problem (its default prints a traceback on
    every reconnect attempt while the server is away)."""
    log.warning("NATS: %r", problem)


async def ensure_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """The stream of durable batches (created if missing; left as it is if present)."""
    try:
        await js.stream_info(w.STREAM)
    except NotFoundError:
        await js.add_stream(
            name=w.STREAM, subjects=[w.BATCHES], storage="file", num_replicas=replicas,
            max_msg_size=w.NATS_MAX_PAYLOAD,
        )  # fmt: skip


async def last_published_seq(js: JetStreamContext) -> int:
    """The seq of the newest record in the stream (0 when it is empty)."""
    try:
        last = await js.get_last_msg(w.STREAM, w.BATCHES)
    except NotFoundError:
        return 0
    batch = w.decode_batch(last.data or b"")
    return batch.first_seq + len(batch.records) - 1


async def records_of(js: JetStreamContext, stream_seq: int) -> tuple[int, int, bool] | None:
    """(first record, last record, ends its batch) of stream message `stream_seq`; None
    when the stream does not hold it (past its end, or trimmed)."""
    try:
        message = await js.get_msg(w.STREAM, stream_seq)
    except NotFoundError:
        return None
    batch = w.decode_batch(message.data or b"")
    return batch.first_seq, batch.first_seq + len(batch.records) - 1, batch.batch_end


async def stream_start(js: JetStreamContext) -> tuple[int, int] | None:
    """(the stream's first message, the first record in it); None when it holds none. A
    trim between the two reads is looked past (TimeoutError after FIRST_RECORD_LOOKS: the
    caller retries as for NATS away)."""
    for _ in range(FIRST_RECORD_LOOKS):
        state = (await js.stream_info(w.STREAM)).state
        if state.messages == 0:
            return None
        span = await records_of(js, state.first_seq)
        if span is not None:
            return state.first_seq, span[0]
    msg = f"the stream's start moved {FIRST_RECORD_LOOKS} times while it was looked at"
    raise TimeoutError(msg)


async def first_record(js: JetStreamContext) -> int | None:
    """The first record the stream holds; None when it holds none (as stream_start)."""
    start = await stream_start(js)
    return None if start is None else start[1]


async def message_holding(js: JetStreamContext, seq: int) -> int | None:
    """The stream message holding record `seq` (the first such, should a batch be stored
    twice), by a binary search over the stream's messages (their records only grow with
    their position); None when no message holds it."""
    state = (await js.stream_info(w.STREAM)).state
    low, high = state.first_seq, state.last_seq
    while low <= high:  # bounded: halves each turn, ~log2 of the stream's length
        middle = (low + high) // 2
        span = await records_of(js, middle)
        if span is None or span[1] < seq:  # None: trimmed meanwhile, look above it
            low = middle + 1
        elif span[0] > seq:
            high = middle - 1
        else:
            if middle > state.first_seq:  # an earlier copy of the same batch comes first
                earlier = await records_of(js, middle - 1)
                if earlier is not None and earlier[0] <= seq <= earlier[1]:
                    high = middle - 1
                    continue
            return middle
    return None


async def follow_point(js: JetStreamContext, seq: int) -> int | None:
    """The stream message after which a node whose state is that after record `seq`
    follows the stream: the one ending at `seq`, or the one before the message that holds
    it mid-way (whose records up to `seq` the node then skips); None when the stream does
    not hold record `seq`."""
    holding = await message_holding(js, seq)
    if holding is None:
        return None
    span = await records_of(js, holding)
    return holding if span is not None and span[1] == seq else holding - 1


async def continues_at(js: JetStreamContext, seq: int, after: int) -> bool:
    """Whether a node whose state is that after record `seq` can follow this stream from
    the message after `after`: that message holds record seq+1 (or, the stream ending
    there, message `after` ends at `seq`), and the stream still holds it."""
    following = await records_of(js, after + 1)
    if following is not None:
        return following[0] <= seq + 1 <= following[1]
    state = (await js.stream_info(w.STREAM)).state
    if after + 1 <= state.last_seq:
        return False  # trimmed past it
    ending = await records_of(js, after) if after else None
    return ending is not None and ending[1] == seq and ending[2]
