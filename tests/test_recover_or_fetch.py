"""A sequencer node's start of each turn and its looks at where the stream starts, against
a real nats-server: recovery runs in a thread, so a long restore never stalls the node's
loop (its lease refresh, its heartbeats, its stop signal); a standby's waits for NATS end
at its stop; a look at the stream's start rides out NATS away and a trim meanwhile; a
standby overtaken by the trim too often in a row stops."""

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from exchange import enginebucket, natsstream
from exchange import natswire as w
from exchange.buckets import (
    ENGINE_BUCKET,
    Placed,
    engine_snapshots,
    open_bucket,
    put_file,
    stream_id,
)
from exchange.domain.engine import Engine
from exchange.domain.state import export_state
from exchange.enginebucket import SnapshotSharing
from exchange.journal.snapshots import SnapshotStore
from exchange.natsserver import NatsNode
from exchange.natsstream import ensure_stream, first_record
from exchange.recovery import Recovered, recover
from exchange.sequencer_node import MAX_OVERTAKEN_IN_A_ROW, Overtakes
from exchange.standby import Follower, Stopped
from exchange.streamfloor import StreamFloor
from exchange.streamtrim import trim

pytest_plugins = ("tests.nats_fixtures",)

# Every wait in these tests is bounded by this, so a hang fails instead.
WAIT_S = 10.0


@pytest_asyncio.fixture
async def client(nats_server: NatsNode) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(servers=[nats_server.url], max_reconnect_attempts=-1)
    try:
        yield nc
    finally:
        await natsstream.close_quietly(nc)  # NATS may be away


async def test_recovery_runs_while_the_loop_goes_on(
    client: NatsClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recovery that waits until the loop has run something: on the loop it would wait
    in vain (the loop stands still under it), in a thread it is let go."""
    started, let_go = threading.Event(), threading.Event()
    loop_ran: list[bool] = []

    def slow_recover(data_dir: Path, *, durable: bool, snapshots_durable: bool) -> Recovered:
        started.set()
        loop_ran.append(let_go.wait(WAIT_S))
        return recover(data_dir, durable=durable, snapshots_durable=snapshots_durable)

    async def the_loop_goes_on() -> None:
        await asyncio.to_thread(started.wait, WAIT_S)
        let_go.set()

    monkeypatch.setattr(enginebucket, "recover", slow_recover)
    js = client.jetstream()
    await ensure_stream(js)
    beating = asyncio.create_task(the_loop_goes_on())
    floor = StreamFloor(7)
    recovered, after = await asyncio.wait_for(
        enginebucket.recover_or_fetch(js, tmp_path, durable=False, floor=floor), WAIT_S * 2
    )
    recovered.journal.close()
    await beating
    assert loop_ran == [True], "the loop ran while the journal was recovered"
    assert after == 0
    assert floor.first_record == 1, "the stream holds no record: the journal keeps all"


async def publish_batches(client: NatsClient, count: int) -> None:
    """`count` stream messages, one record each (seqs 1..count)."""
    js = client.jetstream()
    await ensure_stream(js)
    for seq in range(1, count + 1):
        data = w.batch_messages(seq, [msgspec.msgpack.encode(f"record {seq}")])[0][1]
        await js.publish(w.BATCHES, data, stream=w.STREAM)


async def test_a_followers_wait_for_nats_ends_at_its_stop(
    client: NatsClient, nats_server: NatsNode, tmp_path: Path
) -> None:
    await publish_batches(client, 1)
    stop = asyncio.Event()
    follower = Follower(client.jetstream(), recover(tmp_path), stop=stop)
    await nats_server.kill()
    stepping = asyncio.create_task(follower.step())
    await asyncio.sleep(0)  # the step has asked NATS, which will not answer
    stop.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(stepping, WAIT_S)
    await follower.close(snapshot=False)


async def test_overtaken_asks_again_while_nats_is_away_and_ends_at_the_stop(
    client: NatsClient, nats_server: NatsNode
) -> None:
    await publish_batches(client, 3)
    js = client.jetstream()
    await js.purge_stream(w.STREAM, seq=3)  # trimmed: it starts at record 3
    await nats_server.kill()
    stop = asyncio.Event()
    looking = asyncio.create_task(enginebucket.overtaken(js, 1, stop))
    await nats_server.start()  # the same store: the trimmed stream is back
    assert await asyncio.wait_for(looking, WAIT_S * 2), "journal at 1, stream from 3"
    await nats_server.kill()
    looking = asyncio.create_task(enginebucket.overtaken(js, 1, stop))
    await asyncio.sleep(0)
    stop.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(looking, WAIT_S)


async def test_the_first_record_is_found_when_a_trim_comes_between_two_reads(
    client: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish_batches(client, 4)
    js = client.jetstream()
    real = natsstream.records_of
    trims = [2, 3]  # the trim passes the message just read as the first, twice

    async def trimmed_meanwhile(
        js_: object, stream_seq: int
    ) -> tuple[int, int, bool] | None:
        if trims:
            await js.purge_stream(w.STREAM, seq=trims.pop(0))
        return await real(js, stream_seq)

    monkeypatch.setattr(natsstream, "records_of", trimmed_meanwhile)
    assert await first_record(js) == 3
    assert not trims


def test_a_standby_overtaken_too_often_before_it_caught_up_stops() -> None:
    overtakes = Overtakes()
    assert MAX_OVERTAKEN_IN_A_ROW == 3
    assert not overtakes.too_many(caught_up=True)  # away a while: fetches once
    assert not overtakes.too_many(caught_up=True), "it caught up between: a new count"
    assert not overtakes.too_many(caught_up=False)
    assert overtakes.too_many(caught_up=False), "three in a row without catching up"
    assert "overtook it 3 times in a row" in overtakes.why()


async def test_an_engine_snapshot_left_from_a_wiped_stream_is_neither_fetched_nor_trimmed_by(
    client: NatsClient, tmp_path: Path
) -> None:
    """Snapshots name their stream (buckets.stream_id, its creation time): a stream made
    again holds records of the same seqs at the same positions, but another history."""
    await publish_batches(client, 4)
    js = client.jetstream()
    old = stream_id(await js.stream_info(w.STREAM))
    snapshots = SnapshotStore(tmp_path / "leader")
    snapshots.write(2, export_state(Engine()))  # a valid snapshot, taken on the old stream
    bucket = await open_bucket(js, ENGINE_BUCKET)
    for seq, after in ((2, 2), (3, 3)):  # two: the trim counts from the second newest
        await put_file(bucket, Placed(seq, after, old).name, snapshots.path(2), 1024**2)
    await js.delete_stream(w.STREAM)  # wiped, the bucket left over
    await publish_batches(client, 4)
    assert stream_id(await js.stream_info(w.STREAM)) != old
    assert await enginebucket.fetch(js, tmp_path / "node", durable=False) is None
    assert await trim(js, bucket, margin=1) is None
    assert (await js.stream_info(w.STREAM)).state.first_seq == 1, "nothing trimmed"
    # The leader shares its snapshot again, for this stream, and deletes the old ones.
    sharing = SnapshotSharing(js, snapshots, lambda: 4, StreamFloor())
    sharing.shared_seq, sharing.shared_stream = 2, old  # shared on the old stream
    assert await sharing.share()
    new = stream_id(await js.stream_info(w.STREAM))
    assert await engine_snapshots(bucket) == [Placed(2, 2, new)]
