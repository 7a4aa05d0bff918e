"""REST: public reads, private reads with an API key, admin writes with the admin token.

Reads come from the read model (durable state only); writes are commands through the
sequencer, answered once durable. Every error is JSON `{"code":..,"message":..}` with a
4xx status (503 while recovering or when the exchange is busy).
"""

import functools
import heapq
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_args

import msgspec
from aiohttp import web
from msgspec import Meta

from exchange.bus import (
    BusyError,
    InvalidCommandError,
    SequencerStoppedError,
    UnavailableError,
)
from exchange.domain import commands as cmd
from exchange.domain.codes import RejectCode
from exchange.domain.events import (
    AccountCreated,
    AuctionUncrossed,
    CashDeposited,
    Event,
    InstrumentFeesSet,
    InstrumentListed,
    InstrumentStatusChanged,
    OfferingClosed,
    OfferingOpened,
    OfferingUnderwritten,
    Rejected,
    TradingRulesSet,
    UnitsDeposited,
)
from exchange.domain.fees import FEE_ACCOUNT, fee_problem, offering_fee_problem
from exchange.domain.limits import (
    MAX_BAND_PCT,
    MAX_ENTITY_ID,
    MAX_ID_LENGTH,
    MAX_INTERRUPTION_S,
    MAX_OFFERING_QTY,
    MAX_PRICE_TICKS,
    MAX_QTY,
    MAX_TIMESTAMP,
)
from exchange.domain.money import MoneyError, format_cash, parse_cash, parse_price, parse_tick_size
from exchange.domain.text import (
    VISIBLE_TEXT_PATTERN,
    SymbolAtEdge,
    VisibleId,
    VisibleName,
    is_symbol,
    parse_bounded_int,
)
from gateway import audit, protocol
from gateway.auth import bearer, hash_api_key, new_api_key, same_secret
from gateway.binance import signing
from gateway.daystats import last_day
from gateway.messages import order_extras, shown_tif
from gateway.readmodel import ReadModel
from gateway.readstate import CANDLE_INTERVALS, FILLS_PER_ACCOUNT, Fill

if TYPE_CHECKING:
    from exchange.bus import Bus

# /v1/book depth: the default and the bound.
BOOK_DEPTH_DEFAULT = 50
BOOK_DEPTH_MAX = 5_000
# /v1/trades limit: the default and the bound (the read model keeps 1,000 a symbol).
TRADES_LIMIT_DEFAULT = 100
# /v1/orders limit: the default and the bound.
ORDERS_LIMIT_DEFAULT = 1_000
ORDERS_LIMIT_MAX = 10_000
# /v1/fills limit: the default and the bound (what the read side keeps an account).
FILLS_LIMIT_DEFAULT = 100
FILLS_LIMIT_MAX = FILLS_PER_ACCOUNT
# What /v1/instruments tells of each instrument's order filters.
MIN_QTY = 1
# An instrument is "listed" until an admin opens trading (then "trading" or "halted").
INSTRUMENT_STATUSES = ("listed", *get_args(cmd.TradingStatus))
INSTRUMENT_KINDS: tuple[str, ...] = get_args(cmd.InstrumentKind)
_VISIBLE_TEXT = re.compile(VISIBLE_TEXT_PATTERN)
# Admin request bodies are small JSON objects.
MAX_BODY_BYTES = 16 * 1024

routes = web.RouteTableDef()
T = TypeVar("T")


class ApiError(web.HTTPException):
    def __init__(self, status: int, code: str, message: str, *, sequenced: bool = False) -> None:
        self.status_code = status
        self.code = code
        self.sequenced = sequenced  # the engine's refusal (else the gateway's own)
        super().__init__(
            text=msgspec.json.encode({"code": code, "message": message}).decode(),
            content_type="application/json",
        )


def _json(data: Any, status: int = 200) -> web.Response:
    body = msgspec.json.encode(data)
    return web.Response(body=body, status=status, content_type="application/json")


def _read(request: web.Request) -> ReadModel:
    read: ReadModel = request.app["read"]
    return read


def _symbol(request: web.Request) -> str:
    symbol = request.match_info["symbol"]
    if symbol not in _read(request).instruments:
        raise ApiError(404, RejectCode.UNKNOWN_SYMBOL, f"no such instrument: {symbol[:16]}")
    return symbol


