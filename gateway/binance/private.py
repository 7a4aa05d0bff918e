"""Binance's signed trading calls under /api/v3: account, order (new, cancel, query),
openOrders, allOrders, myTrades and order/cancelReplace, as commands to the sequencer
(answered once durable) and reads of the read side.
"""

from typing import Any

from aiohttp import web

from exchange.domain import commands as cmd
from exchange.domain.codes import RejectCode
from exchange.domain.events import OrderAccepted, OrderCancelled, TradeExecuted
from exchange.domain.limits import MAX_ENTITY_ID, MAX_ID_LENGTH, MAX_QTY
from exchange.domain.money import MoneyError, format_cash, parse_cash
from gateway.binance import shapes
from gateway.binance.edge import Dialect, dialect, endpoint, execute, json, only, signed
from gateway.binance.errors import BinanceError, from_reject
from gateway.readstate import Fill, OrderRecord

routes = web.RouteTableDef()
Json = dict[str, Any]

LIST_DEFAULT, LIST_MAX = 500, 1_000
BIG = 2**63 - 1
SIDES = {"BUY": "buy", "SELL": "sell"}
TIFS = {"GTC": "gtc", "IOC": "ioc", "FOK": "fok"}
STP = {
    "EXPIRE_TAKER": "cancel_newest", "EXPIRE_MAKER": "cancel_oldest",
    "EXPIRE_BOTH": "cancel_both", "NONE": "cancel_newest",
}  # fmt: skip
NEW_ORDER_PARAMS = frozenset({
    "symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price",
    "newClientOrderId", "newOrderRespType", "selfTradePreventionMode", "stopPrice",
    "icebergQty",
})  # fmt: skip
# Binance's order types as ours: (type, whether it has a price, whether it has a stopPrice).
KINDS = {
    "LIMIT": ("limit", True, False), "LIMIT_MAKER": ("limit", True, False),
    "MARKET": ("market", False, False), "STOP_LOSS": ("stop", False, True),
    "STOP_LOSS_LIMIT": ("stop_limit", True, True),
}  # fmt: skip


def _int(params: dict[str, str], name: str, default: int, low: int = 0, high: int = BIG) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) < 20):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.")
    value = int(text)
    if not low <= value <= high:
        raise BinanceError(-1130, f"Data sent for parameter '{name}' is not valid ({low}..{high}).")
    return value


def _price(d: Dialect, symbol: str, params: dict[str, str], name: str) -> int:
    """A price parameter in ticks (-1102 when missing, PRICE_FILTER when off the tick)."""
    text = params.get(name)
    if not text:
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
            "or malformed.")
    try:
        return d.read.ticks(symbol, text)
    except MoneyError as problem:
        raise from_reject(problem.code) from None


def _client_id(params: dict[str, str], name: str) -> str:
    text = params.get(name, "")
    if len(text) > MAX_ID_LENGTH or not text.isprintable():
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.")
    return text


# --- account ---------------------------------------------------------------------------------


@routes.get("/api/v3/account")
@endpoint(20)
async def account(request: web.Request) -> web.Response:
    account_id, params = await signed(request)
    only(params, frozenset({"omitZeroBalances"}))
    d = dialect(request)
    cash, held, positions, units_held = d.read.balances(account_id)
    balances = [{"asset": d.names.currency, "free": format_cash(cash - held),
                 "locked": format_cash(held)}]  # fmt: skip
    for symbol in sorted(positions.keys() | units_held.keys()):
        total, locked = positions.get(symbol, 0), units_held.get(symbol, 0)
        balances.append({"asset": symbol, "free": str(total - locked), "locked": str(locked)})
    now = d.clock_ms()
    return json({
        "makerCommission": 0, "takerCommission": 0, "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": "0.00000000", "taker": "0.00000000",
                            "buyer": "0.00000000", "seller": "0.00000000"},
        "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
        "requireSelfTradePrevention": False, "preventSor": False, "updateTime": now,
        "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": 0,
    })  # fmt: skip


