"""End to end, without ccxt: the Binance dialect's rules on the wire. The signature covers
the bytes as sent (percent-encoding included), the timestamp window, the key checks, a
fraction of a unit refused with LOT_SIZE, the weight header and 429 with Retry-After,
SUBSCRIBE answered before any event, the combined stream's wrapper, the WebSocket API's
signature check, the older listen-key flow of the user-data stream, and stop orders and
icebergs in Binance's shapes (a STOP_LOSS BUY with its quoteOrderQty budget, and what is
refused)."""

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import pytest
import pytest_asyncio

from exchange.domain.limits import MAX_QTY
from tests.binance_helpers import admin, ccxt_client, now_ms, raw, signed_query, trader
from tests.server import RunningServer, running, start, stop

pytestmark = pytest.mark.asyncio(loop_scope="module")
WAIT_S = 10.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    # A weight limit low enough to reach: 400 a minute (exchangeInfo costs 20).
    extra = ("--binance-weight-limit", "400")
    async with running(
        tmp_path_factory.mktemp("binance-raw") / "data", demo=True, extra=extra
    ) as market:
        yield market


async def test_a_signed_call_is_checked_over_the_bytes_as_sent(server: RunningServer) -> None:
    _, key, secret = await trader(server, "raw-signer", units={"ACME": 5})
    status, account, headers = await raw(
        server, "GET", "/api/v3/account", key, signed_query(secret, {})
    )
    assert status == 200, account
    assert {"asset": "ACME", "free": "5", "locked": "0"} in account["balances"]
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 20
    # A client order id with characters that are percent-encoded on the wire: signed as sent.
    order = {"symbol": "ACMEUSD", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "1", "price": "99.00", "newClientOrderId": "a b/c"}  # fmt: skip
    body = signed_query(secret, order)
    assert "a+b%2Fc" in body
    status, placed, _ = await raw(server, "POST", "/api/v3/order", key, body=body)
    assert status == 200, placed
    assert placed["clientOrderId"] == "a b/c"
    assert placed["status"] == "NEW"
    # The same parameters signed as decoded text: not what was sent.
    query = f"symbol=ACMEUSD&origClientOrderId=a+b%2Fc&timestamp={now_ms()}"
    decoded = query.replace("a+b%2Fc", "a b/c")
    signature = hmac.new(secret.encode(), decoded.encode(), hashlib.sha256).hexdigest()
    status, refused, _ = await raw(
        server, "GET", "/api/v3/order", key, f"{query}&signature={signature}"
    )
    assert (status, refused["code"]) == (400, -1022), refused
    status, found, _ = await raw(
        server,
        "GET",
        "/api/v3/order",
        key,
        signed_query(secret, {"symbol": "ACMEUSD", "origClientOrderId": "a b/c"}),
    )
    assert found["orderId"] == placed["orderId"], found


async def test_keys_signatures_and_timestamps_that_are_refused(server: RunningServer) -> None:
    _, key, secret = await trader(server, "raw-refused")
    cases = [
        (None, signed_query(secret, {}), 401, -2014),  # no key
        ("ek_unknown", signed_query(secret, {}), 401, -2015),
        (key, signed_query("f" * 64, {}), 400, -1022),  # another secret
        (key, f"timestamp={now_ms()}", 400, -1102),  # no signature
        (key, signed_query(secret, {}, timestamp=now_ms() - 60_000), 400, -1021),  # stale
        (key, signed_query(secret, {}, timestamp=now_ms() + 30_000), 400, -1021),  # ahead
        (key, signed_query(secret, {"recvWindow": 60_001}), 400, -1131),
        (key, signed_query(secret, {"bogus": 1}), 400, -1104),  # never ignored
    ]
    for api_key, query, status, code in cases:
        got_status, body, _ = await raw(server, "GET", "/api/v3/account", api_key, query)
        assert (got_status, body["code"]) == (status, code), (query, body)
    # A wide recvWindow lets an older timestamp in.
    old = signed_query(secret, {"recvWindow": 60_000}, timestamp=now_ms() - 30_000)
    assert (await raw(server, "GET", "/api/v3/account", key, old))[0] == 200


