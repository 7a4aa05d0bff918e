"""A deliberately naive reference model of docs/ENGINE.md, for differential tests.

It owns nothing but a second, independent reading of the rule book: the same commands in,
the same event structs out, with no speed tricks. The book is a plain list of resting order
records, the best order is found by sorting on every look-up, and every hold is recomputed
from the resting orders and open offerings each time it is needed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction

import msgspec

from exchange.domain.codes import RejectCode
from exchange.domain.commands import (
    KEEP,
    AddApiKey,
    CancelAll,
    CancelOrder,
    CloseOffering,
    Command,
    CreateAccount,
    DepositCash,
    DepositUnits,
    ListInstrument,
    OpenOffering,
    PlaceOrder,
    ReplaceOrder,
    SelfTradePrevention,
    SetInstrumentFees,
    SetInstrumentStatus,
    SetTradingRules,
    Side,
    SubscribeOffering,
    Timer,
    Uncross,
    WithdrawCash,
    WithdrawUnits,
)
from exchange.domain.events import (
    AccountCreated,
    ApiKeyAdded,
    AuctionIndicative,
    AuctionUncrossed,
    CashDeposited,
    CashWithdrawn,
    DoneReason,
    Event,
    InstrumentFeesSet,
    InstrumentListed,
    InstrumentStatus,
    InstrumentStatusChanged,
    OfferingClosed,
    OfferingOpened,
    OfferingSubscribed,
    OfferingUnderwritten,
    OrderAccepted,
    OrderCancelled,
    OrderRefreshed,
    OrderRejected,
    OrderReplaced,
    OrderStatus,
    OrderTriggered,
    Rejected,
    TradeExecuted,
    TradingRulesSet,
    UnitsAllocated,
    UnitsDeposited,
    UnitsWithdrawn,
)
from exchange.domain.limits import (
    DEFAULT_INTERRUPTION_S,
    MAX_BAND_PCT,
    MAX_CASH,
    MAX_INTERRUPTION_S,
    MAX_OFFERING_FEE_BPS,
    MAX_OFFERING_QTY,
    MAX_OPEN_ORDERS_PER_ACCOUNT,
    MAX_PRICE_TICKS,
    MAX_QTY,
    MAX_TICK,
    MAX_TRADE_FEE_BPS,
    NS_PER_S,
    SYMBOL_PATTERN,
)

RESTING_TIFS = ("gtc", "gtd", "day")
FEE_ACCOUNT = "FEES"  # docs/ENGINE.md, "Fees"


def _charge(value: int, bps: int) -> int:
    """A fee by the rule book with exact fractions: a charge rounded up, a rebate down."""
    exact = Fraction(value * bps, 10_000)
    return math.ceil(exact) if bps >= 0 else -math.floor(-exact)

Book = tuple[list[tuple[int, int]], list[tuple[int, int]]]
STOP_TYPES = ("stop", "stop_limit")
RestingRow = tuple[int, str, str, int, int]
Balances = tuple[int, int, dict[str, int], dict[str, int]]


class _Refusal(Exception):  # noqa: N818 - a control-flow signal, not an error condition
    """Raised by a check; `apply` turns it into the single rejection event."""

    def __init__(self, code: RejectCode) -> None:
        super().__init__(code.value)
        self.code = code


@dataclass
class _Account:
    account_id: str
    cash: int = 0
    positions: dict[str, int] = field(default_factory=dict)


@dataclass
class _Instrument:
    symbol: str
    tick: int
    issuer: str
    status: InstrumentStatus
    ref: int = 0
    band_pct: int = 0
    interruption_s: int = DEFAULT_INTERRUPTION_S
    open_at: int = 0
    close_at: int = 0
    maker_bps: int = 0
    taker_bps: int = 0


@dataclass(eq=False)
class _Order:
    order_id: int
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: str
    tif: str
    price: int
    qty: int
    remaining: int
    stp: SelfTradePrevention
    post_only: bool
    status: OrderStatus
    accepted: OrderAccepted
    arrival: int = 0
    expire_at: int = 0
    # Issue 16: a stop's trigger, an iceberg's display size and what it shows now, and a
    # stop buy's budget (held while it waits).
    trigger_price: int = 0
    display_qty: int = 0
    shown: int = 0
    budget: int = 0
    # The instrument's fee rates when it was accepted (a stop keeps them once triggered).
    maker_bps: int = 0
    taker_bps: int = 0

    @property
    def waiting(self) -> bool:
        return self.type in STOP_TYPES

    @property
    def visible(self) -> int:
        return self.shown if self.display_qty else self.remaining


@dataclass
class _Sim:
    """A maker as fill-or-kill's dry run sees it."""

    price: int
    arrival: int
    account: str
    remaining: int
    shown: int
    display: int


@dataclass
class _Offering:
    offering_id: int
    symbol: str
    price: int
    qty: int
    closes_at: int
    closed: bool = False
    underwriter: str = ""
    fee_bps: int = 0
    commitment: str = "best_efforts"
    # [account, total requested], in the order of each account's first subscription.
    entries: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class _ClientIdMemory:
    """What the first place with a client order id was, and what it got."""

    command: PlaceOrder
    order_id: int = 0
    rejection: OrderRejected | None = None


def _strip_ts(command: PlaceOrder) -> PlaceOrder:
    return msgspec.structs.replace(command, ts=0)