# --- new orders ------------------------------------------------------------------------------


def place_command(d: Dialect, account_id: str, params: dict[str, str]) -> cmd.PlaceOrder:
    """The PlaceOrder a new-order call asks for (LIMIT_MAKER: a post-only limit order)."""
    symbol = d.names.ours(params.get("symbol"))
    side = SIDES.get(params.get("side", ""))
    if side is None:
        raise BinanceError(-1117, "Invalid side.")
    kind = params.get("type", "")
    if kind not in KINDS:
        raise BinanceError(-1116, "Invalid orderType.")
    our_type, priced, stopped = KINDS[kind]
    cid = _client_id(params, "newClientOrderId")
    if params.get("newOrderRespType", "FULL") not in {"ACK", "RESULT", "FULL"}:
        raise BinanceError(-1130, "Data sent for parameter 'newOrderRespType' is not valid.")
    stp = STP.get(params.get("selfTradePreventionMode", "EXPIRE_TAKER"))
    if stp is None:
        raise BinanceError(-1130, "Data sent for parameter 'selfTradePreventionMode' is not valid.")
    tif_text = params.get("timeInForce")
    if kind in {"LIMIT", "STOP_LOSS_LIMIT"}:
        if tif_text is None:
            raise BinanceError(-1102, "Mandatory parameter 'timeInForce' was not sent, was "
                "empty/null, or malformed.")
        tif = TIFS.get(tif_text)
        if tif is None:
            raise BinanceError(-1115, "Invalid timeInForce.")
    elif tif_text is not None:
        raise BinanceError(-1106, "Parameter 'timeInForce' sent when not required.")
    else:
        tif = "gtc"
    price = _price(d, symbol, params, "price") if priced else 0
    if not priced and "price" in params:
        raise BinanceError(-1106, "Parameter 'price' sent when not required.")
    trigger = _price(d, symbol, params, "stopPrice") if stopped else 0
    if not stopped and "stopPrice" in params:
        raise BinanceError(-1106, "Parameter 'stopPrice' sent when not required.")
    display = 0
    if "icebergQty" in params:
        if kind not in {"LIMIT", "STOP_LOSS_LIMIT"} or tif != "gtc":
            raise BinanceError(-1128, "Combination of optional parameters invalid: icebergQty "
                "is for a LIMIT or STOP_LOSS_LIMIT order with timeInForce GTC.")
        display = shapes.quantity(params["icebergQty"], "icebergQty")
    # A market buy may give the cash to spend instead of a quantity; a STOP_LOSS BUY must:
    # our stop buy holds a budget (max_notional) while it waits, and Binance's order has no
    # other parameter for one.
    budgeted = side == "buy" and kind in {"MARKET", "STOP_LOSS"}
    max_notional = 0
    if "quoteOrderQty" in params:
        if not budgeted or "quantity" in params:
            raise BinanceError(-1128, "Combination of optional parameters invalid: quoteOrderQty "
                "is for a MARKET or STOP_LOSS BUY without quantity here.")
        try:
            max_notional = parse_cash(params["quoteOrderQty"])
        except MoneyError as problem:
            raise from_reject(problem.code) from None
        qty = MAX_QTY  # as many units as the amount buys
    elif kind == "STOP_LOSS" and side == "buy":
        raise BinanceError(-1102, "Mandatory parameter 'quoteOrderQty' was not sent, was "
            "empty/null, or malformed: a STOP_LOSS BUY here needs the cash it may spend, "
            "held while it waits.")
    else:
        qty = shapes.quantity(params.get("quantity"))
    return cmd.PlaceOrder(
        account=account_id, client_order_id=cid, symbol=symbol, side=side,  # type: ignore[arg-type]
        type=our_type, price=price, qty=qty,  # type: ignore[arg-type]
        tif=tif, post_only=kind == "LIMIT_MAKER", stp=stp, max_notional=max_notional,  # type: ignore[arg-type]
        trigger_price=trigger, display_qty=display,
    )  # fmt: skip


