"""`GET /v1/cluster`: who leads, each sequencer node's applied seq, and how far the stream
reaches, as one gateway sees it.

In cluster mode the nodes come from their heartbeats (exchange/nodestatus.py) and the
stream's reach from JetStream, asked at most once every STREAM_INFO_EVERY_S however many
clients ask. In `exchange serve` there is one node, "serve", and its journal is the log:
its applied seq and stream_seq are both the durable seq.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from exchange import nodestatus
from exchange.natsstream import last_published_seq
from gateway.readmodel import ReadModel

log = logging.getLogger(__name__)

# The stream's reach is asked of JetStream at most this often (a probe polling every
# gateway must not turn into a JetStream request per call).
STREAM_INFO_EVERY_S = 1.0
# One such request: a NATS server that does not answer in this long is reported as null.
STREAM_INFO_TIMEOUT_S = 2.0
SINGLE_NODE_ID = "serve"


class NodeInfo(msgspec.Struct, frozen=True):
    node_id: str
    role: str
    applied_seq: int


class ClusterInfo(msgspec.Struct, frozen=True):
    leader: str | None
    nodes: list[NodeInfo]
    stream_seq: int | None


class ClusterSource(Protocol):
    async def describe(self) -> ClusterInfo: ...


class SingleProcess:
    """`exchange serve`: one node, always the leader."""

    def __init__(self, read: ReadModel) -> None:
        self.read = read

    async def describe(self) -> ClusterInfo:
        seq = self.read.durable_seq
        return ClusterInfo(SINGLE_NODE_ID, [NodeInfo(SINGLE_NODE_ID, "leader", seq)], seq)


class NatsClusterView:
    """A gateway's view of the cluster: start() to listen to heartbeats, close() at the end."""

    def __init__(
        self, nc: NatsClient, js: JetStreamContext, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.nc = nc
        self.js = js
        self.clock = clock
        self.table = nodestatus.NodeTable(clock)
        self._stream_seq: int | None = None
        self._asked_at = float("-inf")
        self._asking = asyncio.Lock()
        self._subscription: object = None

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(nodestatus.STATUS_SUBJECTS, cb=self._heard)

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()  # type: ignore[attr-defined]

    async def _heard(self, msg: Msg) -> None:
        try:
            self.table.heard(nodestatus.decode(msg.data))
        except (msgspec.DecodeError, ValueError) as problem:
            log.debug("ignored a status message on %s: %s", msg.subject, problem)

    async def describe(self) -> ClusterInfo:
        nodes = [NodeInfo(s.node_id, s.role, s.applied_seq) for s in self.table.nodes()]
        return ClusterInfo(self.table.leader(), nodes, await self.stream_seq())

    async def stream_seq(self) -> int | None:
        """The seq of the newest record the stream holds (None while JetStream is away)."""
        async with self._asking:  # one request at a time; the others take its answer
            if self.clock() - self._asked_at >= STREAM_INFO_EVERY_S:
                try:
                    async with asyncio.timeout(STREAM_INFO_TIMEOUT_S):
                        self._stream_seq = await last_published_seq(self.js)
                except Exception as problem:  # noqa: BLE001 - NATS away: say so, do not fail
                    log.warning("stream info for /v1/cluster failed: %r", problem)
                    self._stream_seq = None
                self._asked_at = self.clock()
            return self._stream_seq


async def handler(request: web.Request) -> web.Response:
    source: ClusterSource = request.app["cluster"]
    body = msgspec.json.encode(await source.describe())
    return web.Response(body=body, content_type="application/json")
