"""Order entry: PlaceOrder's checks (order types, time in force, post-only, limits, funds,
the market phase and price band), the answer to a resent client order id, fill-or-kill, and
the holds placed before matching (or before resting in a call auction).
"""

from msgspec.structs import astuple

from exchange.domain.accounts import Account
from exchange.domain.auction import rest_in_auction
from exchange.domain.book import Order
from exchange.domain.client_orders import answer_resend, remember
from exchange.domain.codes import RejectCode as Code
from exchange.domain.commands import OrderType, PlaceOrder, SelfTradePrevention, Side, TimeInForce
from exchange.domain.events import Event, OrderAccepted, OrderRejected
from exchange.domain.fees import buy_hold
from exchange.domain.instruments import Instrument, band_limits
from exchange.domain.limits import MAX_CASH, MAX_OPEN_ORDERS_PER_ACCOUNT, MAX_PRICE_TICKS, MAX_QTY
from exchange.domain.market import Market
from exchange.domain.matching import NO_BUDGET, RESTING_TIFS, crosses, fillable, match
from exchange.domain.replies import cancelled, order_rejected
from exchange.domain.stops import STOP_TYPES, run_triggered, wait_for_trigger


def place_order(market: Market, cmd: PlaceOrder) -> list[Event]:
    # Every field at once, in one C call: the compiled core reads a Struct's attribute
    # through Python's generic look-up, and a place needs most of its fields, some twice.
    ts: int
    account_id: str
    cid: str
    symbol: str
    side: Side
    type_: OrderType
    price: int
    qty: int
    tif: TimeInForce
    post_only: bool
    stp: SelfTradePrevention
    max_notional: int
    expire_at: int
    trigger: int
    display: int
    (
        ts, account_id, cid, symbol, side, type_, price, qty, tif, post_only, stp, max_notional,
        expire_at, trigger, display,
    ) = astuple(cmd)  # PlaceOrder's field order (its array form in the journal)
    account = market.accounts.get(account_id)
    if account is None:
        return [order_rejected(cmd, Code.UNKNOWN_ACCOUNT, "no such account")]
    if cid:
        record = account.client_orders.get(cid)
        if record is not None:
            return [answer_resend(cmd, record)]
    instrument = market.instruments.get(symbol)
    is_buy = side == "buy"
    # What a limit buy holds: its value and, with a taker rate, its worst-case fees (worked
    # out once: the guard below checks it, resting or matching holds it).
    hold = 0
    if is_buy and instrument is not None:
        taker_bps = instrument.taker_bps
        unit = instrument.tick
        hold = buy_hold(price, unit, qty, taker_bps) if taker_bps else price * unit * qty
    # The common order (a plain limit order that passes every check) skips _check_place:
    # this guard implies each of its checks passes, and anything else takes the full path.
    if not (
        instrument is not None
        and instrument.status == "trading"
        and type_ == "limit"
        and not post_only
        and not max_notional
        and not trigger
        and not display
        and not expire_at
        and tif != "gtd"
        and instrument.low <= price <= instrument.high
        and 0 < qty <= MAX_QTY
        and 0 < price <= MAX_PRICE_TICKS
        and len(account.open_orders) < MAX_OPEN_ORDERS_PER_ACCOUNT
        and (
            hold <= account.cash - account.cash_held
            if is_buy
            else qty <= account.positions.get(symbol, 0) - account.units_held.get(symbol, 0)
        )
    ):
        refusal = _check_place(market, cmd, account, instrument)
        if refusal is not None:
            if cid:
                remember(account, cid, (cmd, refusal))
            return [refusal]
    assert instrument is not None  # _check_place refused an unknown symbol

    order_id = market.next_order
    market.next_order = order_id + 1
    tick = instrument.tick
    order = Order(
        order_id, account, cid, symbol, side, is_buy, type_, tif, price, qty, qty,
        post_only, stp, ts, maker_bps=instrument.maker_bps, taker_bps=instrument.taker_bps,
        expire_at=expire_at,
    )
    if cid:
        order.place = cmd
        remember(account, cid, order)
    events: list[Event] = [
        OrderAccepted(
            order_id, account.account_id, cid, symbol, side, type_, tif, price, qty, qty,
            "open", post_only, ts, False, expire_at, trigger, display,
            max_notional if type_ == "stop" else 0,
        )
    ]
    book = market.books[symbol]
    if trigger or display:
        order.trigger_price, order.display_qty = trigger, display
        if trigger:
            wait_for_trigger(market, order, book, tick, max_notional)
            return events
    if tif == "gtc" and type_ == "limit" and not display and instrument.status == "trading":
        opposite = book.asks if is_buy else book.bids
        keys = opposite.keys
        # keys hold price * sign, best last: a buy meets asks at -keys[-1] <= price.
        if not keys or keys[-1] < (-price if is_buy else price):
            # Nothing to meet (the best opposite price is beyond the limit): it rests, as
            # match() would rest it, without walking anything.
            if is_buy:
                account.cash_held += hold
            else:
                held = account.units_held
                held[symbol] = held.get(symbol, 0) + qty
            own_side = book.bids if is_buy else book.asks
            level = own_side.levels.get(price)
            if level is None:
                level = own_side.add_level(price)
            order.level = level
            level.queue.append(order)
            level.live += 1
            level.total += qty
            account.open_orders[order_id] = order
            return events
    budget = NO_BUDGET
    if type_ == "market" and is_buy:
        budget = account.cash - account.cash_held
        if max_notional and max_notional < budget:
            budget = max_notional
    if tif == "fok" and fillable(order, book, tick, budget, band_limits(instrument)) < qty:
        order.status = "expired"
        events.append(cancelled(order, "expired"))
        return events
    # Hold what the order may spend (its worst-case fees too) or deliver; matching draws
    # these holds down.
    if is_buy:
        if budget == NO_BUDGET:
            account.cash_held += hold
    else:
        held = account.units_held
        held[symbol] = held.get(symbol, 0) + qty
    if instrument.status == "pre_open":  # a call auction: rest, match nothing
        rest_in_auction(market, order, book, events)
        return events
    start = len(events)
    match(market, order, book, tick, budget, ts, events)
    if book.stops.orders:
        run_triggered(market, book, tick, ts, events, start)
    return events


