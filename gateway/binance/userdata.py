"""Binance's user-data stream: `executionReport` and `outboundAccountPosition` events for an
account, on the WebSocket API (`/ws-api/v3`, `userDataStream.subscribe.signature`) or on
`/ws/<listenKey>` (keys from `POST /api/v3/userDataStream`).

Events come from durable records only (the read model's listener), in journal order: an
order's NEW report precedes its TRADE reports, each carrying the order's totals after it.
Listen keys live in the gateway that made them (memory only): a client that moves to
another gateway asks for a new one.
"""

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from exchange.bus import Sequenced
from exchange.domain.events import (
    CashDeposited,
    CashWithdrawn,
    OfferingSubscribed,
    OrderAccepted,
    OrderCancelled,
    OrderReplaced,
    TradeExecuted,
    UnitsAllocated,
    UnitsDeposited,
    UnitsWithdrawn,
)
from exchange.domain.money import format_cash
from gateway.binance import shapes, signing
from gateway.binance.edge import Dialect, api_key_account, endpoint, json, params
from gateway.binance.errors import BinanceError
from gateway.binance.outbox import Outbox
from gateway.readstate import Fill, OrderRecord

Json = dict[str, Any]
# Listen keys kept at once (a key a client keeps alive with PUT; the oldest go first).
MAX_LISTEN_KEYS = 10_000
LISTEN_KEY_BYTES = 45  # 60 characters, as Binance's
# User-data subscriptions one WebSocket API connection may hold.
MAX_SUBSCRIPTIONS = 16
CANCEL_STATUS = {"expired": "EXPIRED", "self_trade": "EXPIRED_IN_MATCH"}
routes = web.RouteTableDef()
_encode = msgspec.json.Encoder().encode


class ListenKeys:
    def __init__(self) -> None:
        self._by_key: OrderedDict[str, str] = OrderedDict()

    def new(self, account: str) -> str:
        for key, owner in self._by_key.items():  # one live key an account, as Binance
            if owner == account:
                self._by_key.move_to_end(key)
                return key
        if len(self._by_key) >= MAX_LISTEN_KEYS:
            self._by_key.popitem(last=False)
        key = secrets.token_urlsafe(LISTEN_KEY_BYTES)[:60]
        self._by_key[key] = account
        return key

    def account(self, key: str) -> str | None:
        return self._by_key.get(key)

    def drop(self, key: str) -> None:
        self._by_key.pop(key, None)


