"""Events and answers as the wire shows them: decimal strings for prices, ids as strings.

Pure functions from the engine's events (integers, ticks) to the JSON objects of
docs/PROTOCOL.md. The read model supplies each instrument's tick size.
"""

from collections.abc import Callable
from typing import Any

from exchange.domain.events import (
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderReplaced,
    Rejected,
    TradeExecuted,
)
from gateway.readstate import Fill

Message = dict[str, Any]
PriceFormat = Callable[[str, int], str]


def accepted(e: OrderAccepted, price: PriceFormat) -> Message:
    return {
        "type": "accepted",
        "order_id": str(e.order_id),
        "client_order_id": e.client_order_id,
        "symbol": e.symbol,
        "side": e.side,
        "order_type": e.type,
        "tif": e.tif,
        "price": price(e.symbol, e.price) if e.price else None,
        "qty": e.qty,
        "remaining": e.remaining,
        "status": e.status,
        "post_only": e.post_only,
        "resent": e.resent,
        "ts": e.ts,
    }


def rejected(e: OrderRejected | Rejected, client_order_id: str = "") -> Message:
    return {
        "type": "rejected",
        "code": e.code,
        "message": e.message,
        "client_order_id": getattr(e, "client_order_id", "") or client_order_id,
    }


def fill(f: Fill, price: PriceFormat) -> Message:
    return {
        "type": "fill",
        "order_id": str(f.order_id),
        "client_order_id": f.client_order_id,
        "trade_id": str(f.trade_id),
        "symbol": f.symbol,
        "side": f.side,
        "price": price(f.symbol, f.price),
        "qty": f.qty,
        "remaining": f.remaining,
        "liquidity": f.liquidity,
        "ts": f.ts,
    }


def done(order_id: int, client_order_id: str, reason: str) -> Message:
    return {
        "type": "done",
        "order_id": str(order_id),
        "client_order_id": client_order_id,
        "reason": reason,
    }


def cancelled(e: OrderCancelled) -> Message:
    return done(e.order_id, e.client_order_id, e.reason)


def replaced(e: OrderReplaced, price: PriceFormat) -> Message:
    return {
        "type": "replaced",
        "order_id": str(e.order_id),
        "client_order_id": e.client_order_id,
        "price": price(e.symbol, e.price),
        "qty": e.qty,
        "remaining": e.remaining,
        "kept_priority": e.kept_priority,
    }


def trade(e: TradeExecuted, seq: int, price: PriceFormat) -> Message:
    return {
        "type": "trade",
        "symbol": e.symbol,
        "seq": seq,
        "trade_id": str(e.trade_id),
        "price": price(e.symbol, e.price),
        "qty": e.qty,
        "aggressor": e.aggressor,
        "ts": e.ts,
    }


def error(code: str, message: str) -> Message:
    return {"type": "error", "code": code, "message": message}
