"""Call auctions: where a crossed book would uncross, the uncross itself, and entering a call.

While an instrument is `pre_open` its orders rest without matching; `indicative` says where
it would uncross now and `uncross` executes it: every fill at one price, price-time within
a side. The rule (docs/ENGINE.md, "Market phases"): the price that maximises the executed
volume, then minimises the surplus, then is nearest the reference price, then the lowest.
"""

from bisect import bisect_left, bisect_right
from itertools import accumulate

from exchange.domain.book import Level, Order, OrderBook
from exchange.domain.events import (
    AuctionIndicative,
    AuctionUncrossed,
    Event,
    InstrumentStatusChanged,
    OrderRefreshed,
    TradeExecuted,
)
from exchange.domain.fees import fee_account, fee_of, unit_fee_hold
from exchange.domain.instruments import Instrument
from exchange.domain.market import END_AUCTION, EXPIRE_ORDER, Market

Levels = list[tuple[int, int]]  # (price, total), best first


def clearing_price(bids: Levels, asks: Levels, ref: int) -> tuple[int, int, int]:
    """(price, volume, buy volume - sell volume at it) of the uncross; (0, 0, 0) when the
    book does not cross. Between two neighbouring level prices the volumes stand still, so
    the candidates are every level's price, the prices one tick inside each level, and
    the reference price: the brute force over every tick (tests/reference_model.py) agrees."""
    if not bids or not asks or bids[0][0] < asks[0][0]:
        return 0, 0, 0
    bid_prices = [p for p, _ in reversed(bids)]  # ascending
    bid_above = list(accumulate(q for _, q in bids))[::-1]  # bid_above[i]: qty at >= bid_prices[i]
    ask_prices = [p for p, _ in asks]  # ascending
    ask_below = list(accumulate(q for _, q in asks))  # ask_below[i]: qty at <= ask_prices[i]
    low, high = asks[0][0], bids[0][0]  # outside these nothing trades
    candidates = {p + d for p in (*bid_prices, *ask_prices) for d in (-1, 0, 1)}
    candidates.add(ref)
    best: tuple[int, int, int, int] | None = None  # (-volume, surplus, distance, price)
    best_net = 0
    for price in sorted(c for c in candidates if low <= c <= high):
        i = bisect_left(bid_prices, price)
        demand = bid_above[i] if i < len(bid_prices) else 0
        j = bisect_right(ask_prices, price)
        supply = ask_below[j - 1] if j else 0
        volume = min(demand, supply)
        key = (-volume, abs(demand - supply), abs(price - ref), price)
        if best is None or key < best:
            best, best_net = key, demand - supply
    assert best is not None, "a crossed book has candidates between its crossing prices"
    assert best[0] < 0, "a crossed book trades at its crossing prices"
    return best[3], -best[0], best_net


def _whole(level: Level) -> int:
    """A level's quantity in an auction: every order's remaining, an iceberg's hidden part
    too (Xetra's rule), where `total` counts only what the book shows."""
    return sum(o.remaining for o in level.orders())


def _crossing(book: OrderBook) -> tuple[Levels, Levels]:
    bids = [(lv.price, _whole(lv)) for lv in book.bids.levels_best_first()]
    asks = [(lv.price, _whole(lv)) for lv in book.asks.levels_best_first()]
    return bids, asks


def indicative(market: Market, symbol: str) -> AuctionIndicative:
    bids, asks = _crossing(market.books[symbol])
    price, volume, net = clearing_price(bids, asks, market.instruments[symbol].ref)
    side = "buy" if net > 0 else "sell" if net < 0 else ""
    return AuctionIndicative(symbol, price, volume, side, abs(net))


def rest_in_auction(market: Market, order: Order, book: OrderBook, events: list[Event]) -> None:
    """Rest an order (holds placed) in a call auction: it matches nothing until the uncross."""
    if order.display_qty:
        order.shown = min(order.remaining, order.display_qty)
    book.side_of(order).rest(order)
    account = order.account
    account.open_orders[order.order_id] = order
    if order.expire_at:
        market.add_timer(order.expire_at, EXPIRE_ORDER, order.order_id, account.account_id)
    book_changed(market, order.symbol, events)


def book_changed(market: Market, symbol: str, events: list[Event]) -> None:
    """After a change to a book: in a call auction, publish where it would uncross now."""
    if market.instruments[symbol].status == "pre_open":
        events.append(indicative(market, symbol))


