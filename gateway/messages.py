"""Events and answers as the wire shows them: decimal strings for prices, ids as strings.

Pure functions from the engine's events and the read side's records (integers, ticks) to
the JSON objects of docs/PROTOCOL.md. The read model supplies each instrument's tick size.
"""

from collections.abc import Callable
from typing import Any, Protocol

from exchange.domain.events import (
    AuctionIndicative,
    InstrumentStatusChanged,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    Rejected,
    TradeExecuted,
)
from exchange.domain.money import format_cash
from gateway.readstate import Fill, OrderRecord

Message = dict[str, Any]
PriceFormat = Callable[[str, int], str]


class Prices(Protocol):
    """What writes prices: the read model (it knows each instrument's tick)."""

    # The cash currency (`--currency`): fees are charged in it (docs/PROTOCOL.md, "Fees").
    currency: str

    def price(self, symbol: str, ticks: int) -> str: ...

    def avg_price(self, symbol: str, filled: int, notional: int) -> str | None: ...


def shown_tif(order_type: str, tif: str) -> str:
    """A market order's remainder always expires: whatever its `gtc` default said, it
    behaves (and is shown) as `ioc`."""
    return "ioc" if order_type == "market" and tif == "gtc" else tif


def accepted(e: OrderAccepted, prices: Prices, after: OrderRecord | None = None) -> Message:
    """`after`: the order's record as the command left it, so the answer states the order
    after the command (an IOC that filled says so), not as it entered the book."""
    if after is not None:
        remaining, status, filled, notional = (
            after.remaining, after.status, after.filled, after.notional
        )  # fmt: skip
    else:
        remaining, status, filled, notional = e.remaining, e.status, e.qty - e.remaining, 0
    return {
        "type": "accepted",
        "order_id": str(e.order_id),
        "client_order_id": e.client_order_id,
        "symbol": e.symbol,
        "side": e.side,
        "order_type": e.type,
        "tif": shown_tif(e.type, e.tif),
        "price": prices.price(e.symbol, e.price) if e.price else None,
        "qty": e.qty,
        "remaining": remaining,
        "status": status,
        "filled": filled,
        "avg_price": prices.avg_price(e.symbol, filled, notional) if notional else None,
        "post_only": e.post_only,
        "resent": e.resent,
        "ts": e.ts,
        "expire_at": e.expire_at or None,
    } | _stop_and_iceberg(e.symbol, e.trigger_price, e.display_qty, prices.price)


def _stop_and_iceberg(
    symbol: str, trigger_price: int, display_qty: int, price: PriceFormat
) -> Message:
    """Issue 16's fields, only on the orders that have them (other orders' shapes keep)."""
    extra: Message = {}
    if trigger_price:
        extra["trigger_price"] = price(symbol, trigger_price)
    if display_qty:
        extra["display_qty"] = display_qty
    return extra


def order_extras(o: OrderRecord, price: PriceFormat) -> Message:
    """The stop and iceberg fields of an order as REST shows it."""
    return _stop_and_iceberg(o.symbol, o.trigger_price, o.display_qty, price)


def triggered(e: OrderTriggered, price: PriceFormat) -> Message:
    """A stop order's trigger was reached: it now trades as `order_type` (its fills and its
    end follow as for any order)."""
    return {
        "type": "triggered",
        "order_id": str(e.order_id),
        "client_order_id": e.client_order_id,
        "symbol": e.symbol,
        "order_type": e.type,
        "trigger_price": price(e.symbol, e.trigger_price),
        "remaining": e.remaining,
        "ts": e.ts,
    }


def rejected(e: OrderRejected | Rejected, client_order_id: str = "") -> Message:
    return {
        "type": "rejected",
        "code": e.code,
        "message": e.message,
        "client_order_id": getattr(e, "client_order_id", "") or client_order_id,
    }


def fill(f: Fill, prices: Prices) -> Message:
    """`filled` and `avg_price` are the order's totals after this fill."""
    return {
        "type": "fill",
        "order_id": str(f.order_id),
        "client_order_id": f.client_order_id,
        "trade_id": str(f.trade_id),
        "symbol": f.symbol,
        "side": f.side,
        "price": prices.price(f.symbol, f.price),
        "qty": f.qty,
        "remaining": f.remaining,
        "filled": f.filled,
        "avg_price": prices.avg_price(f.symbol, f.filled, f.notional),
        "liquidity": f.liquidity,
        "fee": format_cash(f.fee),
        "fee_asset": prices.currency,
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


def status(e: InstrumentStatusChanged, book_seq: int) -> Message:
    """An instrument's new phase, on the book channel: `seq` is the book seq it follows
    (it takes none); `open_at` when a call auction uncrosses (ns; null: when the admin
    says), `reason` what moved it."""
    return {
        "type": "status",
        "symbol": e.symbol,
        "seq": book_seq,
        "status": e.status,
        "open_at": e.open_at or None,
        "reason": e.reason or None,
    }


def auction(e: AuctionIndicative, seq: int, price: PriceFormat) -> Message:
    """Where a call auction would uncross now; it takes a book seq."""
    return {
        "type": "auction",
        "symbol": e.symbol,
        "seq": seq,
        "indicative_price": price(e.symbol, e.price) if e.price else None,
        "indicative_qty": e.qty,
        "imbalance_side": e.imbalance_side or None,
        "imbalance_qty": e.imbalance_qty,
    }
