"""A Binance-dialect WebSocket's sending side: a bounded queue of encoded frames and the
task that writes them, so durable-event listeners (which must not wait) can send.

A client that lets the queue fill is closed (4008, as the native protocol's slow
consumers) rather than slow the listeners or grow without bound.
"""

import asyncio
import contextlib

from aiohttp import web

# Frames queued for one connection at most: a few seconds of a busy instrument's streams.
OUTBOX_FRAMES = 10_000
CLOSE_SLOW_CONSUMER = 4008


class Outbox:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(OUTBOX_FRAMES)
        self._task = asyncio.get_running_loop().create_task(self._write())
        self.closed = False

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.closed = True
            self._task.cancel()
            asyncio.get_running_loop().create_task(
                self.ws.close(code=CLOSE_SLOW_CONSUMER, message=b"slow consumer")
            )

    async def _write(self) -> None:
        while True:  # until closed (None) or cancelled
            frame = await self._queue.get()
            if frame is None or self.ws.closed:
                return
            try:
                await self.ws.send_str(frame.decode())  # text frames, as Binance sends
            except (ConnectionError, RuntimeError):
                return

    async def close(self) -> None:
        self.closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
