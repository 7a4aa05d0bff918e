"""Matching: a taker against the book, by price then time, settling each fill as it happens.

Owns the walk of the opposite side (`match`, and `fillable` for fill-or-kill), self-trade
prevention, the market-order budget, what becomes of a taker's remainder (rest, expire,
cancel), and ending an order that is not left resting. The book's structure is book.py.
"""

from collections import deque
from typing import TYPE_CHECKING, Final

from exchange.domain.auction import enter_call
from exchange.domain.book import DEPARTED_SLACK, Order, OrderBook
from exchange.domain.events import (
    DoneReason,
    Event,
    OrderCancelled,
    OrderRefreshed,
    TradeExecuted,
)
from exchange.domain.fees import BPS_PER_UNIT, FEE_ACCOUNT, fee_of, unit_fee_hold
from exchange.domain.limits import NS_PER_S
from exchange.domain.market import EXPIRE_ORDER, Market
from exchange.domain.replies import cancelled
from exchange.domain.settlement import release_holds

if TYPE_CHECKING:
    from exchange.domain.accounts import Account

NO_BUDGET: Final = -1  # a taker whose spending is bounded by its cash hold, not by a budget
# Times in force whose remainder rests on the book (the others expire).
RESTING_TIFS: Final = frozenset(("gtc", "gtd", "day"))


