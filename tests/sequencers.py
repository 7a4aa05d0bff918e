"""Helpers for tests of several `exchange sequencer` processes over one real nats-server:
start one, watch every node's heartbeats (who leads, how far each applied), and the
state hashes a test compares: each data dir's (`exchange journal verify`'s) and a clean
replay of the stream's records on a fresh engine."""

import asyncio
import contextlib
import io
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import nats
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from exchange import journal_tools, natswire, nodestatus
from exchange.domain.engine import Engine
from exchange.journal.journal import Journal
from exchange.journal.storage import FileSegmentStore
from exchange.recovery import JOURNAL_DIR, Replayer
from tests.server import ROOT, RunningServer, start_role

READY = "exchange sequencer"
Check = Callable[[dict[str, nodestatus.NodeStatus]], bool]


async def start_sequencer(
    nats_url: str, data_dir: Path, node_id: str, *extra: str
) -> RunningServer:
    """`exchange sequencer` (`nats_url`: one URL, or several joined by commas)."""
    args = ["sequencer", "--nats", nats_url, "--data-dir", str(data_dir), "--node-id", node_id]
    return await start_role([*args, *extra], 0, data_dir, ready=READY)


class NodeWatch:
    """The latest heartbeat of every sequencer, as they come."""

    def __init__(self) -> None:
        self.latest: dict[str, nodestatus.NodeStatus] = {}
        self.changed = asyncio.Event()

    async def heard(self, msg: Msg) -> None:
        status = nodestatus.decode(msg.data)
        self.latest[status.node_id] = status
        self.changed.set()

    async def until(self, check: Check, timeout: float) -> None:
        """Until `check(latest)` holds; TimeoutError past `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not check(self.latest):  # bounded by the timeout
                self.changed.clear()
                await self.changed.wait()

    def role(self, node_id: str) -> str | None:
        status = self.latest.get(node_id)
        return status.role if status is not None else None



@contextlib.asynccontextmanager
async def watching(nats_url: str | list[str]) -> AsyncIterator[NodeWatch]:
    watch = NodeWatch()
    nc = await nats.connect(servers=nats_url)
    try:
        await nc.subscribe(nodestatus.STATUS_SUBJECTS, cb=watch.heard)
        yield watch
    finally:
        await nc.close()


def state_hash(data_dir: Path) -> tuple[int, str]:
    """(last seq, state hash) of a stopped sequencer's data dir, by `journal verify`."""
    out = io.StringIO()
    assert journal_tools.verify(data_dir, out) == 0, out.getvalue()
    lines = dict(line.split(": ", 1) for line in out.getvalue().splitlines() if ": " in line)
    return int(lines["last seq"]), lines["state hash"]


def journal_bytes(data_dir: Path) -> dict[str, bytes]:
    """Every segment's bytes, by name."""
    directory = data_dir / JOURNAL_DIR
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.seg"))}


def journal_records(data_dir: Path) -> list[tuple[int, bytes, bool]]:
    store = FileSegmentStore(data_dir / JOURNAL_DIR, durable=False, create=False)
    journal = Journal.open(store, repair=False)
    try:
        return [(r.seq, bytes(r.payload), r.batch_end) for r in journal.read_from(1)]
    finally:
        journal.close()


async def stream_records(nats_url: str | list[str]) -> list[tuple[int, bytes]]:
    """(seq, payload) of every record in the stream, in its order (a record stored twice,
    by a retry, appears twice)."""
    records: list[tuple[int, bytes]] = []
    nc = await nats.connect(servers=nats_url)
    try:
        js = nc.jetstream()
        stream_seq = 0
        while True:  # bounded by the stream's length
            try:
                msg = await js.get_msg(natswire.STREAM, seq=stream_seq + 1,
                                       subject=natswire.BATCHES, next=True)  # fmt: skip
            except NotFoundError:
                break
            stream_seq = msg.seq or stream_seq + 1
            for raw in natswire.decode_batch(msg.data or b"").records:
                payload = bytes(raw)
                records.append((int(msgspec.msgpack.decode(payload)[0]), payload))
    finally:
        await nc.close()
    return records


async def stream_hash(nats_url: str | list[str]) -> tuple[int, str]:
    """(last seq, state hash) of a clean replay of every record in the stream, each seq
    once (checking each record's events as recovery does)."""
    engine = Engine()
    replay = Replayer(engine, 1)
    for seq, payload in await stream_records(nats_url):
        if seq >= replay.next_seq:
            replay(seq, memoryview(payload))
    return replay.next_seq - 1, engine.state_hash()


async def run_to_exit(args: list[str], timeout: float) -> tuple[int, str]:
    """`python -m exchange ARGS` until it exits (bounded): its status and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exchange", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode()