def _int_query(request: web.Request, name: str, default: int, bound: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    value = parse_bounded_int(text, 1, bound)
    if value is None:
        raise ApiError(400, RejectCode.BAD_REQUEST, f"{name} must be 1..{bound}")
    return value


def _choice_query(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    text = request.query.get(name)
    if text is not None and text not in choices:
        raise ApiError(400, RejectCode.BAD_REQUEST, f"{name}: one of {', '.join(choices)}")
    return text


def _symbol_query(request: web.Request) -> str | None:
    """`?symbol=`: absent (None), or an instrument (else 400, or 404 when it names none)."""
    symbol = request.query.get("symbol")
    if symbol is None:
        return None
    if not is_symbol(symbol):
        raise ApiError(400, RejectCode.BAD_REQUEST, "symbol: 1-16 of A-Z 0-9 . _ -")
    if symbol not in _read(request).instruments:
        raise ApiError(404, RejectCode.UNKNOWN_SYMBOL, f"no such instrument: {symbol}")
    return symbol


def _cursor_query(request: web.Request) -> int | None:
    """`?cursor=`: absent, or a `next_cursor` this call answered: the id (ASCII digits)
    of the last item of the page before; the next page starts below it."""
    text = request.query.get("cursor")
    if text is None:
        return None
    position = parse_bounded_int(text, 0, MAX_ENTITY_ID)
    if position is None:
        raise ApiError(400, RejectCode.BAD_REQUEST, "cursor: pass a next_cursor of this call")
    return position


def _account(request: web.Request) -> str:
    token = bearer(request.headers.get("Authorization"))
    account = _read(request).accounts_by_key.get(hash_api_key(token)) if token else None
    if account is None:
        request.app["auth_failures"].failed("rest_key", audit.peer_of(request), token)
        raise ApiError(401, RejectCode.AUTH_FAILED, "send Authorization: Bearer API_KEY")
    return account


def _admin(request: web.Request) -> None:
    token = bearer(request.headers.get("Authorization"))
    if not token or not same_secret(token, request.app["admin_token"]):
        request.app["auth_failures"].failed("rest_admin", audit.peer_of(request))
        raise ApiError(403, RejectCode.FORBIDDEN, "admin token required")


# --- public reads ----------------------------------------------------------------------------


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    read = _read(request)
    return _json({"status": "ok", "seq": read.durable_seq})


@routes.get("/v1/time")
async def server_time(request: web.Request) -> web.Response:
    """The gateway's wall clock (ns since the epoch), not the sequencer's stamps."""
    return _json({"server_time": time.time_ns()})


@routes.get("/v1/instruments")
async def instruments(request: web.Request) -> web.Response:
    status = _choice_query(request, "status", INSTRUMENT_STATUSES)
    kind = _choice_query(request, "kind", INSTRUMENT_KINDS)
    read = _read(request)
    return _json(
        {
            "instruments": [
                {
                    "symbol": i.symbol,
                    "kind": i.kind,
                    "tick_size": str(read.tick_size(i.symbol)),
                    "issuer": i.issuer,
                    "status": i.status,
                    "min_qty": MIN_QTY,
                    "max_qty": MAX_QTY,
                    "max_price": read.price(i.symbol, MAX_PRICE_TICKS),
                    "fees": {"maker_bps": i.maker_bps, "taker_bps": i.taker_bps},
                    "rules": {
                        "band_pct": i.band_pct,
                        "interruption_s": i.interruption_s,
                        "open_at": i.open_at or None,
                        "close_at": i.close_at or None,
                    },
                }
                for i in read.instruments.values()
                if (status is None or i.status == status) and (kind is None or i.kind == kind)
            ]
        }
    )


@routes.get("/v1/offerings")
async def offerings(request: web.Request) -> web.Response:
    read = _read(request)
    return _json(
        {
            "offerings": [
                {
                    "offering_id": str(o.offering_id),
                    "symbol": o.symbol,
                    "price": read.price(o.symbol, o.price),
                    "qty": o.qty,
                    "status": "open" if o.is_open else "closed",
                    "subscribed": o.subscribed,
                    "underwriter": o.underwriter or None,
                    "fee_bps": o.fee_bps,
                    "commitment": o.commitment,
                }
                for o in read.offerings.values()
            ]
        }
    )


@routes.get("/v1/book/{symbol}")
async def book(request: web.Request) -> web.Response:
    symbol = _symbol(request)
    depth = _int_query(request, "depth", BOOK_DEPTH_DEFAULT, BOOK_DEPTH_MAX)
    read = _read(request)
    bids, asks = read.book(symbol, depth)
    return _json(
        {
            "symbol": symbol,
            "seq": read.tapes[symbol].book_seq,
            "bids": [[read.price(symbol, p), q] for p, q in bids],
            "asks": [[read.price(symbol, p), q] for p, q in asks],
        }
    )


@routes.get("/v1/trades/{symbol}")
async def trades(request: web.Request) -> web.Response:
    symbol = _symbol(request)
    read = _read(request)
    bound = read.tapes[symbol].trades.maxlen or 1
    limit = _int_query(request, "limit", TRADES_LIMIT_DEFAULT, bound)
    tape = list(read.tapes[symbol].trades)[:limit]
    return _json(
        {
            "symbol": symbol,
            "trades": [
                {
                    "trade_id": str(t.trade_id),
                    "price": read.price(symbol, t.price),
                    "qty": t.qty,
                    "aggressor": t.aggressor,
                    "ts": t.ts,
                }
                for t in tape
            ],
        }
    )


@routes.get("/v1/candles/{symbol}")
async def candles(request: web.Request) -> web.Response:
    symbol = _symbol(request)
    interval = request.query.get("interval", "1m")
    if interval not in CANDLE_INTERVALS:
        raise ApiError(
            400, RejectCode.BAD_REQUEST, f"interval: one of {', '.join(CANDLE_INTERVALS)}"
        )
    read = _read(request)
    kept = read.tapes[symbol].candles[interval]
    limit = _int_query(request, "limit", kept.maxlen or 1, kept.maxlen or 1)
    price = read.price
    return _json(
        {
            "symbol": symbol,
            "interval": interval,
            "candles": [
                {
                    "ts": c.start,
                    "open": price(symbol, c.open),
                    "high": price(symbol, c.high),
                    "low": price(symbol, c.low),
                    "close": price(symbol, c.close),
                    "volume": c.volume,
                }
                for c in list(kept)[-limit:]
            ],
        }
    )


@routes.get("/v1/ticker/{symbol}")
async def ticker(request: web.Request) -> web.Response:
    """The WebSocket ticker's fields, and the last day of trading (gateway/daystats.py)."""
    symbol = _symbol(request)
    read = _read(request)
    shown: dict[str, Any] = dict(request.app["hub"].ticker(symbol))
    day = last_day(read.tapes[symbol].candles["1m"])
    price = read.price
    shown["24h"] = {
        "since": day.since,
        "open": price(symbol, day.open) if day.open is not None else None,
        "high": price(symbol, day.high) if day.high is not None else None,
        "low": price(symbol, day.low) if day.low is not None else None,
        "volume": day.volume,
    }
    return _json(shown)


# --- private reads ---------------------------------------------------------------------------


@routes.get("/v1/account")
async def account(request: web.Request) -> web.Response:
    account_id = _account(request)
    cash, held, positions, units_held = _read(request).balances(account_id)
    return _json(
        {
            "account": account_id,
            "cash": format_cash(cash),
            "available_cash": format_cash(cash - held),
            "holds": {"cash": format_cash(held), "units": units_held},
            "positions": positions,
        }
    )


@routes.get("/v1/orders")
async def orders(request: web.Request) -> web.Response:
    """The account's orders, newest first; `cursor` (a `next_cursor`: the last order id of
    the page before) pages to older ones, so orders placed meanwhile never shift a page.
    `client_order_id` instead looks up the account's newest order with that id."""
    account_id = _account(request)
    read = _read(request)
    if "client_order_id" in request.query:
        return _json({"orders": _by_client_order_id(request, account_id), "next_cursor": None})
    status = _choice_query(request, "status", ("open", "all")) or "open"
    symbol = _symbol_query(request)
    limit = _int_query(request, "limit", ORDERS_LIMIT_DEFAULT, ORDERS_LIMIT_MAX)
    before = _cursor_query(request)
    found: list[Any] = read.open_orders(account_id)
    if status == "all":
        found += read.ended_orders(account_id)
    if symbol is not None or before is not None:
        found = [
            o
            for o in found
            if (symbol is None or o.symbol == symbol) and (before is None or o.order_id < before)
        ]
    newest = heapq.nlargest(limit + 1, found, key=lambda o: o.order_id)  # one more: more kept?
    page = newest[:limit]
    more = str(page[-1].order_id) if len(newest) > limit else None
    return _json({"orders": [_order(read, o) for o in page], "next_cursor": more})


def _by_client_order_id(request: web.Request, account_id: str) -> list[dict[str, Any]]:
    """[the account's newest order with this client_order_id] (open or kept), or []."""
    if len(request.query) > 1:
        raise ApiError(400, RejectCode.BAD_REQUEST, "client_order_id goes alone")
    text = request.query["client_order_id"]
    if not (0 < len(text) <= MAX_ID_LENGTH and _VISIBLE_TEXT.match(text)):
        message = f"client_order_id: 1 to {MAX_ID_LENGTH} visible characters"
        raise ApiError(400, RejectCode.BAD_REQUEST, message)
    read = _read(request)
    found = read.order_by_client_order_id(account_id, text)
    return [_order(read, found)] if found is not None else []


@routes.get("/v1/orders/{order_id}")
async def order(request: web.Request) -> web.Response:
    account_id = _account(request)
    text = request.match_info["order_id"]
    read = _read(request)
    order_id = parse_bounded_int(text, 0, MAX_ENTITY_ID)
    found = read.find_order(account_id, order_id) if order_id is not None else None
    if found is None:
        raise ApiError(404, RejectCode.UNKNOWN_ORDER, "no such order")
    return _json(_order(read, found))


def _order(read: ReadModel, o: Any) -> dict[str, Any]:
    return {
        "order_id": str(o.order_id),
        "client_order_id": o.client_order_id,
        "symbol": o.symbol,
        "side": o.side,
        "type": o.type,
        "tif": shown_tif(o.type, o.tif),
        "price": read.price(o.symbol, o.price) if o.price else None,
        "qty": o.qty,
        "remaining": o.remaining,
        "status": o.status,
        "filled": o.filled,
        "avg_price": read.avg_price(o.symbol, o.filled, o.notional),
        "ts": o.ts,
        "expire_at": o.expire_at or None,
    } | order_extras(o, read.price)


@routes.get("/v1/fills")
async def fills(request: web.Request) -> web.Response:
    """The account's fills, newest first; `cursor` (a `next_cursor`) pages to older ones."""
    account_id = _account(request)
    read = _read(request)
    symbol = _symbol_query(request)
    limit = _int_query(request, "limit", FILLS_LIMIT_DEFAULT, FILLS_LIMIT_MAX)
    before = _cursor_query(request)
    found: list[Fill] = []
    for fill in reversed(read.state.fills.get(account_id, ())):  # bounded by what is kept
        if (before is None or fill.trade_id < before) and (symbol is None or fill.symbol == symbol):
            found.append(fill)
            if len(found) > limit:
                break
    page = found[:limit]
    more = str(page[-1].trade_id) if len(found) > limit else None
    return _json({"fills": [_fill(read, f) for f in page], "next_cursor": more})


def _fill(read: ReadModel, f: Fill) -> dict[str, Any]:
    return {
        "trade_id": str(f.trade_id),
        "order_id": str(f.order_id),
        "client_order_id": f.client_order_id,
        "symbol": f.symbol,
        "side": f.side,
        "price": read.price(f.symbol, f.price),
        "qty": f.qty,
        "fee": format_cash(f.fee),
        "fee_asset": read.currency,
        "liquidity": f.liquidity,
        "ts": f.ts,
    }


# --- admin writes ----------------------------------------------------------------------------


# Every admin body is decoded by one of these, so a bad field is refused here (400) with
# its code, before a command is built: ints bounded, text visible, symbols in the pattern.
class NewAccount(msgspec.Struct, forbid_unknown_fields=True):
    name: VisibleName
    cash: str = "0"


class Deposit(msgspec.Struct, forbid_unknown_fields=True):
    account: VisibleId
    cash: str | None = None
    symbol: SymbolAtEdge | None = None
    qty: Annotated[int, Meta(gt=0, le=MAX_QTY)] | None = None


# Fee rates at the edge: any int64 decodes; fees.fee_problem says which pairs are allowed.
FeeBpsAtEdge = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]


class NewInstrument(msgspec.Struct, forbid_unknown_fields=True):
    symbol: SymbolAtEdge
    kind: cmd.InstrumentKind
    tick_size: str
    issuer: VisibleId
    maker_bps: FeeBpsAtEdge = 0
    taker_bps: FeeBpsAtEdge = 0
    # Its trading rules may come with the listing (as POST .../rules takes them).
    band_pct: Annotated[int, Meta(ge=0, le=MAX_BAND_PCT)] | None = None
    interruption_s: Annotated[int, Meta(ge=0, le=MAX_INTERRUPTION_S)] | None = None
    open_at: Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP)] | None = None
    close_at: Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP)] | None = None


