"""Binance's market streams: `/ws`, `/ws/<stream>[/<stream>..]` and `/stream?streams=` (the
combined form, each event wrapped `{"stream":..,"data":..}`), with SUBSCRIBE /
UNSUBSCRIBE / LIST_SUBSCRIPTIONS requests, fed once a durable batch from the read model.

`depthUpdate` events carry the book's seq as both `U` and `u`: each batch that changed a
book takes the next book seq, so updates are contiguous with a REST depth snapshot's
`lastUpdateId` (the same seq).
"""

import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from gateway.binance import public, userdata
from gateway.binance.edge import Dialect
from gateway.binance.errors import BinanceError
from gateway.binance.outbox import Outbox
from gateway.binance.shapes import ms
from gateway.limits import TokenBucket
from gateway.readstate import CANDLE_INTERVALS, Published

Json = dict[str, Any]
# Streams one connection may follow (Binance's bound).
MAX_STREAMS = 1_024
# Requests a connection may send a second (SUBSCRIBE and the like), bursts of twice that.
REQUESTS_PER_S = 10.0
KINDS = {"trade", "aggTrade", "depth", "depth@100ms", "depth@1000ms", "miniTicker",
         "ticker", "bookTicker"} | {f"kline_{i}" for i in CANDLE_INTERVALS}  # fmt: skip
_encode = msgspec.json.Encoder().encode


class StreamSession:
    def __init__(self, ws: web.WebSocketResponse, combined: bool) -> None:
        self.outbox = Outbox(ws)
        self.combined = combined
        self.streams: set[str] = set()
        self.bucket = TokenBucket(REQUESTS_PER_S, 2 * REQUESTS_PER_S)


class Streams:
    """Who follows which stream; turns each durable batch into the streams' events."""

    def __init__(self, d: Dialect, clock_ms: Callable[[], int] | None = None) -> None:
        self.d = d
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        # our symbol -> stream name -> its sessions
        self.by_symbol: dict[str, dict[str, set[StreamSession]]] = {}
        d.read.listen_market_data(self.publish)

    def stream(self, name: str) -> tuple[str, str]:
        """(our symbol, kind) of a stream name like `acmeusd@depth@100ms`."""
        sym, _, kind = name.partition("@")
        if kind not in KINDS:
            raise BinanceError(2, f"Invalid request: unknown stream '{name[:64]}'")
        try:
            return self.d.names.ours(sym), kind
        except BinanceError:
            raise BinanceError(2, f"Invalid request: unknown symbol in '{name[:64]}'") from None

    def subscribe(self, session: StreamSession, names: list[str]) -> None:
        found = [(name, *self.stream(name)) for name in names]  # all checked first
        if len(session.streams | set(names)) > MAX_STREAMS:
            raise BinanceError(2, f"Invalid request: at most {MAX_STREAMS} streams")
        for name, symbol, _ in found:
            session.streams.add(name)
            self.by_symbol.setdefault(symbol, {}).setdefault(name, set()).add(session)

    def unsubscribe(self, session: StreamSession, names: list[str]) -> None:
        for name in names:
            session.streams.discard(name)
            symbol = name.partition("@")[0].upper().removesuffix(self.d.names.currency)
            self.by_symbol.get(symbol, {}).get(name, set()).discard(session)

    def forget(self, session: StreamSession) -> None:
        self.unsubscribe(session, list(session.streams))

    # --- events ---------------------------------------------------------------------------

    def publish(self, published: Published) -> None:
        for symbol in published.trades.keys() | published.levels.keys():
            followed = self.by_symbol.get(symbol)
            if not followed:
                continue
            trades = published.trades.get(symbol, [])
            levels = published.levels.get(symbol, [])
            now = self.clock_ms()
            for name, sessions in followed.items():
                if not sessions:
                    continue
                events = self._events(symbol, name.partition("@")[2], trades, levels, now)
                if events:
                    self._send(name, events, sessions)

    def _send(self, name: str, events: list[Json], sessions: set[StreamSession]) -> None:
        raw: list[bytes] | None = None
        wrapped: list[bytes] | None = None
        for session in tuple(sessions):
            if session.combined:
                if wrapped is None:
                    wrapped = [_encode({"stream": name, "data": e}) for e in events]
                frames = wrapped
            else:
                if raw is None:
                    raw = [_encode(e) for e in events]
                frames = raw
            for frame in frames:
                session.outbox.send(frame)

    def _events(
        self, symbol: str, kind: str, trades: list[Any], levels: list[Any], now: int
    ) -> list[Json]:
        d, read = self.d, self.d.read
        wire = d.names.wire(symbol)
        price = read.price
        if kind == "trade":
            return [{"e": "trade", "E": now, "s": wire, "t": t.trade_id,
                     "p": price(symbol, t.price), "q": str(t.qty), "T": ms(t.ts),
                     "m": t.aggressor == "sell", "M": True} for t in trades]  # fmt: skip
        if kind == "aggTrade":
            return [{"e": "aggTrade", "E": now, "s": wire, "a": t.trade_id,
                     "p": price(symbol, t.price), "q": str(t.qty), "f": t.trade_id,
                     "l": t.trade_id, "T": ms(t.ts), "m": t.aggressor == "sell",
                     "M": True} for t in trades]  # fmt: skip
        if kind.startswith("depth"):
            if not levels:
                return []
            seq = read.tapes[symbol].book_seq
            bids = [[price(symbol, p), str(q)] for side, p, q in levels if side == "buy"]
            asks = [[price(symbol, p), str(q)] for side, p, q in levels if side == "sell"]
            return [{"e": "depthUpdate", "E": now, "s": wire, "U": seq, "u": seq,
                     "b": bids, "a": asks}]  # fmt: skip
        if kind == "bookTicker":
            if not levels:
                return []
            top = public.book_ticker(d, symbol)
            return [{"u": read.tapes[symbol].book_seq, "s": wire, "b": top["bidPrice"],
                     "B": top["bidQty"], "a": top["askPrice"], "A": top["askQty"]}]  # fmt: skip
        if kind.startswith("kline_"):
            interval = kind.removeprefix("kline_")
            kept = read.tapes[symbol].candles[interval]
            if not trades or not kept:
                return []
            row = public.kline_row(d, symbol, interval, kept[-1])
            return [{"e": "kline", "E": now, "s": wire, "k": {
                "t": row[0], "T": row[6], "s": wire, "i": interval,
                "f": trades[0].trade_id, "L": trades[-1].trade_id, "o": row[1], "c": row[4],
                "h": row[2], "l": row[3], "v": row[5], "n": row[8], "x": False,
                "q": row[7], "V": row[9], "Q": row[10], "B": "0"}}]  # fmt: skip
        t = public.ticker_24h(d, symbol)
        if kind == "miniTicker":
            return [{"e": "24hrMiniTicker", "E": now, "s": wire, "c": t["lastPrice"],
                     "o": t["openPrice"], "h": t["highPrice"], "l": t["lowPrice"],
                     "v": t["volume"], "q": t["quoteVolume"]}]  # fmt: skip
        return [{"e": "24hrTicker", "E": now, "s": wire, "p": t["priceChange"],
                 "P": t["priceChangePercent"], "w": t["weightedAvgPrice"],
                 "x": t["prevClosePrice"], "c": t["lastPrice"], "Q": t["lastQty"],
                 "b": t["bidPrice"], "B": t["bidQty"], "a": t["askPrice"], "A": t["askQty"],
                 "o": t["openPrice"], "h": t["highPrice"], "l": t["lowPrice"],
                 "v": t["volume"], "q": t["quoteVolume"], "O": t["openTime"],
                 "C": t["closeTime"], "F": t["firstId"], "L": t["lastId"],
                 "n": t["count"]}]  # fmt: skip


