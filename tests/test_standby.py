"""A standby sequencer over a real nats-server: a second `exchange sequencer` started
while another leads follows the stream with a warm engine. It applies every record
(checking the events), writes a journal byte for byte the leader's (same records, same
batch ends), says `standby` in its heartbeats (and so in /v1/cluster), and a record whose
replay gives other events stops it with one line and status 2."""

import asyncio
from pathlib import Path

import msgspec
import nats
import pytest

from exchange import natswire
from exchange.journal import journal as journal_module
from exchange.journal.records import JournalEntry, decode_entry, encode_entry
from exchange.natsserver import NatsNode
from exchange.recovery import recover
from exchange.standby import Follower
from gateway.client import Admin
from tests.cluster_trading import market, trade
from tests.sequencers import (
    journal_bytes,
    journal_records,
    run_to_exit,
    start_sequencer,
    state_hash,
    stream_hash,
    watching,
)
from tests.server import ADMIN_TOKEN, stop
from tests.wirings import roles

pytest_plugins = ("tests.nats_fixtures",)


async def seed(base_url: str) -> None:
    async with Admin(base_url, ADMIN_TOKEN) as admin:
        await market(admin)

# Bounds on a loaded 2-core machine: a standby reaching the leader's seq, a stop.
FOLLOW_WAIT_S = 30.0


async def test_a_standby_follows_with_the_same_journal_and_state(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with roles(nats_server, tmp_path / "one", gateways=2) as cluster, watching(
        nats_server.url
    ) as nodes:
        standby = await start_sequencer(nats_server.url, tmp_path / "two", "sequencer-2")
        try:
            assert "ready: standby" in standby.log()
            one, other = cluster.gateways
            async with Admin(one.base_url, ADMIN_TOKEN) as admin:
                keys = await market(admin)
            await trade(one, other, keys)
            async with Admin(one.base_url, ADMIN_TOKEN) as admin:
                seq = (await admin.ok("GET", "/healthz"))["seq"]
            await nodes.until(
                lambda latest: "sequencer-2" in latest
                and latest["sequencer-2"].applied_seq == seq
                and latest["sequencer-2"].role == "standby",
                FOLLOW_WAIT_S,
            )
            async with Admin(other.base_url, ADMIN_TOKEN) as admin:
                view = await admin.ok("GET", "/v1/cluster")
            roles_seen = {n["node_id"]: n["role"] for n in view["nodes"]}
            assert roles_seen == {"sequencer-1": "leader", "sequencer-2": "standby"}, view
            assert view["leader"] == "sequencer-1"
        finally:
            assert await stop(standby) == 0, standby.log()
            assert standby.tracebacks == 0, standby.log()
    assert journal_bytes(tmp_path / "two") == journal_bytes(tmp_path / "one")
    assert journal_records(tmp_path / "two")[-1][2], "the last record ends its batch"
    assert state_hash(tmp_path / "two") == state_hash(tmp_path / "one")
    assert state_hash(tmp_path / "one") == await stream_hash(nats_server.url)


async def test_a_standby_takes_its_own_snapshots(nats_server: NatsNode, tmp_path: Path) -> None:
    async with roles(nats_server, tmp_path / "one", gateways=1) as cluster:
        await seed(cluster.gateways[0].base_url)
    nc = await nats.connect(servers=[nats_server.url])
    try:
        follower = Follower(nc.jetstream(), recover(tmp_path / "two"), snapshot_every=3)
        while await follower.step():  # bounded by the stream's length
            pass
        applied = follower.applied_seq
        await follower.close(snapshot=True)
    finally:
        await nc.close()
    recovered = recover(tmp_path / "two")
    recovered.journal.close()
    assert applied == state_hash(tmp_path / "one")[0]
    assert recovered.snapshot_seq == applied, "a snapshot at the clean stop"
    assert len(recovered.snapshots.seqs()) == 2, "snapshots on the way, pruned to the newest two"
    assert state_hash(tmp_path / "two") == state_hash(tmp_path / "one")


async def test_a_standbys_snapshots_never_prune_records_the_stream_still_starts_from(
    nats_server: NatsNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its journal is pruned only below the stream's first record (exchange/streamfloor.py):
    as leader it may have to refill a lost stream from it. The stream starts at record 1
    here, so nothing is pruned however many snapshots it takes."""
    async with roles(nats_server, tmp_path / "one", gateways=1) as cluster:
        await seed(cluster.gateways[0].base_url)
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", 1)  # a segment a batch
    nc = await nats.connect(servers=[nats_server.url])
    try:
        follower = Follower(nc.jetstream(), recover(tmp_path / "two"), snapshot_every=3)
        while await follower.step():  # bounded by the stream's length
            pass
        await follower.close(snapshot=True)
    finally:
        await nc.close()
    recovered = recover(tmp_path / "two")
    recovered.journal.close()
    assert len(recovered.snapshots.seqs()) == 2
    assert recovered.snapshots.seqs()[-1] > 3, "snapshots that would prune a single process's"
    assert recovered.journal.first_seq == 1
    assert journal_records(tmp_path / "two") == journal_records(tmp_path / "one")


async def test_a_record_whose_replay_differs_stops_the_standby_with_status_2(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with roles(nats_server, tmp_path / "one", gateways=1) as cluster:
        await seed(cluster.gateways[0].base_url)
    # The leader has stopped; a record that claims other events than its command makes.
    nc = await nats.connect(servers=[nats_server.url])
    try:
        js = nc.jetstream()
        last = await js.get_last_msg(natswire.STREAM, natswire.BATCHES)
        batch = natswire.decode_batch(last.data or b"")
        entry = decode_entry(bytes(batch.records[-1]))
        forged = JournalEntry(entry.seq + 1, entry.command, [], entry.origin)
        message = natswire.BatchMessage(
            natswire.WIRE_VERSION, entry.seq + 1, [msgspec.Raw(encode_entry(forged))], True
        )
        await js.publish(natswire.BATCHES, natswire.encode(message), stream=natswire.STREAM)
    finally:
        await nc.close()
    args = ["sequencer", "--nats", nats_server.url, "--data-dir", str(tmp_path / "two")]
    status, output = await run_to_exit(args, FOLLOW_WAIT_S)
    assert status == 2, output
    assert "exchange: standby stopped: replay of seq" in output, output
    assert "Traceback" not in output, output


async def test_a_standby_and_a_leader_stopped_while_nats_is_away_exit_cleanly(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    """SIGTERM with NATS away (killed): each stops (status 0, no traceback) instead of
    waiting out a NATS request, or failing as its connection closes."""
    leader = await start_sequencer(nats_server.url, tmp_path / "one", "sequencer-1")
    standby = await start_sequencer(nats_server.url, tmp_path / "two", "sequencer-2")
    try:
        assert "ready: standby" in standby.log()
        await nats_server.kill()
        async with asyncio.timeout(FOLLOW_WAIT_S):  # until both saw NATS go
            while not all("NATS: " in node.log() for node in (leader, standby)):
                await asyncio.sleep(0.05)  # bounded by the timeout
        for node in (standby, leader):
            async with asyncio.timeout(FOLLOW_WAIT_S):  # a generous bound, not a timing
                assert await stop(node) == 0, node.log()
            assert node.tracebacks == 0, node.log()
    finally:
        for node in (standby, leader):
            await stop(node)