class UserSession:
    """A connection's user-data subscriptions: (subscription id or None for a listen-key
    socket, account)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.outbox = Outbox(ws)
        self.subscriptions: dict[int | None, str] = {}
        self.next_id = 0

    def send(self, sub: int | None, event: Json) -> None:
        self.outbox.send(_encode(event if sub is None else {"subscriptionId": sub, "event": event}))


class UserData:
    def __init__(self, d: Dialect, clock_ms: Callable[[], int] | None = None) -> None:
        self.d = d
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.listen_keys = ListenKeys()
        self.by_account: dict[str, set[tuple[UserSession, int | None]]] = {}
        d.read.listen(self.on_durable)

    def attach(self, session: UserSession, sub: int | None, account: str) -> None:
        session.subscriptions[sub] = account
        self.by_account.setdefault(account, set()).add((session, sub))

    def detach(self, session: UserSession, sub: int | None) -> None:
        account = session.subscriptions.pop(sub, None)
        held = self.by_account.get(account or "")
        if held is not None:
            held.discard((session, sub))
            if not held:  # bounded by the accounts with a subscription
                del self.by_account[account or ""]

    def forget(self, session: UserSession) -> None:
        for sub in list(session.subscriptions):
            self.detach(session, sub)

    # --- durable events -------------------------------------------------------------------

    def on_durable(self, sequenced: Sequenced) -> None:
        by_account = self.by_account
        if not by_account:  # no user-data subscriber at all: nothing to build
            return
        read = self.d.read
        fills = read.state.record_fills
        stamp = shapes.ms(sequenced.command.ts)
        reports: list[tuple[str, Json]] = []
        touched: dict[str, set[str]] = {}
        n = 0
        for event in sequenced.events:
            if isinstance(event, TradeExecuted):
                sides = ((fills[n], event.maker_account), (fills[n + 1], event.taker_account))
                for fill, account in sides:
                    touched.setdefault(account, set()).add(event.symbol)
                    if by_account.get(account):
                        reports.append((account, self._trade_report(account, fill)))
                n += 2
            elif isinstance(event, OrderAccepted):
                touched.setdefault(event.account, set()).add(event.symbol)
                if not event.resent and by_account.get(event.account):
                    reports.append((event.account, self._new_report(event)))
            elif isinstance(event, OrderCancelled | OrderReplaced):
                touched.setdefault(event.account, set()).add(event.symbol)
                if by_account.get(event.account):
                    report = self._ended_report(event, stamp)
                    if report is not None:
                        reports.append((event.account, report))
            elif isinstance(event, UnitsDeposited | UnitsWithdrawn):
                touched.setdefault(event.account, set()).add(event.symbol)
            elif isinstance(event, CashDeposited | CashWithdrawn | OfferingSubscribed):
                touched.setdefault(event.account, set())  # the cash line alone
            elif isinstance(event, UnitsAllocated):
                symbol = read.offerings[event.offering_id].symbol
                touched.setdefault(event.account, set()).add(symbol)
        for account, report in reports:
            self._tell(account, report)
        for account, symbols in touched.items():
            if by_account.get(account):
                self._tell(account, self._position(account, symbols))

    def _tell(self, account: str, event: Json) -> None:
        for session, sub in tuple(self.by_account.get(account, ())):
            session.send(sub, event)

    def _report(self, r: OrderRecord, **fields: Any) -> Json:
        read, names = self.d.read, self.d.names
        shown = shapes.order(read, names, r)
        report = {
            "e": "executionReport", "E": self.clock_ms(), "s": names.wire(r.symbol),
            "c": r.client_order_id, "S": shown["side"], "o": shown["type"],
            "f": shown["timeInForce"], "q": str(r.qty), "p": shown["price"],
            "P": shown["stopPrice"], "F": "0", "g": -1, "C": "", "x": "NEW", "X": "NEW",
            "r": "NONE",
            "i": r.order_id, "l": "0", "z": str(r.filled), "L": read.price(r.symbol, 0),
            "n": "0", "N": None, "T": shapes.ms(r.ts), "t": -1, "I": 0,
            "w": r.status == "open", "m": False, "M": False, "O": shapes.ms(r.ts),
            "Z": shown["cummulativeQuoteQty"], "Y": "0.00", "Q": "0.00",
            "W": shapes.ms(r.ts), "V": shapes.STP_MODE,
        }  # fmt: skip
        report.update(fields)
        return report

    def _new_report(self, e: OrderAccepted) -> Json:
        r = OrderRecord(
            e.order_id, e.account, e.client_order_id, e.symbol, e.side, e.type, e.tif,
            e.price, e.qty, e.qty, "open", e.ts, trigger_price=e.trigger_price,
            display_qty=e.display_qty,
        )  # fmt: skip
        o = shapes.order_type(e.type, e.post_only, e.trigger_price)
        return self._report(r, o=o, z="0", Z="0.00")

    def _trade_report(self, account: str, f: Fill) -> Json:
        read = self.d.read
        r = read.find_order(account, f.order_id) or OrderRecord(
            f.order_id, account, f.client_order_id, f.symbol, f.side, "limit", "gtc",
            f.price, f.filled + f.remaining, f.remaining, "open", f.ts,
        )  # fmt: skip
        fee, asset = shapes.commission(f, self.d.names.currency)
        tick = read.instruments[f.symbol].tick
        return self._report(
            r, x="TRADE", X="FILLED" if f.remaining == 0 else "PARTIALLY_FILLED",
            l=str(f.qty), z=str(f.filled), L=read.price(f.symbol, f.price), n=fee, N=asset,
            T=shapes.ms(f.ts), t=f.trade_id, w=f.remaining > 0, m=f.liquidity == "maker",
            M=True, Z=format_cash(f.notional * tick), Y=format_cash(f.price * f.qty * tick),
        )  # fmt: skip

    def _ended_report(self, e: OrderCancelled | OrderReplaced, stamp: int) -> Json | None:
        r = self.d.read.find_order(e.account, e.order_id)
        if r is None:
            return None
        if isinstance(e, OrderReplaced):
            return self._report(r, x="REPLACED", X=shapes.order_status(r), T=stamp)
        status = CANCEL_STATUS.get(e.reason, "CANCELED")
        return self._report(r, x=status if status != "EXPIRED_IN_MATCH" else "TRADE_PREVENTION",
                            X=status, C=r.client_order_id, T=stamp, w=False)  # fmt: skip

    def _position(self, account: str, symbols: set[str]) -> Json:
        cash, held, positions, units_held = self.d.read.balances(account)
        now = self.clock_ms()
        currency = self.d.names.currency
        balances = [{"a": currency, "f": format_cash(cash - held), "l": format_cash(held)}]
        for symbol in sorted(symbols):
            total, locked = positions.get(symbol, 0), units_held.get(symbol, 0)
            balances.append({"a": symbol, "f": str(total - locked), "l": str(locked)})
        return {"e": "outboundAccountPosition", "E": now, "u": now, "B": balances}

    # --- the sockets ----------------------------------------------------------------------

    async def listen_key_socket(self, request: web.Request, account: str) -> web.StreamResponse:
        ws = await self.d.open_socket(request)
        session = UserSession(ws)
        self.attach(session, None, account)
        try:
            await self.d.read_socket(ws)  # nothing to ask here: read until closed
        finally:
            self.forget(session)
            await session.outbox.close()
        return ws

    def ws_api(self, session: UserSession, frame: str) -> None:
        """One WebSocket API request: answered `{"id","status":200,"result"}` or
        `{"id","status":4xx,"error":{"code","msg"}}`."""
        request_id: Any = None
        try:
            try:
                request = msgspec.json.decode(frame, type=ApiRequest)
            except msgspec.DecodeError as problem:
                raise BinanceError(-1102, f"Malformed request: {problem}") from None
            request_id = request.id
            result = self._ws_method(session, request)
            answer = {"id": request_id, "status": 200, "result": result, "rateLimits": []}
        except BinanceError as problem:
            answer = {"id": request_id, "status": problem.status,
                      "error": {"code": problem.code, "msg": problem.msg}}  # fmt: skip
        session.outbox.send(_encode(answer))

    def _ws_method(self, session: UserSession, request: "ApiRequest") -> Any:
        method, given = request.method, request.params
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": self.clock_ms()}
        if method == "userDataStream.subscribe.signature":
            text = {k: v if isinstance(v, str) else _encode(v).decode() for k, v in given.items()}
            api_key = text.get("apiKey", "")
            account = self.d.account_of_key(api_key)
            if not api_key:
                raise BinanceError(-2014, "API-key format invalid.", 401)
            if account is None:
                raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
            signed = signing.Signed(text, signing.sorted_payload(text), text.get("signature"))
            signing.check_signature(signing.api_secret(self.d.key, api_key), signed)
            signing.check_timestamp(text, self.d.clock_ms())
            if len(session.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise BinanceError(-1003, f"At most {MAX_SUBSCRIPTIONS} subscriptions a "
                    "connection.")
            sub = session.next_id
            session.next_id += 1
            self.attach(session, sub, account)
            return {"subscriptionId": sub}
        if method == "userDataStream.unsubscribe":
            wanted = given.get("subscriptionId")
            for held in [s for s in session.subscriptions if wanted is None or s == wanted]:
                self.detach(session, held)
            return {}
        if method == "session.subscriptions":
            return [{"subscriptionId": s} for s in session.subscriptions]
        raise BinanceError(-1020, f"This operation is not supported: {method[:48]}")


class ApiRequest(msgspec.Struct):
    method: str
    id: int | str | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


async def ws_api_handler(request: web.Request) -> web.StreamResponse:
    users: UserData = request.app["binance_users"]
    ws = await users.d.open_socket(request)
    session = UserSession(ws)
    try:
        await users.d.read_socket(ws, lambda text: users.ws_api(session, text))
    finally:
        users.forget(session)
        await session.outbox.close()
    return ws


# --- listen keys (REST) ----------------------------------------------------------------------


def _users(request: web.Request) -> UserData:
    found: UserData = request.app["binance_users"]
    return found


@routes.post("/api/v3/userDataStream")
@endpoint(2)
async def new_listen_key(request: web.Request) -> web.Response:
    account = api_key_account(request)
    await params(request)
    return json({"listenKey": _users(request).listen_keys.new(account)})


@routes.put("/api/v3/userDataStream")
@endpoint(2)
async def keep_listen_key(request: web.Request) -> web.Response:
    account = api_key_account(request)
    got = (await params(request)).params
    if _users(request).listen_keys.account(got.get("listenKey", "")) != account:
        raise BinanceError(-1125, "This listenKey does not exist.")
    return json({})


@routes.delete("/api/v3/userDataStream")
@endpoint(2)
async def close_listen_key(request: web.Request) -> web.Response:
    account = api_key_account(request)
    got = (await params(request)).params
    keys = _users(request).listen_keys
    key = got.get("listenKey", "")
    if keys.account(key) != account:
        raise BinanceError(-1125, "This listenKey does not exist.")
    keys.drop(key)
    return json({})


