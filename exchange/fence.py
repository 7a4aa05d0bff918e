"""The fence: a leader appends to the stream only right after the message it knows last.

Every append carries `Nats-Expected-Last-Sequence` = the stream seq this leader appended
or read last. JetStream refuses it (error 10071, wrong last sequence) when anything else
was appended since: another node led meanwhile, and this one must step down. The lease
(exchange/lease.py) only says who should try; this is what makes two leaders harmless.

An append whose ack was lost is retried with the same `Nats-Msg-Id` (this leadership's
writer id, its refill generation and the batch's first seq, so no other leader's message
can ever share it, nor a refill's the message it replaces in a purged stream, whose
duplicate window outlives the purge):
within the duplicate window JetStream answers it as a duplicate; past it, the refusal is
checked against the stream's next message, and a message of our own there is our append.

An expected last sequence of 0 is honoured too (nats-server 2.9.10 refuses it on a
stream that holds messages), so the very first append to an empty stream is fenced.
"""

import logging

from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from exchange import natswire as w

log = logging.getLogger(__name__)

# JetStream's error code for a publish whose expected last sequence is not the stream's.
WRONG_LAST_SEQUENCE = 10071
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
MSG_ID = "Nats-Msg-Id"


class FencedError(Exception):
    """Another leader appended to the stream: this one must stop and step down."""


class StreamLostError(Exception):
    """The stream holds less than this leader appended (its store lost, or it was made
    again empty), or is gone: the leader refills it from its journal."""


class FencedAppender:
    """Appends batch messages for one leadership, fenced by the stream seq."""

    def __init__(self, js: JetStreamContext, last_stream_seq: int, writer_id: str) -> None:
        self.js = js
        self.last_stream_seq = last_stream_seq  # the newest stream message this leader knows
        self.writer_id = writer_id  # unique per node and leadership (the lease's revision)
        self.generation = 0  # bumped by each refill of a lost stream (StreamPublisher)

    async def append(self, first_seq: int, data: bytes, timeout: float) -> None:
        """Store one message right after `last_stream_seq`. Raises FencedError when the
        stream moved on without it, StreamLostError when it holds less than that (or is
        gone); other errors (NATS away, no ack) are the caller's to retry with the same
        message."""
        msg_id = f"{self.writer_id}.{self.generation}:{first_seq}"
        headers = {MSG_ID: msg_id, EXPECTED_LAST_SEQUENCE: str(self.last_stream_seq)}
        try:
            ack = await self.js.publish(
                w.BATCHES, data, stream=w.STREAM, timeout=timeout, headers=headers
            )
        except (NoStreamResponseError, NotFoundError):
            raise StreamLostError("the stream is gone") from None
        except APIError as refused:
            if refused.err_code != WRONG_LAST_SEQUENCE:
                raise
            if await self._stored_next(msg_id):
                self.last_stream_seq += 1  # our own append, whose ack was lost
                return
            last = (await self.js.stream_info(w.STREAM)).state.last_seq
            if last < self.last_stream_seq:
                msg = f"the stream ends at message {last}, short of {self.last_stream_seq}"
                raise StreamLostError(msg) from None
            msg = (
                f"the stream moved past seq {self.last_stream_seq} without this leader: "
                f"another sequencer appended (refused the batch from seq {first_seq})"
            )
            raise FencedError(msg) from None
        self.last_stream_seq = ack.seq

    async def _stored_next(self, msg_id: str) -> bool:
        try:
            stored = await self.js.get_msg(w.STREAM, seq=self.last_stream_seq + 1)
        except NotFoundError:
            return False
        return (stored.headers or {}).get(MSG_ID) == msg_id