def placed_answer(d: Dialect, events: list[Any]) -> Json:
    """The FULL answer of a new order: the order as its command left it, with its fills."""
    accepted = next(e for e in events if isinstance(e, OrderAccepted))
    record = d.read.find_order(accepted.account, accepted.order_id)
    if record is None:  # ended and already past what the history keeps: unlikely
        record = OrderRecord(
            accepted.order_id, accepted.account, accepted.client_order_id, accepted.symbol,
            accepted.side, accepted.type, accepted.tif, accepted.price, accepted.qty,
            accepted.remaining, accepted.status, accepted.ts,
            trigger_price=accepted.trigger_price, display_qty=accepted.display_qty,
            post_only=accepted.post_only,
        )  # fmt: skip
    shown = shapes.order(d.read, d.names, record)
    trade_ids = {
        e.trade_id for e in events
        if isinstance(e, TradeExecuted)
        and accepted.order_id in {e.taker_order_id, e.maker_order_id}
    }  # fmt: skip
    mine: list[Fill] = []
    for fill in reversed(d.read.state.fills.get(accepted.account, ())):  # the newest few
        if len(mine) == len(trade_ids):
            break
        if fill.trade_id in trade_ids and fill.order_id == accepted.order_id:
            mine.append(fill)
    fills = []
    for fill in reversed(mine):
        fee, asset = shapes.commission(fill, d.names.currency)
        fills.append({
            "price": d.read.price(fill.symbol, fill.price), "qty": str(fill.qty),
            "commission": fee, "commissionAsset": asset, "tradeId": fill.trade_id,
        })  # fmt: skip
    answer = {
        "symbol": shown["symbol"], "orderId": shown["orderId"], "orderListId": -1,
        "clientOrderId": shown["clientOrderId"], "transactTime": shapes.ms(accepted.ts),
        "price": shown["price"], "origQty": shown["origQty"],
        "executedQty": shown["executedQty"], "origQuoteOrderQty": "0.00",
        "cummulativeQuoteQty": shown["cummulativeQuoteQty"], "status": shown["status"],
        "timeInForce": shown["timeInForce"], "type": shown["type"], "side": shown["side"],
        "workingTime": shapes.ms(accepted.ts), "selfTradePreventionMode": shapes.STP_MODE,
        "fills": fills,
    }  # fmt: skip
    if record.trigger_price:  # Binance shows these only on the orders that have them
        answer["stopPrice"] = shown["stopPrice"]
    if record.display_qty:
        answer["icebergQty"] = shown["icebergQty"]
    return answer


@routes.post("/api/v3/order")
@endpoint(1)
async def new_order(request: web.Request) -> web.Response:
    account_id, params = await signed(request)
    only(params, NEW_ORDER_PARAMS)
    d = dialect(request)
    command = place_command(d, account_id, params)
    done = await execute(request, command)
    return json(placed_answer(d, done.events))


@routes.post("/api/v3/order/test")
@endpoint(1)
async def test_order(request: web.Request) -> web.Response:
    account_id, params = await signed(request)
    only(params, NEW_ORDER_PARAMS | {"computeCommissionRates"})
    place_command(dialect(request), account_id, params)
    return json({})


# --- cancels and queries ---------------------------------------------------------------------


def _find(d: Dialect, account_id: str, params: dict[str, str], *, cancelling: bool) -> OrderRecord:
    """The order `orderId` or `origClientOrderId` names (-2013, or -2011 on a cancel)."""
    symbol = d.names.ours(params.get("symbol"))
    record: OrderRecord | None = None
    if "orderId" in params:
        record = d.read.find_order(account_id, _int(params, "orderId", 0, 0, MAX_ENTITY_ID))
    elif params.get("origClientOrderId"):
        cid = _client_id(params, "origClientOrderId")
        record = d.read.order_by_client_order_id(account_id, cid)
    else:
        raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both "
            "were empty/null!")
    if record is None or record.symbol != symbol:
        raise from_reject(RejectCode.UNKNOWN_ORDER, cancelling=cancelling)
    return record