async def test_a_fraction_of_a_unit_is_refused_as_lot_size(server: RunningServer) -> None:
    _, key, secret = await trader(server, "raw-fraction")
    order = {"symbol": "ACMEUSD", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "1.5", "price": "9.00"}  # fmt: skip
    status, body, _ = await raw(
        server, "POST", "/api/v3/order", key, body=signed_query(secret, order)
    )
    assert (status, body["code"]) == (400, -1013)
    assert "LOT_SIZE" in body["msg"]
    assert "whole units" in body["msg"]
    order |= {"quantity": "2.000", "symbol": "NOPEUSD"}
    status, body, _ = await raw(
        server, "POST", "/api/v3/order", key, body=signed_query(secret, order)
    )
    assert (status, body["code"]) == (400, -1121)


async def test_a_call_not_offered_is_answered_in_binance_shape(server: RunningServer) -> None:
    for method, path in (("GET", "/api/v3/historicalTrades"), ("PATCH", "/api/v3/order")):
        status, body, _ = await raw(server, method, path, None)
        assert (status, body) == (404, {"code": -1020, "msg": "This operation is not supported."})


async def test_a_new_key_of_an_account_comes_with_its_secret(server: RunningServer) -> None:
    account, _, _ = await trader(server, "raw-second-key", units={"ACME": 3})
    made = await admin(server, f"/v1/admin/accounts/{account}/keys", {})
    assert made["account"] == account
    query = signed_query(made["api_secret"], {})
    status, body, _ = await raw(server, "GET", "/api/v3/account", made["api_key"], query)
    assert status == 200, body
    assert {"asset": "ACME", "free": "3", "locked": "0"} in body["balances"]


async def test_subscribe_is_answered_and_the_combined_stream_wraps_events(
    server: RunningServer,
) -> None:
    _, key, secret = await trader(server, "raw-streams", units={"ACME": 5})
    async with aiohttp.ClientSession() as http:
        base = f"ws://127.0.0.1:{server.port}"
        async with (
            http.ws_connect(base + "/ws/0") as plain,
            http.ws_connect(base + "/stream?streams=acmeusd@trade/acmeusd@depth") as combined,
            http.ws_connect(base + "/stream?streams=acmeusd@kline_1m") as klines,
        ):
            await plain.send_json(
                {"method": "SUBSCRIBE", "params": ["acmeusd@depth@100ms"], "id": 7}
            )
            assert await plain.receive_json(timeout=WAIT_S) == {"result": None, "id": 7}
            await plain.send_json({"method": "SUBSCRIBE", "params": ["nopeusd@trade"], "id": 8})
            refused = await plain.receive_json(timeout=WAIT_S)
            assert (refused["id"], refused["error"]["code"]) == (8, 2)
            status, book, _ = await raw(
                server, "GET", "/api/v3/depth", None, "symbol=ACMEUSD&limit=5"
            )
            assert status == 200
            order = {"symbol": "ACMEUSD", "side": "SELL", "type": "MARKET", "quantity": "1"}
            body = signed_query(secret, order)
            assert (await raw(server, "POST", "/api/v3/order", key, body=body))[0] == 200
            update = await plain.receive_json(timeout=WAIT_S)
            assert update["e"] == "depthUpdate"
            assert update["U"] == update["u"] == book["lastUpdateId"] + 1
            wrapped = [await combined.receive_json(timeout=WAIT_S) for _ in range(2)]
            assert [w["stream"] for w in wrapped] == ["acmeusd@trade", "acmeusd@depth"]
            assert wrapped[0]["data"]["e"] == "trade"
            assert wrapped[0]["data"]["q"] == "1"
            # The kline event is the candle as GET /api/v3/klines has it: its quote volume,
            # trade count and taker buy volumes too.
            kline = (await klines.receive_json(timeout=WAIT_S))["data"]["k"]
            status, rows, _ = await raw(
                server, "GET", "/api/v3/klines", None, "symbol=ACMEUSD&interval=1m"
            )
            assert status == 200
            row = rows[-1]
            assert (kline["t"], kline["q"], kline["n"], kline["V"], kline["Q"]) == (
                row[0], row[7], row[8], row[9], row[10]
            )
            assert kline["n"] >= 1
            assert Decimal(kline["q"]) > 0


