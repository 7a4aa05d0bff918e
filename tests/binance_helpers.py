"""Helpers of the Binance-dialect tests: accounts with a key and its secret, ccxt clients
pointed at a test server exactly as the README says, and signed raw requests."""

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt.pro
import yarl

from tests.server import ADMIN_TOKEN, RunningServer

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def admin(server: RunningServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.base_url + path, json=body, headers=ADMIN) as reply,
    ):
        payload: dict[str, Any] = await reply.json()
        assert reply.status < 300, payload
        return payload


async def trader(
    server: RunningServer, name: str, cash: str = "100000.00", units: dict[str, int] | None = None
) -> tuple[str, str, str]:
    """A new account: (account, api_key, api_secret)."""
    made = await admin(server, "/v1/admin/accounts", {"name": name, "cash": cash})
    for symbol, qty in (units or {}).items():
        body = {"account": made["account"], "symbol": symbol, "qty": qty}
        await admin(server, "/v1/admin/deposits", body)
    return made["account"], made["api_key"], made["api_secret"]


async def instrument(server: RunningServer, symbol: str) -> str:
    """A new instrument in trading (tick 0.01); returns its issuer's account."""
    issuer, _, _ = await trader(server, f"{symbol.lower()}-issuer", "0")
    body = {"symbol": symbol, "kind": "share", "tick_size": "0.01", "issuer": issuer}
    await admin(server, "/v1/admin/instruments", body)
    await admin(server, f"/v1/admin/instruments/{symbol}/status", {"status": "trading"})
    return issuer


def ccxt_client(server: RunningServer, key: str = "", secret: str = "") -> ccxt.pro.binance:
    """ccxt's binance class with its whole URL table replaced, as the README shows."""
    h, w = server.base_url, f"ws://127.0.0.1:{server.port}"
    ex = ccxt.pro.binance({"apiKey": key, "secret": secret, "options": {
        "defaultType": "spot", "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False, "fetchMargins": False,
        "fetchOpenOrders": {"warnWithoutSymbol": False}}})  # fmt: skip
    ex.urls["api"] = {"public": h + "/api/v3", "private": h + "/api/v3", "v1": h + "/api/v1",
        "ws": {"spot": w + "/ws", "margin": w + "/ws",
               "ws-api": {"spot": w + "/ws-api/v3"}}}  # fmt: skip
    return ex


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def signed_query(secret: str, params: dict[str, Any], *, timestamp: int | None = None) -> str:
    """`k=v&..&timestamp=..&signature=..` as ccxt and Binance's docs build it."""
    query = urlencode({**params, "timestamp": now_ms() if timestamp is None else timestamp})
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return f"{query}&signature={signature}"


async def raw(
    server: RunningServer, method: str, path: str, key: str | None, query: str = "",
    body: str | None = None,
) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
    """(status, JSON body, headers) of a request sent as written."""
    headers = {} if key is None else {"X-MBX-APIKEY": key}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    url = server.base_url + path + (f"?{query}" if query else "")
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, yarl_url(url), data=body, headers=headers) as reply,
    ):
        return reply.status, await reply.json(), dict(reply.headers)


def yarl_url(url: str) -> yarl.URL:
    """The URL exactly as written (aiohttp must not re-encode the signed query)."""
    return yarl.URL(url, encoded=True)
