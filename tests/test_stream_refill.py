"""The sequencer's stream publisher against a real nats-server: a stream that lost records
while the publisher was running (deleted and made again empty by someone else, here the
test) refuses the next batch, which names the stream's last message as the publisher saw
it; the publisher then refills the stream from its journal and the batch follows, so the
stream holds every record once, in order, at the positions it had. (The fault tests of
whole processes are tests/test_nats_faults.py.)"""

from collections.abc import AsyncIterator

import msgspec
import nats
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from exchange import natswire as w
from exchange.fence import FencedAppender
from exchange.journal.faulty import FaultySegmentStore
from exchange.journal.journal import Journal
from exchange.natsserver import NatsNode
from exchange.natsstream import ensure_stream
from exchange.sequencer_node import StreamPublisher

pytest_plugins = ("tests.nats_fixtures",)

# The journal's batches: three, of 2, 1 and 3 records.
BATCHES = ((1, 2), (3, 3), (4, 6))


def payloads(first: int, last: int) -> list[bytes]:
    return [msgspec.msgpack.encode(f"record {seq}") for seq in range(first, last + 1)]


@pytest_asyncio.fixture
async def client(nats_server: NatsNode) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(servers=[nats_server.url])
    try:
        yield nc
    finally:
        await nc.close()


async def stream_records(nc: NatsClient) -> list[tuple[int, list[bytes]]]:
    """(stream position, the records) of every message in the stream, in order."""
    js = nc.jetstream()
    last = (await js.stream_info(w.STREAM)).state.last_seq
    found = []
    for position in range(1, last + 1):  # bounded by the stream's length
        msg = await js.get_msg(w.STREAM, position)
        batch = w.decode_batch(msg.data or b"")
        found.append((position, [bytes(r) for r in batch.records]))
    return found


async def test_a_stream_emptied_under_a_running_publisher_is_refilled_before_its_next_batch(
    client: NatsClient,
) -> None:
    js = client.jetstream()
    await ensure_stream(js)
    journal = Journal.open(FaultySegmentStore())
    publisher = StreamPublisher(js, FencedAppender(js, 0, "refill-test"), journal)
    for first, last in BATCHES[:2]:
        journal.append(payloads(first, last))
        journal.sync()
        await publisher.publish(first, payloads(first, last))
    before = await stream_records(client)
    await js.delete_stream(w.STREAM)
    await ensure_stream(js)  # made again, empty, as a gateway starting now would make it
    first, last = BATCHES[2]
    journal.append(payloads(first, last))
    journal.sync()
    await publisher.publish(first, payloads(first, last))
    after = await stream_records(client)
    assert after[: len(before)] == before, "the refill put each batch where it was"
    assert after == [(i + 1, payloads(*batch)) for i, batch in enumerate(BATCHES)]
    assert publisher.published_seq == 6
