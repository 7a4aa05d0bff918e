"""The server's side of a close: a client that never answers the close frame is cut off
once the linger bound runs out, instead of holding its connection open."""

import asyncio

import pytest
from aiohttp import web

from gateway import ws as gateway_ws
from tests.raw_ws import OP_CLOSE, RawWebSocket
from tests.scripted_ws import serving

LINGER_S = 0.3
# Only a bound on a failing test: the reply timeout below is far longer.
TEST_BOUND_S = 20.0


async def test_a_client_that_never_answers_the_close_frame_is_cut_off_after_the_linger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway_ws, "CLOSE_LINGER_S", LINGER_S)
    closed = asyncio.Event()

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        # aiohttp alone would wait a minute for the client's close reply.
        ws = web.WebSocketResponse(timeout=60.0)
        await ws.prepare(request)
        await gateway_ws.close_within_linger(ws, 4008, "slow consumer")
        closed.set()
        return ws

    async with serving(endpoint) as url:
        client = await RawWebSocket.connect(url)
        try:
            async with asyncio.timeout(TEST_BOUND_S):
                frame = await client.next_frame()
                assert (frame.opcode, frame.close_code) == (OP_CLOSE, 4008)
                # No reply: the server gives up on its own and the socket ends.
                await closed.wait()
                try:
                    rest = await client.reader.read()
                except ConnectionResetError:  # an aborted socket may reset
                    rest = b""
                assert rest == b""
        finally:
            client.close()
