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
import base64
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DIGEST_TYPE,
    OBJ_STREAM_TEMPLATE,
    ObjectStore,
)

from exchange import natswire as w

READ_BUCKET = "EXCHANGE_READ"
ENGINE_BUCKET = "EXCHANGE_ENGINE"

# The third part names the stream the snapshot belongs to (stream_id): absent in names
# from before it was added, which then belong to no stream.
_READ_NAME = re.compile(r"^read-(\d{20})-(\d{20})(?:-([0-9A-Za-z]{1,40}))?\Z")
_ENGINE_NAME = re.compile(r"^engine-(\d{20})-(\d{20})(?:-([0-9A-Za-z]{1,40}))?\Z")


@dataclass(frozen=True, order=True)
class Stored:
    """A read snapshot in the bucket: the record seq it follows, and the stream message
    that ended that record's batch."""

    seq: int
    stream_seq: int
    stream: str = ""  # the stream's identity (stream_id): whose positions these are

    @property
    def name(self) -> str:
        return f"read-{self.seq:020d}-{self.stream_seq:020d}" + _suffix(self.stream)


@dataclass(frozen=True, order=True)
class Placed:
    """An engine snapshot in the bucket: the record seq it follows, and the stream
    message after which a node that installed it follows the stream."""

    seq: int
    after: int
    stream: str = ""  # the stream's identity (stream_id): whose positions these are

    @property
    def name(self) -> str:
        return f"engine-{self.seq:020d}-{self.after:020d}" + _suffix(self.stream)


def _suffix(stream: str) -> str:
    return f"-{stream}" if stream else ""


def parse_name(name: str | None) -> Stored | None:
    match = _READ_NAME.match(name or "")
    return Stored(int(match[1]), int(match[2]), match[3] or "") if match else None


def parse_engine_name(name: str | None) -> Placed | None:
    match = _ENGINE_NAME.match(name or "")
    return Placed(int(match[1]), int(match[2]), match[3] or "") if match else None


def stream_id(info: api.StreamInfo) -> str:
    """Which stream this is, told apart from one of the same name made again (deleted,
    lost with a NATS store, wiped): its creation time, to the microsecond, as every
    replica has it. A snapshot names the stream it was taken on: one from another stream
    (a bucket left over) is passed over, whatever its seqs and positions say."""
    if info.created is None:
        return "unknown"  # a server that does not say: every stream looks alike
    return info.created.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


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


async def read_snapshots(obs: ObjectStore, stream: str | None = None) -> list[Stored]:
    """The read snapshots in the bucket, newest first (other objects are ignored); with
    `stream`, only that stream's."""
    found = {parse_name(name) for name in await _names(obs)}
    return sorted((s for s in found if s is not None and stream in (None, s.stream)),
                  reverse=True)  # fmt: skip


async def engine_snapshots(obs: ObjectStore, stream: str | None = None) -> list[Placed]:
    """The engine snapshots in the bucket, newest first (other objects are ignored); with
    `stream`, only that stream's."""
    found = {parse_engine_name(name) for name in await _names(obs)}
    return sorted((s for s in found if s is not None and stream in (None, s.stream)),
                  reverse=True)  # fmt: skip


async def _names(obs: ObjectStore) -> list[str | None]:
    try:
        infos = await obs.list(ignore_deletes=True)
    except NotFoundError:  # an empty bucket
        return []
    return [info.name for info in infos]


class TooBigError(Exception):
    """A snapshot past its kind's size bound: not put, not fetched."""


async def get_file(
    js: JetStreamContext, bucket: ObjectStore, name: str, path: Path, max_bytes: int
) -> int:
    """Fetch `name` into the file at `path` (made or emptied) one chunk at a time, each
    read by a direct get of the bucket's stream and written before the next is asked for
    (never whole in memory: nats-py's own get has the server push chunks faster than a
    disk takes them, a third of the object or more held at once); the object store's
    SHA-256 digest checked. Returns its size. TooBigError, before any chunk comes, past
    `max_bytes` (not one of ours, or more than a node should load); ValueError when its
    chunks are gone (deleted meanwhile) or do not match its digest."""
    info = await bucket.get_info(name)
    if info.size is None or info.size > max_bytes:
        raise TooBigError(f"{name} is {info.size} bytes, past the bound {max_bytes}")
    if not info.nuid or not info.digest:
        raise ValueError(f"{name} has no chunks or no digest in its description")
    stream = OBJ_STREAM_TEMPLATE.format(bucket=info.bucket)
    subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=info.bucket, obj=info.nuid)
    digest = hashlib.sha256()
    got = position = 0
    with path.open("wb") as f:
        while got < info.size:  # bounded: each turn brings one chunk of it, or fails
            try:
                msg = await js.get_msg(stream, seq=position + 1, subject=subject, next=True)
            except NotFoundError:
                raise ValueError(f"{name}: chunks gone after {got} bytes") from None
            data = msg.data or b""
            if not data or got + len(data) > info.size:
                raise ValueError(f"{name}: a chunk past its {info.size} bytes")
            f.write(data)
            digest.update(data)
            got += len(data)
            position = msg.seq or position + 1
    expected = info.digest.removeprefix(OBJ_DIGEST_TYPE).removeprefix(OBJ_DIGEST_TYPE.upper())
    if digest.digest() != base64.urlsafe_b64decode(expected):
        raise ValueError(f"{name}: its bytes do not match its SHA-256 digest")
    return got


async def put_file(bucket: ObjectStore, name: str, path: Path, max_bytes: int) -> None:
    """Put the file at `path` as `name`, read from the file as it goes (never whole in
    memory); TooBigError, with nothing put, past `max_bytes` (what a fetch would refuse,
    and a trim would count on). A put cut short (the caller's timeout, a step-down
    cancelling it) is left to fail inside nats-py, on the file closed under it: nats-py
    removes a failed put's chunks only on an exception, and a put cancelled outright would
    leave them in the bucket for ever, where nothing points to them."""
    size = path.stat().st_size
    if size > max_bytes:
        raise TooBigError(f"{name} is {size} bytes, past the bound {max_bytes}: not put")
    with path.open("rb") as f:
        putting = asyncio.ensure_future(bucket.put(name, f))
        putting.add_done_callback(_retrieved)
        await asyncio.shield(putting)


def _retrieved(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled():
        task.exception()  # a put failed after its caller left: its chunks were removed
