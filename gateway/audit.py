"""The gateway's log of who did what: one line when a WebSocket opens and one when it closes,
every authentication failure (at most AUTH_FAILURE_LINES_PER_S a second, the rest counted),
and one line per admin action. Never a key or token, never a line per request.

Every line carries `event` (ws_open, ws_close, auth_failed, admin) and its fields as
`extra=`, so the JSON format (exchange/logs.py) gets them as fields of their own.
"""

import logging
import time
from collections.abc import Callable

from aiohttp import web

from exchange.logs import RECORD_ATTRIBUTES, LineBudget

log = logging.getLogger("gateway.audit")

# Auth failure lines a second, at most: enough to see who is failing and from where; a
# flood of bad keys (thousands a second) then costs ten lines a second, and the lines that
# follow a quiet spell say how many were held back. Every failure is also counted in
# /metrics (exchange_gateway_rejects_total, AUTH_FAILED / FORBIDDEN).
AUTH_FAILURE_LINES_PER_S = 10
# The first characters of a refused API key that may be logged: the prefix every key
# has ("ek_") and three more, enough to tell a mistyped key from a stranger's guess;
# the 192 random bits stay secret.
KEY_PREFIX_LOGGED = 6
# Close codes that mean the server cut a client off for its behaviour: logged at WARNING.
WARNING_CLOSES = frozenset({1007, 1009, 1011, 4008, 4029})
# What a close code without a reason of the server's means, for the close line.
CLOSE_MEANINGS = {
    1000: "normal",
    1001: "going away",
    1006: "connection lost without a close frame",
    1007: "text frame not UTF-8",
    1009: "frame too large",
}


def peer_of(request: web.BaseRequest) -> str:
    """The client's address and port ("127.0.0.1:53412"), as the socket sees it."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return request.remote or ""


def connection_opened(conn: int, peer: str, account: str | None) -> None:
    extra = {"event": "ws_open", "conn": conn, "peer": peer, "account": account}
    log.info("websocket opened", extra=extra)


def connection_closed(
    conn: int, peer: str, account: str | None, code: int | None, reason: str,
    seconds: float, requests: int,
) -> None:  # fmt: skip
    level = logging.WARNING if code in WARNING_CLOSES else logging.INFO
    extra = {
        "event": "ws_close", "conn": conn, "peer": peer, "account": account, "code": code,
        "reason": reason or CLOSE_MEANINGS.get(code or 0, ""),
        "duration_s": round(seconds, 3), "requests": requests,
    }  # fmt: skip
    log.log(level, "websocket closed", extra=extra)


def admin_action(action: str, peer: str, outcome: str, params: dict[str, object]) -> None:
    """One admin call: what, with which parameters, the outcome (ok or the code). There is
    one admin token, so `by` is always "admin"; `peer` tells where the call came from."""
    extra: dict[str, object] = {
        "event": "admin", "action": action, "outcome": outcome, "by": "admin", "peer": peer,
    }  # fmt: skip
    for key, value in params.items():
        # A field named like a LogRecord attribute ("name") would make logging raise.
        field = f"param_{key}" if key in RECORD_ATTRIBUTES or key in extra else key
        extra[field] = value
    log.info("admin action", extra=extra)


class AuthFailures:
    """Logs refused API keys and admin tokens, at most AUTH_FAILURE_LINES_PER_S a second."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = LineBudget(AUTH_FAILURE_LINES_PER_S, clock)

    def failed(self, where: str, peer: str, key: str = "", conn: int | None = None) -> None:
        """`where`: ws_auth (the auth request), ws_header (the upgrade's Authorization),
        rest_key (a private read), rest_admin (an admin call: its token is never shown),
        binance_key and binance_signature (the Binance dialect's unknown key, bad signature)."""
        held_back = self.budget.take()
        if held_back is None:
            return
        extra: dict[str, object] = {"event": "auth_failed", "where": where, "peer": peer}
        if conn is not None:
            extra["conn"] = conn
        if len(key) > 2 * KEY_PREFIX_LOGGED:  # a short one would be shown whole
            extra["key_prefix"] = key[:KEY_PREFIX_LOGGED]
        if held_back:
            extra["not_logged_before"] = held_back
        log.warning("authentication failed", extra=extra)