def enter_call(
    market: Market, instrument: Instrument, open_at: int, reason: str, events: list[Event]
) -> None:
    """Move to `pre_open`: orders rest, nothing matches, until the uncross at `open_at`
    (0: when the admin says)."""
    instrument.status = "pre_open"
    instrument.open_at = open_at
    symbol = instrument.symbol
    if open_at:
        market.add_timer(open_at, END_AUCTION, 0, symbol)
    events.append(InstrumentStatusChanged(symbol, "pre_open", open_at, reason))
    events.append(indicative(market, symbol))


def uncross(
    market: Market, instrument: Instrument, ts: int, reason: str, events: list[Event]
) -> None:
    """End the call auction: trade at the clearing price, then trade continuously."""
    symbol = instrument.symbol
    book = market.books[symbol]
    bids, asks = _crossing(book)
    price, volume, _ = clearing_price(bids, asks, instrument.ref)
    if volume:
        events.append(AuctionUncrossed(symbol, price, volume))
        _execute(market, book, instrument, price, volume, ts, events)
        instrument.reprice(price, instrument.band_pct)
        book.last_price = price  # stops trigger on it (market_phases runs them after)
    instrument.status = "trading"
    instrument.open_at = 0
    events.append(InstrumentStatusChanged(symbol, "trading", 0, reason))


def _execute(
    market: Market, book: OrderBook, instrument: Instrument, price: int, volume: int, ts: int,
    events: list[Event],
) -> None:  # fmt: skip
    """Fill `volume` units at `price`: the best bid against the best ask, oldest first
    within a price. Both orders rest, so neither took liquidity: the newer one is named the
    taker (and its side the aggressor), the older one the maker. Fees follow the names, as
    in continuous trading (fees.py): the older order pays its maker rate (or gets its
    rebate, at most this fill's taker fee), the newer its taker rate. A buy's hold covers
    either (its maker rate is at most its taker rate; the price at most its limit)."""
    symbol, tick = instrument.symbol, instrument.tick
    value = price * tick
    used_up: dict[int, Order] = {}  # icebergs whose shown part the uncross used up
    while volume:  # each turn fills at least one unit
        bid = book.bids.levels[book.bids.keys[-1]].head
        ask = book.asks.levels[-book.asks.keys[-1]].head
        assert bid is not None, "the clearing volume rests on both sides"
        assert ask is not None, "the clearing volume rests on both sides"
        q = min(volume, bid.remaining, ask.remaining)
        buyer, seller = bid.account, ask.account
        limit_value = bid.price * tick
        buyer.cash_held -= q * (limit_value + unit_fee_hold(limit_value, bid.taker_bps))
        buyer.cash -= value * q
        seller.cash += value * q
        buyer.positions[symbol] = buyer.positions.get(symbol, 0) + q
        seller.positions[symbol] -= q
        seller.units_held[symbol] -= q
        for order in (bid, ask):
            order.remaining -= q
            level = order.level
            assert level is not None
            if order.display_qty:  # an iceberg trades whole; its shown part goes first
                used = min(q, order.shown)
                order.shown -= used
                level.total -= used
                if not order.shown:
                    used_up[order.order_id] = order
            else:
                level.total -= q
        maker, taker = (bid, ask) if bid.order_id < ask.order_id else (ask, bid)
        taker_fee = fee_of(value * q, taker.taker_bps)
        maker_fee = max(fee_of(value * q, maker.maker_bps), -taker_fee)
        if taker_fee or maker_fee:
            taker.account.cash -= taker_fee
            maker.account.cash -= maker_fee
            fee_account(market).cash += taker_fee + maker_fee
        trade_id = market.next_trade
        market.next_trade = trade_id + 1
        events.append(
            TradeExecuted(
                trade_id, symbol, price, q, taker.side, maker.order_id,
                maker.account.account_id, maker.remaining, taker.order_id,
                taker.account.account_id, taker.remaining, ts, maker_fee, taker_fee,
            )
        )  # fmt: skip
        for order in (bid, ask):
            if not order.remaining:
                _filled(book, order)
        volume -= q
    for order in used_up.values():  # in the order their shown parts ran out
        if order.remaining:  # partly filled: show the next part, at the back of its level
            level = order.level
            assert level is not None
            level.remove_now(order)
            order.shown = min(order.remaining, order.display_qty)
            level.append(order)
            events.append(
                OrderRefreshed(
                    order.order_id, order.account.account_id, symbol, order.side, order.price,
                    order.shown, order.remaining,
                )
            )


def _filled(book: OrderBook, order: Order) -> None:
    book.side_of(order).remove(order)
    order.status = "filled"
    del order.account.open_orders[order.order_id]
