"""Slowloris against the real server: connections that never finish their headers (a plain
request or a WebSocket upgrade) are closed after the header timeout, past the half-open
bound new ones are closed at once, and an honest client still gets in."""

import asyncio
from pathlib import Path

import aiohttp

from gateway.client import Client
from tests.server import running

HALF_OPEN = 6
# Only a bound on a failing test: far longer than the server's header timeout below.
TEST_BOUND_S = 30.0
RETRY_S = 0.05  # between an honest client's attempts while slots come free
PARTS = (
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # headers never finished
    b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
)


async def _half_open(port: int, n: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PARTS[n % 2])
    await writer.drain()
    return reader, writer


async def _connect_once_free(url: str) -> Client:
    """Connects as soon as the server has seen the slow clients go (it hears of each
    close a moment after the client made it); bounded by the caller's timeout."""
    while True:
        try:
            return await Client.connect(url)
        except (ConnectionError, aiohttp.ClientError):
            await asyncio.sleep(RETRY_S)


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Waits for the server to end the connection; True when it did without answering."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def test_half_open_connections_are_closed_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    extra = ("--header-timeout", "0.5", "--max-half-open", str(HALF_OPEN))
    async with running(tmp_path / "data", extra=extra) as server:
        slow = [await _half_open(server.port, n) for n in range(HALF_OPEN)]
        try:
            async with asyncio.timeout(TEST_BOUND_S):
                closed = await asyncio.gather(*(_closed_by_server(r) for r, _ in slow))
                assert closed == [True] * HALF_OPEN  # each closed unanswered
                # Their slots are free again: an honest client connects and is answered.
                async with await Client.connect(server.ws_url) as client:
                    assert (await client.ping())["type"] == "pong"
        finally:
            for _, writer in slow:
                writer.close()


async def test_past_the_half_open_bound_a_new_connection_is_closed_at_once(
    tmp_path: Path,
) -> None:
    # A header timeout far past the test's bound: only the bound can close anything here.
    extra = ("--header-timeout", str(10 * TEST_BOUND_S), "--max-half-open", str(HALF_OPEN))
    async with running(tmp_path / "data", extra=extra) as server:
        slow = [await _half_open(server.port, n) for n in range(HALF_OPEN)]
        try:
            async with asyncio.timeout(TEST_BOUND_S):
                reader, writer = await _half_open(server.port, 0)
                assert await _closed_by_server(reader)
                writer.close()
                for _, held in slow:  # the slow clients leave: their slots come free
                    held.close()
                client = await _connect_once_free(server.ws_url)
                async with client:
                    assert (await client.ping())["type"] == "pong"
        finally:
            for _, held in slow:
                held.close()


async def test_a_websocket_is_not_cut_by_the_header_timeout(tmp_path: Path) -> None:
    extra = ("--header-timeout", "0.2")
    async with (
        running(tmp_path / "data", extra=extra) as server,
        await Client.connect(server.ws_url) as client,
    ):
        for _ in range(3):  # spread over several header timeouts of its connection
            await asyncio.sleep(0.2)
            assert (await client.ping())["type"] == "pong"
