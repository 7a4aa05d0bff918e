"""Gateways share read snapshots in a JetStream object store bucket: one started late on a
long stream loads the newest and applies only the stream after it, and ends with the same
read side as a gateway that followed the stream from its start; a damaged snapshot is
passed over for a replay from the stream's first message, with the same result.

Real nats-server, `exchange sequencer` and `exchange gateway` processes. 100,000 records
are written offline to a journal with the real engine; the sequencer, started on it,
publishes the whole journal to the stream (as after a lost stream)."""

import asyncio
import random
import re
from itertools import chain
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from exchange import natswire
from exchange.buckets import READ_BUCKET, Stored, stream_id
from exchange.domain.commands import AddApiKey, Command
from exchange.domain.engine import Engine
from exchange.journal.journal import Journal
from exchange.journal.records import JournalEntry, encode_entry
from exchange.journal.storage import FileSegmentStore
from exchange.natsserver import NatsNode
from exchange.natsstream import ensure_stream
from exchange.recovery import JOURNAL_DIR
from gateway.auth import hash_api_key
from gateway.client import Admin
from gateway.readbucket import (
    load_newest,
    open_bucket,
    put_reopening,
    put_snapshot,
    stored,
)
from gateway.readsnapshots import encode_snapshot
from gateway.readstate import ReadState
from loadtest.bench_engine import SYMBOL, TS_STEP, build_setup, build_stream
from tests.server import ADMIN_TOKEN, RunningServer, free_port, start_role, stop

pytest_plugins = ("tests.nats_fixtures",)

RECORDS = 100_000
# Snapshots every this many records: two during the burst of the refilled stream (at the
# first batch ends past 50,000 and 100,000), both written and put (gateway/readbucket.py
# MAX_IN_FLIGHT).
EVERY = 50_000
# Records in one journal batch (one stream message each), drawn from this range: batches
# of every size, so the snapshots' record seqs and stream seqs differ.
BATCH_SIZES = (1, 200)
# Accounts whose orders, fills and balances the test reads over REST (keys added in the journal).
KEYED = ("A1", "A2", "A3")
# Long enough for 100,000 records through NATS and two gateways on a loaded 2-core machine.
WAIT_S = 120.0

_CAUGHT_UP = re.compile(r"caught up with the stream at seq (\d+): (\d+) records applied after "
                        r"stream message (\d+)")  # fmt: skip
_DIGEST = re.compile(r"stopped at seq (\d+), read state digest ([0-9a-f]{64})")


def key_of(account: str) -> str:
    return f"test-key-{account}"


def write_journal(data_dir: Path) -> None:
    """RECORDS records as the sequencer would journal them: the benchmark's set-up, API
    keys for KEYED, then its seeded order flow, applied by the real engine."""
    setup = build_setup()
    ts = setup[-1].ts
    keys: list[Command] = []
    for account in KEYED:
        ts += TS_STEP
        keys.append(AddApiKey(account=account, api_key_hash=hash_api_key(key_of(account)), ts=ts))
    flow = build_stream(RECORDS - len(setup) - len(keys), seed=14, first_ts=ts + TS_STEP)
    engine = Engine()
    journal = Journal.open(FileSegmentStore(data_dir / JOURNAL_DIR, durable=False))
    rng = random.Random(14)
    batch: list[bytes] = []
    size = rng.randint(*BATCH_SIZES)
    try:
        for seq, command in enumerate(chain(setup, keys, flow.commands), start=1):
            batch.append(encode_entry(JournalEntry(seq, command, engine.apply(command))))
            if len(batch) == size:
                journal.append(batch)
                batch, size = [], rng.randint(*BATCH_SIZES)
        if batch:
            journal.append(batch)
        assert journal.last_seq == RECORDS
    finally:
        journal.close()


async def start_gateway(nats_node: NatsNode, data_dir: Path) -> RunningServer:
    port = free_port()
    args = ["gateway", "--nats", nats_node.url, "--port", str(port),
            "--read-snapshot-every", str(EVERY)]  # fmt: skip
    return await start_role(args, port, data_dir, ready="exchange gateway")


async def seq_of(gateway: RunningServer) -> int:
    async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
        seq: int = (await admin.ok("GET", "/healthz"))["seq"]
        return seq


