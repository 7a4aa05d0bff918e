"""The heartbeat a sequencer publishes about itself, and what a gateway keeps of them, so
`GET /v1/cluster` can say who leads and how far each node has applied.

    sequencer --(core NATS, exchange.status.<node>, every STATUS_INTERVAL_S)--> gateways
        NodeStatus: version, node id, role ("leader"|"standby"), applied seq

Core NATS, not the stream: a heartbeat is only worth its latest value, and a lost one is
replaced a second later. No NATS client here (the roles publish and subscribe); the
clock is injected so what is forgotten when is tested without waiting.
"""

from collections.abc import Callable
from typing import Annotated, Literal

import msgspec

from exchange.natswire import WIRE_VERSION

STATUS_PREFIX = "exchange.status."
STATUS_SUBJECTS = STATUS_PREFIX + "*"
# A heartbeat a second: /v1/cluster is for people and probes, a second stale is fine.
STATUS_INTERVAL_S = 1.0
# A node not heard from for this many intervals is forgotten (it stopped or lost NATS);
# three rides out a GC pause or a busy second without flapping.
MISSED_BEATS_FORGOTTEN = 3
# Nodes kept at most: a cluster has a handful; a flood of made-up ids cannot grow memory.
MAX_NODES = 64
# A node id (the sequencer's --node-id): short and safe in a NATS subject token.
NodeId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z")]
Role = Literal["leader", "standby"]


class NodeStatus(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    version: int
    node_id: NodeId
    role: Role
    applied_seq: Annotated[int, msgspec.Meta(ge=0)]


_decoder = msgspec.msgpack.Decoder(NodeStatus)
_encoder = msgspec.msgpack.Encoder()


def subject(node_id: str) -> str:
    return STATUS_PREFIX + node_id


def encode(status: NodeStatus) -> bytes:
    return _encoder.encode(status)


def decode(data: bytes) -> NodeStatus:
    """Raises msgspec.DecodeError (malformed, a bound broken) or ValueError (a version
    this build does not speak)."""
    status = _decoder.decode(data)
    if status.version != WIRE_VERSION:
        raise ValueError(f"status of wire version {status.version}, not {WIRE_VERSION}")
    return status


class NodeTable:
    """The latest heartbeat of each node heard from recently (at most MAX_NODES)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._latest: dict[str, tuple[float, NodeStatus]] = {}

    def heard(self, status: NodeStatus) -> None:
        self._forget_silent()
        if status.node_id not in self._latest and len(self._latest) >= MAX_NODES:
            return  # full of live nodes: a new id waits until one goes quiet
        self._latest[status.node_id] = (self.clock(), status)

    def nodes(self) -> list[NodeStatus]:
        """Live nodes, by node id."""
        self._forget_silent()
        return [status for _, (_, status) in sorted(self._latest.items())]

    def leader(self) -> str | None:
        """The leader heard from most recently (one, unless a stale one has yet to lapse)."""
        self._forget_silent()
        leaders = [(at, s.node_id) for at, s in self._latest.values() if s.role == "leader"]
        return max(leaders)[1] if leaders else None

    def _forget_silent(self) -> None:
        oldest = self.clock() - STATUS_INTERVAL_S * MISSED_BEATS_FORGOTTEN
        for node_id in [n for n, (at, _) in self._latest.items() if at < oldest]:
            del self._latest[node_id]
