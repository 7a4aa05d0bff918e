"""GET /v1/cluster's parts: the table of node heartbeats (what is kept, what is forgotten,
who leads), the stream's reach asked of a real JetStream at most once a second, and the
one-node answer of `exchange serve`."""

from pathlib import Path

import msgspec
import nats
import pytest

from exchange import natswire, nodestatus
from exchange.natsserver import NatsNode
from exchange.natsstream import ensure_stream
from gateway.client import Admin
from gateway.clusterview import STREAM_INFO_EVERY_S, NatsClusterView
from tests.server import ADMIN_TOKEN, running

pytest_plugins = ("tests.nats_fixtures",)

BEAT = nodestatus.STATUS_INTERVAL_S


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def beat(node_id: str, role: nodestatus.Role = "leader", seq: int = 0) -> nodestatus.NodeStatus:
    return nodestatus.NodeStatus(natswire.WIRE_VERSION, node_id, role, seq)


def test_a_node_is_kept_with_its_latest_beat_and_forgotten_after_missed_beats() -> None:
    clock = Clock()
    table = nodestatus.NodeTable(clock)
    table.heard(beat("seq-a", seq=5))
    table.heard(beat("seq-a", seq=9))
    assert table.nodes() == [beat("seq-a", seq=9)]
    assert table.leader() == "seq-a"
    clock.now += BEAT * nodestatus.MISSED_BEATS_FORGOTTEN
    assert table.leader() == "seq-a", "exactly at the bound it is still kept"
    clock.now += 0.01
    assert table.nodes() == []
    assert table.leader() is None


def test_the_leader_is_the_one_heard_most_recently_and_standbys_are_listed() -> None:
    clock = Clock()
    table = nodestatus.NodeTable(clock)
    table.heard(beat("old", seq=3))
    clock.now += BEAT
    table.heard(beat("new", seq=4))
    table.heard(beat("spare", role="standby", seq=4))
    assert table.leader() == "new"
    assert [s.node_id for s in table.nodes()] == ["new", "old", "spare"]


def test_the_table_keeps_at_most_max_nodes_and_takes_new_ones_once_others_lapse() -> None:
    clock = Clock()
    table = nodestatus.NodeTable(clock)
    for i in range(nodestatus.MAX_NODES + 5):
        table.heard(beat(f"n{i}", role="standby"))
    assert len(table.nodes()) == nodestatus.MAX_NODES
    clock.now += BEAT * nodestatus.MISSED_BEATS_FORGOTTEN + 1
    table.heard(beat("late"))
    assert [s.node_id for s in table.nodes()] == ["late"]


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        msgspec.msgpack.encode([natswire.WIRE_VERSION, "bad id!", "leader", 1]),
        msgspec.msgpack.encode([natswire.WIRE_VERSION, "n1", "boss", 1]),
        msgspec.msgpack.encode([natswire.WIRE_VERSION + 1, "n1", "leader", 1]),
    ],
)
def test_a_malformed_or_foreign_status_is_refused(data: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, ValueError)):
        nodestatus.decode(data)


async def test_stream_seq_is_the_newest_record_and_asked_at_most_once_a_second(
    nats_server: NatsNode,
) -> None:
    nc = await nats.connect(servers=[nats_server.url])
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        clock = Clock()
        view = NatsClusterView(nc, js, clock)
        assert await view.stream_seq() == 0
        for _, message in natswire.batch_messages(1, [b"\x90", b"\x90", b"\x90"]):
            await js.publish(natswire.BATCHES, message, stream=natswire.STREAM)
        assert await view.stream_seq() == 0, "asked again within the second"
        clock.now += STREAM_INFO_EVERY_S
        assert await view.stream_seq() == 3
        info = await view.describe()
        assert (info.leader, info.nodes, info.stream_seq) == (None, [], 3)
    finally:
        await nc.close()


async def test_serve_answers_one_leader_node_at_its_durable_seq(tmp_path: Path) -> None:
    async with running(tmp_path / "data") as server, Admin(server.base_url, ADMIN_TOKEN) as admin:
        await admin.account("alice")
        seq = (await admin.ok("GET", "/healthz"))["seq"]
        view = await admin.ok("GET", "/v1/cluster")
        assert view == {
            "leader": "serve",
            "nodes": [{"node_id": "serve", "role": "leader", "applied_seq": seq}],
            "stream_seq": seq,
        }
        status, refused = await admin.call("GET", "/v1/cluster?x=1")
        assert (status, refused["code"]) == (400, "BAD_REQUEST")