class NewOffering(msgspec.Struct, forbid_unknown_fields=True):
    """No underwriter: no fee and best efforts (the offering of before underwriting)."""

    symbol: SymbolAtEdge
    price: str
    qty: Annotated[int, Meta(gt=0, le=MAX_OFFERING_QTY)]
    closes_at: Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP)] = 0
    underwriter: VisibleId | None = None
    fee_bps: FeeBpsAtEdge = 0
    commitment: cmd.Commitment = "best_efforts"


class NewFees(msgspec.Struct, forbid_unknown_fields=True):
    maker_bps: FeeBpsAtEdge
    taker_bps: FeeBpsAtEdge


class NewStatus(msgspec.Struct, forbid_unknown_fields=True):
    status: cmd.TradingStatus


class NewRules(msgspec.Struct, forbid_unknown_fields=True):
    """An instrument's trading rules; a field left out keeps its value (0 clears a time)."""

    band_pct: Annotated[int, Meta(ge=0, le=MAX_BAND_PCT)] | None = None
    interruption_s: Annotated[int, Meta(ge=0, le=MAX_INTERRUPTION_S)] | None = None
    open_at: Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP)] | None = None
    close_at: Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP)] | None = None


class NewTime(msgspec.Struct, forbid_unknown_fields=True):
    now: Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP)]


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind)
    for kind in (
        NewAccount, Deposit, NewInstrument, NewOffering, NewStatus, NewFees, NewRules, NewTime
    )
}


