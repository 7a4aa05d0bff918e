"""The JetStream object store buckets a cluster keeps its snapshots in, and the names of
the snapshots in them: what a node or a gateway started late (or with an empty disk)
loads instead of the whole stream, and what the stream's trim (exchange/streamtrim.py)
must leave it able to follow.

- READ_BUCKET: the gateways' read snapshots (gateway/readbucket.py), each named
  `read-<record seq>-<stream seq>`: the read state after that record, and the stream
  message that ended its batch (a gateway follows the stream after it; the message
  itself must still be there, its load checks it ends at that record).
- ENGINE_BUCKET: the leading sequencer's engine snapshots (exchange/enginebucket.py),
  each named `engine-<record seq>-<stream seq>`: the engine state after that record
  (exchange/journal/snapshots.py's file, byte for byte), and the stream message after
  which a node that installed it follows the stream (the message after it holds the
  next record: a snapshot may fall mid-batch).

Both are made, if missing, with file storage and as many replicas as the stream.
"""

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore

from exchange import natswire as w

READ_BUCKET = "EXCHANGE_READ"
ENGINE_BUCKET = "EXCHANGE_ENGINE"

_READ_NAME = re.compile(r"^read-(\d{20})-(\d{20})\Z")
_ENGINE_NAME = re.compile(r"^engine-(\d{20})-(\d{20})\Z")


@dataclass(frozen=True, order=True)
class Stored:
    """A read snapshot in the bucket: the record seq it follows, and the stream message
    that ended that record's batch."""

    seq: int
    stream_seq: int

    @property
    def name(self) -> str:
        return f"read-{self.seq:020d}-{self.stream_seq:020d}"


@dataclass(frozen=True, order=True)
class Placed:
    """An engine snapshot in the bucket: the record seq it follows, and the stream
    message after which a node that installed it follows the stream."""

    seq: int
    after: int

    @property
    def name(self) -> str:
        return f"engine-{self.seq:020d}-{self.after:020d}"


def parse_name(name: str | None) -> Stored | None:
    match = _READ_NAME.match(name or "")
    return Stored(int(match[1]), int(match[2])) if match else None


def parse_engine_name(name: str | None) -> Placed | None:
    match = _ENGINE_NAME.match(name or "")
    return Placed(int(match[1]), int(match[2])) if match else None


async def open_bucket(js: JetStreamContext, bucket: str) -> ObjectStore:
    """The bucket (made if missing, with as many replicas as the stream has)."""
    try:
        return await js.object_store(bucket)
    except BucketNotFoundError:
        pass
    replicas = (await js.stream_info(w.STREAM)).config.num_replicas or 1
    config = api.ObjectStoreConfig(storage=api.StorageType.FILE, replicas=replicas)
    try:
        return await js.create_object_store(bucket, config)
    except BadRequestError:  # another node made it meanwhile
        return await js.object_store(bucket)


async def read_snapshots(obs: ObjectStore) -> list[Stored]:
    """The read snapshots in the bucket, newest first (other objects are ignored)."""
    found = {parse_name(name) for name in await _names(obs)}
    return sorted((s for s in found if s is not None), reverse=True)


async def engine_snapshots(obs: ObjectStore) -> list[Placed]:
    """The engine snapshots in the bucket, newest first (other objects are ignored)."""
    found = {parse_engine_name(name) for name in await _names(obs)}
    return sorted((s for s in found if s is not None), reverse=True)


async def _names(obs: ObjectStore) -> list[str | None]:
    try:
        infos = await obs.list(ignore_deletes=True)
    except NotFoundError:  # an empty bucket
        return []
    return [info.name for info in infos]


async def put_file(bucket: ObjectStore, name: str, path: Path) -> None:
    """Put the file at `path` as `name`, read from the file as it goes (never whole in
    memory). A put cut short (the caller's timeout, a step-down cancelling it) is left to
    fail inside nats-py, on the file closed under it: nats-py removes a failed put's chunks
    only on an exception, and a put cancelled outright would leave them in the bucket for
    ever, where nothing points to them."""
    with path.open("rb") as f:
        putting = asyncio.ensure_future(bucket.put(name, f))
        putting.add_done_callback(_retrieved)
        await asyncio.shield(putting)


def _retrieved(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled():
        task.exception()  # a put failed after its caller left: its chunks were removed
