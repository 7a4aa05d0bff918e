"""A WebSocket client on a bare TCP stream: frames written and read by hand, so a test can
do what a library client never would (keep writing after the server's close frame, leave
answers unread) and see what the server's TCP stack does about it."""

import asyncio
import base64
import os
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

OP_TEXT = 0x1
OP_CLOSE = 0x8
# A frame longer than this is not expected from the exchange in these tests.
MAX_TEST_FRAME = 1 << 20


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (clients must mask; the key need not be secret here)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if len(payload) < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload))
    elif len(payload) < 65_536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, len(payload))
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, len(payload))
    return header + mask + body


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int:
        return int(struct.unpack("!H", self.payload[:2])[0])


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(
        cls, url: str, *, headers: dict[str, str] | None = None, early: list[str] | None = None
    ) -> "RawWebSocket":
        """Open ws://HOST:PORT/PATH and upgrade, by hand; `early` text frames go in the same
        write as the upgrade request, before the server has answered it."""
        parts = urlsplit(url)
        host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{extra}"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            + b"".join(masked_frame(OP_TEXT, text.encode()) for text in early or ())
        )
        status = await reader.readuntil(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no upgrade: {status[:80]!r}")
        return cls(reader, writer)

    async def send_text(self, texts: list[str]) -> None:
        """All of `texts` in one write, as a client flooding the server would."""
        self.writer.write(b"".join(masked_frame(OP_TEXT, t.encode()) for t in texts))
        await self.writer.drain()

    async def send_close(self, code: int = 1000) -> None:
        self.writer.write(masked_frame(OP_CLOSE, struct.pack("!H", code)))
        await self.writer.drain()

    async def next_frame(self) -> Frame:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        if length > MAX_TEST_FRAME:
            raise ValueError(f"frame of {length} bytes")
        return Frame(first & 0x0F, await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()
