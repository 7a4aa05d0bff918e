"""Client text frames handed to the session as the parser finds them, not through a task.

aiohttp's WebSocketResponse parses frames into a queue that a task reads with `receive()`:
for every frame an append, a pop, a pass through `receive()`'s checks, and the reader's
wake-up for every read from the socket. With the parsing, that was 9% of the server's
main thread at the peak order rate; dispatched as here, 6%. `DispatchingResponse`
gives the parser a queue that hands each text frame to a callback right away, inside the
socket's `data_received`; every other frame (close, ping, pong, binary, errors) still goes
through the queue to the task reading the socket, which answers pings and the close.

It reaches into aiohttp (the response's `_post_start` and the reader's queue type), which
the dependency range pins to 3.14; `DISPATCHING` says whether the aiohttp installed is the
one whose internals this follows, and where it is not, frames go through the queue as
before (the caller's read loop handles text frames too).
"""

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

try:  # aiohttp >= 3.11: the queue and the parser live in aiohttp._websocket.reader
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
    from aiohttp.helpers import DEFAULT_CHUNK_SIZE

    # The _post_start below copies 3.14's; another release may set up more than it does.
    DISPATCHING = aiohttp.__version__.startswith("3.14.")
except ImportError:  # pragma: no cover - older aiohttp: the plain queue
    DISPATCHING = False

TextHandler = Callable[[str], None]

if DISPATCHING:

    class _DispatchingQueue(WebSocketDataQueue):
        """The parser's queue: text frames go to `on_text` at once, all else is queued."""

        on_text: TextHandler | None = None

        def feed_data(self, data: Any, size: int) -> None:
            on_text = self.on_text
            if on_text is None or data[0] is not WSMsgType.TEXT:
                super().feed_data(data, size)
                return
            try:
                on_text(data[1])
            except Exception:  # the parser must go on: an error here would drop the socket
                log.exception("handling a text frame failed")


class DispatchingResponse(web.WebSocketResponse):
    """A WebSocketResponse whose text frames go to `on_text` (set before `prepare`) as
    they are parsed; `receive()` then yields only the other frames. Without the internals
    (`DISPATCHING` false) `receive()` yields every frame, as a plain response's does."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_text: TextHandler | None = None  # set before prepare()

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        if not DISPATCHING:  # pragma: no cover - older aiohttp
            super()._post_start(request, protocol, writer)
            return
        # As aiohttp 3.14's own, with the dispatching queue in place of its queue.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        assert self._loop is not None  # set by _pre_start
        queue = _DispatchingQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=self._loop)
        queue.on_text = self.on_text
        self._reader = queue
        self._parser = WebSocketReader(
            queue, self._max_msg_size, compress=bool(self._compress),
            decode_text=self._decode_text,
        )  # fmt: skip
        callback = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=callback)
        request.protocol.keep_alive(False)