async def reads(gateway: RunningServer) -> dict[str, Any]:
    """What clients read from one gateway: the book with its seq, trades, candles, and
    each keyed account's orders, fills and balances."""
    async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
        seen: dict[str, Any] = {
            "book": await admin.ok("GET", f"/v1/book/{SYMBOL}?depth=1000"),
            "trades": await admin.ok("GET", f"/v1/trades/{SYMBOL}?limit=100"),
            "candles": await admin.ok("GET", f"/v1/candles/{SYMBOL}?interval=1m"),
        }
        for account in KEYED:
            key = key_of(account)
            seen[account] = [
                await admin.ok("GET", "/v1/orders?status=all", token=key),
                await admin.ok("GET", "/v1/fills", token=key),
                await admin.ok("GET", "/v1/account", token=key),
            ]
        return seen


async def stopped_digest(gateway: RunningServer) -> tuple[int, str]:
    """Stop the gateway (it must exit 0, no traceback): the seq and read state digest it
    logged on the way out."""
    assert await stop(gateway) == 0, gateway.log()
    assert gateway.tracebacks == 0, gateway.log()
    found = [_DIGEST.search(line) for line in gateway.output]
    match = next(m for m in reversed(found) if m is not None)
    return int(match[1]), match[2]


def caught_up(gateway: RunningServer) -> tuple[int, int, int]:
    """(seq, records applied, the stream message it followed from) of its catch-up line."""
    found = [_CAUGHT_UP.search(line) for line in gateway.output]
    match = next(m for m in found if m is not None)
    return int(match[1]), int(match[2]), int(match[3])


async def newest_snapshots(nats_node: NatsNode) -> list[Stored]:
    client = await nats.connect(servers=[nats_node.url])
    try:
        return await stored(await client.jetstream().object_store(READ_BUCKET))
    finally:
        await client.close()


async def damage_every_snapshot(nats_node: NatsNode) -> int:
    """Put each snapshot back with one byte of its payload flipped (the object store's
    digest is then right, the snapshot's CRC-32 wrong); returns how many."""
    client = await nats.connect(servers=[nats_node.url])
    try:
        bucket = await client.jetstream().object_store(READ_BUCKET)
        present = await stored(bucket)
        for snapshot in present:
            data = bytearray((await bucket.get(snapshot.name)).data or b"")
            data[-1] ^= 0xFF
            await bucket.put(snapshot.name, bytes(data))
        return len(present)
    finally:
        await client.close()


