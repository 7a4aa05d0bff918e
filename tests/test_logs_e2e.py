"""The log a person reads, and /metrics, against the real server: a line when a connection
opens and one when it closes (with its account), auth failures without the key and
bounded, admin actions, a 4029 close at WARNING, the JSON format line by line; /metrics
counts the gateway's own refusals by code and shows the process and its GC."""

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.audit import AUTH_FAILURE_LINES_PER_S
from tests.raw_ws import OP_CLOSE, OP_TEXT, RawWebSocket
from tests.server import ADMIN_TOKEN, RunningServer, metrics, running

pytestmark = pytest.mark.asyncio(loop_scope="module")

# How long a line may take to reach the test's copy of the output (generous: shared machine).
LINE_TIMEOUT_S = 20.0
# A text line's `key=value` fields; a value is bare, or a JSON string.
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
EVENTS_AWAITED = ('"event":"ws_close"', '"event":"auth_failed"')
FLOOD = 1_200  # past a burst of 100 and the 1,000 refusals that close the connection


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    data = tmp_path_factory.mktemp("logs") / "data"
    async with running(data, demo=True, extra=("--rate-limit", "50")) as market:
        yield market


def fields(line: str) -> dict[str, Any]:
    """A text line's level and fields: `... INFO gateway.audit: msg k=v k="v w" ...`."""
    _, level, _ = line.split(" ", 2)
    found: dict[str, Any] = {"level": level}
    for key, value in _FIELD.findall(line):
        found[key] = json.loads(value) if value.startswith('"') else value
    return found


async def lines_where(
    server: RunningServer, wanted: Callable[[dict[str, Any]], bool], count: int = 1
) -> list[dict[str, Any]]:
    """The fields of the log lines that `wanted` picks, once there are `count` of them."""
    async with asyncio.timeout(LINE_TIMEOUT_S):
        while True:  # bounded by the timeout; the server's output arrives on its own
            found = [f for f in map(fields, _log_lines(server)) if wanted(f)]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)


def _log_lines(server: RunningServer) -> list[str]:
    return [line for line in list(server.output) if " gateway.audit: " in line]


async def all_lines_so_far(server: RunningServer) -> None:
    """Returns once every line the server logged before the call has reached the test: it
    opens and closes a connection and waits for that one's close line, logged after them."""
    ws = await RawWebSocket.connect(server.ws_url)
    peer = local_peer(ws)
    try:
        await ws.send_close()
        await ws.next_frame()
    finally:
        ws.close()
    await lines_where(server, lambda f: f["event"] == "ws_close" and f["peer"] == peer)


def demo_key(server: RunningServer, name: str) -> tuple[str, str]:
    """A demo account's (id, API key)."""
    entry = json.loads((server.data_dir / "demo-keys.json").read_text())[name]
    return str(entry["account"]), str(entry["api_key"])


def local_peer(ws: RawWebSocket) -> str:
    host, port = ws.writer.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


async def test_a_connection_logs_a_line_when_it_opens_and_one_when_it_closes_with_its_account(
    server: RunningServer,
) -> None:
    account, key = demo_key(server, "alice")
    ws = await RawWebSocket.connect(server.ws_url, headers={"Authorization": f"Bearer {key}"})
    peer = local_peer(ws)
    try:
        await ws.send_text(['{"op":"ping"}'] * 3)
        for _ in range(3):
            assert (await ws.next_frame()).opcode == OP_TEXT
        await ws.send_close(1000)
        assert (await ws.next_frame()).opcode == OP_CLOSE
    finally:
        ws.close()
    opened, closed = await lines_where(
        server, lambda f: f.get("peer") == peer and f["event"] in {"ws_open", "ws_close"}, 2
    )
    assert (opened["event"], opened["level"], opened["account"]) == ("ws_open", "INFO", account)
    assert closed["event"] == "ws_close", closed
    assert (closed["level"], closed["account"], closed["code"]) == ("INFO", account, "1000")
    assert (closed["conn"], closed["requests"]) == (opened["conn"], "3")
    assert float(closed["duration_s"]) >= 0


async def test_an_auth_failure_is_logged_at_warning_with_the_peer_and_never_the_key(
    server: RunningServer,
) -> None:
    bad_key = "ek_" + "NotAKeyOfAnyone" * 2
    ws = await RawWebSocket.connect(server.ws_url)
    peer = local_peer(ws)
    try:
        await ws.send_text([json.dumps({"op": "auth", "api_key": bad_key})])
        assert json.loads((await ws.next_frame()).payload)["code"] == "AUTH_FAILED"
        assert (await ws.next_frame()).close_code == 4001
        await ws.send_close()
    finally:
        ws.close()
    headers = {"Authorization": f"Bearer {bad_key}x"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + "/v1/account", headers=headers) as reply,
    ):
        assert reply.status == 401
    [failed] = await lines_where(
        server, lambda f: f["event"] == "auth_failed" and f.get("peer") == peer
    )
    assert (failed["level"], failed["where"], failed["key_prefix"]) == (
        "WARNING", "ws_auth", bad_key[:6],
    )  # fmt: skip
    [closed] = await lines_where(server, lambda f: f["event"] == "ws_close" and f["peer"] == peer)
    assert (closed["code"], closed["reason"], closed["account"]) == (
        "4001", "authentication failed", "-",
    )  # fmt: skip
    await lines_where(server, lambda f: f["event"] == "auth_failed" and f["where"] == "rest_key")
    assert bad_key not in server.log()


