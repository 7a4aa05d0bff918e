"""A snapshot put cut short leaves nothing in the bucket (real nats-server): nats-py removes
a failed put's chunks only on an exception, so a put cancelled outright (a timeout, a
step-down) would leave them there for ever, pointed to by nothing."""

import asyncio
import os
from pathlib import Path

import nats

from exchange import natswire as w
from exchange.buckets import ENGINE_BUCKET, open_bucket, put_file
from exchange.natsserver import NatsNode
from exchange.natsstream import ensure_stream

pytest_plugins = ("tests.nats_fixtures",)

# Big enough that a put is still sending chunks (128 KiB each) when it is cancelled.
SNAPSHOT_BYTES = 64 * 1024 * 1024
WAIT_S = 30.0


async def test_a_put_cancelled_midway_leaves_no_chunks(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot"
    snapshot.write_bytes(os.urandom(SNAPSHOT_BYTES))
    nc = await nats.connect(servers=[nats_server.url])
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        bucket = await open_bucket(js, ENGINE_BUCKET)
        chunks = f"OBJ_{ENGINE_BUCKET}"
        putting = asyncio.create_task(put_file(bucket, "engine-cut-short", snapshot))
        async with asyncio.timeout(WAIT_S):
            while not (await js.stream_info(chunks)).state.messages:  # some chunks stored
                await asyncio.sleep(0.01)
        putting.cancel()
        await asyncio.gather(putting, return_exceptions=True)
        async with asyncio.timeout(WAIT_S):  # nats-py's own clean-up, behind the caller
            while (await js.stream_info(chunks)).state.messages:
                await asyncio.sleep(0.05)
        assert (await js.stream_info(w.STREAM)).state.messages == 0
    finally:
        await nc.close()