class Request(msgspec.Struct):
    method: str
    id: int | str | None = None
    params: list[Any] = msgspec.field(default_factory=list)


_decode_request = msgspec.json.Decoder(Request).decode


def _answer(session: StreamSession, streams: Streams, frame: str) -> None:
    request_id: int | str | None = None
    try:
        try:
            request = _decode_request(frame)
        except msgspec.DecodeError as problem:
            raise BinanceError(2, f"Invalid request: {problem}") from None
        request_id = request.id
        if not session.bucket.take():
            raise BinanceError(-1003, "Too many requests on this connection; slow down.")
        names = [p for p in request.params if isinstance(p, str)]
        if len(names) != len(request.params) and request.method != "SET_PROPERTY":
            raise BinanceError(2, "Invalid request: params are stream names")
        result: Any = None
        if request.method == "SUBSCRIBE":
            streams.subscribe(session, names)
        elif request.method == "UNSUBSCRIBE":
            streams.unsubscribe(session, names)
        elif request.method == "LIST_SUBSCRIPTIONS":
            result = sorted(session.streams)
        elif request.method in {"SET_PROPERTY", "GET_PROPERTY"}:
            result = None if request.method == "SET_PROPERTY" else session.combined
        else:
            raise BinanceError(2, f"Invalid request: unknown method '{request.method[:32]}'")
        session.outbox.send(_encode({"result": result, "id": request_id}))
    except BinanceError as problem:
        error = {"error": {"code": problem.code, "msg": problem.msg}, "id": request_id}
        session.outbox.send(_encode(error))


async def handler(request: web.Request) -> web.StreamResponse:
    """GET /ws, /ws/{tail} (streams, or a listen key: the user-data stream), /stream."""
    streams: Streams = request.app["binance_streams"]
    tail = request.match_info.get("tail", "")
    if tail and "@" not in tail and "/" not in tail:
        users: userdata.UserData = request.app["binance_users"]
        account = users.listen_keys.account(tail)
        if account is not None:
            return await users.listen_key_socket(request, account)
    combined = request.path.startswith("/stream")
    names = [n for n in (request.query.get("streams", "") if combined else tail).split("/") if n]
    if not combined and names and not all("@" in n for n in names):
        names = []  # ccxt's "/ws/0": a connection index, no streams
    ws = await streams.d.open_socket(request)
    session = StreamSession(ws, combined)
    try:
        if names:
            try:
                streams.subscribe(session, names)
            except BinanceError as problem:
                await ws.close(code=1008, message=problem.msg.encode()[:120])
                return ws
        await streams.d.read_socket(ws, lambda text: _answer(session, streams, text))
    finally:
        streams.forget(session)
        await session.outbox.close()
    return ws