async def test_user_data_on_the_websocket_api_and_by_listen_key(server: RunningServer) -> None:
    account, key, secret = await trader(server, "raw-user-data", units={"ACME": 5})
    status, made, _ = await raw(server, "POST", "/api/v3/userDataStream", key, body="")
    assert status == 200, made
    listen_key = made["listenKey"]
    async with aiohttp.ClientSession() as http:
        base = f"ws://127.0.0.1:{server.port}"
        async with (
            http.ws_connect(base + "/ws-api/v3") as api,
            http.ws_connect(base + "/ws/" + listen_key) as legacy,
        ):
            params = {"apiKey": key, "timestamp": now_ms()}
            payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
            bad = {**params, "signature": "0" * 64}
            await api.send_json(
                {"id": "1", "method": "userDataStream.subscribe.signature", "params": bad}
            )
            refused = await api.receive_json(timeout=WAIT_S)
            assert (refused["id"], refused["status"], refused["error"]["code"]) == ("1", 400, -1022)
            good = {
                **params,
                "signature": hmac.new(
                    secret.encode(), payload.encode(), hashlib.sha256
                ).hexdigest(),
            }
            await api.send_json(
                {"id": "2", "method": "userDataStream.subscribe.signature", "params": good}
            )
            answer = await api.receive_json(timeout=WAIT_S)
            assert (answer["id"], answer["status"]) == ("2", 200)
            sub = answer["result"]["subscriptionId"]
            order = {"symbol": "ACMEUSD", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                     "quantity": "2", "price": "50.00", "newClientOrderId": "ud-1"}  # fmt: skip
            assert (
                await raw(server, "POST", "/api/v3/order", key, body=signed_query(secret, order))
            )[0] == 200
            cancel = {"symbol": "ACMEUSD", "origClientOrderId": "ud-1"}
            assert (
                await raw(server, "DELETE", "/api/v3/order", key, signed_query(secret, cancel))
            )[0] == 200
            events = [await api.receive_json(timeout=WAIT_S) for _ in range(4)]
            assert all(e["subscriptionId"] == sub for e in events)
            kinds = [(e["event"]["e"], e["event"].get("X")) for e in events]
            position = ("outboundAccountPosition", None)
            new, cancelled_report = ("executionReport", "NEW"), ("executionReport", "CANCELED")
            assert kinds == [new, position, cancelled_report, position]
            cancelled = events[2]["event"]
            assert (cancelled["c"], cancelled["C"], cancelled["q"], cancelled["p"]) == (
                "ud-1",
                "ud-1",
                "2",
                "50.00",
            )
            locked = events[1]["event"]["B"]
            assert {"a": "ACME", "f": "3", "l": "2"} in locked
            plain = [await legacy.receive_json(timeout=WAIT_S) for _ in range(4)]
            assert [p["e"] for p in plain] == [e["event"]["e"] for e in events]
            # A deposit changes the balance too: its position comes on both.
            await admin(
                server, "/v1/admin/deposits", {"account": account, "symbol": "ACME", "qty": 7}
            )
            deposited = (await api.receive_json(timeout=WAIT_S))["event"]
            assert deposited["e"] == "outboundAccountPosition"
            assert {"a": "ACME", "f": "12", "l": "0"} in deposited["B"]
            assert (await legacy.receive_json(timeout=WAIT_S))["B"] == deposited["B"]
    status, _, _ = await raw(
        server, "DELETE", "/api/v3/userDataStream", key, f"listenKey={listen_key}"
    )
    assert status == 200


async def test_past_the_weight_a_minute_the_answer_is_429_with_retry_after(
    server: RunningServer,
) -> None:
    """Last in this module: it spends the address's minute (400 here)."""
    seen: list[tuple[int, Any, dict[str, str]]] = []
    for _ in range(45):  # 20 each: the 21st call is over (the 42nd if a minute began)
        seen.append(await raw(server, "GET", "/api/v3/exchangeInfo", None))
        if seen[-1][0] == 429:
            break
    status, body, headers = seen[-1]
    assert (status, body["code"]) == (429, -1003), body
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) <= 400
    assert all(s == 200 for s, _, _ in seen[:-1])
    ex = ccxt_client(server)
    try:
        with pytest.raises(ccxt.DDoSProtection):  # what ccxt makes of a 429
            await ex.load_markets()  # exchangeInfo again: past the minute's weight
    finally:
        await ex.close()


