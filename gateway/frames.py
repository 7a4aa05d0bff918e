"""Server-to-client WebSocket text frames, written many to one system call.

aiohttp writes every frame with its own `transport.write`, one system call each; a busy
session has dozens of frames queued per loop tick. This frames them here (unmasked, as a
server's are; no compression is negotiated) so they can go as one buffer; the caller
waits for a drain only when the transport is backed up. It reaches into aiohttp's
WebSocketResponse (the writer's transport and the payload writer's flow control), which
the dependency range pins.
"""

import asyncio
import struct

from aiohttp import web

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_TEXT = 0x81  # FIN + text opcode
_CLOSE = 0x88  # FIN + close opcode
_CLOSE_CODE = struct.Struct("!H")


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return _SHORT.pack(_TEXT, n) + payload
    if n < 65_536:
        return _MEDIUM.pack(_TEXT, 126, n) + payload
    return _LONG.pack(_TEXT, 127, n) + payload


def close_frame(code: int, reason: bytes) -> bytes:
    """A close frame: its code and reason (at most 123 bytes, as a control frame's
    payload is at most 125)."""
    payload = _CLOSE_CODE.pack(code) + reason[:123]
    return _SHORT.pack(_CLOSE, len(payload)) + payload


def text_frames(payloads: list[bytes]) -> bytes:
    """The payloads as consecutive text frames: the bytes of one socket write."""
    return b"".join(text_frame(p) for p in payloads)


def transport_of(ws: web.WebSocketResponse) -> asyncio.Transport | None:
    """The socket under a prepared WebSocketResponse; None once it is closing, or once our
    own close has ended its output (ws.ExchangeWebSocket's 1009 close wrote its FIN: a
    write after it raises)."""
    writer = ws._writer
    transport = writer.transport if writer is not None else None
    if transport is None or transport.is_closing() or ws.closed:
        return None
    if getattr(ws, "output_ended", False):
        return None
    return transport


async def drain(ws: web.WebSocketResponse) -> None:
    """Wait until the socket's buffer has drained below its low-water mark."""
    payload_writer = ws._payload_writer
    if payload_writer is not None:
        await payload_writer.drain()
