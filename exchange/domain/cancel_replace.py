"""Cancel and replace of resting orders (CancelOrder, CancelAll, ReplaceOrder): which
replace keeps its time priority, the holds resized to the new price and size, and a replace that
crosses going through matching again.
"""

from msgspec.structs import astuple

from exchange.domain.auction import book_changed, rest_in_auction
from exchange.domain.book import DEPARTED_SLACK, Order
from exchange.domain.client_orders import open_order
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import CancelAll, CancelOrder, ReplaceOrder
from exchange.domain.events import DoneReason, Event, OrderCancelled
from exchange.domain.fees import buy_hold
from exchange.domain.instruments import band_limits
from exchange.domain.limits import MAX_PRICE_TICKS, MAX_QTY
from exchange.domain.market import Market
from exchange.domain.matching import NO_BUDGET, crosses, end_taker, match
from exchange.domain.replies import (
    cancel_all_rejected,
    cancel_rejected,
    cancelled,
    replace_rejected,
    replaced,
)
from exchange.domain.settlement import release_holds, resize_holds
from exchange.domain.stops import run_triggered


def cancel_order(market: Market, cmd: CancelOrder) -> list[Event]:
    account_id: str
    order_id: int
    cid: str
    _, account_id, order_id, cid = astuple(cmd)  # one call: see order_entry.place_order
    account = market.accounts.get(account_id)
    if account is None:
        return [cancel_rejected(cmd, Code.UNKNOWN_ACCOUNT, "no such account")]
    order: Order | None = None
    if order_id:
        order = account.open_orders.get(order_id)
    elif cid:
        order = open_order(account.client_orders.get(cid))
    else:
        return [cancel_rejected(cmd, Code.BAD_REQUEST, "give order_id or client_order_id")]
    if order is None:
        return [cancel_rejected(cmd, Code.UNKNOWN_ORDER, "no such open order")]
    level = order.level
    if level is None:
        if order.waiting and order.status == "open":
            events: list[Event] = []
            cancel_waiting(market, order, "cancelled", events)
            return events
        return [cancel_rejected(cmd, Code.UNKNOWN_ORDER, "no such open order")]
    # cancel_resting, Level.leave and cancelled() inlined: cancels are a third of
    # all traffic, and each call costs more than the line it would save.
    remaining = order.remaining
    order.level = None
    level.total -= order.shown if order.display_qty else remaining
    live = level.live = level.live - 1
    symbol = order.symbol
    is_buy = order.is_buy
    instrument = market.instruments[symbol]
    if is_buy:  # a resting order is a limit order: its hold is fees.buy_hold's
        tick = instrument.tick
        bps = order.taker_bps
        account.cash_held -= (
            buy_hold(order.price, tick, remaining, bps) if bps else order.price * tick * remaining
        )
    else:
        account.units_held[symbol] -= remaining
    order.status = "cancelled"
    order_id = order.order_id
    del account.open_orders[order_id]
    cid = order.client_order_id
    done: list[Event] = [
        OrderCancelled(
            order_id, account.account_id, cid, symbol, order.side, order.price, remaining,
            "cancelled",
        )
    ]
    if not live:
        book = market.books[symbol]
        (book.bids if is_buy else book.asks).drop_level(level.price)
    elif len(level.queue) > 2 * live + DEPARTED_SLACK:
        level.compact()
    if instrument.status == "pre_open":  # inlined book_changed
        book_changed(market, symbol, done)
    return done


def cancel_resting(market: Market, order: Order, reason: DoneReason, events: list[Event]) -> None:
    """End a resting order outside matching, dropping its level when it empties.
    (_end_resting and _end_taker, flattened: cancels are a third of all traffic.)"""
    level = order.level
    assert level is not None, "only resting orders can be cancelled"
    level.leave(order)
    account = order.account
    symbol = order.symbol
    if order.is_buy:  # a resting order is a limit order
        tick = market.instruments[symbol].tick
        account.cash_held -= (
            buy_hold(order.price, tick, order.remaining, order.taker_bps)
            if order.taker_bps
            else order.price * tick * order.remaining
        )
    else:
        account.units_held[symbol] -= order.remaining
    order.status = reason
    del account.open_orders[order.order_id]
    events.append(cancelled(order, reason))
    if not level.live:
        book = market.books[symbol]
        (book.bids if order.is_buy else book.asks).drop_level(level.price)


def cancel_waiting(market: Market, order: Order, reason: DoneReason, events: list[Event]) -> None:
    """End a stop order that waits for its trigger: out of its book's stops, holds released."""
    market.books[order.symbol].stops.remove(order)
    end_taker(market, order, reason, events)