def fillable(
    taker: Order, book: OrderBook, tick: int, budget: int, band: tuple[int, int]
) -> int:
    """How much of `taker` would fill now within the price band (low, high), walking the
    book without changing it.

    Each level is replayed on a copy of its queue (account, remaining, shown, display) so an
    iceberg's refresh to the back of its level meets the others in the order match() would.
    """
    opposite = book.asks if taker.is_buy else book.bids
    is_buy, is_market, limit = taker.is_buy, taker.type == "market", taker.price
    taker_bps = taker.taker_bps
    want = taker.remaining
    filled = 0
    low, high = band
    for level in opposite.levels_best_first():
        price = level.price
        if not is_market and (price > limit if is_buy else price < limit):
            break
        if price < low or price > high:
            break
        queue: deque[tuple[Account, int, int, int]] = deque(
            (o.account, o.remaining, o.shown if o.display_qty else o.remaining, o.display_qty)
            for o in level.orders()
        )
        while queue and filled < want:
            account, left, shown, display = queue.popleft()
            if account is taker.account:
                if taker.stp != "cancel_oldest":
                    return filled
                continue
            q = min(want - filled, shown)
            if budget != NO_BUDGET:
                unit = price * tick
                q = min(q, budget // (unit + unit_fee_hold(unit, taker_bps)))
                if q == 0:
                    return filled
                budget -= q * unit + fee_of(q * unit, taker_bps)
            filled += q
            left -= q
            shown -= q
            if left and not shown:  # an iceberg refreshes at the back
                queue.append((account, left, min(display, left), display))
        if filled >= want:
            break
    return filled


def match(
    market: Market,
    taker: Order,
    book: OrderBook,
    tick: int,
    budget: int,
    ts: int,
    events: list[Event],
) -> None:
    """Trade `taker` against the book, then rest, expire or cancel what is left of it.

    The taker's holds are in place; each fill settles both accounts at once, fees
    included (each side's at its own order's rates; fees.py). The loop is bounded by the
    number of resting orders: each turn fills or removes one. A fill beyond the price band
    around the reference price (as it was when the taker came) is not made: the instrument
    goes into a volatility interruption instead.
    """
    instrument = market.instruments[taker.symbol]
    low, high = instrument.low, instrument.high
    interrupted = False
    is_buy = taker.is_buy
    opposite = book.asks if is_buy else book.bids
    keys, levels, sign = opposite.keys, opposite.levels, opposite.sign
    is_market = taker.type == "market"
    limit = taker.price
    symbol = taker.symbol
    taker_account = taker.account
    taker_id = taker.order_id
    remaining = taker.remaining
    end_reason: DoneReason | None = None
    append = events.append
    last = 0  # the price of the last trade
    taker_bps = taker.taker_bps
    # What a limit buy holds per unit: its limit's value and the worst-case fee on it.
    unit_hold = limit * tick + unit_fee_hold(limit * tick, taker_bps) if taker_bps else limit * tick
    fee_account = None  # looked up at the first fee: a market without fees never does
    while remaining and keys:
        price = keys[-1] * sign
        if not is_market and (price > limit if is_buy else price < limit):
            break
        if price < low or price > high:
            interrupted = True
            break
        level = levels[price]
        queue = level.queue
        head = level.start  # the level's first entry: what a deque's popleft would step
        while head < len(queue):
            maker = queue[head]
            if maker.level is not level:  # departed earlier (lazy deletion)
                head += 1
                continue
            maker_account = maker.account
            if maker_account is taker_account:
                stp = taker.stp
                if stp == "cancel_newest":
                    end_reason = "self_trade"
                    break
                level.start = head + 1
                end_resting(market, maker, "self_trade", events)
                queue = level.queue  # leaving may have compacted it into a new list
                head = level.start
                if stp == "cancel_both":
                    end_reason = "self_trade"
                    break
                continue
            maker_remaining = maker.remaining
            display = maker.display_qty
            avail = maker.shown if display else maker_remaining  # an iceberg trades what it shows
            q = remaining if remaining < avail else avail  # noqa: FURB136 - min() is a call on the hot path
            if budget != NO_BUDGET:
                unit = price * tick
                if taker_bps:
                    unit += unit_fee_hold(unit, taker_bps)
                affordable = budget // unit
                if affordable < q:
                    q = affordable
                    if q == 0:
                        end_reason = "expired"
                        break
            notional = price * tick * q
            # Fees, inlined (fees.fee_of): a taker fee is a charge, rounded up.
            taker_fee = -(-notional * taker_bps // BPS_PER_UNIT) if taker_bps else 0
            if budget != NO_BUDGET:
                budget -= notional + taker_fee
            if is_buy:
                buyer, seller = taker_account, maker_account
                if not is_market:
                    buyer.cash_held -= unit_hold * q
                seller.cash += notional
                buyer.cash -= notional
            else:
                buyer, seller = maker_account, taker_account
                maker_taker_bps = maker.taker_bps  # its hold's fee rate
                if maker_taker_bps:  # inlined fees.unit_fee_hold: its unit fee at its price
                    buyer.cash_held -= notional + q * -(
                        -price * tick * maker_taker_bps // BPS_PER_UNIT
                    )
                else:
                    buyer.cash_held -= notional
                buyer.cash -= notional
                seller.cash += notional
            maker_bps = maker.maker_bps
            maker_fee = 0
            if maker_bps or taker_fee:
                if maker_bps > 0:  # inlined fees.fee_of: a charge rounded up
                    maker_fee = -(-notional * maker_bps // BPS_PER_UNIT)
                elif maker_bps:  # a rebate rounded down, paid only out of this fill's taker fee
                    maker_fee = -(notional * -maker_bps // BPS_PER_UNIT)
                    if maker_fee < -taker_fee:  # noqa: PLR1730 - max() is a call on the hot path
                        maker_fee = -taker_fee
                taker_account.cash -= taker_fee
                maker_account.cash -= maker_fee
                if fee_account is None:
                    fee_account = market.accounts[FEE_ACCOUNT]
                fee_account.cash += taker_fee + maker_fee
            positions = buyer.positions
            positions[symbol] = positions.get(symbol, 0) + q
            seller.positions[symbol] -= q
            seller.units_held[symbol] -= q
            remaining -= q
            maker_remaining -= q
            maker.remaining = maker_remaining
            level.total -= q
            last = price
            trade_id = market.next_trade
            market.next_trade = trade_id + 1
            append(
                TradeExecuted(
                    trade_id, symbol, price, q, taker.side, maker.order_id,
                    maker_account.account_id, maker_remaining, taker_id,
                    taker_account.account_id, remaining, ts, maker_fee, taker_fee,
                )
            )
            if display:
                shown = maker.shown = avail - q
                if not shown and maker_remaining:
                    # The shown part is used up: show the next part, at the back of the level.
                    shown = maker.shown = min(maker_remaining, display)
                    level.total += shown
                    head += 1
                    queue.append(maker)
                    append(
                        OrderRefreshed(
                            maker.order_id, maker_account.account_id, symbol, maker.side,
                            price, shown, maker_remaining,
                        )
                    )
                    if not remaining:
                        break
                    continue
            if maker_remaining:
                break  # the taker is done: only a filled maker lets it go on
            head += 1
            maker.level = None
            level.live -= 1
            maker.status = "filled"
            del maker_account.open_orders[maker.order_id]
            if not remaining:
                break
        if not level.live:
            opposite.drop_level(price)
        elif head > DEPARTED_SLACK and 2 * head > len(queue):  # the taken head: let it go
            del queue[:head]
            level.start = 0
        else:
            level.start = head
        if end_reason:
            break
    taker.remaining = remaining
    if last:
        book.last_price = last
        if instrument.band_pct:
            instrument.reprice(last, instrument.band_pct)
        else:  # no band to move with it (the hot path: no call)
            instrument.ref = last
    if not remaining:
        taker.status = "filled"
        taker_account.open_orders.pop(taker_id, None)
    elif end_reason or is_market or taker.tif not in RESTING_TIFS:
        # Inlined _end_taker: an IOC remainder expiring is the common case.
        if is_buy:
            if not is_market:
                taker_account.cash_held -= unit_hold * remaining
        else:
            taker_account.units_held[symbol] -= remaining
        reason: DoneReason = end_reason or "expired"
        taker.status = reason
        taker_account.open_orders.pop(taker_id, None)
        append(
            OrderCancelled(
                taker_id, taker_account.account_id, taker.client_order_id, symbol,
                taker.side, limit, remaining, reason,
            )
        )
    else:
        own_side = book.bids if is_buy else book.asks
        own_level = own_side.levels.get(limit)
        if own_level is None:
            own_level = own_side.add_level(limit)
        display = taker.display_qty
        if display:
            taker.shown = min(remaining, display)
        own_level.append(taker)
        taker_account.open_orders[taker_id] = taker
        if taker.expire_at:
            market.add_timer(taker.expire_at, EXPIRE_ORDER, taker_id, taker_account.account_id)
    if interrupted:
        open_at = ts + instrument.interruption_s * NS_PER_S
        enter_call(market, instrument, open_at, "volatility", events)


def end_taker(market: Market, order: Order, reason: DoneReason, events: list[Event]) -> None:
    """End an order that is not resting (a taker's remainder)."""
    release_holds(market, order)
    order.status = reason
    order.account.open_orders.pop(order.order_id, None)
    events.append(cancelled(order, reason))


def end_resting(market: Market, order: Order, reason: DoneReason, events: list[Event]) -> None:
    """Take a resting order off the book (keeping its level for the caller to drop)."""
    level = order.level
    assert level is not None, "only resting orders end this way"
    level.leave(order)
    end_taker(market, order, reason, events)


def crosses(book: OrderBook, is_buy: bool, price: int) -> bool:
    """Would a limit order at `price` meet a resting order of the other side?"""
    if is_buy:
        best_ask = book.asks.best_price()
        return best_ask is not None and price >= best_ask
    best_bid = book.bids.best_price()
    return best_bid is not None and price <= best_bid