@pytest.mark.slow
async def test_a_late_gateway_loads_the_newest_snapshot_and_reads_as_one_there_from_the_start(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    sequencer_dir = tmp_path / "sequencer"
    write_journal(sequencer_dir)
    started: list[RunningServer] = []
    try:
        async with asyncio.timeout(WAIT_S):
            # The first gateway follows the stream from its first message, as it is filled.
            first = await start_gateway(nats_server, tmp_path / "first")
            started.append(first)
            args = ["sequencer", "--nats", nats_server.url, "--data-dir", str(sequencer_dir)]
            started.append(await start_role(args, 0, sequencer_dir, "exchange sequencer"))
            while await seq_of(first) < RECORDS:  # bounded by the timeout
                await asyncio.sleep(0.05)
            while [s.seq // EVERY for s in await newest_snapshots(nats_server)] != [2, 1]:
                await asyncio.sleep(0.05)  # bounded by the timeout: the first gateway's puts
            # Records after the newest snapshot, for the late gateway to take from the stream.
            async with Admin(first.base_url, ADMIN_TOKEN) as admin:
                await admin.account("later", "100.00")
            last = await seq_of(first)
            assert last > RECORDS

            late = await start_gateway(nats_server, tmp_path / "late")
            started.append(late)
            (newest, _) = await newest_snapshots(nats_server)
            assert caught_up(late) == (last, last - RECORDS, newest.stream_seq), late.log()
            assert newest.stream_seq > 1, "it followed the stream from after the snapshot"
            assert f"read side loaded from snapshot {newest.name}" in late.log()
            assert await reads(late) == await reads(first)

            # Every snapshot damaged: a third gateway replays the stream from its start.
            assert await damage_every_snapshot(nats_server) == 2
            replayer = await start_gateway(nats_server, tmp_path / "replayer")
            started.append(replayer)
            assert caught_up(replayer) == (last, last, 0), replayer.log()
            assert replayer.log().count("unusable, trying an older one") == 2, replayer.log()
            assert "no usable read snapshot" in replayer.log()
            assert await reads(replayer) == await reads(first)

            # The whole read side, not only what the REST reads above show.
            digests = [await stopped_digest(g) for g in (first, late, replayer)]
            assert digests[0][0] == last
            assert digests[1:] == [digests[0], digests[0]]
    finally:
        for role in reversed(started):
            await stop(role)
            print(f"--- {role.role} on port {role.port}:\n{role.log()}")  # shown on a failure


async def test_a_snapshot_in_the_bucket_already_or_older_than_the_kept_is_not_put_again(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    """Several gateways put the same snapshots: only the first put of a name stores it,
    and the bucket keeps the newest two."""
    path = tmp_path / "snapshot"
    path.write_bytes(msgspec.msgpack.encode("any bytes: put_snapshot does not read them"))
    client = await nats.connect(servers=[nats_server.url])
    try:
        js = client.jetstream()
        await ensure_stream(js)
        bucket = await open_bucket(js)
        assert await put_snapshot(bucket, Stored(100, 7), path)
        assert not await put_snapshot(bucket, Stored(100, 7), path), "present: not put again"
        assert await put_snapshot(bucket, Stored(200, 9), path)
        assert await put_snapshot(bucket, Stored(300, 12), path)
        assert await stored(bucket) == [Stored(300, 12), Stored(200, 9)]
        assert not await put_snapshot(bucket, Stored(100, 7), path), "older than the kept"
        assert await stored(bucket) == [Stored(300, 12), Stored(200, 9)]
    finally:
        await client.close()


async def test_a_gateway_puts_its_next_snapshot_in_a_bucket_made_again_when_it_was_lost(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    path = tmp_path / "snapshot"
    path.write_bytes(msgspec.msgpack.encode("any bytes: put_snapshot does not read them"))
    client = await nats.connect(servers=[nats_server.url])
    try:
        js = client.jetstream()
        await ensure_stream(js)
        bucket = await open_bucket(js)
        kept, put = await put_reopening(js, bucket, Stored(100, 7), path)
        assert put
        assert kept is bucket, "the bucket is there: the same handle"
        await js.delete_stream(f"OBJ_{READ_BUCKET}")  # lost (with a NATS store, or deleted)
        kept, put = await put_reopening(js, bucket, Stored(200, 9), path)
        assert put
        assert await stored(kept) == [Stored(200, 9)]
        kept, put = await put_reopening(js, kept, Stored(300, 12), path)
        assert put
        assert await stored(kept) == [Stored(300, 12), Stored(200, 9)]
    finally:
        await client.close()


async def test_a_snapshot_that_does_not_continue_this_stream_is_not_loaded(
    nats_server: NatsNode,
) -> None:
    """A snapshot must name the stream message that ended its record's batch (a bucket
    left from another stream would describe another history)."""
    client = await nats.connect(servers=[nats_server.url])
    try:
        js = client.jetstream()
        await ensure_stream(js)
        records = [msgspec.Raw(encode_entry(JournalEntry(seq, AddApiKey(
            account="A1", api_key_hash="0" * 64, ts=seq), []))) for seq in (1, 2, 3)]  # fmt: skip
        batch = natswire.BatchMessage(natswire.WIRE_VERSION, 1, records, True)
        await js.publish(natswire.BATCHES, natswire.encode(batch), stream=natswire.STREAM)
        bucket = await open_bucket(js)
        stream = stream_id(await js.stream_info(natswire.STREAM))
        state = ReadState()
        state.durable_seq = 3
        await bucket.put(Stored(3, 1, stream).name, b"".join(encode_snapshot(state.export())))
        loaded = await load_newest(js, bucket)
        assert loaded is not None
        assert (loaded[0].durable_seq, loaded[1]) == (3, 1)

        state.durable_seq = 5  # newer, but stream message 1 ends its batch at seq 3
        await bucket.put(Stored(5, 1, stream).name, b"".join(encode_snapshot(state.export())))
        loaded = await load_newest(js, bucket)
        assert loaded is not None
        assert (loaded[0].durable_seq, loaded[1]) == (3, 1), "the older one, which fits"

        # The stream wiped and made again, the bucket left over: the same records at the
        # same positions, but another stream's history: its snapshots are passed over.
        await js.delete_stream(natswire.STREAM)
        await ensure_stream(js)
        await js.publish(natswire.BATCHES, natswire.encode(batch), stream=natswire.STREAM)
        assert stream_id(await js.stream_info(natswire.STREAM)) != stream
        assert await load_newest(js, bucket) is None
    finally:
        await client.close()
