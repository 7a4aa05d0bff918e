"""The sequencer's stream publisher against a real nats-server: a stream that lost records
while the publisher was running (deleted and made again empty by someone else, here the
test) refuses the next batch, which names the stream's last message as the publisher saw
it; the publisher then refills the stream from its journal and the batch follows, so the
stream holds every record once, in order, at the positions it had. (The fault tests of
whole processes are tests/test_nats_faults.py.)"""

from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from exchange import natswire as w
from exchange.fence import FencedAppender, FencedError
from exchange.journal import journal as journal_module
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
    state = (await js.stream_info(w.STREAM)).state
    if not state.messages:
        return []
    found = []
    for position in range(state.first_seq, state.last_seq + 1):  # bounded by the stream
        msg = await js.get_msg(w.STREAM, position)
        batch = w.decode_batch(msg.data or b"")
        found.append((position, [bytes(r) for r in batch.records]))
    return found


async def _always() -> bool:
    return True


async def _never() -> bool:
    return False


async def two_batches_published(
    js: JetStreamContext, writer: str, confirm_lead: Callable[[], Awaitable[bool]] = _always
) -> tuple[Journal, StreamPublisher]:
    """A journal and its publisher, the first two of BATCHES journaled and in the stream."""
    await ensure_stream(js)
    journal = Journal.open(FaultySegmentStore())
    publisher = StreamPublisher(js, FencedAppender(js, 0, writer), journal, confirm_lead)
    for first, last in BATCHES[:2]:
        journal.append(payloads(first, last))
        journal.sync()
        await publisher.publish(first, payloads(first, last))
    return journal, publisher


async def test_a_stream_emptied_under_a_running_publisher_is_refilled_before_its_next_batch(
    client: NatsClient,
) -> None:
    js = client.jetstream()
    journal, publisher = await two_batches_published(js, "refill-test")
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


async def test_a_publisher_whose_lease_is_gone_never_refills_a_short_stream(
    client: NatsClient,
) -> None:
    js = client.jetstream()
    journal, publisher = await two_batches_published(js, "stale", confirm_lead=_never)
    await js.delete_stream(w.STREAM)
    await ensure_stream(js)  # lost, and made again empty: another node now leads it
    first, last = BATCHES[2]
    journal.append(payloads(first, last))
    journal.sync()
    with pytest.raises(FencedError, match="lease"):
        await publisher.publish(first, payloads(first, last))
    assert await stream_records(client) == [], "a stale leader put nothing back"


async def test_a_stream_another_leader_refilled_differently_fences_the_old_one(
    client: NatsClient,
) -> None:
    js = client.jetstream()
    _, publisher = await two_batches_published(js, "old")
    await js.delete_stream(w.STREAM)
    await ensure_stream(js)
    other = [msgspec.msgpack.encode("another engine's record 1")]
    data = w.batch_messages(1, other)[0][1]
    await FencedAppender(js, 0, "new").append(1, data, 5.0)
    with pytest.raises(FencedError, match="not this journal's"):
        await publisher.refill(publisher.published_seq)  # the idle look
    assert await stream_records(client) == [(1, other)]


async def test_a_stream_lost_whole_is_refilled_from_a_pruned_journals_first_record(
    client: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader's journal pruned after its snapshots (it still holds every record from the
    stream's first: exchange/streamfloor.py) refills a stream lost whole from its first
    record, as a trimmed stream starts, rather than stop (StreamRefillError)."""
    monkeypatch.setattr(journal_module, "SEGMENT_TARGET_BYTES", 1)  # a segment a batch
    js = client.jetstream()
    journal, publisher = await two_batches_published(js, "pruned")
    journal.prune_before(3)  # records 1 and 2 are in a snapshot now
    assert journal.first_seq == 3
    await js.purge_stream(w.STREAM, seq=2)  # the trim that let it prune: record 3 on
    await js.delete_stream(w.STREAM)  # then the stream is lost whole
    await ensure_stream(js)
    first, last = BATCHES[2]
    journal.append(payloads(first, last))
    journal.sync()
    await publisher.publish(first, payloads(first, last))
    assert await stream_records(client) == [(1, payloads(*BATCHES[1])), (2, payloads(*BATCHES[2]))]
    assert publisher.published_seq == 6


async def test_a_purged_stream_is_refilled_under_new_message_ids(client: NatsClient) -> None:
    js = client.jetstream()
    _, publisher = await two_batches_published(js, "leader")
    await js.purge_stream(w.STREAM)  # emptied; its last seq and duplicate window stay
    await publisher.refill(publisher.published_seq)  # the idle look
    refilled = await stream_records(client)
    # Positions 1 and 2 are purged; the refill is stored after them, not taken for
    # duplicates of the purged messages.
    assert [records for _, records in refilled] == [payloads(*b) for b in BATCHES[:2]]
    assert [position for position, _ in refilled] == [3, 4]