class ReferenceModel:
    """The rule book, executed slowly and plainly."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self._instruments: dict[str, _Instrument] = {}
        self._orders: dict[int, _Order] = {}
        self._book: list[_Order] = []
        self._stops: list[_Order] = []  # stop orders waiting for their trigger
        self._last_price: dict[str, int] = {}  # the last trade's price per symbol
        self._offerings: dict[int, _Offering] = {}
        self._client_ids: dict[tuple[str, str], _ClientIdMemory] = {}
        self._next_account = 1
        self._next_order = 1
        self._next_trade = 1
        self._next_offering = 1
        self._next_arrival = 1

    # --- read accessors --------------------------------------------------------------------

    def book(self, symbol: str) -> Book:
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        for order in self._sorted_side(symbol, "buy"):
            if bids and bids[-1][0] == order.price:
                bids[-1] = (order.price, bids[-1][1] + order.visible)
            else:
                bids.append((order.price, order.visible))
        for order in self._sorted_side(symbol, "sell"):
            if asks and asks[-1][0] == order.price:
                asks[-1] = (order.price, asks[-1][1] + order.visible)
            else:
                asks.append((order.price, order.visible))
        return bids, asks

    def resting(self, symbol: str) -> list[RestingRow]:
        return [
            (o.order_id, o.account, o.side, o.price, o.remaining)
            for o in self._sorted_side(symbol, "buy") + self._sorted_side(symbol, "sell")
        ]

    def balances(self, account: str) -> Balances:
        acct = self._accounts[account]
        positions = {s: q for s, q in acct.positions.items() if q != 0}
        held = {s: self._units_held(account, s) for s in self._instruments}
        return acct.cash, self._cash_held(account), positions, {s: q for s, q in held.items() if q}

    def accounts(self) -> list[str]:
        return list(self._accounts)

    def symbols(self) -> list[str]:
        return list(self._instruments)

    # --- derived state ---------------------------------------------------------------------

    def _sorted_side(self, symbol: str, side: Side) -> list[_Order]:
        orders = [o for o in self._book if o.symbol == symbol and o.side == side]
        if side == "buy":
            return sorted(orders, key=lambda o: (-o.price, o.arrival))
        return sorted(orders, key=lambda o: (o.price, o.arrival))

    def _tick(self, symbol: str) -> int:
        return self._instruments[symbol].tick

    def _unit_buy_hold(self, price: int, tick: int, taker_bps: int) -> int:
        """One unit's value and its taker fee at `price`: what a buy holds per unit."""
        return price * tick + _charge(price * tick, taker_bps)

    def _cash_held(self, account: str) -> int:
        held = 0
        for o in self._book + self._stops:
            if o.account == account and o.side == "buy":
                tick = self._tick(o.symbol)
                held += o.budget if o.type == "stop" else (
                    o.remaining * self._unit_buy_hold(o.price, tick, o.taker_bps)
                )
        for off in self._offerings.values():
            if off.closed:
                continue
            if off.commitment == "firm" and off.underwriter == account:
                held += off.price * self._tick(off.symbol) * off.qty
            for who, qty in off.entries:
                if who == account:
                    held += off.price * self._tick(off.symbol) * qty
        return held

    def _units_held(self, account: str, symbol: str) -> int:
        return sum(
            o.remaining
            for o in self._book + self._stops
            if o.account == account and o.symbol == symbol and o.side == "sell"
        )

    def _available_cash(self, account: str) -> int:
        return self._accounts[account].cash - self._cash_held(account)

    def _available_units(self, account: str, symbol: str) -> int:
        position = self._accounts[account].positions.get(symbol, 0)
        return position - self._units_held(account, symbol)

    def _best(self, symbol: str, side: Side) -> _Order | None:
        orders = self._sorted_side(symbol, side)
        return orders[0] if orders else None

    def _crosses(self, side: Side, price: int, symbol: str) -> bool:
        """Would a limit order at `price` meet the other side's best order?"""
        if side == "buy":
            ask = self._best(symbol, "sell")
            return ask is not None and price >= ask.price
        bid = self._best(symbol, "buy")
        return bid is not None and price <= bid.price

    # --- dispatch --------------------------------------------------------------------------

    def apply(self, command: Command) -> list[Event]:
        try:
            return self._dispatch(command)
        except _Refusal as refusal:
            return [self._rejection(command, refusal.code)]

    def _rejection(self, command: Command, code: RejectCode) -> Event:
        message = f"{code.value.lower()}"
        if isinstance(command, PlaceOrder):
            rejected = OrderRejected(
                account=command.account,
                code=code.value,
                message=message,
                client_order_id=command.client_order_id,
            )
            if command.client_order_id and code not in (
                RejectCode.UNKNOWN_ACCOUNT,
                RejectCode.DUPLICATE_CLIENT_ORDER_ID,
            ):
                self._client_ids[(command.account, command.client_order_id)] = (
                    _ClientIdMemory(command=_strip_ts(command), rejection=rejected)
                )
            return rejected
        if isinstance(command, CancelOrder):
            return OrderRejected(
                account=command.account,
                code=code.value,
                message=message,
                client_order_id=command.client_order_id,
                order_id=command.order_id,
            )
        if isinstance(command, ReplaceOrder):
            return OrderRejected(
                account=command.account, code=code.value, message=message,
                order_id=command.order_id,
            )
        if isinstance(command, CancelAll):
            return OrderRejected(account=command.account, code=code.value, message=message)
        account = getattr(command, "account", "")
        return Rejected(
            command=type(command).__name__, code=code.value, message=message, account=account
        )

    def _dispatch(self, command: Command) -> list[Event]:
        if isinstance(command, CreateAccount):
            return self._create_account(command)
        if isinstance(command, AddApiKey):
            self._need_account(command.account)
            return [ApiKeyAdded(account=command.account, api_key_hash=command.api_key_hash)]
        if isinstance(command, DepositCash | WithdrawCash):
            return self._move_cash(command)
        if isinstance(command, DepositUnits | WithdrawUnits):
            return self._move_units(command)
        if isinstance(command, ListInstrument):
            return self._list(command)
        if isinstance(command, SetInstrumentStatus):
            return self._set_status(command)
        if isinstance(command, OpenOffering):
            return self._open_offering(command)
        if isinstance(command, SubscribeOffering):
            return self._subscribe(command)
        if isinstance(command, CloseOffering):
            return self._close_offering(command)
        if isinstance(command, PlaceOrder):
            return self._place(command)
        if isinstance(command, CancelOrder):
            return self._cancel(command)
        if isinstance(command, CancelAll):
            return self._cancel_all(command)
        if isinstance(command, SetTradingRules):
            return self._set_rules(command)
        if isinstance(command, Uncross):
            inst = self._need_symbol(command.symbol)
            if inst.status != "pre_open":
                raise _Refusal(RejectCode.NOT_IN_PHASE)
            return self._uncross_and_stops(inst, command.ts, "")
        if isinstance(command, Timer):
            return self._timer(command.ts)
        if isinstance(command, SetInstrumentFees):
            return self._set_fees(command)
        return self._replace(command)

    def _need_account(self, account: str) -> _Account:
        if account not in self._accounts:
            raise _Refusal(RejectCode.UNKNOWN_ACCOUNT)
        return self._accounts[account]

    def _need_symbol(self, symbol: str) -> _Instrument:
        if symbol not in self._instruments:
            raise _Refusal(RejectCode.UNKNOWN_SYMBOL)
        return self._instruments[symbol]

    # --- accounts and money ----------------------------------------------------------------

    def _create_account(self, command: CreateAccount) -> list[Event]:
        account_id = f"A{self._next_account}"
        self._next_account += 1
        self._accounts[account_id] = _Account(account_id=account_id)
        return [
            AccountCreated(
                account=account_id, name=command.name, api_key_hash=command.api_key_hash
            )
        ]

    def _move_cash(self, command: DepositCash | WithdrawCash) -> list[Event]:
        acct = self._need_account(command.account)
        if command.amount <= 0 or command.amount > MAX_CASH:
            raise _Refusal(RejectCode.BAD_AMOUNT)
        if isinstance(command, DepositCash):
            acct.cash += command.amount
            return [CashDeposited(account=acct.account_id, amount=command.amount,
                                  balance=acct.cash)]
        if command.amount > self._available_cash(acct.account_id):
            raise _Refusal(RejectCode.INSUFFICIENT_FUNDS)
        acct.cash -= command.amount
        return [CashWithdrawn(account=acct.account_id, amount=command.amount, balance=acct.cash)]

    def _move_units(self, command: DepositUnits | WithdrawUnits) -> list[Event]:
        acct = self._need_account(command.account)
        self._need_symbol(command.symbol)
        if command.qty <= 0 or command.qty > MAX_QTY:
            raise _Refusal(RejectCode.BAD_QTY)
        symbol = command.symbol
        if isinstance(command, DepositUnits):
            acct.positions[symbol] = acct.positions.get(symbol, 0) + command.qty
            return [UnitsDeposited(account=acct.account_id, symbol=symbol, qty=command.qty,
                                   position=acct.positions[symbol])]
        if command.qty > self._available_units(acct.account_id, symbol):
            raise _Refusal(RejectCode.INSUFFICIENT_UNITS)
        acct.positions[symbol] = acct.positions.get(symbol, 0) - command.qty
        return [UnitsWithdrawn(account=acct.account_id, symbol=symbol, qty=command.qty,
                               position=acct.positions[symbol])]

    # --- instruments and offerings ---------------------------------------------------------

    def _list(self, command: ListInstrument) -> list[Event]:
        if not re.fullmatch(SYMBOL_PATTERN, command.symbol):
            raise _Refusal(RejectCode.BAD_SYMBOL)
        if command.symbol in self._instruments:
            raise _Refusal(RejectCode.DUPLICATE_SYMBOL)
        self._need_account(command.issuer)
        if command.tick <= 0 or command.tick > MAX_TICK:
            raise _Refusal(RejectCode.BAD_TICK_SIZE)
        self._check_fees(command.maker_bps, command.taker_bps)
        events = self._fee_account_for(command.maker_bps, command.taker_bps)
        self._instruments[command.symbol] = _Instrument(
            symbol=command.symbol, tick=command.tick, issuer=command.issuer, status="listed",
            maker_bps=command.maker_bps, taker_bps=command.taker_bps,
        )
        events.append(InstrumentListed(symbol=command.symbol, kind=command.kind,
                                       tick=command.tick, issuer=command.issuer,
                                       maker_bps=command.maker_bps,
                                       taker_bps=command.taker_bps))
        return events

    def _check_fees(self, maker_bps: int, taker_bps: int) -> None:
        if taker_bps < 0 or taker_bps > MAX_TRADE_FEE_BPS:
            raise _Refusal(RejectCode.BAD_FEE)
        if maker_bps > taker_bps or maker_bps < -taker_bps:
            raise _Refusal(RejectCode.BAD_FEE)

    def _fee_account_for(self, maker_bps: int, taker_bps: int) -> list[Event]:
        """The fee account comes into being with the first non-zero rate."""
        if (maker_bps == 0 and taker_bps == 0) or FEE_ACCOUNT in self._accounts:
            return []
        self._accounts[FEE_ACCOUNT] = _Account(account_id=FEE_ACCOUNT)
        return [AccountCreated(account=FEE_ACCOUNT, name="exchange fees", api_key_hash="")]

    def _set_fees(self, command: SetInstrumentFees) -> list[Event]:
        inst = self._need_symbol(command.symbol)
        self._check_fees(command.maker_bps, command.taker_bps)
        events = self._fee_account_for(command.maker_bps, command.taker_bps)
        inst.maker_bps, inst.taker_bps = command.maker_bps, command.taker_bps
        events.append(InstrumentFeesSet(symbol=inst.symbol, maker_bps=command.maker_bps,
                                        taker_bps=command.taker_bps))
        return events

    def _set_status(self, command: SetInstrumentStatus) -> list[Event]:
        inst = self._need_symbol(command.symbol)
        now, to = inst.status, command.status
        refused = {
            ("listed", "halted"), ("listed", "closed"), ("closed", "halted"),
            ("pre_open", "pre_open"),
        }
        if now == "in_offering" or (now, to) in refused:
            raise _Refusal(RejectCode.BAD_STATUS)
        if to == "closed":
            return self._close_session(inst, "")
        if to == "halted":
            inst.status = "halted"
            return [InstrumentStatusChanged(symbol=inst.symbol, status="halted")]
        if now == "pre_open":
            return self._uncross_and_stops(inst, command.ts, "")
        if now == "halted":
            open_at = inst.open_at
            if open_at <= command.ts:
                open_at = command.ts + inst.interruption_s * NS_PER_S
            return self._enter_call(inst, open_at, "resume")
        if to == "pre_open" or now == "closed":
            return self._enter_call(inst, inst.open_at, "")
        inst.status = "trading"
        return [InstrumentStatusChanged(symbol=inst.symbol, status="trading")]

    # --- market phases ----------------------------------------------------------------------

    def _in_band(self, inst: _Instrument, price: int) -> bool:
        if not inst.ref or not inst.band_pct:
            return True
        return (
            inst.ref * (100 - inst.band_pct) <= price * 100 <= inst.ref * (100 + inst.band_pct)
        )

    def _indicative(self, symbol: str) -> AuctionIndicative:
        """Brute force: every price from the lowest to the highest limit in the book, and
        the reference price; volumes summed order by order."""
        resting = [o for o in self._book if o.symbol == symbol]
        ref = self._instruments[symbol].ref
        best: tuple[int, int, int, int] | None = None
        net = 0
        if resting:
            prices = [o.price for o in resting]
            for price in [*range(min(prices), max(prices) + 1), ref]:
                demand = sum(o.remaining for o in resting if o.side == "buy" and o.price >= price)
                supply = sum(o.remaining for o in resting if o.side == "sell" and o.price <= price)
                key = (-min(demand, supply), abs(demand - supply), abs(price - ref), price)
                if best is None or key < best:
                    best, net = key, demand - supply
        if best is None or best[0] == 0:
            return AuctionIndicative(symbol, 0, 0, "", 0)
        side = "buy" if net > 0 else "sell" if net < 0 else ""
        return AuctionIndicative(symbol, best[3], -best[0], side, abs(net))

    def _book_changed(self, symbol: str) -> list[Event]:
        if self._instruments[symbol].status == "pre_open":
            return [self._indicative(symbol)]
        return []

    def _enter_call(self, inst: _Instrument, open_at: int, reason: str) -> list[Event]:
        inst.status = "pre_open"
        inst.open_at = open_at
        return [
            InstrumentStatusChanged(inst.symbol, "pre_open", open_at, reason),
            self._indicative(inst.symbol),
        ]

    def _uncross(self, inst: _Instrument, ts: int, reason: str) -> list[Event]:
        symbol = inst.symbol
        found = self._indicative(symbol)
        events: list[Event] = []
        if found.qty:
            price, volume = found.price, found.qty
            events.append(AuctionUncrossed(symbol, price, volume))
            bids = [o for o in self._sorted_side(symbol, "buy") if o.price >= price]
            asks = [o for o in self._sorted_side(symbol, "sell") if o.price <= price]
            tick = inst.tick
            used_up: list[_Order] = []  # icebergs whose shown part ran out, in that order
            while volume:
                bid, ask = bids[0], asks[0]
                q = min(volume, bid.remaining, ask.remaining)  # hidden quantity trades too
                for order in (bid, ask):
                    if order.display_qty and order.shown:  # the shown part goes first
                        order.shown -= min(q, order.shown)
                        if not order.shown:
                            used_up.append(order)
                value = price * tick * q
                buyer, seller = self._accounts[bid.account], self._accounts[ask.account]
                buyer.cash -= value
                seller.cash += value
                buyer.positions[symbol] = buyer.positions.get(symbol, 0) + q
                seller.positions[symbol] = seller.positions.get(symbol, 0) - q
                bid.remaining -= q
                ask.remaining -= q
                # Neither took liquidity: the older order is the maker (and pays or gets
                # its maker rate), the newer the taker (its taker rate).
                maker, taker = sorted((bid, ask), key=lambda o: o.order_id)
                maker_fee, taker_fee = self._pay_fees(taker, maker, value)
                events.append(TradeExecuted(
                    trade_id=self._next_trade, symbol=symbol, price=price, qty=q,
                    aggressor=taker.side, maker_order_id=maker.order_id,
                    maker_account=maker.account, maker_remaining=maker.remaining,
                    taker_order_id=taker.order_id, taker_account=taker.account,
                    taker_remaining=taker.remaining, ts=ts, maker_fee=maker_fee,
                    taker_fee=taker_fee,
                ))
                self._next_trade += 1
                for order, queue in ((bid, bids), (ask, asks)):
                    if order.remaining == 0:
                        order.status = "filled"
                        self._book.remove(order)
                        queue.pop(0)
                volume -= q
            for order in used_up:  # partly filled: the next part, at the back of its level
                if order.remaining:
                    order.shown = min(order.display_qty, order.remaining)
                    order.arrival = self._next_arrival
                    self._next_arrival += 1
                    events.append(OrderRefreshed(
                        order_id=order.order_id, account=order.account, symbol=symbol,
                        side=order.side, price=order.price, shown=order.shown,
                        remaining=order.remaining,
                    ))
            inst.ref = price
            self._last_price[symbol] = price
        inst.status = "trading"
        inst.open_at = 0
        events.append(InstrumentStatusChanged(symbol, "trading", 0, reason))
        return events

    def _uncross_and_stops(self, inst: _Instrument, ts: int, reason: str) -> list[Event]:
        """The uncross, then the stops its trades reached (in continuous trading)."""
        events = self._uncross(inst, ts, reason)
        self._run_stops(inst.symbol, events, ts)
        return events

    def _close_session(self, inst: _Instrument, reason: str) -> list[Event]:
        inst.status = "closed"
        inst.close_at = 0
        events: list[Event] = [InstrumentStatusChanged(inst.symbol, "closed", 0, reason)]
        day = sorted(
            (o for o in self._book + self._stops if o.symbol == inst.symbol and o.tif == "day"),
            key=lambda o: o.order_id,
        )
        events.extend(self._end(o, "expired") for o in day)
        return events

    def _set_rules(self, command: SetTradingRules) -> list[Event]:
        inst = self._need_symbol(command.symbol)
        if not KEEP <= command.band_pct <= MAX_BAND_PCT:
            raise _Refusal(RejectCode.BAD_REQUEST)
        if not KEEP <= command.interruption_s <= MAX_INTERRUPTION_S:
            raise _Refusal(RejectCode.BAD_REQUEST)
        for at in (command.open_at, command.close_at):
            if at < KEEP or 0 < at <= command.ts:
                raise _Refusal(RejectCode.BAD_EXPIRY)
        if command.band_pct != KEEP:
            inst.band_pct = command.band_pct
        if command.interruption_s != KEEP:
            inst.interruption_s = command.interruption_s
        if command.open_at != KEEP:
            inst.open_at = command.open_at
        if command.close_at != KEEP:
            inst.close_at = command.close_at
        return [TradingRulesSet(inst.symbol, inst.band_pct, inst.interruption_s, inst.open_at,
                                inst.close_at)]

    def _deadlines(self) -> list[tuple[int, int, int, str]]:
        """Everything that will be due: (due, kind, order id, account or symbol)."""
        found = [
            (o.expire_at, 0, o.order_id, o.account)
            for o in self._book + self._stops
            if o.tif == "gtd"
        ]
        for inst in self._instruments.values():
            if inst.close_at:
                found.append((inst.close_at, 1, 0, inst.symbol))
            if inst.open_at and inst.status == "pre_open":
                found.append((inst.open_at, 2, 0, inst.symbol))
        return sorted(found)

    def next_deadline(self) -> int | None:
        found = self._deadlines()
        return found[0][0] if found else None

    def _timer(self, ts: int) -> list[Event]:
        events: list[Event] = []
        for _ in range(len(self._book) + len(self._stops) + 3 * len(self._instruments) + 1):
            due = [d for d in self._deadlines() if d[0] <= ts]
            if not due:
                return events
            _, kind, order_id, key = due[0]
            if kind == 0:
                order = self._orders[order_id]
                waiting = order.waiting
                events.append(self._end(order, "expired"))
                if not waiting:
                    events.extend(self._book_changed(order.symbol))
            elif kind == 1:
                inst = self._instruments[key]
                if inst.status in ("pre_open", "trading", "halted"):
                    events.extend(self._close_session(inst, "close_at"))
                else:
                    inst.close_at = 0  # a session that is not open has nothing to close
            else:
                events.extend(self._uncross_and_stops(self._instruments[key], ts, "open_at"))
        raise AssertionError("timers did not end")

    def _open_offering(self, command: OpenOffering) -> list[Event]:
        inst = self._need_symbol(command.symbol)
        if inst.status != "listed":
            raise _Refusal(RejectCode.BAD_STATUS)
        if command.price <= 0 or command.price > MAX_PRICE_TICKS:
            raise _Refusal(RejectCode.BAD_PRICE)
        if command.qty <= 0 or command.qty > MAX_OFFERING_QTY:
            raise _Refusal(RejectCode.BAD_QTY)
        if command.fee_bps < 0 or command.fee_bps > MAX_OFFERING_FEE_BPS:
            raise _Refusal(RejectCode.BAD_FEE)
        firm = command.commitment == "firm"
        if command.underwriter:
            self._need_account(command.underwriter)
            whole_issue = command.price * inst.tick * command.qty
            if firm and whole_issue > self._available_cash(command.underwriter):
                raise _Refusal(RejectCode.INSUFFICIENT_FUNDS)
        elif command.fee_bps or firm:
            raise _Refusal(RejectCode.BAD_REQUEST)
        offering_id = self._next_offering
        self._next_offering += 1
        self._offerings[offering_id] = _Offering(
            offering_id=offering_id, symbol=inst.symbol, price=command.price, qty=command.qty,
            closes_at=command.closes_at, underwriter=command.underwriter,
            fee_bps=command.fee_bps, commitment=command.commitment,
        )
        inst.status = "in_offering"
        return [
            OfferingOpened(offering_id=offering_id, symbol=inst.symbol, price=command.price,
                           qty=command.qty, closes_at=command.closes_at,
                           underwriter=command.underwriter, fee_bps=command.fee_bps,
                           commitment=command.commitment),
            InstrumentStatusChanged(symbol=inst.symbol, status="in_offering"),
        ]

    def _need_offering(self, offering_id: int) -> _Offering:
        if offering_id not in self._offerings:
            raise _Refusal(RejectCode.UNKNOWN_OFFERING)
        return self._offerings[offering_id]

    def _subscribe(self, command: SubscribeOffering) -> list[Event]:
        self._need_account(command.account)
        off = self._need_offering(command.offering_id)
        if off.closed or (off.closes_at > 0 and command.ts > off.closes_at):
            raise _Refusal(RejectCode.OFFERING_CLOSED)
        if command.qty <= 0 or command.qty > MAX_QTY:
            raise _Refusal(RejectCode.BAD_QTY)
        cost = off.price * self._tick(off.symbol) * command.qty
        if cost > self._available_cash(command.account):
            raise _Refusal(RejectCode.INSUFFICIENT_FUNDS)
        total = command.qty
        for index, (who, qty) in enumerate(off.entries):
            if who == command.account:
                total = qty + command.qty
                off.entries[index] = (who, total)
                break
        else:
            off.entries.append((command.account, total))
        return [OfferingSubscribed(offering_id=off.offering_id, account=command.account,
                                   qty=command.qty, total=total)]

    def _close_offering(self, command: CloseOffering) -> list[Event]:
        off = self._need_offering(command.offering_id)
        if off.closed:
            raise _Refusal(RejectCode.OFFERING_CLOSED)
        offered = off.qty
        requested = sum(qty for _, qty in off.entries)
        if requested <= offered:
            allocations = [qty for _, qty in off.entries]
        else:
            allocations = [qty * offered // requested for _, qty in off.entries]
            left_over = offered - sum(allocations)
            by_remainder = sorted(
                range(len(off.entries)),
                key=lambda i: (-(off.entries[i][1] * offered % requested), i),
            )
            for index in by_remainder[:left_over]:
                allocations[index] += 1
        off.closed = True  # releases every subscription hold
        tick = self._tick(off.symbol)
        events: list[Event] = []
        proceeds = 0
        for (who, qty), allocated in zip(off.entries, allocations, strict=True):
            cost = allocated * off.price * tick
            acct = self._accounts[who]
            acct.cash -= cost
            acct.positions[off.symbol] = acct.positions.get(off.symbol, 0) + allocated
            proceeds += cost
            events.append(UnitsAllocated(offering_id=off.offering_id, account=who,
                                         requested=qty, allocated=allocated, cost=cost))
        issued = sum(allocations)
        if off.commitment == "firm":  # the underwriter takes up the rest at the offer price
            unsold = off.qty - issued
            cost = unsold * off.price * tick
            acct = self._accounts[off.underwriter]
            acct.cash -= cost
            acct.positions[off.symbol] = acct.positions.get(off.symbol, 0) + unsold
            proceeds += cost
            issued += unsold
            events.append(OfferingUnderwritten(offering_id=off.offering_id,
                                               account=off.underwriter, units=unsold,
                                               cost=cost))
        fee = _charge(proceeds, off.fee_bps)
        inst = self._instruments[off.symbol]
        self._accounts[inst.issuer].cash += proceeds - fee
        if off.underwriter:
            self._accounts[off.underwriter].cash += fee
        events.append(OfferingClosed(offering_id=off.offering_id, symbol=off.symbol,
                                     issuer=inst.issuer, issued=issued,
                                     proceeds=proceeds, underwriter=off.underwriter, fee=fee))
        inst.ref = off.price
        events.extend(self._enter_call(inst, inst.open_at, "offering"))
        return events

    # --- orders ----------------------------------------------------------------------------

    def _place(self, command: PlaceOrder) -> list[Event]:
        acct = self._need_account(command.account)
        if command.client_order_id:
            memory = self._client_ids.get((acct.account_id, command.client_order_id))
            if memory is not None:
                if memory.command != _strip_ts(command):
                    raise _Refusal(RejectCode.DUPLICATE_CLIENT_ORDER_ID)
                if memory.rejection is not None:
                    return [memory.rejection]
                return [self._resend_answer(self._orders[memory.order_id])]
        inst = self._need_symbol(command.symbol)
        is_limit = command.type == "limit"
        is_stop = command.type in STOP_TYPES
        priced = command.type in ("limit", "stop_limit")
        rests = is_limit and command.tif in RESTING_TIFS
        if inst.status in ("listed", "in_offering"):
            raise _Refusal(RejectCode.NOT_TRADING)
        # A call auction takes orders that rest, and stops (they wait for a trade).
        if inst.status in ("halted", "closed") or (
            inst.status == "pre_open" and not (rests or is_stop)
        ):
            raise _Refusal(RejectCode.NOT_IN_PHASE)
        if command.qty <= 0 or command.qty > MAX_QTY:
            raise _Refusal(RejectCode.BAD_QTY)
        if priced and (command.price <= 0 or command.price > MAX_PRICE_TICKS):
            raise _Refusal(RejectCode.BAD_PRICE)
        if priced and not self._in_band(inst, command.price):  # a stop's trigger is not
            raise _Refusal(RejectCode.PRICE_OUT_OF_BAND)
        if not priced and command.price != 0:
            raise _Refusal(RejectCode.BAD_PRICE)
        if command.tif == "gtd":
            if command.expire_at <= command.ts:  # 0 (missing) included
                raise _Refusal(RejectCode.BAD_EXPIRY)
        elif command.expire_at:
            raise _Refusal(RejectCode.BAD_EXPIRY)
        trigger = command.trigger_price
        if not is_stop and trigger:
            raise _Refusal(RejectCode.BAD_TRIGGER)
        if is_stop:
            if trigger <= 0 or trigger > MAX_PRICE_TICKS:
                raise _Refusal(RejectCode.BAD_TRIGGER)
            last = self._last_price.get(inst.symbol, 0)
            if last and (trigger <= last if command.side == "buy" else trigger >= last):
                raise _Refusal(RejectCode.BAD_TRIGGER)
        market_buy = command.type == "market" and command.side == "buy"
        stop_buy = command.type == "stop" and command.side == "buy"
        if command.max_notional != 0 and not (market_buy or stop_buy):
            raise _Refusal(RejectCode.BAD_REQUEST)
        if command.max_notional < 0 or command.max_notional > MAX_CASH:
            raise _Refusal(RejectCode.BAD_AMOUNT)
        if stop_buy and command.max_notional == 0:
            raise _Refusal(RejectCode.BAD_REQUEST)
        if command.type == "market" and command.tif in ("gtd", "day"):
            raise _Refusal(RejectCode.BAD_REQUEST)
        if command.post_only and not rests:
            raise _Refusal(RejectCode.BAD_REQUEST)
        if command.display_qty and not (priced and command.tif in RESTING_TIFS):
            raise _Refusal(RejectCode.BAD_REQUEST)
        if command.display_qty > command.qty:
            raise _Refusal(RejectCode.BAD_QTY)
        if is_stop or rests:
            open_orders = sum(1 for o in self._book + self._stops if o.account == acct.account_id)
            if open_orders >= MAX_OPEN_ORDERS_PER_ACCOUNT:
                raise _Refusal(RejectCode.TOO_MANY_ORDERS)
        available = self._available_cash(acct.account_id)
        if command.side == "buy":
            hold = command.qty * self._unit_buy_hold(command.price, inst.tick, inst.taker_bps)
            if priced and hold > available:
                raise _Refusal(RejectCode.INSUFFICIENT_FUNDS)
            if stop_buy and command.max_notional > available:
                raise _Refusal(RejectCode.INSUFFICIENT_FUNDS)
            if market_buy and available == 0:
                raise _Refusal(RejectCode.INSUFFICIENT_FUNDS)
        elif command.qty > self._available_units(acct.account_id, inst.symbol):
            raise _Refusal(RejectCode.INSUFFICIENT_UNITS)
        if (
            command.post_only
            and inst.status == "trading"
            and self._crosses(command.side, command.price, inst.symbol)
        ):
            raise _Refusal(RejectCode.POST_ONLY_WOULD_TAKE)

        order_id = self._next_order
        self._next_order += 1
        accepted = OrderAccepted(
            order_id=order_id, account=acct.account_id, client_order_id=command.client_order_id,
            symbol=inst.symbol, side=command.side, type=command.type, tif=command.tif,
            price=command.price, qty=command.qty, remaining=command.qty, status="open",
            post_only=command.post_only, ts=command.ts, expire_at=command.expire_at,
            trigger_price=trigger, display_qty=command.display_qty,
            budget=command.max_notional if stop_buy else 0,
        )
        order = _Order(
            order_id=order_id, account=acct.account_id, client_order_id=command.client_order_id,
            symbol=inst.symbol, side=command.side, type=command.type, tif=command.tif,
            price=command.price, qty=command.qty, remaining=command.qty, stp=command.stp,
            post_only=command.post_only, status="open", accepted=accepted,
            expire_at=command.expire_at, trigger_price=trigger, display_qty=command.display_qty,
            budget=command.max_notional if stop_buy else 0,
            maker_bps=inst.maker_bps, taker_bps=inst.taker_bps,
        )
        self._orders[order_id] = order
        if command.client_order_id:
            self._client_ids[(acct.account_id, command.client_order_id)] = _ClientIdMemory(
                command=_strip_ts(command), order_id=order_id
            )
        if is_stop:  # it waits, holds in place, for a trade at or through its trigger
            self._stops.append(order)
            return [accepted]
        budget: int | None = None
        if market_buy:
            budget = available
            if command.max_notional > 0:
                budget = min(budget, command.max_notional)
        events: list[Event] = [accepted]
        if inst.status == "pre_open":
            events.extend(self._rest_in_auction(order))
            return events
        if command.tif == "fok" and self._fok_fill(order, budget) < order.qty:
            events.append(self._end(order, "expired"))
            return events
        events.extend(self._match(order, budget, command.ts))
        self._run_stops(order.symbol, events, command.ts)
        return events

    def _run_stops(self, symbol: str, events: list[Event], ts: int) -> None:
        """After a command's matching: every waiting stop of `symbol` that any trade of the
        command reached (a buy's trigger <= the highest price, a sell's >= the lowest)
        triggers, oldest first, and matches; its trades count too."""
        prices = [e.price for e in events if isinstance(e, TradeExecuted)]
        while prices:
            low, high = min(prices), max(prices)
            reached = [
                o for o in self._stops
                if o.symbol == symbol
                and (o.trigger_price <= high if o.side == "buy" else o.trigger_price >= low)
            ]
            if not reached:
                return
            order = min(reached, key=lambda o: o.order_id)
            self._stops.remove(order)
            budget: int | None = None
            if order.type == "stop":
                order.type = "market"
                if order.side == "buy":
                    budget, order.budget = order.budget, 0
            else:
                order.type = "limit"
            events.append(OrderTriggered(
                order_id=order.order_id, account=order.account,
                client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
                type="market" if order.type == "market" else "limit", price=order.price,
                remaining=order.remaining,
                trigger_price=order.trigger_price, ts=ts,
            ))  # fmt: skip
            if self._instruments[symbol].status == "pre_open":
                # An earlier trade of this pass started a volatility interruption: as if
                # entered in the call auction (a resting limit rests; others expire).
                if order.type == "limit" and order.tif in RESTING_TIFS:
                    events.extend(self._rest_in_auction(order))
                else:
                    events.append(self._end(order, "expired"))
                continue
            if order.tif == "fok" and self._fok_fill(order, budget) < order.remaining:
                events.append(self._end(order, "expired"))
                continue
            more = self._match(order, budget, ts)
            events.extend(more)
            prices.extend(e.price for e in more if isinstance(e, TradeExecuted))

    def _rest_in_auction(self, order: _Order) -> list[Event]:
        """Rest without matching (a call auction); an iceberg shows its first part."""
        order.arrival = self._next_arrival
        self._next_arrival += 1
        if order.display_qty:
            order.shown = min(order.display_qty, order.remaining)
        self._book.append(order)
        return self._book_changed(order.symbol)

    def _resend_answer(self, order: _Order) -> OrderAccepted:
        """The first answer again, with the order's current price, qty, remaining and status."""
        return msgspec.structs.replace(
            order.accepted,
            price=order.price,
            qty=order.qty,
            remaining=order.remaining,
            status=order.status,
            resent=True,
        )

    def _meets(self, taker: _Order, maker: _Order) -> bool:
        if taker.type == "market":
            return True
        if taker.side == "buy":
            return maker.price <= taker.price
        return maker.price >= taker.price

    def _opposite(self, taker: _Order) -> list[_Order]:
        other: Side = "sell" if taker.side == "buy" else "buy"
        return [m for m in self._sorted_side(taker.symbol, other) if self._meets(taker, m)]

    def _fok_fill(self, taker: _Order, budget: int | None) -> int:
        """How much matching would fill: the same walk as _match on copies of the makers
        (an iceberg's refresh included), changing nothing."""
        tick = self._tick(taker.symbol)
        inst = self._instruments[taker.symbol]
        makers = [
            _Sim(m.price, m.arrival, m.account, m.remaining, m.visible, m.display_qty)
            for m in self._opposite(taker)
        ]
        arrival = self._next_arrival
        filled = 0
        while makers and filled < taker.remaining:
            makers.sort(key=lambda m: (m.price if taker.side == "buy" else -m.price, m.arrival))
            maker = makers[0]
            price = maker.price
            if not self._in_band(inst, price):
                break
            if maker.account == taker.account:
                if taker.stp == "cancel_oldest":
                    makers.pop(0)
                    continue
                break
            q = min(taker.remaining - filled, maker.shown)
            if budget is not None:
                q = self._affordable(q, budget, price, tick, taker.taker_bps)
                if q == 0:
                    break
                value = q * price * tick
                budget -= value + _charge(value, taker.taker_bps)
            filled += q
            maker.remaining -= q
            maker.shown -= q
            if maker.remaining == 0:
                makers.pop(0)
            elif maker.shown == 0:  # an iceberg shows its next part, at the back
                maker.shown = min(maker.display, maker.remaining)
                maker.arrival = arrival
                arrival += 1
        return filled

    def _end(self, order: _Order, reason: DoneReason) -> OrderCancelled:
        """The order leaves the book (or its matching); its holds go with it."""
        if order in self._book:
            self._book.remove(order)
        if order in self._stops:
            self._stops.remove(order)
        order.budget = 0  # a waiting stop buy's budget is released with it
        order.status = reason
        return OrderCancelled(
            order_id=order.order_id, account=order.account,
            client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
            price=order.price, remaining=order.remaining, reason=reason,
        )

    def _match(self, taker: _Order, budget: int | None, ts: int) -> list[Event]:
        """`taker` is off the book; trade it, then rest or expire what is left."""
        events: list[Event] = []
        tick = self._tick(taker.symbol)
        inst = self._instruments[taker.symbol]
        arrival_band = _Instrument(inst.symbol, inst.tick, inst.issuer, inst.status, inst.ref,
                                   inst.band_pct)  # the band as the taker found it
        interrupted = False
        # Each turn removes a maker or fills at least one unit (an iceberg refreshes).
        for _ in range(len(self._book) + sum(o.remaining for o in self._book) + 1):
            if taker.remaining == 0:
                break
            candidates = self._opposite(taker)
            if not candidates:
                break
            maker = candidates[0]
            if not self._in_band(arrival_band, maker.price):
                interrupted = True
                break
            if maker.account == taker.account:
                if taker.stp == "cancel_newest":
                    events.append(self._end(taker, "self_trade"))
                    return events
                events.append(self._end(maker, "self_trade"))
                if taker.stp == "cancel_both":
                    events.append(self._end(taker, "self_trade"))
                    return events
                continue
            q = min(taker.remaining, maker.visible)  # an iceberg trades what it shows
            if budget is not None:
                q = self._affordable(q, budget, maker.price, tick, taker.taker_bps)
                if q == 0:
                    break
                value = q * maker.price * tick
                budget -= value + _charge(value, taker.taker_bps)
            if maker.display_qty:
                maker.shown -= q
            maker_fee, taker_fee = self._settle(taker, maker, q, tick)
            self._last_price[taker.symbol] = maker.price
            inst.ref = maker.price
            events.append(TradeExecuted(
                trade_id=self._next_trade, symbol=taker.symbol, price=maker.price, qty=q,
                aggressor=taker.side, maker_order_id=maker.order_id,
                maker_account=maker.account, maker_remaining=maker.remaining,
                taker_order_id=taker.order_id, taker_account=taker.account,
                taker_remaining=taker.remaining, ts=ts, maker_fee=maker_fee,
                taker_fee=taker_fee,
            ))
            self._next_trade += 1
            if maker.display_qty and maker.remaining and not maker.shown:
                maker.shown = min(maker.display_qty, maker.remaining)
                maker.arrival = self._next_arrival  # to the back of its level
                self._next_arrival += 1
                events.append(OrderRefreshed(
                    order_id=maker.order_id, account=maker.account, symbol=maker.symbol,
                    side=maker.side, price=maker.price, shown=maker.shown,
                    remaining=maker.remaining,
                ))
        else:
            raise AssertionError("matching did not end within the book's size")
        if taker.remaining == 0:
            taker.status = "filled"
        elif taker.type == "limit" and taker.tif in RESTING_TIFS:
            taker.arrival = self._next_arrival
            self._next_arrival += 1
            if taker.display_qty:
                taker.shown = min(taker.display_qty, taker.remaining)
            self._book.append(taker)
        else:
            events.append(self._end(taker, "expired"))
        if interrupted:
            events.extend(
                self._enter_call(inst, ts + inst.interruption_s * NS_PER_S, "volatility")
            )
        return events

    def _affordable(self, q: int, budget: int, price: int, tick: int, taker_bps: int) -> int:
        """The most units, up to q, a market buy's budget pays at `price`, each unit counted
        at its value plus its own rounded-up taker fee (the rule book's per-unit cost)."""
        while q > 0 and q * self._unit_buy_hold(price, tick, taker_bps) > budget:
            q -= 1
        return q

    def _pay_fees(self, taker: _Order, maker: _Order, value: int) -> tuple[int, int]:
        """Each side's fee on a fill worth `value`, at its own order's rates, charged to it
        and credited to the fee account; (maker fee, taker fee)."""
        taker_fee = _charge(value, taker.taker_bps)
        # A rebate is paid only out of the same fill's taker fee.
        maker_fee = max(_charge(value, maker.maker_bps), -taker_fee)
        self._accounts[maker.account].cash -= maker_fee
        self._accounts[taker.account].cash -= taker_fee
        if maker_fee or taker_fee:
            self._accounts[FEE_ACCOUNT].cash += maker_fee + taker_fee
        return maker_fee, taker_fee

    def _settle(self, taker: _Order, maker: _Order, q: int, tick: int) -> tuple[int, int]:
        """Trade q at the maker's price; (maker fee, taker fee), each at its order's rate."""
        value = maker.price * tick * q
        maker_fee, taker_fee = self._pay_fees(taker, maker, value)
        buyer, seller = (taker, maker) if taker.side == "buy" else (maker, taker)
        buy_acct = self._accounts[buyer.account]
        sell_acct = self._accounts[seller.account]
        buy_acct.cash -= value
        buy_acct.positions[taker.symbol] = buy_acct.positions.get(taker.symbol, 0) + q
        sell_acct.positions[taker.symbol] = sell_acct.positions.get(taker.symbol, 0) - q
        sell_acct.cash += value
        taker.remaining -= q
        maker.remaining -= q
        if maker.remaining == 0:
            self._book.remove(maker)
            maker.status = "filled"
        return maker_fee, taker_fee

    # --- cancel and replace ----------------------------------------------------------------

    def _open_order(self, account: str, order_id: int) -> _Order:
        for order in self._book + self._stops:
            if order.account == account and order.order_id == order_id:
                return order
        raise _Refusal(RejectCode.UNKNOWN_ORDER)

    def _cancel(self, command: CancelOrder) -> list[Event]:
        self._need_account(command.account)
        if command.order_id == 0 and not command.client_order_id:
            raise _Refusal(RejectCode.BAD_REQUEST)
        if command.order_id != 0:
            order = self._open_order(command.account, command.order_id)
        else:
            matches = [
                o for o in self._book + self._stops
                if o.account == command.account
                and o.client_order_id == command.client_order_id
            ]
            if not matches:
                raise _Refusal(RejectCode.UNKNOWN_ORDER)
            order = matches[0]
        if order.waiting:  # off the book: the auction's indicative does not change
            return [self._end(order, "cancelled")]
        return [self._end(order, "cancelled"), *self._book_changed(order.symbol)]

    def _cancel_all(self, command: CancelAll) -> list[Event]:
        self._need_account(command.account)
        if command.symbol:
            self._need_symbol(command.symbol)
        doomed = sorted(
            (
                o for o in self._book + self._stops
                if o.account == command.account
                and (not command.symbol or o.symbol == command.symbol)
            ),
            key=lambda o: o.order_id,
        )
        events: list[Event] = [self._end(o, "cancelled") for o in doomed]
        for symbol in dict.fromkeys(o.symbol for o in doomed if not o.waiting):
            events.extend(self._book_changed(symbol))
        return events

    def _replace(self, command: ReplaceOrder) -> list[Event]:
        self._need_account(command.account)
        order = self._open_order(command.account, command.order_id)
        if command.qty == 0 and command.price == 0:
            raise _Refusal(RejectCode.BAD_REQUEST)
        if command.qty < 0 or command.qty > MAX_QTY:
            raise _Refusal(RejectCode.BAD_QTY)
        if command.price < 0 or command.price > MAX_PRICE_TICKS:
            raise _Refusal(RejectCode.BAD_PRICE)
        if command.price and order.type in ("market", "stop"):
            raise _Refusal(RejectCode.BAD_PRICE)
        inst = self._instruments[order.symbol]
        if inst.status not in ("trading", "pre_open"):
            raise _Refusal(RejectCode.NOT_IN_PHASE)
        new_band_price = command.price and command.price != order.price
        if new_band_price and not self._in_band(inst, command.price):
            raise _Refusal(RejectCode.PRICE_OUT_OF_BAND)
        new_qty = command.qty or order.qty
        new_price = command.price or order.price
        filled = order.qty - order.remaining
        new_remaining = new_qty - filled
        kept = max(new_remaining, 0)
        if order.side == "buy":
            growth = kept * self._unit_buy_hold(new_price, inst.tick, order.taker_bps) - (
                order.remaining * self._unit_buy_hold(order.price, inst.tick, order.taker_bps)
            )
            if growth > self._available_cash(order.account):
                raise _Refusal(RejectCode.INSUFFICIENT_FUNDS)
        elif kept - order.remaining > self._available_units(order.account, order.symbol):
            raise _Refusal(RejectCode.INSUFFICIENT_UNITS)
        # Only an order that still rests after the replace can take.
        if (
            order.post_only
            and inst.status == "trading"
            and kept
            and self._crosses(order.side, new_price, order.symbol)
        ):
            raise _Refusal(RejectCode.POST_ONLY_WOULD_TAKE)

        old_remaining = order.remaining
        same_price = new_price == order.price
        order.qty = new_qty
        order.price = new_price
        order.remaining = kept

        def replaced(kept_priority: bool) -> OrderReplaced:
            return OrderReplaced(
                order_id=order.order_id, account=order.account,
                client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
                price=order.price, qty=order.qty, remaining=order.remaining,
                kept_priority=kept_priority,
            )

        if kept == 0:
            events_out: list[Event] = [replaced(False), self._end(order, "replaced_out")]
            if not order.waiting:
                events_out.extend(self._book_changed(order.symbol))
            return events_out
        if order.waiting:  # a waiting stop keeps its place: stops trigger oldest first
            return [replaced(True)]
        if same_price and kept <= old_remaining:
            order.shown = min(order.shown, kept)
            return [replaced(True), *self._book_changed(order.symbol)]
        self._book.remove(order)
        events: list[Event] = [replaced(False)]
        if inst.status == "pre_open":
            return [*events, *self._rest_in_auction(order)]
        events.extend(self._match(order, None, command.ts))
        self._run_stops(order.symbol, events, command.ts)
        return events
