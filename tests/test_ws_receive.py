"""Text frames reach the session as the parser finds them (gateway.receive), and every
other frame still reaches the task reading the socket."""

import asyncio

import aiohttp
from aiohttp import WSMsgType, web

from gateway import receive
from gateway.receive import DispatchingResponse
from tests.scripted_ws import serving

# Only a bound on a failing test.
TEST_BOUND_S = 20.0


def test_this_aiohttp_has_the_internals_dispatching_needs() -> None:
    # Were this false, every frame would quietly take the slow path through the queue.
    assert receive.DISPATCHING


async def test_text_frames_go_to_the_handler_and_the_others_to_the_reader() -> None:
    handled: list[str] = []
    read: list[tuple[WSMsgType, object]] = []
    done = asyncio.Event()

    def on_text(frame: str) -> None:
        if frame == "boom":
            raise RuntimeError("a handler's bug")  # must not cost the client its socket
        handled.append(frame)

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = DispatchingResponse()
        ws.on_text = on_text
        await ws.prepare(request)
        async for message in ws:  # until the client closes
            read.append((message.type, message.data))
            if message.type == WSMsgType.BINARY:
                await ws.send_str(",".join(handled))  # what was handled before it
        done.set()
        return ws

    async with serving(endpoint) as url, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        for text in ("one", "two", "boom", "three"):
            await ws.send_str(text)
        await ws.send_bytes(b"\x00")
        async with asyncio.timeout(TEST_BOUND_S):
            assert (await ws.receive_str()) == "one,two,three"
            await ws.send_str("four")
            await ws.ping()
            await ws.close()
            await done.wait()
    assert handled == ["one", "two", "three", "four"]
    assert read == [(WSMsgType.BINARY, b"\x00")]  # no text frame went through the queue


async def test_without_a_handler_text_frames_go_through_the_queue() -> None:
    read: list[str] = []
    done = asyncio.Event()

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = DispatchingResponse()
        await ws.prepare(request)
        read.extend([message.data async for message in ws])  # until the client closes
        done.set()
        return ws

    async with serving(endpoint) as url, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        await ws.send_str("one")
        await ws.send_str("two")
        await ws.close()
        async with asyncio.timeout(TEST_BOUND_S):
            await done.wait()
    assert read == ["one", "two"]
