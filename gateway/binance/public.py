"""Binance's public market-data calls under /api/v3: time, exchangeInfo, depth, trades,
aggTrades, klines and the tickers, answered from the read side (durable state only).
"""

from typing import Any

import msgspec
from aiohttp import web

from exchange.domain.limits import MAX_PRICE_TICKS, MAX_QTY
from exchange.domain.money import format_cash
from gateway.binance.edge import Dialect, dialect, endpoint, json
from gateway.binance.errors import BinanceError
from gateway.binance.shapes import ms, quote_qty
from gateway.binance.weights import WEIGHT_PER_MINUTE
from gateway.daystats import last_day
from gateway.readstate import CANDLE_INTERVALS, TRADES_KEPT

routes = web.RouteTableDef()
Json = dict[str, Any]

DEPTH_DEFAULT, DEPTH_MAX = 100, 5_000
TRADES_DEFAULT, TRADES_MAX = 500, TRADES_KEPT
KLINES_DEFAULT, KLINES_MAX = 500, 1_000
ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"]
EXCHANGE_INFO_PARAMS = frozenset(
    {"symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"}
)
KLINES_PARAMS = frozenset({"symbol", "interval", "startTime", "endTime", "limit", "timeZone"})


def _int(params: Any, name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not (isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 20):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.")
    value = int(text)
    if not low <= value <= high:
        raise BinanceError(-1130, f"Data sent for parameter '{name}' is not valid ({low}..{high}).")
    return value


def _query(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    got: dict[str, str] = {}
    for name, value in request.query.items():
        if name in got:
            raise BinanceError(-1102, f"Duplicate values for parameter '{name[:32]}'.")
        got[name] = value
    extra = got.keys() - allowed
    if extra:
        raise BinanceError(-1104, f"Not all sent parameters were read; '{min(extra)[:32]}' is "
            "not a parameter of this call.")
    return got


def _symbols(d: Dialect, q: dict[str, str]) -> list[str]:
    """`symbol=X` or `symbols=["X","Y"]`: our symbols; none given: every instrument."""
    if "symbol" in q and "symbols" in q:
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    if "symbol" in q:
        return [d.names.ours(q["symbol"])]
    if "symbols" in q:
        try:
            listed = msgspec.json.decode(q["symbols"], type=list[str])
        except msgspec.DecodeError:
            raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'.") from None
        return [d.names.ours(s) for s in listed]
    return list(d.read.instruments)


async def not_offered(request: web.Request) -> web.Response:
    """Any other /api/ path or method: Binance's "not supported" (registered last)."""
    return json({"code": -1020, "msg": "This operation is not supported."}, 404)


@routes.get("/api/v3/ping")
@endpoint(1)
async def ping(request: web.Request) -> web.Response:
    _query(request, frozenset())
    return json({})


@routes.get("/api/v3/time")
@endpoint(1)
async def server_time(request: web.Request) -> web.Response:
    _query(request, frozenset())
    return json({"serverTime": dialect(request).clock_ms()})


@routes.get("/api/v3/exchangeInfo")
@endpoint(20)
async def exchange_info(request: web.Request) -> web.Response:
    d = dialect(request)
    q = _query(request, EXCHANGE_INFO_PARAMS)
    return json({
        "timezone": "UTC",
        "serverTime": d.clock_ms(),
        "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                        "intervalNum": 1, "limit": d.weights.limit or WEIGHT_PER_MINUTE}],
        "exchangeFilters": [],
        "symbols": [_symbol_info(d, s) for s in _symbols(d, q)],
    })  # fmt: skip


def _symbol_info(d: Dialect, symbol: str) -> Json:
    read, instrument = d.read, d.read.instruments[symbol]
    tick = str(read.tick_size(symbol))
    decimals = len(tick.partition(".")[2])
    return {
        "symbol": d.names.wire(symbol),
        "status": "TRADING" if instrument.status == "trading" else "BREAK",
        "baseAsset": symbol,
        "baseAssetPrecision": 0,
        "quoteAsset": d.names.currency,
        "quotePrecision": decimals,
        "quoteAssetPrecision": decimals,
        "baseCommissionPrecision": 0,
        "quoteCommissionPrecision": 2,
        "orderTypes": ORDER_TYPES,
        "icebergAllowed": True,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick,
             "maxPrice": read.price(symbol, MAX_PRICE_TICKS), "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": "1", "maxQty": str(MAX_QTY), "stepSize": "1"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "1", "maxQty": str(MAX_QTY),
             "stepSize": "1"},
            {"filterType": "NOTIONAL", "minNotional": "0.01", "applyMinToMarket": False,
             "maxNotional": format_cash(MAX_PRICE_TICKS), "applyMaxToMarket": False,
             "avgPriceMins": 0},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 10_000},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_TAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }  # fmt: skip


