"""Stop and stop-limit orders: waiting for their trigger, and what a trade reaching it starts.

A stop order is accepted with its holds placed (a stop-limit buy holds what a limit buy
would, fees.buy_hold: `price * tick * qty` and its worst-case taker fee at the rates it was
accepted with; a stop buy its `max_notional` budget, which covers its fees as a market
buy's budget does; a sell its units) and waits in its book's `StopBook`,
open but not on a level. A trade at or through its trigger (at or above it for a buy, at or
below for a sell) triggers it once the command's matching is done: then it becomes a market
order (stop) or a limit order (stop-limit) of its time in force and matches as a taker (or,
when an earlier trade of the same pass started a volatility interruption, acts as an order
entered in the call auction would). An uncross's trades trigger stops too (market_phases). The
rules are in docs/ENGINE.md, "Stop orders".
"""

from typing import Final

from exchange.domain.auction import rest_in_auction
from exchange.domain.book import Order, OrderBook
from exchange.domain.events import Event, OrderTriggered, TradeExecuted
from exchange.domain.fees import buy_hold
from exchange.domain.instruments import band_limits
from exchange.domain.market import EXPIRE_ORDER, Market
from exchange.domain.matching import NO_BUDGET, RESTING_TIFS, end_taker, fillable, match

STOP_TYPES: Final = ("stop", "stop_limit")


def wait_for_trigger(market: Market, order: Order, book: OrderBook, tick: int, budget: int
) -> None:
    """Place an accepted stop's holds and put it among its book's waiting stops."""
    account = order.account
    if order.is_buy:
        if order.type == "stop":
            order.budget = budget
            account.cash_held += budget
        else:
            account.cash_held += buy_hold(order.price, tick, order.remaining, order.taker_bps)
    else:
        held = account.units_held
        held[order.symbol] = held.get(order.symbol, 0) + order.remaining
    book.stops.add(order)
    account.open_orders[order.order_id] = order
    if order.expire_at:  # gtd: its expiry ends it while it waits too
        market.add_timer(order.expire_at, EXPIRE_ORDER, order.order_id, account.account_id)


def run_triggered(
    market: Market, book: OrderBook, tick: int, ts: int, events: list[Event], start: int
) -> None:
    """Trigger, oldest first, every waiting stop that the trades in `events[start:]` reached,
    and run each as a taker; the trades of each may trigger more. Each turn takes one stop
    out of the book's stops, so the loop ends within their number."""
    low, high = _trade_range(events, start, 0, 0)
    stops = book.stops
    for _ in range(len(stops.orders)):
        if not high:
            return
        order = stops.next_triggered(low, high)
        if order is None:
            return
        stops.remove(order)
        mark = len(events)
        _trigger(market, order, book, tick, ts, events)
        low, high = _trade_range(events, mark, low, high)


def _trade_range(events: list[Event], start: int, low: int, high: int) -> tuple[int, int]:
    """The lowest and highest trade prices among `events[start:]`, widening (low, high)."""
    for event in events[start:]:
        if type(event) is TradeExecuted:
            price = event.price
            if not high or price > high:
                high = price
            if not low or price < low:
                low = price
    return low, high


def _trigger(
    market: Market, order: Order, book: OrderBook, tick: int, ts: int, events: list[Event]
) -> None:
    """The stop becomes a market (stop) or limit (stop-limit) order and matches now."""
    account = order.account
    budget = NO_BUDGET
    if order.type == "stop":
        order.type = "market"
        if order.is_buy:  # its hold becomes its budget: released, and spent at most
            budget = order.budget
            account.cash_held -= budget
            order.budget = 0
    else:
        order.type = "limit"
    events.append(
        OrderTriggered(
            order.order_id, account.account_id, order.client_order_id, order.symbol,
            order.side, order.type, order.price, order.remaining, order.trigger_price, ts,
        )
    )
    instrument = market.instruments[order.symbol]
    if instrument.status == "pre_open":  # its own trades' band check started an interruption
        # As at entry in a call auction: a limit order of a resting tif rests; a market,
        # IOC or FOK order (which entry would refuse, NOT_IN_PHASE) expires.
        if order.type == "limit" and order.tif in RESTING_TIFS:
            rest_in_auction(market, order, book, events)
        else:
            end_taker(market, order, "expired", events)
        return
    if order.tif == "fok" and fillable(order, book, tick, budget, band_limits(instrument)) < (
        order.remaining
    ):
        end_taker(market, order, "expired", events)
        return
    match(market, order, book, tick, budget, ts, events)
