"""The server's side of a close: a client that never answers the close frame, or never
reads, is cut off once the linger bound runs out instead of holding its connection open;
a session closed while its reader handles a frame still closes cleanly."""

import asyncio
import struct

import pytest
from aiohttp import web

from gateway import ws as gateway_ws
from gateway.frames import transport_of
from tests.raw_ws import OP_CLOSE, OP_TEXT, RawWebSocket, masked_frame
from tests.scripted_ws import serving

LINGER_S = 0.3
# Only a bound on a failing test: the reply timeout below is far longer.
TEST_BOUND_S = 20.0
# Bytes queued for a client that never reads: far more than a loopback socket takes.
BIG_WRITE = 32 << 20


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


async def test_the_linger_aborts_a_socket_still_holding_data_after_the_reply_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reply timeout ends aiohttp's close() first; it then closes the socket after its
    # buffer, which a client that reads nothing never lets drain.
    monkeypatch.setattr(gateway_ws, "CLOSE_LINGER_S", 1.0)
    after_close: list[tuple[bool, int]] = []
    closed = asyncio.Event()

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=0.2)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        transport.set_write_buffer_limits(high=BIG_WRITE * 2)  # not paused: no drain wait
        header = b"\x81\x7f" + BIG_WRITE.to_bytes(8, "big")
        transport.write(header + b"x" * BIG_WRITE)  # far more than the socket takes
        await gateway_ws.close_within_linger(ws, 4008, "slow consumer")
        after_close.append((transport.is_closing(), transport.get_write_buffer_size()))
        closed.set()
        return ws

    async with serving(endpoint) as url:
        client = await RawWebSocket.connect(url)  # and never reads
        try:
            async with asyncio.timeout(TEST_BOUND_S):
                await closed.wait()
        finally:
            client.close()
    assert after_close == [(True, 0)]  # aborted: nothing left queued for the socket


class _StubHub:
    """What a Session needs of its hub to close itself."""

    rate_limit = 100.0
    evictions = 0

    def forget(self, session: object) -> None:
        pass

    def detach(self, session: object) -> None:
        pass

    def unsubscribe_all(self, session: object) -> None:
        pass

    def write_soon(self, session: gateway_ws.Session) -> None:
        asyncio.get_running_loop().call_soon(session.write)


class _ClosingSession(gateway_ws.Session):
    """Closes itself while handling a frame, as a request whose answer overflows the
    send buffer does (Session.send_text -> close 4008)."""

    def handle(self, frame: str) -> None:
        self.close(4008, "slow consumer")


async def test_a_session_closed_from_inside_its_reader_closes_without_a_pending_cancel() -> None:
    ended: list[str] = []
    done = asyncio.Event()

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=1.0)
        await ws.prepare(request)
        session = _ClosingSession(ws, _StubHub())  # type: ignore[arg-type]
        try:
            await gateway_ws._read_frames(ws, session)
            assert session.closing_with is not None
            await gateway_ws.close_within_linger(ws, *session.closing_with)
            await asyncio.sleep(0)  # where a pending cancel would strike
            ended.append("returned")
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        finally:
            done.set()
        return ws

    async with serving(endpoint) as url:
        client = await RawWebSocket.connect(url)
        try:
            # A request that gets the session closed, and the client's own close, at once.
            client.writer.write(masked_frame(OP_TEXT, b'{"op":"ping"}')
                                + masked_frame(OP_CLOSE, struct.pack("!H", 1000)))  # fmt: skip
            await client.writer.drain()
            async with asyncio.timeout(TEST_BOUND_S):
                frame = await client.next_frame()
                while frame.opcode != OP_CLOSE:  # bounded by what the server sends
                    frame = await client.next_frame()
                assert frame.close_code == 4008
                await done.wait()
        finally:
            client.close()
    assert ended == ["returned"]


class _FailingSession(gateway_ws.Session):
    """Fails on every frame, as a bug in a request handler would."""

    def handle(self, frame: str) -> None:
        raise RuntimeError("a bug")


async def test_a_session_that_fails_on_a_frame_is_closed_with_1011() -> None:
    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=1.0)
        await ws.prepare(request)
        session = _FailingSession(ws, _StubHub())  # type: ignore[arg-type]
        await gateway_ws._read_frames(ws, session)
        assert session.closing_with is not None
        await gateway_ws.close_within_linger(ws, *session.closing_with)
        return ws

    async with serving(endpoint) as url:
        client = await RawWebSocket.connect(url)
        try:
            await client.send_text(['{"op":"ping"}'])
            async with asyncio.timeout(TEST_BOUND_S):
                frame = await client.next_frame()
            assert (frame.opcode, frame.close_code) == (OP_CLOSE, 1011)
            await client.send_close()
        finally:
            client.close()


