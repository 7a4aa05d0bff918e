"""Order entry: PlaceOrder's checks (order types, time in force, post-only, limits, funds,
the market phase and price band), the answer to a resent client order id, fill-or-kill, and
the holds placed before matching (or before resting in a call auction).
"""

from exchange.domain.accounts import Account
from exchange.domain.auction import book_changed
from exchange.domain.book import Order
from exchange.domain.client_orders import answer_resend, archive, remember
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import PlaceOrder
from exchange.domain.events import Event, OrderAccepted, OrderRejected
from exchange.domain.fees import buy_hold
from exchange.domain.instruments import Instrument, band_limits
from exchange.domain.limits import MAX_CASH, MAX_OPEN_ORDERS_PER_ACCOUNT, MAX_PRICE_TICKS, MAX_QTY
from exchange.domain.market import EXPIRE_ORDER, Market
from exchange.domain.matching import NO_BUDGET, RESTING_TIFS, crosses, fillable, match
from exchange.domain.replies import cancelled, order_rejected


def place_order(market: Market, cmd: PlaceOrder) -> list[Event]:
    account = market.accounts.get(cmd.account)
    if account is None:
        return [order_rejected(cmd, Code.UNKNOWN_ACCOUNT, "no such account")]
    cid = cmd.client_order_id
    if cid:
        record = account.client_orders.get(cid)
        if record is not None:
            return [answer_resend(cmd, *record)]
    symbol = cmd.symbol
    instrument = market.instruments.get(symbol)
    refusal = _check_place(market, cmd, account, instrument)
    if refusal is not None:
        if cid:
            remember(account, cid, (cmd, refusal))
        return [refusal]
    assert instrument is not None  # _check_place refused an unknown symbol

    order_id = market.next_order
    market.next_order = order_id + 1
    side, type_, tif, price, qty, ts = cmd.side, cmd.type, cmd.tif, cmd.price, cmd.qty, cmd.ts
    tick = instrument.tick
    taker_bps = instrument.taker_bps
    order = Order(
        order_id, account, cid, symbol, side, type_, tif, price, qty, cmd.post_only, cmd.stp, ts,
        cmd.expire_at, instrument.maker_bps, taker_bps,
    )  # fmt: skip
    if cid:
        remember(account, cid, (cmd, order))
    events: list[Event] = [
        OrderAccepted(
            order_id, account.account_id, cid, symbol, side, type_, tif, price, qty, qty,
            "open", cmd.post_only, ts, False, cmd.expire_at,
        )
    ]
    budget = NO_BUDGET
    is_buy = order.is_buy
    if type_ == "market" and is_buy:
        budget = account.cash - account.cash_held
        if cmd.max_notional and cmd.max_notional < budget:
            budget = cmd.max_notional
    book = market.books[symbol]
    if tif == "fok" and fillable(order, book, tick, budget, band_limits(instrument)) < qty:
        order.status = "expired"
        if cid:
            archive(order)
        events.append(cancelled(order, "expired"))
        return events
    # Hold what the order may spend (its worst-case fees too) or deliver; matching draws
    # these holds down.
    if is_buy:
        if budget == NO_BUDGET:
            account.cash_held += buy_hold(price, tick, qty, taker_bps) if taker_bps else (
                price * tick * qty
            )
    else:
        held = account.units_held
        held[symbol] = held.get(symbol, 0) + qty
    if instrument.status == "pre_open":  # a call auction: rest, match nothing
        book.side_of(order).rest(order)
        account.open_orders[order_id] = order
        if order.expire_at:
            market.add_timer(order.expire_at, EXPIRE_ORDER, order_id, account.account_id)
        book_changed(market, symbol, events)
        return events
    match(market, order, book, tick, budget, ts, events)
    return events


def _check_place(market: Market, cmd: PlaceOrder, account: Account, instrument: Instrument | None
) -> OrderRejected | None:
    if instrument is None:
        return order_rejected(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
    status = instrument.status
    tif = cmd.tif
    is_limit = cmd.type == "limit"
    if status != "trading":
        if status in ("listed", "in_offering"):
            return order_rejected(cmd, Code.NOT_TRADING, f"instrument is {status}")
        if status != "pre_open" or not is_limit or tif not in RESTING_TIFS:
            return order_rejected(cmd, Code.NOT_IN_PHASE, f"not while {status}")
    qty = cmd.qty
    if not 0 < qty <= MAX_QTY:
        return order_rejected(cmd, Code.BAD_QTY, "quantity out of range")
    if is_limit:
        if not 0 < cmd.price <= MAX_PRICE_TICKS:
            return order_rejected(cmd, Code.BAD_PRICE, "price out of range")
        if not instrument.low <= cmd.price <= instrument.high:
            return order_rejected(cmd, Code.PRICE_OUT_OF_BAND, "price beyond the band")
    elif cmd.price != 0:
        return order_rejected(cmd, Code.BAD_PRICE, "a market order has no price")
    if (cmd.expire_at or tif == "gtd") and (tif != "gtd" or cmd.expire_at <= cmd.ts):
        return order_rejected(cmd, Code.BAD_EXPIRY, "expire_at: only gtd, in the future")
    is_buy = cmd.side == "buy"
    if cmd.max_notional:
        if is_limit or not is_buy:
            return order_rejected(cmd, Code.BAD_REQUEST, "max_notional is for market buys")
        if not 0 < cmd.max_notional <= MAX_CASH:
            return order_rejected(cmd, Code.BAD_AMOUNT, "max_notional out of range")
    if not is_limit and tif in ("gtd", "day"):
        return order_rejected(cmd, Code.BAD_REQUEST, "a market order cannot be gtd or day")
    rests = is_limit and tif in RESTING_TIFS
    if cmd.post_only and not rests:
        return order_rejected(cmd, Code.BAD_REQUEST, "post_only needs a resting limit order")
    open_orders = len(account.open_orders)
    if rests and open_orders >= MAX_OPEN_ORDERS_PER_ACCOUNT:
        return order_rejected(cmd, Code.TOO_MANY_ORDERS, "too many open orders")
    if is_buy:
        available = account.cash - account.cash_held
        need = buy_hold(cmd.price, instrument.tick, qty, instrument.taker_bps) if is_limit else 1
        if need > available:
            return order_rejected(cmd, Code.INSUFFICIENT_FUNDS, "not enough available cash")
    elif qty > account.positions.get(cmd.symbol, 0) - account.units_held.get(cmd.symbol, 0):
        return order_rejected(cmd, Code.INSUFFICIENT_UNITS, "not enough available units")
    in_auction = status == "pre_open"  # nothing takes in a call auction
    if cmd.post_only and not in_auction and crosses(market.books[cmd.symbol], is_buy, cmd.price):
        return order_rejected(cmd, Code.POST_ONLY_WOULD_TAKE, "the order would take")
    return None