@routes.get("/api/v3/depth")
@endpoint(5)
async def depth(request: web.Request) -> web.Response:
    d = dialect(request)
    q = _query(request, frozenset({"symbol", "limit"}))
    symbol = d.names.ours(q.get("symbol"))
    limit = _int(q, "limit", DEPTH_DEFAULT, 1, DEPTH_MAX)
    read = d.read
    bids, asks = read.book(symbol, limit)
    return json({
        "lastUpdateId": read.tapes[symbol].book_seq,
        "bids": [[read.price(symbol, p), str(n)] for p, n in bids],
        "asks": [[read.price(symbol, p), str(n)] for p, n in asks],
    })  # fmt: skip


def _recent(d: Dialect, symbol: str) -> list[Any]:
    """The kept trades, oldest first."""
    return list(reversed(d.read.tapes[symbol].trades))


@routes.get("/api/v3/trades")
@endpoint(25)
async def trades(request: web.Request) -> web.Response:
    d = dialect(request)
    q = _query(request, frozenset({"symbol", "limit"}))
    symbol = d.names.ours(q.get("symbol"))
    limit = _int(q, "limit", TRADES_DEFAULT, 1, TRADES_MAX)
    price = d.read.price
    tick = d.read.instruments[symbol].tick
    return json([
        {"id": t.trade_id, "price": price(symbol, t.price), "qty": str(t.qty),
         "quoteQty": format_cash(t.price * tick * t.qty), "time": ms(t.ts),
         "isBuyerMaker": t.aggressor == "sell", "isBestMatch": True}
        for t in _recent(d, symbol)[-limit:]
    ])  # fmt: skip


@routes.get("/api/v3/aggTrades")
@endpoint(4)
async def agg_trades(request: web.Request) -> web.Response:
    """One aggregate a trade (each trade of ours is one match)."""
    d = dialect(request)
    q = _query(request, frozenset({"symbol", "limit", "fromId", "startTime", "endTime"}))
    symbol = d.names.ours(q.get("symbol"))
    limit = _int(q, "limit", TRADES_DEFAULT, 1, TRADES_MAX)
    big = 2**63 - 1
    from_id = _int(q, "fromId", -1, 0, big)
    start = _int(q, "startTime", 0, 0, big)
    end = _int(q, "endTime", big, 0, big)
    price = d.read.price
    found = [
        t for t in _recent(d, symbol)
        if t.trade_id >= from_id and start <= ms(t.ts) <= end
    ]  # fmt: skip
    shown = found[:limit] if from_id >= 0 or "startTime" in q else found[-limit:]
    return json([
        {"a": t.trade_id, "p": price(symbol, t.price), "q": str(t.qty), "f": t.trade_id,
         "l": t.trade_id, "T": ms(t.ts), "m": t.aggressor == "sell", "M": True}
        for t in shown
    ])  # fmt: skip


def interval_of(text: str | None) -> str:
    if text not in CANDLE_INTERVALS:
        raise BinanceError(-1120, "Invalid interval.")
    return text


def kline_row(d: Dialect, symbol: str, interval: str, c: Any) -> list[Any]:
    price = d.read.price
    start = ms(c.start)
    return [
        start, price(symbol, c.open), price(symbol, c.high), price(symbol, c.low),
        price(symbol, c.close), str(c.volume), start + ms(CANDLE_INTERVALS[interval]) - 1,
        quote_qty(d.read, symbol, c.notional), c.trades, str(c.buy_volume),
        quote_qty(d.read, symbol, c.buy_notional), "0",
    ]  # fmt: skip


