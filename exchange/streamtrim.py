"""Trimming the stream: its messages below the oldest point anyone may still start from.

Who starts from where:
- a gateway from a read snapshot in READ_BUCKET (exchange/buckets.py): it needs the
  stream message its name gives (its load checks that message ends the snapshot's
  record) and every one after it;
- a sequencer whose journal ends before the stream's first record from an engine
  snapshot in ENGINE_BUCKET: it needs the message after the one its name gives;
- the leader, refilling a stream that lost records (exchange/sequencer_node.py's
  StreamPublisher), from its journal: no bound here, the other way round: every node
  prunes its journal only below the stream's first record (exchange/streamfloor.py), so
  the stream and any node's journal together hold every record from the stream's first;
- a gateway or standby that follows the stream live, from where it is: a margin of
  messages (TRIM_MARGIN_MESSAGES) behind the stream's end is always kept.

The rule (trim_point): keep every message from the smallest of these points, where each
kind's snapshot point is that of the older of its newest two snapshots (TRIM_BASIS): the
newest one damaged, a node falls back to the older one, which must still be usable; no
trim at all while a kind has fewer than two. Snapshots are only ever added newer than
those kept, and deleted oldest first, so every snapshot still in a bucket after a trim is
at or past the trim point. A snapshot whose named message does not fit this stream (a
bucket left from a stream since lost, named by another stream_id or not fitting its
positions) stops the trim: nothing is trimmed on its account.

The leader trims (JetStream purge up to, not including, the point) each time it has put
an engine snapshot, so at most once every SNAPSHOT_EVERY records.
"""

import logging
from collections.abc import Sequence
from typing import TypeVar

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore

from exchange import natswire as w
from exchange.buckets import READ_BUCKET, engine_snapshots, read_snapshots, stream_id
from exchange.natsstream import continues_at, records_of

log = logging.getLogger(__name__)

# Messages behind the stream's end never trimmed, whatever the snapshots: a gateway or
# standby following live this far behind (several seconds at the busiest, a batch a
# millisecond) is never cut off. The snapshots' points are a whole snapshot interval
# behind the end already; this binds only when they are very close together.
TRIM_MARGIN_MESSAGES = 10_000
# Each kind's snapshots counted from the newest: the trim keeps the TRIM_BASIS-th newest
# usable, so a damaged newest one still has a fallback that fits the stream.
TRIM_BASIS = 2

T = TypeVar("T")


def trim_point(
    first_seq: int, last_seq: int, needed: Sequence[int | None], margin: int
) -> int | None:
    """The stream message to trim below (purged up to, not including it), given the
    stream's first and last message and the message each kind of starter needs (None: a
    kind with no usable point, nothing is trimmed); None when nothing is to be trimmed."""
    if margin < 1:
        raise ValueError(f"a trim margin is at least one message, not {margin}")
    if last_seq < first_seq or any(point is None for point in needed):
        return None
    point = min([p for p in needed if p is not None] + [last_seq - margin + 1])
    return point if point > first_seq else None


def basis(snapshots: Sequence[T]) -> T | None:
    """The snapshot a kind's trim point comes from (newest first): the TRIM_BASIS-th."""
    return snapshots[TRIM_BASIS - 1] if len(snapshots) >= TRIM_BASIS else None


async def trim(js: JetStreamContext, engine: ObjectStore, margin: int) -> int | None:
    """Trim the stream by the rule above; returns the new first message, None if untouched."""
    info = await js.stream_info(w.STREAM)
    state, stream = info.state, stream_id(info)
    if state.messages == 0:
        return None
    needed = [await _engine_point(js, engine, stream), await _read_point(js, stream)]
    point = trim_point(state.first_seq, state.last_seq, needed, margin)
    if point is None:
        return None
    await js.purge_stream(w.STREAM, seq=point)
    log.info(
        "stream trimmed below message %d (it started at %d; engine and read points %s)",
        point, state.first_seq, needed,
    )  # fmt: skip
    return point


async def _engine_point(js: JetStreamContext, engine: ObjectStore, stream: str) -> int | None:
    placed = basis(await engine_snapshots(engine, stream))
    if placed is None or not await continues_at(js, placed.seq, placed.after):
        return None
    return placed.after + 1


async def _read_point(js: JetStreamContext, stream: str) -> int | None:
    try:
        bucket = await js.object_store(READ_BUCKET)
    except BucketNotFoundError:
        return None
    stored = basis(await read_snapshots(bucket, stream))
    if stored is None:
        return None
    span = await records_of(js, stored.stream_seq)
    if span is None or span[1] != stored.seq or not span[2]:
        return None  # not this stream's (or trimmed past already): trim nothing for it
    return stored.stream_seq
