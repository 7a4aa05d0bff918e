"""How our records look in Binance's shapes: symbols (`ACME` -> `ACMEUSD`), statuses,
order and trade objects, quantities as decimal strings. Pure functions over the read side.

`commission` is the one place that says what a fill's commission is: the fee the fill
carries (negative for a maker rebate), in the quote asset.
"""

from decimal import Decimal, InvalidOperation
from typing import Any

from exchange.domain.limits import MAX_QTY
from exchange.domain.money import format_cash
from gateway.binance.errors import BinanceError
from gateway.readmodel import ReadModel
from gateway.readstate import Fill, OrderRecord

Json = dict[str, Any]
NS_PER_MS = 1_000_000
# Our order statuses as Binance's.
STATUS = {
    "filled": "FILLED",
    "cancelled": "CANCELED",
    "expired": "EXPIRED",
    "self_trade": "EXPIRED_IN_MATCH",
    "replaced_out": "CANCELED",
}
TIF = {"gtc": "GTC", "ioc": "IOC", "fok": "FOK"}
SIDE = {"buy": "BUY", "sell": "SELL"}
STP_MODE = "EXPIRE_TAKER"  # our default, cancel_newest


def ms(ns: int) -> int:
    return ns // NS_PER_MS


class Names:
    """Symbols both ways: ours is the base asset, the exchange's currency the quote."""

    def __init__(self, read: ReadModel, currency: str) -> None:
        self.read = read
        self.currency = currency

    def wire(self, symbol: str) -> str:
        return symbol + self.currency

    def ours(self, text: str | None) -> str:
        """The instrument a Binance symbol names (any case); -1121 when none."""
        if text is None or text == "":
            raise BinanceError(-1102, "Mandatory parameter 'symbol' was not sent, was "
                "empty/null, or malformed.")
        upper = text.upper()
        if upper.endswith(self.currency):
            symbol = upper[: -len(self.currency)]
            if symbol in self.read.instruments:
                return symbol
        raise BinanceError(-1121, "Invalid symbol.")


def commission(fill: Fill, currency: str) -> tuple[str, str]:
    """(commission, commissionAsset) of a fill: the one place fees enter the dialect."""
    return format_cash(fill.fee), currency


def quantity(text: str | None, name: str = "quantity") -> int:
    """A whole number of units from a decimal string ("3", "3.0", "3.00000000"); a
    fraction is refused clearly (LOT_SIZE: stepSize is 1)."""
    if text is None or text == "":
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
            "or malformed.")
    try:
        value = Decimal(text) if _plain_decimal(text) else None
    except InvalidOperation:
        value = None
    if value is None:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range "
            f"is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.")
    if value != value.to_integral_value():
        raise BinanceError(-1013, f"Filter failure: LOT_SIZE ({name} {text}: quantities on this "
            "exchange are whole units, stepSize 1)")
    whole = int(value)
    if not 0 < whole <= MAX_QTY:
        raise BinanceError(-1013, f"Filter failure: LOT_SIZE ({name} must be 1..{MAX_QTY})")
    return whole


def _plain_decimal(text: str) -> bool:
    head, _, tail = text.partition(".")
    return (
        text.isascii() and 0 < len(head) <= 20 and head.isdigit()
        and (tail == "" or (tail.isdigit() and len(tail) <= 20))
    )  # fmt: skip


def order_status(record: OrderRecord) -> str:
    if record.status == "open":
        return "PARTIALLY_FILLED" if record.filled else "NEW"
    return STATUS.get(record.status, "CANCELED")


def order_type(order_type_: str, post_only: bool = False, trigger_price: int = 0) -> str:
    """Binance's type of an order: a stop keeps its type once triggered (our record then
    says `market` or `limit`; its trigger price stays)."""
    if order_type_ == "stop" or (trigger_price and order_type_ == "market"):
        return "STOP_LOSS"
    if order_type_ == "stop_limit" or trigger_price:
        return "STOP_LOSS_LIMIT"
    if order_type_ == "market":
        return "MARKET"
    return "LIMIT_MAKER" if post_only else "LIMIT"


def stop_price(read: ReadModel, r: OrderRecord) -> str:
    return read.price(r.symbol, r.trigger_price) if r.trigger_price else "0.00"


def shown_tif(record_type: str, tif: str) -> str:
    return "IOC" if record_type == "market" and tif == "gtc" else TIF.get(tif, "GTC")


def quote_qty(read: ReadModel, symbol: str, notional_ticks: int) -> str:
    return format_cash(notional_ticks * read.instruments[symbol].tick)


def order(read: ReadModel, names: Names, r: OrderRecord) -> Json:
    """GET /api/v3/order's shape."""
    t = ms(r.ts)
    return {
        "symbol": names.wire(r.symbol),
        "orderId": r.order_id,
        "orderListId": -1,
        "clientOrderId": r.client_order_id,
        "price": read.price(r.symbol, r.price),  # a market order's is 0
        "origQty": str(r.qty),
        "executedQty": str(r.filled),
        "cummulativeQuoteQty": quote_qty(read, r.symbol, r.notional),
        "status": order_status(r),
        "timeInForce": shown_tif(r.type, r.tif),
        "type": order_type(r.type, r.post_only, r.trigger_price),
        "side": SIDE[r.side],
        "stopPrice": stop_price(read, r),
        "icebergQty": str(r.display_qty),
        "time": t,
        "updateTime": t,
        "isWorking": r.status == "open",
        "workingTime": t,
        "origQuoteOrderQty": "0.00",
        "selfTradePreventionMode": STP_MODE,
    }


def my_trade(read: ReadModel, names: Names, f: Fill) -> Json:
    """GET /api/v3/myTrades's shape."""
    fee, asset = commission(f, names.currency)
    return {
        "symbol": names.wire(f.symbol),
        "id": f.trade_id,
        "orderId": f.order_id,
        "orderListId": -1,
        "price": read.price(f.symbol, f.price),
        "qty": str(f.qty),
        "quoteQty": quote_qty(read, f.symbol, f.price * f.qty),
        "commission": fee,
        "commissionAsset": asset,
        "time": ms(f.ts),
        "isBuyer": f.side == "buy",
        "isMaker": f.liquidity == "maker",
        "isBestMatch": True,
    }
