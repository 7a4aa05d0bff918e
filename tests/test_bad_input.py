"""No input hurts the server: every bad frame and request, against the real server over real
sockets, gets a clear error code (a 4xx JSON error on REST; on a WebSocket an `error` or
`rejected`, the socket kept open), and never a 500, a 1011 close or a traceback.

The tables are the rule; the slow fuzz mutates valid frames at random (seeded) and checks
the same promises, while an honest client on another connection keeps being answered.
"""

# ruff: noqa: RUF001  (digits of other scripts, look-alikes, are what these tests send)

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
import yarl

from gateway.client import Client
from tests.raw_ws import OP_BINARY, OP_CLOSE, OP_TEXT, RawWebSocket
from tests.server import ADMIN_TOKEN, RunningServer, running, start, stop

pytestmark = pytest.mark.asyncio(loop_scope="module")

# How long one case may wait for its answers (generous: the machine is shared).
ANSWER_TIMEOUT_S = 20.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    async with running(tmp_path_factory.mktemp("bad-input") / "data", demo=True) as market:
        yield market


@pytest.fixture(autouse=True)
def no_traceback_from_each_case(request: pytest.FixtureRequest) -> Iterator[None]:
    market: RunningServer | None = None
    if "server" in request.fixturenames:
        market = request.getfixturevalue("server")
    before = market.tracebacks if market is not None else 0
    yield
    if market is not None:
        assert market.tracebacks == before, market.log()


def demo_key(server: RunningServer, name: str) -> str:
    keys = json.loads((server.data_dir / "demo-keys.json").read_text())
    return str(keys[name]["api_key"])


# --- WebSocket ------------------------------------------------------------------------------

AFTER = b'{"op":"ping","req_id":"after"}'


async def answers_to(
    server: RunningServer, frames: list[tuple[int, bytes]], *, login: bool = True
) -> tuple[list[dict[str, Any]], int | None]:
    """Send `frames`, then a ping; returns every message before its pong, and the close
    code if the server closed instead (None when the pong came: the socket stayed open)."""
    headers = {"Authorization": f"Bearer {demo_key(server, 'alice')}"} if login else {}
    ws = await RawWebSocket.connect(server.ws_url, headers=headers)
    answers: list[dict[str, Any]] = []
    try:
        await ws.send_frames([*frames, (OP_TEXT, AFTER)])
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while True:  # bounded by the timeout: the pong, or the close, ends it
                frame = await ws.next_frame()
                if frame.opcode == OP_CLOSE:
                    return answers, frame.close_code
                message = json.loads(frame.payload)
                if message.get("req_id") == "after":
                    return answers, None
                answers.append(message)
    finally:
        ws.close()


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def place(**fields: Any) -> str:
    order = {"op": "place", "req_id": 1, "symbol": "ACME", "side": "buy", "qty": 1}
    return json.dumps({**order, "price": "9.00", **fields}, ensure_ascii=False)


def place_raw(tail: str) -> str:
    """A place whose last field is written by hand (a value json.dumps would not write)."""
    return '{"op":"place","req_id":1,"symbol":"ACME","side":"buy","price":"9.00",' + tail + "}"


BIG = "9" * 5000
ERROR, REJECTED = "error", "rejected"

