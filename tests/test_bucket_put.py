"""Snapshots into and out of a bucket (real nats-server). A put cut short leaves nothing in
the bucket: nats-py removes a failed put's chunks only on an exception, so a put cancelled
outright (a timeout, a step-down) would leave them there for ever, pointed to by nothing.
A fetch goes to a file chunk by chunk, never whole in memory; a snapshot past its size
bound is neither put nor fetched."""

import asyncio
import os
import tracemalloc
from pathlib import Path

import nats
import pytest
from nats.js.errors import ObjectNotFoundError

from exchange import natswire as w
from exchange.buckets import ENGINE_BUCKET, TooBigError, get_file, open_bucket, put_file
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
        putting = asyncio.create_task(
            put_file(bucket, "engine-cut-short", snapshot, SNAPSHOT_BYTES)
        )
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


# Fetched: 16 MiB, in 128 KiB chunks; nats-py's get held a third of it or more at once
# (chunks pushed faster than written), into memory all of it at least once.
FETCHED_BYTES = 16 * 1024 * 1024
# What a fetch into a file may hold in memory at its peak: a few chunks.
FETCH_PEAK_BYTES = 1024 * 1024


async def test_a_fetch_goes_to_a_file_never_whole_in_memory_and_sizes_are_bounded(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot"
    snapshot.write_bytes(os.urandom(FETCHED_BYTES))
    nc = await nats.connect(servers=[nats_server.url])
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        bucket = await open_bucket(js, ENGINE_BUCKET)
        with pytest.raises(TooBigError):
            await put_file(bucket, "engine-too-big", snapshot, FETCHED_BYTES - 1)
        with pytest.raises(ObjectNotFoundError):  # nothing of it was put
            await bucket.get_info("engine-too-big")
        await put_file(bucket, "engine-fits", snapshot, FETCHED_BYTES)
        fetched = tmp_path / "fetched"
        with pytest.raises(TooBigError):
            await get_file(js, bucket, "engine-fits", fetched, FETCHED_BYTES - 1)
        assert not fetched.exists(), "refused before anything was fetched"
        tracemalloc.start()
        try:
            size = await get_file(js, bucket, "engine-fits", fetched, FETCHED_BYTES)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert size == FETCHED_BYTES
        assert peak < FETCH_PEAK_BYTES, peak
        assert fetched.read_bytes() == snapshot.read_bytes()
    finally:
        await nc.close()


async def test_a_fetch_whose_chunks_are_gone_fails_rather_than_wait(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot"
    snapshot.write_bytes(os.urandom(1024 * 1024))
    nc = await nats.connect(servers=[nats_server.url])
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        bucket = await open_bucket(js, ENGINE_BUCKET)
        await put_file(bucket, "engine-cut", snapshot, FETCHED_BYTES)
        await js.delete_msg(f"OBJ_{ENGINE_BUCKET}", 3)  # a chunk lost (a purge meanwhile)
        with pytest.raises(ValueError, match="chunks gone"):
            await asyncio.wait_for(
                get_file(js, bucket, "engine-cut", tmp_path / "fetched", FETCHED_BYTES), WAIT_S
            )
    finally:
        await nc.close()