async def test_open_dialect_sockets_are_closed_1001_when_the_server_stops(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Like the native sessions: a stream or WebSocket API connection left open gets a
    going-away close at shutdown instead of holding the server's exit. They count against
    --max-connections as the native ones do."""
    data_dir = tmp_path_factory.mktemp("binance-stop") / "data"
    own = await start(data_dir, extra=("--max-connections", "2"))
    base = f"ws://127.0.0.1:{own.port}"
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(base + "/ws/0") as stream,
            http.ws_connect(base + "/ws-api/v3") as api,
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as full:
                await http.ws_connect(base + "/stream?streams=")
            assert full.value.status == 503
            with pytest.raises(aiohttp.WSServerHandshakeError) as native:
                await http.ws_connect(f"{base}/v1/ws")
            assert native.value.status == 503
            stopping = asyncio.ensure_future(stop(own))
            for ws in (stream, api):
                closing = await ws.receive(timeout=WAIT_S)
                assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
            assert await stopping == 0, own.log()
    finally:
        if own.process.returncode is None:
            await stop(own)


async def test_stop_orders_and_icebergs_in_binance_shapes(server: RunningServer) -> None:
    _, key, secret = await trader(server, "raw-stops", units={"ACME": 10})
    status, made, _ = await raw(server, "POST", "/api/v3/userDataStream", key, body="")
    assert status == 200, made

    async def place(**order: str) -> tuple[int, Any]:
        status, body, _ = await raw(
            server, "POST", "/api/v3/order", key, body=signed_query(secret, order)
        )
        return status, body

    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{server.port}/ws/{made['listenKey']}") as stream,
    ):
        status, stop_buy = await place(
            symbol="ACMEUSD", side="BUY", type="STOP_LOSS", quoteOrderQty="50.00",
            stopPrice="99.00", newClientOrderId="stop-buy",
        )  # fmt: skip
        assert status == 200, stop_buy
        assert (stop_buy["type"], stop_buy["stopPrice"], stop_buy["status"]) == (
            "STOP_LOSS", "99.00", "NEW",
        )  # fmt: skip
        assert stop_buy["origQty"] == str(MAX_QTY)  # as many units as the budget buys
        report = await stream.receive_json(timeout=WAIT_S)
        assert (report["e"], report["o"], report["P"], report["c"]) == (
            "executionReport", "STOP_LOSS", "99.00", "stop-buy",
        )  # fmt: skip
        status, iceberg_stop = await place(
            symbol="ACMEUSD", side="SELL", type="STOP_LOSS_LIMIT", timeInForce="GTC",
            quantity="6", price="1.00", stopPrice="1.10", icebergQty="2",
        )  # fmt: skip
        assert status == 200, iceberg_stop
        assert (iceberg_stop["type"], iceberg_stop["stopPrice"], iceberg_stop["icebergQty"]) == (
            "STOP_LOSS_LIMIT", "1.10", "2",
        )  # fmt: skip
    query = signed_query(secret, {"symbol": "ACMEUSD", "orderId": iceberg_stop["orderId"]})
    status, shown, _ = await raw(server, "GET", "/api/v3/order", key, query)
    assert (shown["type"], shown["stopPrice"], shown["icebergQty"], shown["price"]) == (
        "STOP_LOSS_LIMIT", "1.10", "2", "1.00",
    )  # fmt: skip
    refusals = [
        ({"side": "BUY", "type": "STOP_LOSS", "quantity": "1", "stopPrice": "99.00"}, -1102),
        ({"side": "SELL", "type": "STOP_LOSS", "quantity": "1", "stopPrice": "1.00",
          "price": "1.00"}, -1106),
        ({"side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
          "price": "50.00", "stopPrice": "1.00"}, -1106),
        ({"side": "SELL", "type": "STOP_LOSS_LIMIT", "timeInForce": "GTC", "quantity": "1",
          "price": "1.00"}, -1102),
        ({"side": "SELL", "type": "LIMIT", "timeInForce": "IOC", "quantity": "1",
          "price": "50.00", "icebergQty": "1"}, -1128),
        ({"side": "BUY", "type": "STOP_LOSS", "quantity": "1", "quoteOrderQty": "5.00",
          "stopPrice": "99.00"}, -1128),
    ]  # fmt: skip
    for order, code in refusals:
        status, body = await place(symbol="ACMEUSD", **order)
        assert (status, body.get("code")) == (400, code), (order, body)
        if code == -1102 and order["type"] == "STOP_LOSS":
            assert "quoteOrderQty" in body["msg"]