@routes.get("/api/v3/order")
@endpoint(4)
async def query_order(request: web.Request) -> web.Response:
    account_id, params = await signed(request)
    only(params, frozenset({"symbol", "orderId", "origClientOrderId"}))
    d = dialect(request)
    return json(shapes.order(d.read, d.names, _find(d, account_id, params, cancelling=False)))


def cancelled_answer(d: Dialect, record: OrderRecord, new_client_id: str = "") -> Json:
    shown = shapes.order(d.read, d.names, record)
    return {
        "symbol": shown["symbol"], "origClientOrderId": record.client_order_id,
        "orderId": record.order_id, "orderListId": -1,
        "clientOrderId": new_client_id or record.client_order_id,
        "transactTime": d.clock_ms(), "price": shown["price"], "origQty": shown["origQty"],
        "executedQty": shown["executedQty"],
        "cummulativeQuoteQty": shown["cummulativeQuoteQty"], "status": shown["status"],
        "timeInForce": shown["timeInForce"], "type": shown["type"], "side": shown["side"],
        "selfTradePreventionMode": shapes.STP_MODE,
    }  # fmt: skip


async def cancel(request: web.Request, account_id: str, params: dict[str, str]) -> Json:
    d = dialect(request)
    record = _find(d, account_id, params, cancelling=True)
    if record.status != "open":
        raise from_reject(RejectCode.UNKNOWN_ORDER, cancelling=True)
    await execute(request, cmd.CancelOrder(account=account_id, order_id=record.order_id),
                  cancelling=True)  # fmt: skip
    ended = d.read.find_order(account_id, record.order_id) or record
    return cancelled_answer(d, ended, _client_id(params, "newClientOrderId"))


@routes.delete("/api/v3/order")
@endpoint(1)
async def cancel_order(request: web.Request) -> web.Response:
    account_id, params = await signed(request)
    only(params, frozenset({"symbol", "orderId", "origClientOrderId", "newClientOrderId",
                            "cancelRestrictions"}))  # fmt: skip
    return json(await cancel(request, account_id, params))


@routes.get("/api/v3/openOrders")
@endpoint(6)
async def open_orders(request: web.Request) -> web.Response:
    account_id, params = await signed(request)
    only(params, frozenset({"symbol"}))
    d = dialect(request)
    symbol = d.names.ours(params["symbol"]) if "symbol" in params else None
    found = sorted(
        (o for o in d.read.open_orders(account_id) if symbol is None or o.symbol == symbol),
        key=lambda o: o.order_id,
    )
    return json([shapes.order(d.read, d.names, o) for o in found])


@routes.delete("/api/v3/openOrders")
@endpoint(1)
async def cancel_open_orders(request: web.Request) -> web.Response:
    account_id, params = await signed(request)
    only(params, frozenset({"symbol"}))
    d = dialect(request)
    symbol = d.names.ours(params.get("symbol"))
    done = await execute(request, cmd.CancelAll(account=account_id, symbol=symbol))
    answers = []
    for e in done.events:
        if isinstance(e, OrderCancelled):
            record = d.read.find_order(account_id, e.order_id)
            if record is not None:
                answers.append(cancelled_answer(d, record))
    return json(answers)