@routes.get("/api/v3/klines")
@endpoint(2)
async def klines(request: web.Request) -> web.Response:
    d = dialect(request)
    q = _query(request, KLINES_PARAMS)
    symbol = d.names.ours(q.get("symbol"))
    interval = interval_of(q.get("interval"))
    if q.get("timeZone") not in {None, "0", "+00:00", "UTC"}:
        raise BinanceError(-1130, "Data sent for parameter 'timeZone' is not valid (UTC only).")
    limit = _int(q, "limit", KLINES_DEFAULT, 1, KLINES_MAX)
    big = 2**63 - 1
    start = _int(q, "startTime", 0, 0, big)
    end = _int(q, "endTime", big, 0, big)
    kept = [c for c in d.read.tapes[symbol].candles[interval] if start <= ms(c.start) <= end]
    shown = kept[:limit] if "startTime" in q else kept[-limit:]
    return json([kline_row(d, symbol, interval, c) for c in shown])


def ticker_24h(d: Dialect, symbol: str) -> Json:
    """The 24-hour ticker over the instrument's last day of trading (gateway/daystats.py)."""
    read, names = d.read, d.names
    tape = read.tapes[symbol]
    day = last_day(tape.candles["1m"])
    bids, asks = read.book(symbol, 1)
    price = read.price
    last = tape.last if tape.last is not None else 0
    first_open = day.open if day.open is not None else last
    change = last - first_open
    pct = f"{(change * 100 / first_open):.3f}" if first_open else "0.000"
    newest = tape.trades[0] if tape.trades else None
    now = d.clock_ms()
    return {
        "symbol": names.wire(symbol),
        "priceChange": _signed_price(read.price, symbol, change),
        "priceChangePercent": pct,
        # The day's value over its volume, to the nearest tick (the last price without trades).
        "weightedAvgPrice": price(
            symbol, (2 * day.notional + day.volume) // (2 * day.volume) if day.volume else last
        ),
        "prevClosePrice": price(symbol, first_open),
        "lastPrice": price(symbol, last),
        "lastQty": str(newest.qty) if newest is not None else "0",
        "bidPrice": price(symbol, bids[0][0]) if bids else price(symbol, 0),
        "bidQty": str(bids[0][1]) if bids else "0",
        "askPrice": price(symbol, asks[0][0]) if asks else price(symbol, 0),
        "askQty": str(asks[0][1]) if asks else "0",
        "openPrice": price(symbol, first_open),
        "highPrice": price(symbol, day.high if day.high is not None else 0),
        "lowPrice": price(symbol, day.low if day.low is not None else 0),
        "volume": str(day.volume),
        "quoteVolume": quote_qty(read, symbol, day.notional),
        "openTime": ms(day.since) if day.since is not None else now - 86_400_000,
        "closeTime": now,
        "firstId": -1,
        "lastId": newest.trade_id if newest is not None else -1,
        "count": day.trades,
    }


def _signed_price(price: Any, symbol: str, ticks: int) -> str:
    text: str = price(symbol, abs(ticks))
    return "-" + text if ticks < 0 else text


def _one_or_list(q: dict[str, str], items: list[Json]) -> web.Response:
    return json(items[0] if "symbol" in q else items)


@routes.get("/api/v3/ticker/24hr")
@endpoint(2)
async def ticker(request: web.Request) -> web.Response:
    d = dialect(request)
    q = _query(request, frozenset({"symbol", "symbols", "type"}))
    return _one_or_list(q, [ticker_24h(d, s) for s in _symbols(d, q)])


def book_ticker(d: Dialect, symbol: str) -> Json:
    read = d.read
    bids, asks = read.book(symbol, 1)
    price = read.price
    return {
        "symbol": d.names.wire(symbol),
        "bidPrice": price(symbol, bids[0][0]) if bids else price(symbol, 0),
        "bidQty": str(bids[0][1]) if bids else "0",
        "askPrice": price(symbol, asks[0][0]) if asks else price(symbol, 0),
        "askQty": str(asks[0][1]) if asks else "0",
    }


@routes.get("/api/v3/ticker/bookTicker")
@endpoint(2)
async def book_tickers(request: web.Request) -> web.Response:
    d = dialect(request)
    q = _query(request, frozenset({"symbol", "symbols"}))
    return _one_or_list(q, [book_ticker(d, s) for s in _symbols(d, q)])


@routes.get("/api/v3/ticker/price")
@endpoint(2)
async def prices(request: web.Request) -> web.Response:
    d = dialect(request)
    q = _query(request, frozenset({"symbol", "symbols"}))
    items = []
    for symbol in _symbols(d, q):
        last = d.read.tapes[symbol].last
        items.append({"symbol": d.names.wire(symbol), "price": d.read.price(symbol, last or 0)})
    return _one_or_list(q, items)