async def test_a_key_refused_in_the_upgrade_header_makes_only_its_auth_failure_line(
    server: RunningServer,
) -> None:
    bad_key = "ek_" + "AlsoNotAKey12345" * 2
    ws = await RawWebSocket.connect(server.ws_url, headers={"Authorization": f"Bearer {bad_key}"})
    peer = local_peer(ws)
    try:
        assert (await ws.next_frame()).close_code == 4001
    finally:
        ws.close()
    [failed] = await lines_where(server, lambda f: f.get("peer") == peer)
    assert (failed["event"], failed["where"]) == ("auth_failed", "ws_header")
    assert bad_key not in server.log()


async def test_an_admin_action_is_logged_with_what_by_whom_and_the_outcome(
    server: RunningServer,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(base_url=server.base_url) as http:
        body = {"name": "Logged Person", "cash": "12.50"}
        async with http.post("/v1/admin/accounts", json=body, headers=admin) as reply:
            created = await reply.json()
        body = {"account": "A99999", "cash": "1.00"}
        async with http.post("/v1/admin/deposits", json=body, headers=admin) as reply:
            assert reply.status == 404
        forged = {"Authorization": "Bearer not-the-admin-token-at-all"}
        async with http.post("/v1/admin/deposits", json=body, headers=forged) as reply:
            assert reply.status == 403
    [made] = await lines_where(server, lambda f: f.get("param_name") == "Logged Person")
    assert (made["level"], made["event"], made["action"], made["outcome"]) == (
        "INFO", "admin", "create_account", "ok",
    )  # fmt: skip
    assert (made["by"], made["account"], made["cash"]) == ("admin", created["account"], "12.50")
    assert made["peer"].startswith("127.0.0.1:")
    [refused] = await lines_where(server, lambda f: f.get("account") == "A99999")
    assert (refused["action"], refused["outcome"]) == ("deposit", "UNKNOWN_ACCOUNT")
    await lines_where(server, lambda f: f.get("where") == "rest_admin")
    assert created["api_key"] not in server.log()
    assert "not-the-admin-token" not in server.log()


async def test_a_connection_closed_for_its_rate_is_logged_at_warning_with_its_account(
    server: RunningServer,
) -> None:
    account, key = demo_key(server, "bob")
    ws = await RawWebSocket.connect(server.ws_url, headers={"Authorization": f"Bearer {key}"})
    peer = local_peer(ws)
    try:
        await ws.send_text([json.dumps({"op": "ping", "req_id": n}) for n in range(FLOOD)])
        frame = await ws.next_frame()
        while frame.opcode == OP_TEXT:  # bounded by what the server sends
            frame = await ws.next_frame()
        assert frame.close_code == 4029
        await ws.send_close()
    finally:
        ws.close()
    [closed] = await lines_where(server, lambda f: f["event"] == "ws_close" and f["peer"] == peer)
    assert (closed["level"], closed["code"], closed["account"]) == ("WARNING", "4029", account)
    assert closed["reason"] == "rate limit exceeded repeatedly"
    # The 1,000 refusals were counted, not logged: the connection made two lines.
    assert len([line for line in _log_lines(server) if f"peer={peer}" in line]) == 2


async def test_a_connection_closed_for_a_frame_too_large_is_logged_at_warning(
    server: RunningServer,
) -> None:
    ws = await RawWebSocket.connect(server.ws_url)
    peer = local_peer(ws)
    try:
        await ws.send_text(["x" * (64 * 1024 + 1)])
        assert (await ws.next_frame()).close_code == 1009
        await ws.send_close()
    finally:
        ws.close()
    [closed] = await lines_where(server, lambda f: f["event"] == "ws_close" and f["peer"] == peer)
    assert (closed["level"], closed["code"], closed["reason"]) == (
        "WARNING", "1009", "frame too large",
    )  # fmt: skip


async def test_a_flood_of_bad_keys_makes_no_more_auth_failure_lines_than_the_bound(
    server: RunningServer,
) -> None:
    failures = 300
    _, before = await metrics(server)
    lines_before = len([f for f in map(fields, _log_lines(server)) if f["event"] == "auth_failed"])
    started = time.monotonic()
    async with aiohttp.ClientSession(base_url=server.base_url) as http:
        for n in range(failures):
            headers = {"Authorization": f"Bearer ek_flood-{n:06d}-padding-padding"}
            async with http.get("/v1/account", headers=headers) as reply:
                assert reply.status == 401
    elapsed = time.monotonic() - started
    _, after = await metrics(server)
    key = 'exchange_gateway_rejects_total{code="AUTH_FAILED"}'
    assert after[key] - before.get(key, 0) == failures  # every one counted
    await all_lines_so_far(server)
    lines = [f for f in map(fields, _log_lines(server)) if f["event"] == "auth_failed"]
    logged = len(lines) - lines_before
    # One-second windows: those begun during the flood, and one begun just before it.
    bound = AUTH_FAILURE_LINES_PER_S * (math.floor(elapsed) + 2)
    assert 1 <= logged <= bound, (logged, elapsed)


async def test_metrics_count_the_gateways_own_refusals_by_code_and_show_the_process(
    server: RunningServer,
) -> None:
    _, before = await metrics(server)
    _, key = demo_key(server, "alice")
    ws = await RawWebSocket.connect(server.ws_url, headers={"Authorization": f"Bearer {key}"})
    try:
        place = {"op": "place", "symbol": "ACME", "side": "buy", "price": "10.001", "qty": 1}
        await ws.send_text(['{"op":"no-such-op"}', json.dumps(place)])
        answers = [json.loads((await ws.next_frame()).payload) for _ in range(2)]
        assert [a["code"] for a in answers] == ["BAD_REQUEST", "OFF_TICK"]
        await ws.send_close()
    finally:
        ws.close()
    text, after = await metrics(server)

    def grew(code: str) -> float:
        name = f'exchange_gateway_rejects_total{{code="{code}"}}'
        return after.get(name, 0) - before.get(name, 0)

    assert (grew("BAD_REQUEST"), grew("OFF_TICK")) == (1, 1)
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        'python_gc_objects_collected_total{generation="0"}',
        'python_gc_collections_total{generation="2"}',
        "exchange_half_open_connections",
        "exchange_half_open_refused_total",
        "exchange_half_open_timed_out_total",
    ):
        assert name in after, f"{name} not in /metrics:\n{text}"
    assert "python_info{" in text