@routes.get("/api/v3/allOrders")
@endpoint(20)
async def all_orders(request: web.Request) -> web.Response:
    account_id, params = await signed(request)
    only(params, frozenset({"symbol", "orderId", "startTime", "endTime", "limit"}))
    d = dialect(request)
    symbol = d.names.ours(params.get("symbol"))
    from_id = _int(params, "orderId", 0)
    start, end = _int(params, "startTime", 0), _int(params, "endTime", BIG)
    limit = _int(params, "limit", LIST_DEFAULT, 1, LIST_MAX)
    found = sorted(
        (o for o in [*d.read.open_orders(account_id), *d.read.ended_orders(account_id)]
         if o.symbol == symbol and o.order_id >= from_id and start <= shapes.ms(o.ts) <= end),
        key=lambda o: o.order_id,
    )  # fmt: skip
    shown = found[:limit] if "orderId" in params or "startTime" in params else found[-limit:]
    return json([shapes.order(d.read, d.names, o) for o in shown])


@routes.get("/api/v3/myTrades")
@endpoint(20)
async def my_trades(request: web.Request) -> web.Response:
    account_id, params = await signed(request)
    only(params, frozenset({"symbol", "orderId", "startTime", "endTime", "fromId", "limit"}))
    d = dialect(request)
    symbol = d.names.ours(params.get("symbol"))
    order_id = _int(params, "orderId", -1)
    from_id = _int(params, "fromId", 0)
    start, end = _int(params, "startTime", 0), _int(params, "endTime", BIG)
    limit = _int(params, "limit", LIST_DEFAULT, 1, LIST_MAX)
    found = [
        f for f in d.read.state.fills.get(account_id, ())  # oldest first, bounded
        if f.symbol == symbol and f.trade_id >= from_id and start <= shapes.ms(f.ts) <= end
        and (order_id < 0 or f.order_id == order_id)
    ]  # fmt: skip
    shown = found[:limit] if "fromId" in params or "startTime" in params else found[-limit:]
    return json([shapes.my_trade(d.read, d.names, f) for f in shown])


# --- cancel and replace ----------------------------------------------------------------------


@routes.post("/api/v3/order/cancelReplace")
@endpoint(1)
async def cancel_replace(request: web.Request) -> web.Response:
    """Cancel an order, then place a new one (two commands, each durable before the next;
    the new order is placed only if the cancel succeeded)."""
    account_id, params = await signed(request)
    only(params, NEW_ORDER_PARAMS | {"cancelReplaceMode", "cancelOrderId",
         "cancelOrigClientOrderId", "cancelNewClientOrderId", "cancelRestrictions",
         "orderRateLimitExceededMode"})  # fmt: skip
    d = dialect(request)
    mode = params.get("cancelReplaceMode")
    if mode not in {"STOP_ON_FAILURE", "ALLOW_FAILURE"}:
        raise BinanceError(-1102, "Mandatory parameter 'cancelReplaceMode' was not sent, was "
            "empty/null, or malformed.")
    command = place_command(d, account_id, params)  # checked before cancelling
    which = {"symbol": params["symbol"]}
    if "cancelOrderId" in params:
        which["orderId"] = params["cancelOrderId"]
    if "cancelOrigClientOrderId" in params:
        which["origClientOrderId"] = params["cancelOrigClientOrderId"]
    if "cancelNewClientOrderId" in params:
        which["newClientOrderId"] = params["cancelNewClientOrderId"]
    try:
        cancelled: Json | None = await cancel(request, account_id, which)
        cancel_error = None
    except BinanceError as problem:
        cancelled, cancel_error = None, problem
    if cancel_error is not None and mode == "STOP_ON_FAILURE":
        raise BinanceError(-2022, "Order cancel-replace failed.", 400) from None
    try:
        done = await execute(request, command)
        placed: Json | None = placed_answer(d, done.events)
        place_error = None
    except BinanceError as problem:
        placed, place_error = None, problem
    if cancel_error is not None or place_error is not None:
        both = cancel_error is not None and place_error is not None
        raise BinanceError(-2022 if both else -2021, "Order cancel-replace failed." if both
                           else "Order cancel-replace partially failed.")  # fmt: skip
    return json({"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS",
                 "cancelResponse": cancelled, "newOrderResponse": placed})  # fmt: skip