class _FloodedSession(gateway_ws.Session):
    """Has one request in the sequencer when its client turns abusive: the 4029 close
    must wait for that request's answer."""

    def handle(self, frame: str) -> None:
        self.outstanding = 1
        self.close_after_sending(gateway_ws.CLOSE_RATE_LIMITED, "rate limit exceeded")


async def _closed_by_rate(answer_after: float | None) -> list[tuple[int, bytes]]:
    """What a client of a _FloodedSession reads up to the close frame, when the pending
    answer comes after `answer_after` seconds (None: never)."""

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=1.0)
        await ws.prepare(request)
        session = _FloodedSession(ws, _StubHub())  # type: ignore[arg-type]

        def answer() -> None:
            session.send({"type": "accepted", "order_id": "1"}, req_id=7)
            session.answered()

        if answer_after is not None:
            asyncio.get_running_loop().call_later(answer_after, answer)
        await gateway_ws._read_frames(ws, session)
        assert session.closing_with is not None
        await gateway_ws.close_within_linger(ws, *session.closing_with)
        return ws

    frames: list[tuple[int, bytes]] = []
    async with serving(endpoint) as url:
        client = await RawWebSocket.connect(url)
        try:
            await client.send_text(['{"op":"ping"}'])
            async with asyncio.timeout(TEST_BOUND_S):
                frame = await client.next_frame()
                while frame.opcode != OP_CLOSE:  # bounded by what the server sends
                    frames.append((frame.opcode, frame.payload))
                    frame = await client.next_frame()
            frames.append((frame.opcode, frame.payload[:2]))
            await client.send_close()
        finally:
            client.close()
    return frames


async def test_a_rate_limit_close_waits_for_the_answer_of_a_request_taken_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The answer comes long after the session decided to close; the bound is far longer.
    monkeypatch.setattr(gateway_ws, "CLOSE_ANSWERS_WAIT_S", TEST_BOUND_S)
    frames = await _closed_by_rate(answer_after=0.2)
    close = (OP_CLOSE, struct.pack("!H", gateway_ws.CLOSE_RATE_LIMITED))
    assert frames == [(OP_TEXT, b'{"type":"accepted","order_id":"1","req_id":7}'), close]


async def test_a_rate_limit_close_waits_for_missing_answers_only_up_to_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway_ws, "CLOSE_ANSWERS_WAIT_S", 0.2)
    frames = await _closed_by_rate(answer_after=None)  # the answer never comes
    assert frames == [(OP_CLOSE, struct.pack("!H", gateway_ws.CLOSE_RATE_LIMITED))]


class _Recorder(asyncio.Protocol):
    """A bare TCP client that notes what it receives and how the connection ends: the
    server's FIN (`eof`) or the connection lost (a reset shows as its error)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.got = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got.set()

    def eof_received(self) -> bool:
        if not self.ended.done():
            self.ended.set_result("eof")
        return True  # still open for writing: the client's close reply

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(f"lost: {exc!r}")


async def test_a_frame_past_the_size_bound_closes_with_1009_and_no_reset() -> None:
    served: list[gateway_ws.ExchangeWebSocket] = []

    async def endpoint(request: web.Request) -> web.WebSocketResponse:
        ws = gateway_ws.ExchangeWebSocket(max_msg_size=1024, timeout=1.0)
        served.append(ws)
        await ws.prepare(request)
        async for _ in ws:  # until aiohttp meets the frame past the bound
            pass
        return ws

    async with serving(endpoint) as url:
        host, port = url.removeprefix("ws://").split("/")[0].split(":")
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_connection(_Recorder, host, int(port))
        try:
            async with asyncio.timeout(TEST_BOUND_S):
                transport.write(
                    f"GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                while b"\r\n\r\n" not in client.data:  # bounded by the timeout
                    client.got.clear()
                    await client.got.wait()
                del client.data[: client.data.index(b"\r\n\r\n") + 4]
                # A megabyte against a bound of a kilobyte: most of it is still arriving
                # when the server gives up on the frame.
                transport.write(masked_frame(OP_TEXT, b"x" * (1 << 20)))
                ended = await client.ended
            assert ended == "eof"  # a FIN after the close frame, not a reset
            assert bytes(client.data[:4]) == b"\x88\x02" + struct.pack("!H", 1009)
            # While it lingers for the client's close, nothing may write to it any more
            # (the hub's market data did, and a write after the FIN raised).
            assert transport_of(served[0]) is None
            transport.write(masked_frame(OP_CLOSE, struct.pack("!H", 1009)))
        finally:
            transport.close()