async def test_a_refused_upgrade_past_the_connection_bound_is_counted_as_busy(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "data", extra=("--max-connections", "1")) as market:
        first = await RawWebSocket.connect(market.ws_url)
        try:
            with pytest.raises(ConnectionError, match="503"):
                await RawWebSocket.connect(market.ws_url)
            async with aiohttp.ClientSession() as http:
                headers = {"Upgrade": "websocket", "Connection": "Upgrade",
                           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                           "Sec-WebSocket-Version": "13"}  # fmt: skip
                async with http.get(market.ws_url.replace("ws:", "http:"), headers=headers) as r:
                    assert (r.status, (await r.json())["code"]) == (503, "BUSY")
            _, values = await metrics(market)
        finally:
            first.close()
    assert values['exchange_gateway_rejects_total{code="BUSY"}'] == 2


async def test_the_json_log_format_is_one_object_a_line_with_its_fields(tmp_path: Path) -> None:
    async with running(tmp_path / "data", demo=True, extra=("--log-format", "json")) as market:
        account, key = demo_key(market, "alice")
        ws = await RawWebSocket.connect(market.ws_url, headers={"Authorization": f"Bearer {key}"})
        try:
            await ws.send_text(['{"op":"ping"}'])
            await ws.next_frame()
            await ws.send_close()
            await ws.next_frame()
        finally:
            ws.close()
        async with (
            aiohttp.ClientSession(base_url=market.base_url) as http,
            http.get("/v1/account", headers={"Authorization": "Bearer nobody"}) as reply,
        ):
            assert reply.status == 401
        async with asyncio.timeout(LINE_TIMEOUT_S):
            while not all(any(e in line for line in market.output) for e in EVENTS_AWAITED):
                await asyncio.sleep(0.02)  # bounded by the timeout
    # stdout's start banner is text for people; every other line is a JSON object.
    banner = ("exchange listening", "admin token:", "core:", "demo API keys", "  ", "try:")
    decoded = [json.loads(line) for line in market.output if not line.startswith(banner)]
    assert decoded, market.log()
    for line in decoded:
        assert {"ts", "level", "logger", "msg"} <= line.keys(), line
        assert datetime.fromisoformat(line["ts"]).utcoffset() is not None  # with its zone
        assert line["ts"].endswith("Z")
    by_event = {line.get("event"): line for line in decoded}
    assert by_event["ws_open"]["account"] == by_event["ws_close"]["account"] == account
    assert isinstance(by_event["ws_close"]["conn"], int)
    assert (by_event["ws_close"]["code"], by_event["ws_close"]["requests"]) == (1000, 1)
    assert (by_event["auth_failed"]["level"], by_event["auth_failed"]["where"]) == (
        "WARNING", "rest_key",
    )  # fmt: skip
