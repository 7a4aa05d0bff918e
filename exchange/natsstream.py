"""The JetStream stream of durable batches, as both roles need it: made if missing, and how
far it reaches. (The gateway side may not import the sequencer's process module.)"""

import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from exchange import natswire as w

log = logging.getLogger(__name__)


async def log_nats_error(problem: Exception) -> None:
    """nats-py's error callback: one line a problem (its default prints a traceback on
    every reconnect attempt while the server is away)."""
    log.warning("NATS: %r", problem)


async def ensure_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """The stream of durable batches (created if missing; left as it is if present)."""
    try:
        await js.stream_info(w.STREAM)
    except NotFoundError:
        await js.add_stream(
            name=w.STREAM, subjects=[w.BATCHES], storage="file", num_replicas=replicas,
            max_msg_size=w.NATS_MAX_PAYLOAD,
        )  # fmt: skip


async def last_published_seq(js: JetStreamContext) -> int:
    """The seq of the newest record in the stream (0 when it is empty)."""
    try:
        last = await js.get_last_msg(w.STREAM, w.BATCHES)
    except NotFoundError:
        return 0
    batch = w.decode_batch(last.data or b"")
    return batch.first_seq + len(batch.records) - 1