def _check_place(market: Market, cmd: PlaceOrder, account: Account, instrument: Instrument | None
) -> OrderRejected | None:
    if instrument is None:
        return order_rejected(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
    status = instrument.status
    tif = cmd.tif
    type_ = cmd.type
    is_limit = type_ == "limit"
    priced = is_limit or type_ == "stop_limit"
    is_stop = type_ in STOP_TYPES
    if status != "trading":
        if status in ("listed", "in_offering"):
            return order_rejected(cmd, Code.NOT_TRADING, f"instrument is {status}")
        # A call auction takes orders that rest and stops (they wait for a trade).
        if status != "pre_open" or not (is_stop or (is_limit and tif in RESTING_TIFS)):
            return order_rejected(cmd, Code.NOT_IN_PHASE, f"not while {status}")
    qty = cmd.qty
    if not 0 < qty <= MAX_QTY:
        return order_rejected(cmd, Code.BAD_QTY, "quantity out of range")
    if priced:
        if not 0 < cmd.price <= MAX_PRICE_TICKS:
            return order_rejected(cmd, Code.BAD_PRICE, "price out of range")
        if not instrument.low <= cmd.price <= instrument.high:
            return order_rejected(cmd, Code.PRICE_OUT_OF_BAND, "price beyond the band")
    elif cmd.price != 0:
        return order_rejected(cmd, Code.BAD_PRICE, f"a {type_} order has no price")
    if (cmd.expire_at or tif == "gtd") and (tif != "gtd" or cmd.expire_at <= cmd.ts):
        return order_rejected(cmd, Code.BAD_EXPIRY, "expire_at: only gtd, in the future")
    is_buy = cmd.side == "buy"
    trigger_refusal = _check_trigger(market, cmd, is_stop, is_buy)
    if trigger_refusal is not None:
        return trigger_refusal
    if cmd.max_notional:
        if not (is_buy and type_ in ("market", "stop")):
            return order_rejected(
                cmd, Code.BAD_REQUEST, "max_notional is for market and stop buys"
            )
        if not 0 < cmd.max_notional <= MAX_CASH:
            return order_rejected(cmd, Code.BAD_AMOUNT, "max_notional out of range")
    elif is_buy and type_ == "stop":
        return order_rejected(
            cmd, Code.BAD_REQUEST, "a stop buy needs max_notional: its budget, held from entry"
        )
    if type_ == "market" and tif in ("gtd", "day"):
        return order_rejected(cmd, Code.BAD_REQUEST, "a market order cannot be gtd or day")
    rests = is_limit and tif in RESTING_TIFS
    if cmd.post_only and not rests:
        return order_rejected(cmd, Code.BAD_REQUEST, "post_only needs a resting limit order")
    if cmd.display_qty:
        if not (priced and tif in RESTING_TIFS):
            return order_rejected(
                cmd, Code.BAD_REQUEST, "display_qty needs a gtc, gtd or day limit or stop_limit"
            )
        if cmd.display_qty > qty:
            return order_rejected(cmd, Code.BAD_QTY, "display_qty must be at most qty")
    open_orders = len(account.open_orders)
    if (is_stop or rests) and open_orders >= MAX_OPEN_ORDERS_PER_ACCOUNT:
        return order_rejected(cmd, Code.TOO_MANY_ORDERS, "too many open orders")
    if is_buy:
        available = account.cash - account.cash_held
        if priced:  # a limit or stop-limit buy: its value and its worst-case fees
            need = buy_hold(cmd.price, instrument.tick, qty, instrument.taker_bps)
        else:  # a stop buy holds its budget; a market buy needs some cash
            need = cmd.max_notional if is_stop else 1
        if need > available:
            return order_rejected(cmd, Code.INSUFFICIENT_FUNDS, "not enough available cash")
    elif qty > account.positions.get(cmd.symbol, 0) - account.units_held.get(cmd.symbol, 0):
        return order_rejected(cmd, Code.INSUFFICIENT_UNITS, "not enough available units")
    in_auction = status == "pre_open"  # nothing takes in a call auction
    if cmd.post_only and not in_auction and crosses(market.books[cmd.symbol], is_buy, cmd.price):
        return order_rejected(cmd, Code.POST_ONLY_WOULD_TAKE, "the order would take")
    return None


def _check_trigger(market: Market, cmd: PlaceOrder, is_stop: bool, is_buy: bool
) -> OrderRejected | None:
    """BAD_TRIGGER: a stop without a trigger in range, a trigger on another type, or one the
    last trade has already reached (a buy's at or below it, a sell's at or above it)."""
    trigger = cmd.trigger_price
    if not is_stop:
        if trigger:
            return order_rejected(cmd, Code.BAD_TRIGGER, "only stop orders have a trigger_price")
        return None
    if not 0 < trigger <= MAX_PRICE_TICKS:
        return order_rejected(cmd, Code.BAD_TRIGGER, "a stop order needs a trigger_price")
    last = market.books[cmd.symbol].last_price
    if last and (trigger <= last if is_buy else trigger >= last):
        side = "at or below" if is_buy else "at or above"
        return order_rejected(
            cmd, Code.BAD_TRIGGER, f"the last trade ({last} ticks) is already {side} the trigger"
        )
    return None
