"""The fence (exchange/fence.py) on a real JetStream: an append right after the message a
leader knows last is stored; once another writer appended, the first one's append is
refused (FencedError) and nothing of it is stored; a retry of a stored append (its ack
lost) is taken for stored, not for a fence."""

import nats
import pytest

from exchange import natswire
from exchange.fence import FencedAppender, FencedError
from exchange.natsserver import NatsNode
from exchange.natsstream import ensure_stream

pytest_plugins = ("tests.nats_fixtures",)


async def test_a_second_writer_fences_the_first(nats_server: NatsNode) -> None:
    nc = await nats.connect(servers=[nats_server.url])
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        old = FencedAppender(js, 0, "old-1")
        await old.append(1, b"first", 5.0)
        new = FencedAppender(js, old.last_stream_seq, "new-2")
        await new.append(2, b"the new leader's", 5.0)
        with pytest.raises(FencedError, match="another sequencer appended"):
            await old.append(2, b"the stale leader's", 5.0)
        info = await js.stream_info(natswire.STREAM)
        assert info.state.messages == 2
        last = await js.get_last_msg(natswire.STREAM, natswire.BATCHES)
        assert last.data == b"the new leader's"
        # The new leader's append retried (its ack lost): stored once, and not a fence.
        new.last_stream_seq = 1
        await new.append(2, b"the new leader's", 5.0)
        assert new.last_stream_seq == 2
        assert (await js.stream_info(natswire.STREAM)).state.messages == 2
    finally:
        await nc.close()