def _code_for(problem: msgspec.DecodeError) -> RejectCode:
    """The code of a body that did not decode: the field at fault's, else BAD_REQUEST."""
    text = str(problem)
    if "`$.symbol`" in text:
        return RejectCode.BAD_SYMBOL
    return protocol.code_for(problem)


async def _body(request: web.Request, kind: type[T]) -> T:
    _admin(request)
    if request.content_type != "application/json":
        message = "send the body as Content-Type: application/json"
        raise ApiError(415, RejectCode.BAD_REQUEST, message)
    data = await request.read()
    if len(data) > MAX_BODY_BYTES:
        raise ApiError(413, RejectCode.BAD_REQUEST, "body too large")
    try:
        body: T = protocol.decode(_DECODERS[kind], data)
    except msgspec.DecodeError as problem:
        raise ApiError(400, _code_for(problem), protocol.describe(problem)) from None
    _note(request, **msgspec.structs.asdict(body))  # type: ignore[arg-type]
    return body


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _admin_action(action: str) -> Callable[[Handler], Handler]:
    """One log line per admin call that passed the token check (gateway/audit.py): the
    action, what _note gathered (the body's fields, the ids made), and the outcome."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def logged(request: web.Request) -> web.StreamResponse:
            request["admin_params"] = dict(request.match_info)
            try:
                response = await handler(request)
            except web.HTTPException as problem:
                code = getattr(problem, "code", None) or str(problem.status)
                if code != RejectCode.FORBIDDEN:  # logged as an auth failure
                    audit.admin_action(action, audit.peer_of(request), code, _noted(request))
                raise
            audit.admin_action(action, audit.peer_of(request), "ok", _noted(request))
            return response

        return logged

    return wrap


def _note(request: web.Request, **params: object) -> None:
    """Parameters of an admin call for its log line (None values left out)."""
    noted = request.get("admin_params")
    if noted is not None:
        noted.update((k, v) for k, v in params.items() if v is not None)


def _noted(request: web.Request) -> dict[str, object]:
    noted: dict[str, object] = request.get("admin_params", {})
    return noted


async def execute(request: web.Request, command: cmd.Command) -> list[Event]:
    """Submit and wait until durable; a refusal becomes a 4xx with its code."""
    sequencer: Bus = request.app["sequencer"]
    try:
        done = await sequencer.submit(command)
    except InvalidCommandError as problem:
        raise ApiError(400, RejectCode.BAD_REQUEST, str(problem)) from None
    except BusyError:
        raise ApiError(503, RejectCode.BUSY, "the exchange is busy; retry") from None
    except SequencerStoppedError:
        raise ApiError(503, RejectCode.BUSY, "the exchange is shutting down") from None
    except UnavailableError:
        message = "no answer from the exchange in time; the outcome is unknown"
        raise ApiError(503, RejectCode.UNAVAILABLE, message) from None
    first = done.events[0] if done.events else None
    if isinstance(first, Rejected):
        status = 404 if first.code.startswith("UNKNOWN_") else 409
        raise ApiError(status, first.code, first.message, sequenced=True)
    return done.events


def _money(parse: Any, text: object) -> int:
    try:
        value: int = parse(text)
    except MoneyError as problem:
        raise ApiError(400, problem.code, str(problem)) from None
    return value


@routes.post("/v1/admin/accounts")
@_admin_action("create_account")
async def create_account(request: web.Request) -> web.Response:
    body = await _body(request, NewAccount)
    cash = _money(parse_cash, body.cash) if body.cash not in {"0", "0.00"} else 0
    api_key = new_api_key()
    command = cmd.CreateAccount(name=body.name, api_key_hash=hash_api_key(api_key))
    events = await execute(request, command)
    created = events[0]
    assert isinstance(created, AccountCreated)
    _note(request, account=created.account)
    if cash:
        await execute(request, cmd.DepositCash(account=created.account, amount=cash))
    secret = _api_secret(request, api_key)
    return _json({"account": created.account, "api_key": api_key, "api_secret": secret}, 201)


def _api_secret(request: web.Request, api_key: str) -> str:
    """The key's secret for signing Binance-dialect calls: derived, never stored
    (gateway/binance/signing.py), so it is shown here once and nowhere else."""
    return signing.api_secret(signing.secret_key(request.app["admin_token"]), api_key)


@routes.post("/v1/admin/accounts/{account}/keys")
@_admin_action("add_api_key")
async def add_api_key(request: web.Request) -> web.Response:
    """Another API key (and its secret) for an account; shown once."""
    _admin(request)
    account_id = request.match_info["account"]
    if not (0 < len(account_id) <= MAX_ID_LENGTH and _VISIBLE_TEXT.match(account_id)):
        raise ApiError(404, RejectCode.UNKNOWN_ACCOUNT, "no such account")
    api_key = new_api_key()
    await execute(request, cmd.AddApiKey(account=account_id, api_key_hash=hash_api_key(api_key)))
    secret = _api_secret(request, api_key)
    return _json({"account": account_id, "api_key": api_key, "api_secret": secret}, 201)


@routes.post("/v1/admin/deposits")
@_admin_action("deposit")
async def deposit(request: web.Request) -> web.Response:
    body = await _body(request, Deposit)
    if body.cash is not None and body.symbol is None and body.qty is None:
        events = await execute(
            request, cmd.DepositCash(account=body.account, amount=_money(parse_cash, body.cash))
        )
        done = events[0]
        assert isinstance(done, CashDeposited)
        return _json({"account": done.account, "cash": format_cash(done.balance)})
    if body.cash is None and body.symbol is not None and body.qty is not None:
        command = cmd.DepositUnits(account=body.account, symbol=body.symbol, qty=body.qty)
        units = (await execute(request, command))[0]
        assert isinstance(units, UnitsDeposited)
        return _json({"account": units.account, "symbol": units.symbol, "position": units.position})
    raise ApiError(400, RejectCode.BAD_REQUEST, 'give "cash", or "symbol" and "qty"')


@routes.post("/v1/admin/instruments")
@_admin_action("list_instrument")
async def list_instrument(request: web.Request) -> web.Response:
    body = await _body(request, NewInstrument)
    tick = _money(parse_tick_size, body.tick_size)
    _check_fees(body.maker_bps, body.taker_bps)
    command = cmd.ListInstrument(
        symbol=body.symbol, kind=body.kind, tick=tick, issuer=body.issuer,
        maker_bps=body.maker_bps, taker_bps=body.taker_bps,
    )  # fmt: skip
    # The first non-zero rate also opens the fee account (an AccountCreated before it).
    listed = next(e for e in await execute(request, command) if isinstance(e, InstrumentListed))
    answer: dict[str, Any] = {"symbol": listed.symbol, "status": "listed"}
    rules = (body.band_pct, body.interruption_s, body.open_at, body.close_at)
    if any(value is not None for value in rules):  # a second command: listed either way
        answer["rules"] = await _set_rules(request, listed.symbol, body)
    return _json(answer, 201)


@routes.post("/v1/admin/offerings")
@_admin_action("open_offering")
async def open_offering(request: web.Request) -> web.Response:
    body = await _body(request, NewOffering)
    read = _read(request)
    if body.symbol not in read.instruments:
        raise ApiError(404, RejectCode.UNKNOWN_SYMBOL, "no such instrument")
    price = _money(lambda t: parse_price(t, read.tick_size(body.symbol)), body.price)
    problem = offering_fee_problem(body.fee_bps)
    if problem:
        raise ApiError(400, RejectCode.BAD_FEE, problem)
    if not body.underwriter and (body.fee_bps or body.commitment == "firm"):
        message = "a fee or a firm commitment needs an underwriter"
        raise ApiError(400, RejectCode.BAD_REQUEST, message)
    command = cmd.OpenOffering(
        symbol=body.symbol, price=price, qty=body.qty, closes_at=body.closes_at,
        underwriter=body.underwriter or "", fee_bps=body.fee_bps, commitment=body.commitment,
    )  # fmt: skip
    opened = (await execute(request, command))[0]
    assert isinstance(opened, OfferingOpened)
    _note(request, offering_id=str(opened.offering_id))
    return _json({"offering_id": str(opened.offering_id)}, 201)


@routes.post("/v1/admin/offerings/{offering_id}/close")
@_admin_action("close_offering")
async def close_offering(request: web.Request) -> web.Response:
    _admin(request)
    text = request.match_info["offering_id"]
    offering_id = parse_bounded_int(text, 0, MAX_ENTITY_ID)
    if offering_id is None:
        raise ApiError(404, RejectCode.UNKNOWN_OFFERING, "no such offering")
    events = await execute(request, cmd.CloseOffering(offering_id=offering_id))
    closed = next(e for e in events if isinstance(e, OfferingClosed))
    took = next((e for e in events if isinstance(e, OfferingUnderwritten)), None)
    read = _read(request)
    return _json(
        {
            "offering_id": str(offering_id),
            "symbol": closed.symbol,
            "issued": closed.issued,
            "proceeds": format_cash(closed.proceeds),
            "fee": format_cash(closed.fee),
            "issuer_proceeds": format_cash(closed.proceeds - closed.fee),
            "underwriter": closed.underwriter or None,
            "underwritten": took.units if took is not None else 0,
            "price": read.price(closed.symbol, read.offerings[closed.offering_id].price),
        }
    )


@routes.post("/v1/admin/instruments/{symbol}/status")
@_admin_action("set_status")
async def set_status(request: web.Request) -> web.Response:
    body = await _body(request, NewStatus)
    return await _change_status(request, _path_symbol(request), body.status)


# --- market phases (docs/ENGINE.md "Market phases") -----------------------------------------


def _path_symbol(request: web.Request) -> str:
    symbol = request.match_info["symbol"]
    if not is_symbol(symbol):
        raise ApiError(400, RejectCode.BAD_SYMBOL, "a symbol is 1-16 of A-Z 0-9 . _ -")
    return symbol


async def _change_status(request: web.Request, symbol: str, status: cmd.TradingStatus
) -> web.Response:  # fmt: skip
    events = await execute(request, cmd.SetInstrumentStatus(symbol=symbol, status=status))
    return _status_answer(request, events)


def _status_answer(request: web.Request, events: list[Event]) -> web.Response:
    """The instrument's status after the command (its last status change), and what an
    uncross traded."""
    changed = [e for e in events if isinstance(e, InstrumentStatusChanged)][-1]
    answer: dict[str, Any] = {
        "symbol": changed.symbol, "status": changed.status, "open_at": changed.open_at or None,
    }  # fmt: skip
    uncrossed = next((e for e in events if isinstance(e, AuctionUncrossed)), None)
    if uncrossed is not None:
        price = _read(request).price(uncrossed.symbol, uncrossed.price)
        answer["uncrossed"] = {"price": price, "qty": uncrossed.qty}
    return _json(answer)


@routes.post("/v1/admin/instruments/{symbol}/halt")
@_admin_action("halt")
async def halt(request: web.Request) -> web.Response:
    _admin(request)
    return await _change_status(request, _path_symbol(request), "halted")


@routes.post("/v1/admin/instruments/{symbol}/resume")
@_admin_action("resume")
async def resume(request: web.Request) -> web.Response:
    _admin(request)
    return await _change_status(request, _path_symbol(request), "trading")


@routes.post("/v1/admin/instruments/{symbol}/auction")
@_admin_action("uncross")
async def auction(request: web.Request) -> web.Response:
    _admin(request)
    events = await execute(request, cmd.Uncross(symbol=_path_symbol(request)))
    return _status_answer(request, events)


@routes.post("/v1/admin/instruments/{symbol}/rules")
@_admin_action("set_rules")
async def set_rules(request: web.Request) -> web.Response:
    body = await _body(request, NewRules)
    return _json(await _set_rules(request, _path_symbol(request), body))


async def _set_rules(
    request: web.Request, symbol: str, body: "NewRules | NewInstrument"
) -> dict[str, Any]:
    keep = cmd.KEEP

    def given(value: int | None) -> int:
        return keep if value is None else value

    command = cmd.SetTradingRules(
        symbol=symbol, band_pct=given(body.band_pct),
        interruption_s=given(body.interruption_s), open_at=given(body.open_at),
        close_at=given(body.close_at),
    )  # fmt: skip
    (rules,) = await execute(request, command)
    assert isinstance(rules, TradingRulesSet)
    return msgspec.structs.asdict(rules)


@routes.post("/v1/admin/clock")
@_admin_action("set_clock")
async def set_clock(request: web.Request) -> web.Response:
    """Tests only (`exchange serve --test-clock NS`): move the sequencer's clock forward;
    anything due then happens at once. Without the flag there is no such route."""
    set_time: Callable[[int], int] | None = request.app.get("set_clock")
    if set_time is None:
        _admin(request)
        raise ApiError(404, RejectCode.NOT_FOUND, "no such route")
    body = await _body(request, NewTime)
    return _json({"now": set_time(body.now)})


def _check_fees(maker_bps: int, taker_bps: int) -> None:
    problem = fee_problem(maker_bps, taker_bps)
    if problem:
        raise ApiError(400, RejectCode.BAD_FEE, problem)


@routes.post("/v1/admin/instruments/{symbol}/fees")
@_admin_action("set_fees")
async def set_fees(request: web.Request) -> web.Response:
    """The fee rates of orders placed from now on (resting orders keep theirs)."""
    body = await _body(request, NewFees)
    symbol = _path_symbol(request)
    _check_fees(body.maker_bps, body.taker_bps)
    command = cmd.SetInstrumentFees(
        symbol=symbol, maker_bps=body.maker_bps, taker_bps=body.taker_bps
    )
    done = next(e for e in await execute(request, command) if isinstance(e, InstrumentFeesSet))
    return _json({"symbol": done.symbol, "maker_bps": done.maker_bps, "taker_bps": done.taker_bps})


@routes.get("/v1/admin/accounts/{account}")
async def admin_account(request: web.Request) -> web.Response:
    """Any account's balances as /v1/account shows them, the fee account's among them
    (all zero until the first non-zero fee rate creates it)."""
    _admin(request)
    account_id = request.match_info["account"]
    read = _read(request)
    if account_id in read.state.balances:
        cash, held, positions, units_held = read.balances(account_id)
    elif account_id == FEE_ACCOUNT:
        cash, held, positions, units_held = 0, 0, {}, {}
    else:
        raise ApiError(404, RejectCode.UNKNOWN_ACCOUNT, f"no such account: {account_id[:64]}")
    return _json(
        {
            "account": account_id,
            "cash": format_cash(cash),
            "available_cash": format_cash(cash - held),
            "holds": {"cash": format_cash(held), "units": units_held},
            "positions": positions,
        }
    )