# (frame, the answer's type, its code). Sent by an authenticated client (alice), so that
# order entry reaches its handlers; each must get exactly this one answer, socket open.
WS_CASES: list[tuple[str, str, str]] = [
    # Text the handlers read as numbers: only ASCII digits name an order or offering.
    ('{"op":"cancel","order_id":"²"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"cancel","order_id":"³"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"cancel","order_id":"١"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"cancel","order_id":"３"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"cancel","order_id":"-1"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"cancel","order_id":" 1"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"cancel","order_id":"1_0"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"cancel","order_id":"99999999999999999999"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"cancel","order_id":"9223372036854775808"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"replace","order_id":"²","qty":1}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"replace","order_id":"١٢","price":"1.00"}', REJECTED, "UNKNOWN_ORDER"),
    ('{"op":"subscribe_offering","offering_id":"³","qty":1}', REJECTED, "UNKNOWN_OFFERING"),
    ('{"op":"subscribe_offering","offering_id":"٣","qty":1}', REJECTED, "UNKNOWN_OFFERING"),
    ('{"op":"subscribe_offering","offering_id":"' + "9" * 40 + '","qty":1}', REJECTED,
     "UNKNOWN_OFFERING"),
    # Prices: plain ASCII decimals only.
    (place(price="１.００"), REJECTED, "BAD_PRICE"),
    (place(price="١.٠٠"), REJECTED, "BAD_PRICE"),
    (place(price="9.٠٠"), REJECTED, "BAD_PRICE"),
    (place(price="1e3"), REJECTED, "BAD_PRICE"),
    (place(price="1E3"), REJECTED, "BAD_PRICE"),
    (place(price="-9.00"), REJECTED, "BAD_PRICE"),
    (place(price="+9.00"), REJECTED, "BAD_PRICE"),
    (place(price="9.00 "), REJECTED, "BAD_PRICE"),
    (place(price="Infinity"), REJECTED, "BAD_PRICE"),
    (place(price="9" * 30), REJECTED, "BAD_PRICE"),
    (place(price=BIG), REJECTED, "BAD_PRICE"),
    (place(price="0." + "0" * 40 + "1"), REJECTED, "BAD_PRICE"),
    (place(price=9), REJECTED, "BAD_PRICE"),
    (place(price=[9]), REJECTED, "BAD_PRICE"),
    (place(type="market", price=None, max_notional="１０"), REJECTED, "BAD_AMOUNT"),
    # Quantities: integers 1..10^9.
    (place(qty="1"), REJECTED, "BAD_QTY"),
    (place(qty=1.0), REJECTED, "BAD_QTY"),
    (place(qty=True), REJECTED, "BAD_QTY"),
    (place(qty=None), REJECTED, "BAD_QTY"),
    (place(qty=10**30), REJECTED, "BAD_QTY"),
    (place(qty=2**64), REJECTED, "BAD_QTY"),
    (place(qty=-(2**63) - 1), REJECTED, "BAD_QTY"),
    (place_raw('"qty":' + BIG), REJECTED, "BAD_QTY"),
    (place_raw('"qty":1e3'), REJECTED, "BAD_QTY"),
    (place_raw('"qty":1E400'), REJECTED, "BAD_QTY"),
    (place_raw('"qty":-0'), REJECTED, "BAD_QTY"),
    (place_raw('"qty":NaN'), ERROR, "BAD_REQUEST"),
    (place_raw('"qty":01'), ERROR, "BAD_REQUEST"),
    ('{"op":"replace","order_id":"1","qty":' + BIG + "}", REJECTED, "BAD_QTY"),
    ('{"op":"subscribe_offering","offering_id":"1","qty":1e30}', REJECTED, "BAD_QTY"),
    # Ids: no control, bidi or zero-width characters; bounded length.
    (place(client_order_id="c\u0000"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c\n"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c\x1b[31m"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c\u0085"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c\u202e1"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c\u2066"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c\u200b"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c\u200d"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="\ufeffc"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c\u2028"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c\U000e0041"), ERROR, "BAD_REQUEST"),
    (place(client_order_id="c" * 65), ERROR, "BAD_REQUEST"),
    (place(client_order_id=7), ERROR, "BAD_REQUEST"),
    ('{"op":"cancel","client_order_id":"c\\u0000"}', ERROR, "BAD_REQUEST"),
    ('{"op":"cancel","order_id":"1\\u200b"}', ERROR, "BAD_REQUEST"),
    # Lone surrogates written as escapes are not text.
    (place_raw('"qty":1,"client_order_id":"\\ud800"'), ERROR, "BAD_REQUEST"),
    (place_raw('"qty":1,"client_order_id":"\\udc00x"'), ERROR, "BAD_REQUEST"),
    # Symbols: looked up, so anything else is unknown.
    (place(symbol="AB\n"), REJECTED, "UNKNOWN_SYMBOL"),
    (place(symbol="acme"), REJECTED, "UNKNOWN_SYMBOL"),
    (place(symbol="ACME\u0000"), REJECTED, "UNKNOWN_SYMBOL"),
    (place(symbol="A" * 17), ERROR, "BAD_REQUEST"),
    ('{"op":"subscribe","channels":["book"],"symbols":["AC\\nME"]}', REJECTED,
     "UNKNOWN_SYMBOL"),
    # Wrong types and missing fields.
    ('{"op":1}', ERROR, "BAD_REQUEST"),
    ('{"op":null}', ERROR, "BAD_REQUEST"),
    ('{"op":["ping"]}', ERROR, "BAD_REQUEST"),
    ('{"op":"PING"}', ERROR, "BAD_REQUEST"),
    ('{"op":"ping\\u0000"}', ERROR, "BAD_REQUEST"),
    ('{"req_id":1}', ERROR, "BAD_REQUEST"),
    ("{}", ERROR, "BAD_REQUEST"),
    ('{"op":"ping","req_id":{"a":1}}', ERROR, "BAD_REQUEST"),
    ('{"op":"ping","req_id":1.5}', ERROR, "BAD_REQUEST"),
    ('{"op":"ping","req_id":true}', ERROR, "BAD_REQUEST"),
    ('{"op":"ping","req_id":' + "9" * 30 + "}", ERROR, "BAD_REQUEST"),
    ('{"op":"ping","req_id":' + BIG + "}", ERROR, "BAD_REQUEST"),
    ('{"op":"ping","req_id":"' + "r" * 65 + '"}', ERROR, "BAD_REQUEST"),
    (place(side="BUY"), ERROR, "BAD_REQUEST"),
    (place(side=1), ERROR, "BAD_REQUEST"),
    (place(tif="gtx"), ERROR, "BAD_REQUEST"),
    (place(tif="gtd", expire_at=-1), REJECTED, "BAD_EXPIRY"),
    (place(tif="gtd", expire_at="soon"), REJECTED, "BAD_EXPIRY"),
    (place(post_only="yes"), ERROR, "BAD_REQUEST"),
    (place(post_only=1), ERROR, "BAD_REQUEST"),
    ('{"op":"place","symbol":"ACME","side":"buy","price":"9.00"}', ERROR, "BAD_REQUEST"),
    ('{"op":"place","qty":1,"side":"buy","price":"9.00"}', ERROR, "BAD_REQUEST"),
    ('{"op":"replace"}', ERROR, "BAD_REQUEST"),
    ('{"op":"subscribe_offering","offering_id":1,"qty":1}', ERROR, "BAD_REQUEST"),
    ('{"op":"subscribe","channels":"book","symbols":["ACME"]}', ERROR, "BAD_REQUEST"),
    ('{"op":"subscribe","channels":["book"],"symbols":[1]}', ERROR, "BAD_REQUEST"),
    ('{"op":"subscribe","channels":["candles"],"symbols":["ACME"]}', ERROR, "BAD_REQUEST"),
    ('{"op":"subscribe","channels":["book"],"symbols":' + json.dumps(["ACME"] * 101) + "}",
     ERROR, "BAD_REQUEST"),
    ('{"op":"auth","api_key":null}', ERROR, "BAD_REQUEST"),
    ('{"op":"ping","extra":1}', ERROR, "BAD_REQUEST"),
    # Not a JSON object.
    ("", ERROR, "BAD_REQUEST"),
    (" ", ERROR, "BAD_REQUEST"),
    ("null", ERROR, "BAD_REQUEST"),
    ("1", ERROR, "BAD_REQUEST"),
    ('"ping"', ERROR, "BAD_REQUEST"),
    ('[{"op":"ping"}]', ERROR, "BAD_REQUEST"),
    ('{"op":"ping"', ERROR, "BAD_REQUEST"),
    ('{"op":"ping"}}', ERROR, "BAD_REQUEST"),
    ('{"op":"ping"} {"op":"ping"}', ERROR, "BAD_REQUEST"),
    ("{'op':'ping'}", ERROR, "BAD_REQUEST"),
    ('{"op":"ping",}', ERROR, "BAD_REQUEST"),
    ("\ufeff" + '{"op":"ping"}', ERROR, "BAD_REQUEST"),
    ('{"op":"ping"}\u0000', ERROR, "BAD_REQUEST"),
    # Deep nesting, in every place a value can hide.
    ('{"op":"ping","x":' + nested(990) + "}", ERROR, "BAD_REQUEST"),
    ('{"x":' + nested(990) + ',"op":"ping"}', ERROR, "BAD_REQUEST"),
    ('{"x":' + nested(30_000) + ',"op":"ping"}', ERROR, "BAD_REQUEST"),
    ('{"req_id":7,"x":' + nested(30_000) + "}", ERROR, "BAD_REQUEST"),
    ('{"x":' + nested_objects(5_000) + ',"op":"ping"}', ERROR, "BAD_REQUEST"),
    ('{"op":"ping","req_id":' + nested(30_000) + "}", ERROR, "BAD_REQUEST"),
    (nested(30_000), ERROR, "BAD_REQUEST"),
    (place(qty=json.loads(nested(200))), REJECTED, "BAD_QTY"),
    # Duplicate keys: the last value counts, and `op` may not change.
    ('{"op":"ping","op":"place"}', ERROR, "BAD_REQUEST"),
    ('{"op":"place","op":"ping"}', ERROR, "BAD_REQUEST"),
    (place_raw('"qty":1,"qty":0'), REJECTED, "BAD_QTY"),
    (place_raw('"qty":1,"price":"1e3"'), REJECTED, "BAD_PRICE"),
    # Near the frame bound (64 KiB), but under it.
    ('{"op":"ping","req_id":"' + "x" * 65_000 + '"}', ERROR, "BAD_REQUEST"),
    (place(client_order_id="\u202e" * 20_000), ERROR, "BAD_REQUEST"),
]


@pytest.mark.parametrize(("frame", "kind", "code"), WS_CASES, ids=range(len(WS_CASES)))
async def test_a_bad_frame_gets_one_clear_answer_and_the_socket_stays_open(
    server: RunningServer, frame: str, kind: str, code: str
) -> None:
    answers, closed = await answers_to(server, [(OP_TEXT, frame.encode())])
    assert closed is None, f"closed with {closed}: {frame[:120]!r}"
    assert len(answers) == 1, answers
    assert (answers[0]["type"], answers[0]["code"]) == (kind, code), (frame[:120], answers)


async def test_a_deeply_nested_ping_before_login_is_a_bad_request(server: RunningServer) -> None:
    frame = '{"op":"ping","req_id":1,"x":' + nested(990) + "}"
    for depth_frame in (frame, '{"x":' + nested(30_000) + ',"op":"ping","req_id":1}'):
        answers, closed = await answers_to(server, [(OP_TEXT, depth_frame.encode())], login=False)
        assert closed is None
        assert [(a["type"], a["code"]) for a in answers] == [("error", "BAD_REQUEST")]


async def test_a_duplicated_req_id_echoes_the_last_one(server: RunningServer) -> None:
    answers, closed = await answers_to(server, [(OP_TEXT, b'{"op":"ping","req_id":1,"req_id":2}')])
    assert (answers, closed) == ([{"type": "pong", "req_id": 2}], None)


async def test_binary_frames_get_an_error_and_the_socket_stays_open(server: RunningServer) -> None:
    frames = [(OP_BINARY, b'{"op":"ping"}'), (OP_BINARY, b"\xff\xfe\x00"), (OP_BINARY, b"")]
    answers, closed = await answers_to(server, frames)
    assert closed is None
    assert [(a["type"], a["code"]) for a in answers] == [("error", "BAD_REQUEST")] * 3


async def test_a_text_frame_that_is_not_utf8_closes_with_1007(server: RunningServer) -> None:
    # RFC 6455 (8.1): an endpoint that receives text that is not UTF-8 fails the connection
    # with 1007; aiohttp does so before the frame reaches the session.
    answers, closed = await answers_to(server, [(OP_TEXT, b'{"op":"ping","req_id":"\xff"}')])
    assert (answers, closed) == ([], 1007)


async def test_an_oversized_frame_closes_with_1009(server: RunningServer) -> None:
    frame = '{"op":"ping","req_id":"' + "x" * 70_000 + '"}'
    answers, closed = await answers_to(server, [(OP_TEXT, frame.encode())])
    assert (answers, closed) == ([], 1009)


# --- REST -----------------------------------------------------------------------------------

JSON = "application/json"

# (method, path, body, content type, who calls, status, code).
REST_CASES: list[tuple[str, str, bytes | None, str | None, str, int, str]] = [
    # Numbers in the query and the path: ASCII digits, bounded.
    ("GET", "/v1/book/ACME?depth=%C2%B2", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?depth=%D9%A3", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?depth=%EF%BC%93", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?depth=" + BIG, None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?depth=-1", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?depth=0", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?depth=1e3", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?depth=%201", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?depth=", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/trades/ACME?limit=%C2%B2", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/trades/ACME?limit=" + BIG, None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/candles/ACME?limit=%C2%B2", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/candles/ACME?limit=" + BIG, None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?limit=%C2%B2", None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?limit=" + BIG, None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders/%C2%B2", None, None, "alice", 404, "UNKNOWN_ORDER"),
    ("GET", "/v1/orders/%D9%A1", None, None, "alice", 404, "UNKNOWN_ORDER"),
    ("GET", "/v1/orders/" + "9" * 30, None, None, "alice", 404, "UNKNOWN_ORDER"),
    ("GET", "/v1/orders/-1", None, None, "alice", 404, "UNKNOWN_ORDER"),
    ("GET", "/v1/book/AC%0AME", None, None, "", 404, "UNKNOWN_SYMBOL"),
    ("GET", "/v1/ticker/AC%0AME", None, None, "", 404, "UNKNOWN_SYMBOL"),
    ("GET", "/v1/ticker/" + BIG, None, None, "", 404, "UNKNOWN_SYMBOL"),
    # Cursors are a next_cursor: ASCII digits ("²".isdigit() is True, int("²") raises).
    ("GET", "/v1/fills?cursor=%C2%B2", None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/fills?cursor=%EF%BC%93", None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/fills?cursor=" + BIG, None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?cursor=%C2%B2", None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?cursor=-5", None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?cursor=", None, None, "alice", 400, "BAD_REQUEST"),
    # Filters: a symbol in the pattern, a listed one; choices from their list.
    ("GET", "/v1/fills?symbol=AC%0AME", None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/fills?symbol=NOPE", None, None, "alice", 404, "UNKNOWN_SYMBOL"),
    ("GET", "/v1/orders?symbol=" + BIG, None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?status=ALL", None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/instruments?status=open", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/instruments?kind=%00", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?client_order_id=%00", None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?client_order_id=a%E2%80%8Bb", None, None, "alice", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?client_order_id=" + BIG, None, None, "alice", 400, "BAD_REQUEST"),
    # Unknown and repeated parameters, whatever their name.
    ("GET", "/v1/time?x=1", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?depth=1&depth=2", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?%C2%B2=1", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?%ED%A0%80=1", None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/book/ACME?" + BIG, None, None, "", 400, "BAD_REQUEST"),
    ("GET", "/v1/orders?limit=1&Limit=1", None, None, "alice", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/offerings/1/close?now=1", None, None, "admin", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/offerings/%C2%B2/close", None, None, "admin", 404, "UNKNOWN_OFFERING"),
    ("POST", "/v1/admin/offerings/%D9%A3/close", None, None, "admin", 404, "UNKNOWN_OFFERING"),
    ("POST", "/v1/admin/offerings/" + BIG + "/close", None, None, "admin", 404,
     "UNKNOWN_OFFERING"),
    # Admin bodies: JSON as UTF-8, under application/json, every field bounded.
    ("POST", "/v1/admin/accounts", b'{"name":"\xff\xfe"}', JSON, "admin", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/accounts", b"\xff", JSON, "admin", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/accounts", b'{"name":"x"}', "text/plain", "admin", 415, "BAD_REQUEST"),
    ("POST", "/v1/admin/accounts", b'{"name":"x"}', None, "admin", 415, "BAD_REQUEST"),
    ("POST", "/v1/admin/accounts", b'{"name":"x"}', "application/x-www-form-urlencoded",
     "admin", 415, "BAD_REQUEST"),
    ("POST", "/v1/admin/accounts", b'{"name":' + nested(8_000).encode() + b"}", JSON, "admin",
     400, "BAD_REQUEST"),
    ("POST", "/v1/admin/accounts", b'{"x":' + nested(5_000).encode() + b',"name":"a"}', JSON,
     "admin", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/accounts", b'{"name":"a' + b"b" * 200 + b'"}', JSON, "admin", 400,
     "BAD_REQUEST"),
    ("POST", "/v1/admin/accounts", b'{"name":"a","cash":"\xef\xbc\x91"}', JSON, "admin", 400,
     "BAD_AMOUNT"),
    ("POST", "/v1/admin/deposits", b'{"account":"A3","symbol":"ACME","qty":' + b"1" + b"0" * 30
     + b"}", JSON, "admin", 400, "BAD_QTY"),
    ("POST", "/v1/admin/deposits", b'{"account":"A3","symbol":"ACME","qty":' + BIG.encode()
     + b"}", JSON, "admin", 400, "BAD_QTY"),
    ("POST", "/v1/admin/deposits", b'{"account":"A3","symbol":"ACME","qty":0}', JSON, "admin",
     400, "BAD_QTY"),
    ("POST", "/v1/admin/deposits", b'{"account":"A3","cash":"\xd9\xa1\xd9\xa0"}', JSON, "admin",
     400, "BAD_AMOUNT"),
    ("POST", "/v1/admin/deposits", b'{"account":"A3\\u0000","cash":"1"}', JSON, "admin", 400,
     "BAD_REQUEST"),
    ("POST", "/v1/admin/deposits", b'{"account":"A3","symbol":"AB\\n","qty":1}', JSON, "admin",
     400, "BAD_SYMBOL"),
    ("POST", "/v1/admin/offerings", b'{"symbol":"ACME","price":"1","qty":' + b"1" + b"0" * 30
     + b"}", JSON, "admin", 400, "BAD_QTY"),
    ("POST", "/v1/admin/offerings", b'{"symbol":"ACME","price":"1","qty":1,"closes_at":'
     + str(2**64).encode() + b"}", JSON, "admin", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/offerings", b'{"symbol":"ACME","price":"1","qty":1,"closes_at":'
     + str(2**63).encode() + b"}", JSON, "admin", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/offerings", b'{"symbol":"ACME","price":"1","qty":1,"closes_at":-1}',
     JSON, "admin", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/offerings", '{"symbol":"ACME","price":"１.００","qty":1}'.encode(), JSON,
     "admin", 400, "BAD_PRICE"),
    ("POST", "/v1/admin/offerings", '{"symbol":"ACME","price":"١.٠٠","qty":1}'.encode(), JSON,
     "admin", 400, "BAD_PRICE"),
    ("POST", "/v1/admin/offerings", b'{"symbol":"AB\\n","price":"1","qty":1}', JSON, "admin",
     400, "BAD_SYMBOL"),
    ("POST", "/v1/admin/instruments", (b'{"symbol":"AB\\n","kind":"share","tick_size":"0.01",'
     b'"issuer":"A1"}'), JSON, "admin", 400, "BAD_SYMBOL"),
    ("POST", "/v1/admin/instruments", (b'{"symbol":"AB","kind":"share","tick_size":"0.01",'
     b'"issuer":"A1\\u202e"}'), JSON, "admin", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/instruments", ('{"symbol":"AB","kind":"share","tick_size":"０.01",'
     '"issuer":"A1"}').encode(), JSON, "admin", 400, "BAD_TICK_SIZE"),
    ("POST", "/v1/admin/instruments/AB%0A/status", b'{"status":"halted"}', JSON, "admin", 400,
     "BAD_SYMBOL"),
    ("POST", "/v1/admin/instruments/ACME/status", b'{"status":"halted","status":1}', JSON,
     "admin", 400, "BAD_REQUEST"),
    ("POST", "/v1/admin/accounts", b'{"name":"x"}' + b" " * 20_000, JSON, "admin", 413,
     "BAD_REQUEST"),
]
NAMES = ["a\u0000b", "a\nb", "a\tb", "a\x1bb", "a\u202eb", "a\u2067b", "a\u200bb", "a\u200cb",
         "\ufeffa", "a\u2028b", "a\u00adb", "a\U000e0001b"]
REST_CASES += [
    ("POST", "/v1/admin/accounts", json.dumps({"name": name}).encode(), JSON, "admin", 400,
     "BAD_REQUEST")
    for name in NAMES
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "who", "status", "code"),
    REST_CASES,
    ids=range(len(REST_CASES)),
)
async def test_a_bad_rest_request_gets_a_4xx_json_error(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    who: str,
    status: int,
    code: str,
) -> None:
    token = {"admin": ADMIN_TOKEN, "alice": demo_key(server, "alice"), "": None}[who]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with (
        aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as http,
        http.request(
            method, server.base_url + path, data=body, headers=headers,
        ) as response,
    ):  # fmt: skip
        text = await response.text()
        assert response.content_type == "application/json", text
        answer = json.loads(text)
        assert (response.status, answer["code"]) == (status, code), (path, body, answer)


# Requests aiohttp's own parser refuses, before any handler: a raw byte in the URL, a
# method that is not one, a header line with no colon.
UNPARSABLE_REQUESTS = {
    "a raw byte in the url": b"GET /v1/book/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "not a method": b"GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n",
    "a header without a colon": b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
}


@pytest.mark.parametrize("case", UNPARSABLE_REQUESTS)
async def test_a_request_the_parser_refuses_still_gets_a_json_400(
    server: RunningServer, case: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(UNPARSABLE_REQUESTS[case])
        answer = await asyncio.wait_for(reader.read(), ANSWER_TIMEOUT_S)  # until it closes
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), head
    assert b" 400 " in head.split(b"\r\n")[0], head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["code"] == "BAD_REQUEST"
    assert b"\\xff" not in body, "the client's bytes are not echoed"


async def test_good_names_and_symbols_still_pass(server: RunningServer) -> None:
    """The rules refuse only what they name: accents, scripts and spaces are fine."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": JSON}
    async with aiohttp.ClientSession() as http:
        for name in ("Åsa Öberg", "株式会社", "O'Neil & Co."):
            body = json.dumps({"name": name}, ensure_ascii=False).encode()
            async with http.post(
                server.base_url + "/v1/admin/accounts", data=body, headers=headers
            ) as response:
                assert response.status == 201, await response.text()
        async with http.get(server.base_url + "/v1/book/ACME?depth=0003") as response:
            assert response.status == 200


# --- fuzz -----------------------------------------------------------------------------------

FUZZ_SEED = 13
FUZZ_FRAMES = 20_000
# Connections sending mutated frames at once; each sends a round of frames, then a ping,
# and reads up to its pong before the next round.
FUZZ_CONNECTIONS = 4
FRAMES_PER_ROUND = 50
# The whole fuzz must end within this (it takes a few seconds on a 2-core machine).
FUZZ_TIME_BOUND_S = 240.0
# How often the honest client pings while the fuzz runs (a pace, not a check of time).
HONEST_PING_EVERY_S = 0.05
# Closes that are the protocol's answer to what a fuzzed frame did: a mutated auth key
# (4001), a frame past 64 KiB (1009), text that is not UTF-8 (1007).
ALLOWED_CLOSES = {1007, 1009, 4001}


def fuzz_seeds(alice: str) -> list[dict[str, Any]]:
    """Valid frames of every op: what the mutations start from."""
    return [
        {"op": "ping", "req_id": 1},
        {"op": "auth", "api_key": alice},
        {"op": "place", "req_id": "p", "client_order_id": "c-1", "symbol": "ACME", "side": "buy",
         "type": "limit", "price": "9.00", "qty": 1, "tif": "gtc", "post_only": False,
         "stp": "cancel_newest"},
        {"op": "place", "symbol": "ACME", "side": "sell", "price": "11.00", "qty": 1},
        {"op": "place", "symbol": "ACME", "side": "buy", "type": "market", "qty": 1,
         "max_notional": "20.00"},
        {"op": "cancel", "order_id": "1"},
        {"op": "cancel", "client_order_id": "c-1"},
        {"op": "cancel_all", "symbol": "ACME"},
        {"op": "replace", "order_id": "1", "qty": 5, "price": "9.01"},
        {"op": "subscribe_offering", "offering_id": "1", "qty": 1},
        {"op": "subscribe", "channels": ["trades", "ticker"], "symbols": ["BOND"]},
        {"op": "unsubscribe", "channels": ["trades"], "symbols": ["BOND"]},
    ]


NASTY_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, -0.0, 10**30, 2**63, 2**64, -(2**63) - 1, "", " ", "0",
    "²", "³", "١٢", "１.００", "1e3", "NaN", "-Infinity", "9" * 40, "\u0000", "a\u202eb",
    "\u200b", "\ufeff", "\n", "\ud7ff", "x" * 300, [], {}, [1], {"a": 1}, ["ACME"] * 200,
]  # fmt: skip
NASTY_TOKENS = [
    '"', "{", "}", "[", "]", ",", ":", "null", "1e999", "-0", "01", "²", "١", "\\u0000",
    "\\ud800", "\\udfff\\ud800", "\u202e", "\x00", "\\", '\\"', "99999999999999999999999",
    "true", "NaN", "\ufeff", " ", "\t",
]  # fmt: skip


def nasty(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.1:
        return json.loads(nested(rng.choice((10, 100, 900))))
    if roll < 0.15:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 20)))
    return rng.choice(NASTY_VALUES)


def mutate(rng: random.Random, seed: dict[str, Any]) -> tuple[int, bytes]:
    """One mutated frame (opcode, payload): structural edits of the object, or edits of its
    text, or of its bytes; now and then deep nesting, oversize, binary."""
    frame = dict(seed)
    roll = rng.random()
    if roll < 0.45:  # structural
        for _ in range(rng.randrange(1, 3)):
            keys = list(frame)
            action = rng.random()
            if action < 0.5 and keys:
                frame[rng.choice(keys)] = nasty(rng)
            elif action < 0.65 and keys:
                del frame[rng.choice(keys)]
            elif action < 0.8:
                frame[rng.choice(("x", "op", "qty", "price", "req_id", "order_id"))] = nasty(rng)
            else:
                frame["op"] = rng.choice(("ping", "place", "cancel", "replace", "auth", "x"))
        text = json.dumps(frame, ensure_ascii=rng.random() < 0.5)
        if rng.random() < 0.1 and frame:  # a duplicated key, which json.dumps never writes
            key = rng.choice(list(frame))
            text = text[:-1] + f', "{key}": {json.dumps(nasty(rng))}' + "}"
        return OP_TEXT, text.encode("utf-8", "surrogatepass")
    text = json.dumps(frame, ensure_ascii=False)
    if roll < 0.85:  # textual
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(text) + 1)
            action = rng.random()
            if action < 0.4:
                text = text[:at] + rng.choice(NASTY_TOKENS) + text[at:]
            elif action < 0.7:
                text = text[:at] + text[at + rng.randrange(1, 8) :]
            elif action < 0.85:
                text = text[:at] + text[at : at + rng.randrange(1, 16)] * 2 + text[at:]
            else:
                text = text[:at]
        return OP_TEXT, text.encode("utf-8", "surrogatepass")
    payload = bytearray(text.encode())
    if roll < 0.95:  # bytes: flips may leave it not UTF-8 (a 1007 close)
        for _ in range(rng.randrange(1, 4)):
            if payload:
                payload[rng.randrange(len(payload))] = rng.randrange(256)
        return OP_TEXT, bytes(payload)
    if roll < 0.97:
        return OP_BINARY, bytes(payload)
    if roll < 0.995:
        depth = rng.choice((990, 5_000, 30_000))
        return OP_TEXT, ('{"x":' + nested(depth) + "," + text[1:]).encode()
    return OP_TEXT, b'{"op":"ping","req_id":"' + b"x" * 70_000 + b'"}'  # past the bound


def closes_the_socket(frame: tuple[int, bytes]) -> bool:
    """Whether the protocol itself closes on this frame (text not UTF-8, past 64 KiB)."""
    opcode, payload = frame
    if len(payload) > 64 * 1024:
        return True
    try:
        payload.decode()
    except UnicodeDecodeError:
        return opcode == OP_TEXT
    return False


Round = tuple[list[tuple[int, bytes]], tuple[int, bytes] | None]


def rounds_of(frames: list[tuple[int, bytes]]) -> list[Round]:
    """The frames in rounds: up to FRAMES_PER_ROUND frames to be answered, then at most one
    that closes the socket, sent alone once the others are answered (aiohttp drops the
    frames read with the one it fails the connection on)."""
    closers = [f for f in frames if closes_the_socket(f)]
    others = [f for f in frames if not closes_the_socket(f)]
    answered = [others[i : i + FRAMES_PER_ROUND] for i in range(0, len(others), FRAMES_PER_ROUND)]
    count = max(len(answered), len(closers))
    return [
        (answered[i] if i < len(answered) else [], closers[i] if i < len(closers) else None)
        for i in range(count)
    ]


class FuzzCounts:
    def __init__(self) -> None:
        self.sent = 0
        self.messages = 0  # every message the fuzzers read (answers and private events)
        self.closes: dict[int, int] = {}


async def fuzz_connection(
    market: RunningServer, key: str, rounds: list[Round], counts: FuzzCounts
) -> None:
    """Send each round's frames, then a ping, and read up to its pong; then its closing
    frame, if any, and read up to the close. After a close the protocol allows, connect
    again (the frames after a 4001 are lost, as a client's would be). A 1011, or any
    other close, fails the test."""
    headers = {"Authorization": f"Bearer {key}"}
    ws = await RawWebSocket.connect(market.ws_url, headers=headers)
    try:
        for number, (chunk, closer) in enumerate(rounds):  # bounded by the rounds
            sync = f'{{"op":"ping","req_id":"sync-{number}"}}'.encode()
            counts.sent += len(chunk)
            for frames in ([*chunk, (OP_TEXT, sync)], [closer] if closer else []):
                if not frames:
                    continue
                await ws.send_frames(frames)
                while True:  # bounded by the fuzz's timeout: the sync pong or a close
                    frame = await ws.next_frame()
                    if frame.opcode == OP_CLOSE:
                        code = frame.close_code
                        counts.closes[code] = counts.closes.get(code, 0) + 1
                        assert code in ALLOWED_CLOSES, f"closed with {code} in round {number}"
                        ws.close()
                        ws = await RawWebSocket.connect(market.ws_url, headers=headers)
                        break
                    counts.messages += 1
                    if frame.payload.endswith(f'"req_id":"sync-{number}"}}'.encode()):
                        break
            counts.sent += closer is not None
    finally:
        ws.close()


@pytest.mark.slow
async def test_fuzzed_frames_never_fail_the_server_and_others_are_served_throughout(
    tmp_path: Path,
) -> None:
    rng = random.Random(FUZZ_SEED)
    market = await start(
        tmp_path / "data", demo=True, durability="none", extra=("--rate-limit", "1000000")
    )
    try:
        alice = demo_key(market, "alice")
        seeds = fuzz_seeds(alice)
        rounds = rounds_of([mutate(rng, rng.choice(seeds)) for _ in range(FUZZ_FRAMES)])
        counts = FuzzCounts()
        pongs = 0
        async with (
            asyncio.timeout(FUZZ_TIME_BOUND_S),
            await Client.connect(market.ws_url, demo_key(market, "bob")) as honest,
        ):
            fuzzers = asyncio.gather(*(
                fuzz_connection(market, alice, rounds[i::FUZZ_CONNECTIONS], counts)
                for i in range(FUZZ_CONNECTIONS)
            ))  # fmt: skip
            while not fuzzers.done():  # the honest client is served while the fuzz runs
                assert (await honest.ping())["type"] == "pong"
                pongs += 1
                await asyncio.wait([fuzzers], timeout=HONEST_PING_EVERY_S)
            await fuzzers
            placed = await honest.place("BOND", "buy", 1, "90.00", client_order_id="honest")
            assert placed["type"] == "accepted", placed
        assert counts.sent == FUZZ_FRAMES
        # Nearly every frame was read and answered (not lost behind a close).
        assert counts.messages > 0.9 * FUZZ_FRAMES, (counts.messages, counts.closes)
        assert pongs >= 1
        assert set(counts.closes) <= ALLOWED_CLOSES, counts.closes
        async with aiohttp.ClientSession() as http, http.get(market.base_url + "/healthz") as ok:
            assert ok.status == 200
    finally:
        assert await stop(market) == 0, market.log()
    assert market.tracebacks == 0, market.log()


# (method, path, query, body, who): valid requests, the REST fuzz's starting points.
REST_SEEDS: list[tuple[str, str, dict[str, str], dict[str, Any] | None, str]] = [
    ("GET", "/v1/book/ACME", {"depth": "10"}, None, ""),
    ("GET", "/v1/trades/ACME", {"limit": "5"}, None, ""),
    ("GET", "/v1/candles/ACME", {"interval": "1m", "limit": "5"}, None, ""),
    ("GET", "/v1/orders", {"status": "all", "limit": "5"}, None, "alice"),
    ("GET", "/v1/orders", {"status": "all", "symbol": "ACME", "limit": "5", "cursor": "99"},
     None, "alice"),
    ("GET", "/v1/orders", {"client_order_id": "c-1"}, None, "alice"),
    ("GET", "/v1/fills", {"symbol": "ACME", "limit": "5", "cursor": "99"}, None, "alice"),
    ("GET", "/v1/time", {}, None, ""),
    ("GET", "/v1/instruments", {"status": "trading", "kind": "share"}, None, ""),
    ("GET", "/v1/ticker/ACME", {}, None, ""),
    ("GET", "/v1/orders/1", {}, None, "alice"),
    ("GET", "/v1/account", {}, None, "alice"),
    ("POST", "/v1/admin/accounts", {}, {"name": "n", "cash": "1.00"}, "admin"),
    ("POST", "/v1/admin/deposits", {}, {"account": "A3", "cash": "1.00"}, "admin"),
    ("POST", "/v1/admin/deposits", {}, {"account": "A3", "symbol": "ACME", "qty": 1}, "admin"),
    ("POST", "/v1/admin/instruments", {},
     {"symbol": "FZ", "kind": "share", "tick_size": "0.01", "issuer": "A1"}, "admin"),
    ("POST", "/v1/admin/offerings", {},
     {"symbol": "FZ", "price": "1.00", "qty": 10, "closes_at": 0}, "admin"),
    ("POST", "/v1/admin/offerings/1/close", {}, None, "admin"),
    ("POST", "/v1/admin/instruments/FZ/status", {}, {"status": "halted"}, "admin"),
]  # fmt: skip
REST_FUZZ_REQUESTS = 3_000


def url_text(rng: random.Random) -> str:
    """A nasty value as it would sit in a URL, percent-encoded."""
    value = nasty(rng)
    text = value if isinstance(value, str) else json.dumps(value)
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def mutate_request(
    rng: random.Random, seed: tuple[str, str, dict[str, str], dict[str, Any] | None, str]
) -> tuple[str, str, bytes | None, str | None, str]:
    """(method, encoded path and query, body, content type, who) of one mutated request."""
    method, path, query, body, who = seed
    segments = path.split("/")
    query = dict(query)
    roll = rng.random()
    if roll < 0.3 and len(segments) > 3:
        segments[rng.randrange(3, len(segments))] = url_text(rng)
    elif roll < 0.6:
        names = ["depth", "limit", "status", "cursor", "symbol", "client_order_id", "kind", "x"]
        query[rng.choice([*query, *names])] = url_text(rng)
    data = None if body is None else json.dumps(body).encode()
    if body is not None and rng.random() < 0.8:
        data = mutate(rng, body)[1]
    content_type = "application/json" if rng.random() < 0.9 else rng.choice((None, "text/plain"))
    target = "/".join(segments)
    if query:
        target += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return method, target, data, content_type, who


@pytest.mark.slow
async def test_fuzzed_rest_requests_never_get_a_server_error(tmp_path: Path) -> None:
    rng = random.Random(FUZZ_SEED)
    market = await start(tmp_path / "data", demo=True, durability="none")
    statuses: dict[int, int] = {}
    try:
        tokens = {"admin": ADMIN_TOKEN, "alice": demo_key(market, "alice"), "": None}
        async with (
            asyncio.timeout(FUZZ_TIME_BOUND_S),
            aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as http,
        ):
            for _ in range(REST_FUZZ_REQUESTS):  # bounded by the count
                method, target, data, content_type, who = mutate_request(
                    rng, rng.choice(REST_SEEDS)
                )
                headers = {"Authorization": f"Bearer {tokens[who]}"} if tokens[who] else {}
                if content_type is not None:
                    headers["Content-Type"] = content_type
                url = yarl.URL(market.base_url + target, encoded=True)
                async with http.request(method, url, data=data, headers=headers) as response:
                    text = await response.text(errors="replace")
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    assert response.status < 500, (method, target, data, text)
                    assert response.content_type == "application/json", (target, text)
        assert sum(statuses.values()) == REST_FUZZ_REQUESTS
        assert market.tracebacks == 0, market.log()
    finally:
        assert await stop(market) == 0, market.log()
    assert market.tracebacks == 0, market.log()