def cancel_all(market: Market, cmd: CancelAll) -> list[Event]:
    account = market.accounts.get(cmd.account)
    if account is None:
        return [cancel_all_rejected(cmd, Code.UNKNOWN_ACCOUNT, "no such account")]
    if cmd.symbol and cmd.symbol not in market.instruments:
        return [cancel_all_rejected(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")]
    events: list[Event] = []
    symbols: dict[str, None] = {}  # in the order first met: deterministic
    for order in list(account.open_orders.values()):
        if not cmd.symbol or order.symbol == cmd.symbol:
            if order.level is None:
                cancel_waiting(market, order, "cancelled", events)
            else:
                cancel_resting(market, order, "cancelled", events)
                symbols[order.symbol] = None
    for symbol in symbols:
        book_changed(market, symbol, events)
    return events


def replace_order(market: Market, cmd: ReplaceOrder) -> list[Event]:
    account = market.accounts.get(cmd.account)
    if account is None:
        return [replace_rejected(cmd, Code.UNKNOWN_ACCOUNT, "no such account")]
    order = account.open_orders.get(cmd.order_id)
    if order is None:
        return [replace_rejected(cmd, Code.UNKNOWN_ORDER, "no such open order")]
    if not cmd.qty and not cmd.price:
        return [replace_rejected(cmd, Code.BAD_REQUEST, "give qty, price or both")]
    if not 0 <= cmd.qty <= MAX_QTY:
        return [replace_rejected(cmd, Code.BAD_QTY, "quantity out of range")]
    if not 0 <= cmd.price <= MAX_PRICE_TICKS:
        return [replace_rejected(cmd, Code.BAD_PRICE, "price out of range")]
    if cmd.price and order.type in ("market", "stop"):
        return [replace_rejected(cmd, Code.BAD_PRICE, f"a {order.type} order has no price")]
    instrument = market.instruments[order.symbol]
    status = instrument.status
    if status not in ("trading", "pre_open"):
        return [replace_rejected(cmd, Code.NOT_IN_PHASE, f"not while {status}")]
    if cmd.price and cmd.price != order.price:
        low, high = band_limits(instrument)
        if not low <= cmd.price <= high:
            return [replace_rejected(cmd, Code.PRICE_OUT_OF_BAND, "price beyond the band")]
    tick = instrument.tick
    new_price = cmd.price or order.price
    new_qty = cmd.qty or order.qty
    old_remaining = order.remaining
    new_remaining = max(new_qty - (order.qty - old_remaining), 0)
    symbol = order.symbol
    if order.is_buy:
        bps = order.taker_bps
        extra = buy_hold(new_price, tick, new_remaining, bps) - buy_hold(
            order.price, tick, old_remaining, bps
        )
        if extra > account.cash - account.cash_held:
            return [replace_rejected(cmd, Code.INSUFFICIENT_FUNDS, "not enough cash")]
    elif new_remaining - old_remaining > account.available_units(symbol):
        return [replace_rejected(cmd, Code.INSUFFICIENT_UNITS, "not enough units")]
    book = market.books[symbol]
    if (
        order.post_only
        and status == "trading"
        and new_remaining
        and new_price != order.price
        and crosses(book, order.is_buy, new_price)
    ):
        return [replace_rejected(cmd, Code.POST_ONLY_WOULD_TAKE, "the order would take")]

    side = book.bids if order.is_buy else book.asks
    waiting = order.waiting
    if not new_remaining:
        if waiting:
            book.stops.remove(order)
        else:
            side.remove(order)
        release_holds(market, order)
        account.open_orders.pop(order.order_id, None)
        order.price, order.qty, order.remaining = new_price, new_qty, 0
        order.status = "replaced_out"
        ended: list[Event] = [
            replaced(order, kept_priority=False, remaining=0), cancelled(order, "replaced_out")
        ]
        if not waiting:
            book_changed(market, symbol, ended)
        return ended
    events: list[Event] = []
    if waiting:  # a stop keeps its place among the stops: they trigger oldest first
        resize_holds(order, new_price, new_remaining, tick)
        order.price, order.qty, order.remaining = new_price, new_qty, new_remaining
        events.append(replaced(order, kept_priority=True, remaining=new_remaining))
        return events
    kept_priority = new_price == order.price and new_remaining <= old_remaining
    if kept_priority:
        resize_holds(order, new_price, new_remaining, tick)
        level = order.level
        assert level is not None, "an open order rests on a level"
        if order.display_qty:  # an iceberg shows no more than it still has
            shown = min(order.shown, new_remaining)
            level.total += shown - order.shown
            order.shown = shown
        else:
            level.total += new_remaining - old_remaining
        order.qty = new_qty
        order.remaining = new_remaining
        events.append(replaced(order, kept_priority=True, remaining=new_remaining))
        book_changed(market, symbol, events)
        return events
    side.remove(order)
    resize_holds(order, new_price, new_remaining, tick)
    order.price = new_price
    order.qty = new_qty
    order.remaining = new_remaining
    events.append(replaced(order, kept_priority=False, remaining=new_remaining))
    if status == "pre_open":  # a call auction: to the back of its level, no matching
        rest_in_auction(market, order, book, events)
        return events
    start = len(events)
    match(market, order, book, tick, NO_BUDGET, cmd.ts, events)
    if book.stops.orders:
        run_triggered(market, book, tick, cmd.ts, events, start)
    return events
