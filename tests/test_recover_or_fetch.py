"""A sequencer node's start of each turn (exchange/enginebucket.py's recover_or_fetch)
against a real nats-server: recovery runs in a thread, so a long restore never stalls the
node's loop (its lease refresh, its heartbeats, its stop signal)."""

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from exchange import enginebucket
from exchange.natsserver import NatsNode
from exchange.natsstream import ensure_stream
from exchange.recovery import Recovered, recover
from exchange.streamfloor import StreamFloor

pytest_plugins = ("tests.nats_fixtures",)

# Every wait in these tests is bounded by this, so a hang fails instead.
WAIT_S = 10.0


@pytest_asyncio.fixture
async def client(nats_server: NatsNode) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(servers=[nats_server.url])
    try:
        yield nc
    finally:
        await nc.close()


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
