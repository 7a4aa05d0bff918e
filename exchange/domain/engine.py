"""The matching engine: the one place where the exchange's state changes.

`Engine.apply(command)` validates a command against the current state and either
refuses it (one rejection event, nothing changed) or applies it and returns the
events it produced. It must never raise on bad business input, never read a
clock or randomness, and never iterate anything whose order depends on hashing.
The rules it implements are written down in docs/ENGINE.md.
"""

import re
from collections.abc import Callable
from typing import Any

import msgspec

from exchange.domain.accounts import Account, ClientOrderRecord
from exchange.domain.book import EndedOrder, Order, OrderBook
from exchange.domain.codes import RejectCode
from exchange.domain.commands import (
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
    SetInstrumentStatus,
    SubscribeOffering,
    WithdrawCash,
    WithdrawUnits,
)
from exchange.domain.events import (
    AccountCreated,
    ApiKeyAdded,
    CashDeposited,
    CashWithdrawn,
    DoneReason,
    Event,
    InstrumentListed,
    InstrumentStatusChanged,
    OfferingClosed,
    OfferingOpened,
    OfferingSubscribed,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderReplaced,
    Rejected,
    TradeExecuted,
    UnitsAllocated,
    UnitsDeposited,
    UnitsWithdrawn,
)
from exchange.domain.instruments import Instrument, Offering, allocate
from exchange.domain.limits import (
    MAX_CASH,
    MAX_CLIENT_ORDER_IDS_PER_ACCOUNT,
    MAX_OPEN_ORDERS_PER_ACCOUNT,
    MAX_PRICE_TICKS,
    MAX_QTY,
    MAX_TICK,
    SYMBOL_PATTERN,
)

Code = RejectCode
_SYMBOL = re.compile(SYMBOL_PATTERN)
NO_BUDGET = -1  # a taker whose spending is bounded by its cash hold, not by a budget


class Engine:
    """The exchange's whole state and the rules that change it."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.instruments: dict[str, Instrument] = {}
        self.books: dict[str, OrderBook] = {}
        self.offerings: dict[int, Offering] = {}
        self.next_account = 1
        self.next_order = 1
        self.next_trade = 1
        self.next_offering = 1
        self._handlers: dict[type[Any], Callable[[Any], list[Event]]] = {
            CreateAccount: self._create_account,
            AddApiKey: self._add_api_key,
            DepositCash: self._deposit_cash,
            WithdrawCash: self._withdraw_cash,
            DepositUnits: self._deposit_units,
            WithdrawUnits: self._withdraw_units,
            ListInstrument: self._list_instrument,
            SetInstrumentStatus: self._set_status,
            OpenOffering: self._open_offering,
            SubscribeOffering: self._subscribe_offering,
            CloseOffering: self._close_offering,
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            CancelAll: self._cancel_all,
            ReplaceOrder: self._replace,
        }

    # --- the one entry point --------------------------------------------------------------

    def apply(self, command: Command) -> list[Event]:
        return self._handlers[type(command)](command)

    # --- read views (tests, snapshots, read models) ---------------------------------------

    def book(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Price levels (price, total remaining), best first: bids, then asks."""
        book = self.books[symbol]
        return (
            [(lv.price, lv.total) for lv in book.bids.levels_best_first()],
            [(lv.price, lv.total) for lv in book.asks.levels_best_first()],
        )

    def resting(self, symbol: str) -> list[tuple[int, str, str, int, int]]:
        """Resting orders in priority order, bids then asks: (id, account, side, price, qty)."""
        book = self.books[symbol]
        return [
            (o.order_id, o.account.account_id, o.side, o.price, o.remaining)
            for side in (book.bids, book.asks)
            for level in side.levels_best_first()
            for o in level.orders()
        ]

    def balances(self, account_id: str) -> tuple[int, int, dict[str, int], dict[str, int]]:
        """(cash, cash_held, positions, units_held), zero entries left out."""
        a = self.accounts[account_id]
        return (
            a.cash,
            a.cash_held,
            {s: n for s, n in a.positions.items() if n},
            {s: n for s, n in a.units_held.items() if n},
        )

    def state_hash(self) -> str:
        from exchange.domain.state import state_hash  # noqa: PLC0415 - state imports engine

        return state_hash(self)

    # --- accounts and money ---------------------------------------------------------------

    def _create_account(self, cmd: CreateAccount) -> list[Event]:
        account_id = f"A{self.next_account}"
        self.next_account += 1
        account = self.accounts[account_id] = Account(account_id, cmd.name)
        if cmd.api_key_hash:
            account.api_key_hashes.append(cmd.api_key_hash)
        return [AccountCreated(account=account_id, name=cmd.name, api_key_hash=cmd.api_key_hash)]

    def _add_api_key(self, cmd: AddApiKey) -> list[Event]:
        account = self.accounts.get(cmd.account)
        if account is None:
            return _refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
        account.api_key_hashes.append(cmd.api_key_hash)
        return [ApiKeyAdded(account=cmd.account, api_key_hash=cmd.api_key_hash)]

    def _deposit_cash(self, cmd: DepositCash) -> list[Event]:
        account = self.accounts.get(cmd.account)
        if account is None:
            return _refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
        if not 0 < cmd.amount <= MAX_CASH:
            return _refuse(cmd, Code.BAD_AMOUNT, "amount must be positive", cmd.account)
        account.cash += cmd.amount
        return [CashDeposited(account=cmd.account, amount=cmd.amount, balance=account.cash)]

    def _withdraw_cash(self, cmd: WithdrawCash) -> list[Event]:
        account = self.accounts.get(cmd.account)
        if account is None:
            return _refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
        if not 0 < cmd.amount <= MAX_CASH:
            return _refuse(cmd, Code.BAD_AMOUNT, "amount must be positive", cmd.account)
        if cmd.amount > account.cash - account.cash_held:
            return _refuse(cmd, Code.INSUFFICIENT_FUNDS, "not enough available cash", cmd.account)
        account.cash -= cmd.amount
        return [CashWithdrawn(account=cmd.account, amount=cmd.amount, balance=account.cash)]

    def _deposit_units(self, cmd: DepositUnits) -> list[Event]:
        refusal = self._check_units_command(cmd)
        if refusal:
            return refusal
        positions = self.accounts[cmd.account].positions
        position = positions[cmd.symbol] = positions.get(cmd.symbol, 0) + cmd.qty
        return [
            UnitsDeposited(account=cmd.account, symbol=cmd.symbol, qty=cmd.qty, position=position)
        ]

    def _withdraw_units(self, cmd: WithdrawUnits) -> list[Event]:
        refusal = self._check_units_command(cmd)
        if refusal:
            return refusal
        account = self.accounts[cmd.account]
        if cmd.qty > account.available_units(cmd.symbol):
            return _refuse(cmd, Code.INSUFFICIENT_UNITS, "not enough available units", cmd.account)
        position = account.positions[cmd.symbol] = account.positions[cmd.symbol] - cmd.qty
        return [
            UnitsWithdrawn(account=cmd.account, symbol=cmd.symbol, qty=cmd.qty, position=position)
        ]

    def _check_units_command(self, cmd: DepositUnits | WithdrawUnits) -> list[Event]:
        if cmd.account not in self.accounts:
            return _refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
        if cmd.symbol not in self.instruments:
            return _refuse(cmd, Code.UNKNOWN_SYMBOL, "no such instrument", cmd.account)
        if not 0 < cmd.qty <= MAX_QTY:
            return _refuse(cmd, Code.BAD_QTY, "quantity out of range", cmd.account)
        return []

    # --- instruments and the primary market -----------------------------------------------

    def _list_instrument(self, cmd: ListInstrument) -> list[Event]:
        if not _SYMBOL.fullmatch(cmd.symbol):
            return _refuse(cmd, Code.BAD_SYMBOL, "symbol: 1-16 of A-Z 0-9 . _ -")
        if cmd.symbol in self.instruments:
            return _refuse(cmd, Code.DUPLICATE_SYMBOL, "symbol already listed")
        if cmd.issuer not in self.accounts:
            return _refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such issuer account")
        if not 0 < cmd.tick <= MAX_TICK:
            return _refuse(cmd, Code.BAD_TICK_SIZE, "tick out of range")
        self.instruments[cmd.symbol] = Instrument(
            cmd.symbol, cmd.kind, cmd.tick, cmd.issuer, "listed"
        )
        self.books[cmd.symbol] = OrderBook(cmd.symbol)
        return [
            InstrumentListed(symbol=cmd.symbol, kind=cmd.kind, tick=cmd.tick, issuer=cmd.issuer)
        ]

    def _set_status(self, cmd: SetInstrumentStatus) -> list[Event]:
        instrument = self.instruments.get(cmd.symbol)
        if instrument is None:
            return _refuse(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
        if instrument.status == "in_offering" or (
            instrument.status == "listed" and cmd.status == "halted"
        ):
            return _refuse(cmd, Code.BAD_STATUS, f"cannot go from {instrument.status}")
        instrument.status = cmd.status
        return [InstrumentStatusChanged(symbol=cmd.symbol, status=cmd.status)]

    def _open_offering(self, cmd: OpenOffering) -> list[Event]:
        instrument = self.instruments.get(cmd.symbol)
        if instrument is None:
            return _refuse(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
        if instrument.status != "listed":
            return _refuse(cmd, Code.BAD_STATUS, "only a listed instrument can be offered")
        if not 0 < cmd.price <= MAX_PRICE_TICKS:
            return _refuse(cmd, Code.BAD_PRICE, "price out of range")
        if not 0 < cmd.qty <= MAX_QTY:
            return _refuse(cmd, Code.BAD_QTY, "quantity out of range")
        offering_id = self.next_offering
        self.next_offering += 1
        self.offerings[offering_id] = Offering(
            offering_id, cmd.symbol, cmd.price, cmd.qty, cmd.closes_at
        )
        instrument.status = "in_offering"
        return [
            OfferingOpened(
                offering_id=offering_id,
                symbol=cmd.symbol,
                price=cmd.price,
                qty=cmd.qty,
                closes_at=cmd.closes_at,
            ),
            InstrumentStatusChanged(symbol=cmd.symbol, status="in_offering"),
        ]

    def _subscribe_offering(self, cmd: SubscribeOffering) -> list[Event]:
        account = self.accounts.get(cmd.account)
        if account is None:
            return _refuse(cmd, Code.UNKNOWN_ACCOUNT, "no such account", cmd.account)
        offering = self.offerings.get(cmd.offering_id)
        if offering is None:
            return _refuse(cmd, Code.UNKNOWN_OFFERING, "no such offering", cmd.account)
        if not offering.is_open or (offering.closes_at and cmd.ts > offering.closes_at):
            return _refuse(cmd, Code.OFFERING_CLOSED, "the offering is closed", cmd.account)
        if not 0 < cmd.qty <= MAX_QTY:
            return _refuse(cmd, Code.BAD_QTY, "quantity out of range", cmd.account)
        cost = offering.price * self.instruments[offering.symbol].tick * cmd.qty
        if cost > account.cash - account.cash_held:
            return _refuse(cmd, Code.INSUFFICIENT_FUNDS, "not enough available cash", cmd.account)
        account.cash_held += cost
        subs = offering.subscriptions
        total = subs[cmd.account] = subs.get(cmd.account, 0) + cmd.qty
        return [
            OfferingSubscribed(
                offering_id=cmd.offering_id, account=cmd.account, qty=cmd.qty, total=total
            )
        ]

    def _close_offering(self, cmd: CloseOffering) -> list[Event]:
        offering = self.offerings.get(cmd.offering_id)
        if offering is None:
            return _refuse(cmd, Code.UNKNOWN_OFFERING, "no such offering")
        if not offering.is_open:
            return _refuse(cmd, Code.OFFERING_CLOSED, "the offering is closed already")
        instrument = self.instruments[offering.symbol]
        unit_cost = offering.price * instrument.tick
        subscribers = list(offering.subscriptions.items())
        shares = allocate([qty for _, qty in subscribers], offering.qty)
        events: list[Event] = []
        proceeds = 0
        for (account_id, requested), allocated in zip(subscribers, shares, strict=True):
            account = self.accounts[account_id]
            cost = allocated * unit_cost
            account.cash_held -= requested * unit_cost
            account.cash -= cost
            _add_units(account.positions, offering.symbol, allocated)
            proceeds += cost
            events.append(
                UnitsAllocated(
                    offering_id=offering.offering_id,
                    account=account_id,
                    requested=requested,
                    allocated=allocated,
                    cost=cost,
                )
            )
        self.accounts[instrument.issuer].cash += proceeds
        offering.is_open = False
        instrument.status = "trading"
        events.append(
            OfferingClosed(
                offering_id=offering.offering_id,
                symbol=offering.symbol,
                issuer=instrument.issuer,
                issued=sum(shares),
                proceeds=proceeds,
            )
        )
        events.append(InstrumentStatusChanged(symbol=offering.symbol, status="trading"))
        return events

    # --- placing orders -------------------------------------------------------------------

    def _place(self, cmd: PlaceOrder) -> list[Event]:
        account = self.accounts.get(cmd.account)
        if account is None:
            return [_order_rejected(cmd, Code.UNKNOWN_ACCOUNT, "no such account")]
        cid = cmd.client_order_id
        if cid:
            record = account.client_orders.get(cid)
            if record is not None:
                return [_answer_resend(cmd, *record)]
        symbol = cmd.symbol
        instrument = self.instruments.get(symbol)
        refusal = self._check_place(cmd, account, instrument)
        if refusal is not None:
            if cid:
                _remember(account, cid, (cmd, refusal))
            return [refusal]
        assert instrument is not None  # _check_place refused an unknown symbol

        order_id = self.next_order
        self.next_order = order_id + 1
        side, type_, tif, price, qty, ts = cmd.side, cmd.type, cmd.tif, cmd.price, cmd.qty, cmd.ts
        tick = instrument.tick
        order = Order(
            order_id, account, cid, symbol, side, type_, tif, price, qty, cmd.post_only, cmd.stp, ts
        )
        if cid:
            _remember(account, cid, (cmd, order))
        events: list[Event] = [
            OrderAccepted(
                order_id, account.account_id, cid, symbol, side, type_, tif, price, qty, qty,
                "open", cmd.post_only, ts,
            )
        ]
        budget = NO_BUDGET
        is_buy = order.is_buy
        if type_ == "market" and is_buy:
            budget = account.cash - account.cash_held
            if cmd.max_notional and cmd.max_notional < budget:
                budget = cmd.max_notional
        book = self.books[symbol]
        if tif == "fok" and self._fillable(order, book, tick, budget) < qty:
            order.status = "expired"
            if cid:
                _archive(order)
            events.append(_cancelled(order, "expired"))
            return events
        # Hold what the order may spend or deliver; matching draws these holds down.
        if is_buy:
            if budget == NO_BUDGET:
                account.cash_held += price * tick * qty
        else:
            held = account.units_held
            held[symbol] = held.get(symbol, 0) + qty
        self._match(order, book, tick, budget, ts, events)
        return events

    def _check_place(
        self, cmd: PlaceOrder, account: Account, instrument: Instrument | None
    ) -> OrderRejected | None:
        if instrument is None:
            return _order_rejected(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")
        if instrument.status != "trading":
            return _order_rejected(cmd, Code.NOT_TRADING, f"instrument is {instrument.status}")
        qty = cmd.qty
        if not 0 < qty <= MAX_QTY:
            return _order_rejected(cmd, Code.BAD_QTY, "quantity out of range")
        is_limit = cmd.type == "limit"
        if is_limit:
            if not 0 < cmd.price <= MAX_PRICE_TICKS:
                return _order_rejected(cmd, Code.BAD_PRICE, "price out of range")
        elif cmd.price != 0:
            return _order_rejected(cmd, Code.BAD_PRICE, "a market order has no price")
        is_buy = cmd.side == "buy"
        if cmd.max_notional:
            if is_limit or not is_buy:
                return _order_rejected(cmd, Code.BAD_REQUEST, "max_notional is for market buys")
            if not 0 < cmd.max_notional <= MAX_CASH:
                return _order_rejected(cmd, Code.BAD_AMOUNT, "max_notional out of range")
        if cmd.post_only and not (is_limit and cmd.tif == "gtc"):
            return _order_rejected(cmd, Code.BAD_REQUEST, "post_only needs a gtc limit order")
        open_orders = len(account.open_orders)
        if is_limit and cmd.tif == "gtc" and open_orders >= MAX_OPEN_ORDERS_PER_ACCOUNT:
            return _order_rejected(cmd, Code.TOO_MANY_ORDERS, "too many open orders")
        if is_buy:
            available = account.cash - account.cash_held
            if (cmd.price * instrument.tick * qty if is_limit else 1) > available:
                return _order_rejected(cmd, Code.INSUFFICIENT_FUNDS, "not enough available cash")
        elif qty > account.positions.get(cmd.symbol, 0) - account.units_held.get(cmd.symbol, 0):
            return _order_rejected(cmd, Code.INSUFFICIENT_UNITS, "not enough available units")
        if cmd.post_only and _crosses(self.books[cmd.symbol], is_buy, cmd.price):
            return _order_rejected(cmd, Code.POST_ONLY_WOULD_TAKE, "the order would take")
        return None

    def _fillable(self, taker: Order, book: OrderBook, tick: int, budget: int) -> int:
        """How much of `taker` would fill now, walking the book without changing it."""
        opposite = book.asks if taker.is_buy else book.bids
        is_buy, market, limit = taker.is_buy, taker.type == "market", taker.price
        want = taker.remaining
        filled = 0
        for level in opposite.levels_best_first():
            price = level.price
            if not market and (price > limit if is_buy else price < limit):
                break
            maker = level.head
            while maker is not None and filled < want:
                if maker.account is taker.account:
                    if taker.stp != "cancel_oldest":
                        return filled
                    maker = maker.next
                    continue
                q = min(want - filled, maker.remaining)
                if budget != NO_BUDGET:
                    q = min(q, budget // (price * tick))
                    if q == 0:
                        return filled
                    budget -= q * price * tick
                filled += q
                maker = maker.next
            if filled >= want:
                break
        return filled

    def _match(
        self, taker: Order, book: OrderBook, tick: int, budget: int, ts: int, events: list[Event]
    ) -> None:
        """Trade `taker` against the book, then rest, expire or cancel what is left of it.

        The taker's holds are in place; each fill settles both accounts at once. The loop
        is bounded by the number of resting orders: each turn fills or removes one.
        """
        is_buy = taker.is_buy
        opposite = book.asks if is_buy else book.bids
        keys, levels, sign = opposite.keys, opposite.levels, opposite.sign
        market = taker.type == "market"
        limit = taker.price
        symbol = taker.symbol
        taker_account = taker.account
        taker_id = taker.order_id
        remaining = taker.remaining
        end_reason: DoneReason | None = None
        append = events.append
        while remaining and keys:
            price = keys[-1] * sign
            if not market and (price > limit if is_buy else price < limit):
                break
            level = levels[price]
            maker = level.head
            while maker is not None:
                maker_account = maker.account
                if maker_account is taker_account:
                    stp = taker.stp
                    if stp == "cancel_newest":
                        end_reason = "self_trade"
                        break
                    following = maker.next
                    self._end_resting(maker, "self_trade", events)
                    maker = following
                    if stp == "cancel_both":
                        end_reason = "self_trade"
                        break
                    continue
                maker_remaining = maker.remaining
                q = remaining if remaining < maker_remaining else maker_remaining  # noqa: FURB136 - min() is a call on the hot path
                notional = price * tick * q
                if budget != NO_BUDGET:
                    affordable = budget // (price * tick)
                    if affordable < q:
                        q = affordable
                        if q == 0:
                            end_reason = "expired"
                            break
                        notional = price * tick * q
                    budget -= notional
                if is_buy:
                    buyer, seller = taker_account, maker_account
                    if not market:
                        buyer.cash_held -= limit * tick * q
                    seller.cash += notional
                    buyer.cash -= notional
                else:
                    buyer, seller = maker_account, taker_account
                    buyer.cash_held -= notional
                    buyer.cash -= notional
                    seller.cash += notional
                positions = buyer.positions
                positions[symbol] = positions.get(symbol, 0) + q
                seller.positions[symbol] -= q
                seller.units_held[symbol] -= q
                remaining -= q
                maker_remaining -= q
                maker.remaining = maker_remaining
                level.total -= q
                trade_id = self.next_trade
                self.next_trade = trade_id + 1
                append(
                    TradeExecuted(
                        trade_id, symbol, price, q, taker.side, maker.order_id,
                        maker_account.account_id, maker_remaining, taker_id,
                        taker_account.account_id, remaining, ts,
                    )
                )
                if maker_remaining:
                    break  # the taker is done: only a filled maker lets it go on
                following = maker.next
                level.head = following
                if following is None:
                    level.tail = None
                else:
                    following.prev = None
                maker.level = maker.next = None
                maker.status = "filled"
                del maker_account.open_orders[maker.order_id]
                if maker.client_order_id:
                    _archive(maker)
                maker = following
                if not remaining:
                    break
            if level.head is None:
                opposite.drop_level(price)
            if end_reason:
                break
        taker.remaining = remaining
        if not remaining:
            taker.status = "filled"
            taker_account.open_orders.pop(taker_id, None)
            if taker.client_order_id:
                _archive(taker)
        elif end_reason or market or taker.tif != "gtc":
            # Inlined _end_taker: an IOC remainder expiring is the common case.
            if is_buy:
                if not market:
                    taker_account.cash_held -= limit * tick * remaining
            else:
                taker_account.units_held[symbol] -= remaining
            reason: DoneReason = end_reason or "expired"
            taker.status = reason
            taker_account.open_orders.pop(taker_id, None)
            if taker.client_order_id:
                _archive(taker)
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
            own_level.append(taker)
            taker_account.open_orders[taker_id] = taker

    def _release_holds(self, order: Order) -> None:
        account = order.account
        if order.is_buy:
            if order.type == "limit":
                tick = self.instruments[order.symbol].tick
                account.cash_held -= order.price * tick * order.remaining
        else:
            account.units_held[order.symbol] -= order.remaining

    def _end_taker(self, order: Order, reason: DoneReason, events: list[Event]) -> None:
        """End an order that is not resting (a taker's remainder)."""
        self._release_holds(order)
        order.status = reason
        order.account.open_orders.pop(order.order_id, None)
        if order.client_order_id:
            _archive(order)
        events.append(_cancelled(order, reason))

    def _end_resting(self, order: Order, reason: DoneReason, events: list[Event]) -> None:
        """Take a resting order off the book (keeping its level for the caller to drop)."""
        level = order.level
        assert level is not None, "only resting orders end this way"
        level.unlink(order)
        self._end_taker(order, reason, events)

    # --- cancel and replace ---------------------------------------------------------------

    def _cancel(self, cmd: CancelOrder) -> list[Event]:
        account = self.accounts.get(cmd.account)
        if account is None:
            return [_cancel_rejected(cmd, Code.UNKNOWN_ACCOUNT, "no such account")]
        order: Order | None = None
        if cmd.order_id:
            order = account.open_orders.get(cmd.order_id)
        elif cmd.client_order_id:
            record = account.client_orders.get(cmd.client_order_id)
            if record is not None and isinstance(record[1], Order):
                order = record[1]
        else:
            return [_cancel_rejected(cmd, Code.BAD_REQUEST, "give order_id or client_order_id")]
        if order is None or order.level is None:
            return [_cancel_rejected(cmd, Code.UNKNOWN_ORDER, "no such open order")]
        events: list[Event] = []
        self._cancel_resting(order, "cancelled", events)
        return events

    def _cancel_resting(self, order: Order, reason: DoneReason, events: list[Event]) -> None:
        """End a resting order outside matching, dropping its level when it empties.
        (_end_resting and _end_taker, flattened: cancels are a third of all traffic.)"""
        level = order.level
        assert level is not None, "only resting orders can be cancelled"
        level.unlink(order)
        account = order.account
        symbol = order.symbol
        if order.is_buy:  # a resting order is a limit order
            account.cash_held -= order.price * self.instruments[symbol].tick * order.remaining
        else:
            account.units_held[symbol] -= order.remaining
        order.status = reason
        del account.open_orders[order.order_id]
        if order.client_order_id:
            _archive(order)
        events.append(_cancelled(order, reason))
        if level.head is None:
            book = self.books[symbol]
            (book.bids if order.is_buy else book.asks).drop_level(level.price)

    def _cancel_all(self, cmd: CancelAll) -> list[Event]:
        account = self.accounts.get(cmd.account)
        if account is None:
            return [_cancel_all_rejected(cmd, Code.UNKNOWN_ACCOUNT, "no such account")]
        if cmd.symbol and cmd.symbol not in self.instruments:
            return [_cancel_all_rejected(cmd, Code.UNKNOWN_SYMBOL, "no such instrument")]
        events: list[Event] = []
        for order in list(account.open_orders.values()):
            if not cmd.symbol or order.symbol == cmd.symbol:
                self._cancel_resting(order, "cancelled", events)
        return events

    def _replace(self, cmd: ReplaceOrder) -> list[Event]:
        account = self.accounts.get(cmd.account)
        if account is None:
            return [_replace_rejected(cmd, Code.UNKNOWN_ACCOUNT, "no such account")]
        order = account.open_orders.get(cmd.order_id)
        if order is None:
            return [_replace_rejected(cmd, Code.UNKNOWN_ORDER, "no such open order")]
        if not cmd.qty and not cmd.price:
            return [_replace_rejected(cmd, Code.BAD_REQUEST, "give qty, price or both")]
        if not 0 <= cmd.qty <= MAX_QTY:
            return [_replace_rejected(cmd, Code.BAD_QTY, "quantity out of range")]
        if not 0 <= cmd.price <= MAX_PRICE_TICKS:
            return [_replace_rejected(cmd, Code.BAD_PRICE, "price out of range")]
        instrument = self.instruments[order.symbol]
        if instrument.status != "trading":
            return [_replace_rejected(cmd, Code.NOT_TRADING, f"instrument is {instrument.status}")]
        tick = instrument.tick
        new_price = cmd.price or order.price
        new_qty = cmd.qty or order.qty
        old_remaining = order.remaining
        new_remaining = max(new_qty - (order.qty - old_remaining), 0)
        symbol = order.symbol
        if order.is_buy:
            extra = (new_price * new_remaining - order.price * old_remaining) * tick
            if extra > account.cash - account.cash_held:
                return [_replace_rejected(cmd, Code.INSUFFICIENT_FUNDS, "not enough cash")]
        elif new_remaining - old_remaining > account.available_units(symbol):
            return [_replace_rejected(cmd, Code.INSUFFICIENT_UNITS, "not enough units")]
        book = self.books[symbol]
        if (
            order.post_only
            and new_remaining
            and new_price != order.price
            and _crosses(book, order.is_buy, new_price)
        ):
            return [_replace_rejected(cmd, Code.POST_ONLY_WOULD_TAKE, "the order would take")]

        side = book.bids if order.is_buy else book.asks
        if not new_remaining:
            side.remove(order)
            self._release_holds(order)
            account.open_orders.pop(order.order_id, None)
            order.price, order.qty, order.remaining = new_price, new_qty, 0
            order.status = "replaced_out"
            if order.client_order_id:
                _archive(order)
            return [
                _replaced(order, kept_priority=False, remaining=0),
                _cancelled(order, "replaced_out"),
            ]
        events: list[Event] = []
        kept_priority = new_price == order.price and new_remaining <= old_remaining
        if kept_priority:
            self._resize_holds(order, new_price, new_remaining, tick)
            level = order.level
            assert level is not None, "an open order rests on a level"
            level.total += new_remaining - old_remaining
            order.qty = new_qty
            order.remaining = new_remaining
            events.append(_replaced(order, kept_priority=True, remaining=new_remaining))
            return events
        side.remove(order)
        self._resize_holds(order, new_price, new_remaining, tick)
        order.price = new_price
        order.qty = new_qty
        order.remaining = new_remaining
        events.append(_replaced(order, kept_priority=False, remaining=new_remaining))
        self._match(order, book, tick, NO_BUDGET, cmd.ts, events)
        return events

    def _resize_holds(self, order: Order, new_price: int, new_remaining: int, tick: int) -> None:
        account = order.account
        if order.is_buy:
            account.cash_held += (new_price * new_remaining - order.price * order.remaining) * tick
        else:
            account.units_held[order.symbol] += new_remaining - order.remaining


# --- small pure helpers ------------------------------------------------------------------


def _crosses(book: OrderBook, is_buy: bool, price: int) -> bool:
    """Would a limit order at `price` meet a resting order of the other side?"""
    if is_buy:
        best_ask = book.asks.best_price()
        return best_ask is not None and price >= best_ask
    best_bid = book.bids.best_price()
    return best_bid is not None and price <= best_bid


def _add_units(positions: dict[str, int], symbol: str, qty: int) -> None:
    positions[symbol] = positions.get(symbol, 0) + qty


def _refuse(command: Command, code: Code, message: str, account: str = "") -> list[Event]:
    return [Rejected(command=type(command).__name__, code=code, message=message, account=account)]


def _order_rejected(cmd: PlaceOrder, code: Code, message: str) -> OrderRejected:
    return OrderRejected(
        account=cmd.account, code=code, message=message, client_order_id=cmd.client_order_id
    )


def _cancel_rejected(cmd: CancelOrder, code: Code, message: str) -> OrderRejected:
    return OrderRejected(
        account=cmd.account,
        code=code,
        message=message,
        client_order_id=cmd.client_order_id,
        order_id=cmd.order_id,
    )


def _cancel_all_rejected(cmd: CancelAll, code: Code, message: str) -> OrderRejected:
    return OrderRejected(account=cmd.account, code=code, message=message)


def _replace_rejected(cmd: ReplaceOrder, code: Code, message: str) -> OrderRejected:
    return OrderRejected(account=cmd.account, code=code, message=message, order_id=cmd.order_id)


def _remember(account: Account, cid: str, record: ClientOrderRecord) -> None:
    """Keep what answered `cid`, forgetting the oldest ended one past the bound."""
    account.client_orders[cid] = record
    ids = account.client_order_ids
    ids.append(cid)
    if len(ids) > MAX_CLIENT_ORDER_IDS_PER_ACCOUNT:
        records = account.client_orders
        for _ in range(len(ids)):  # each open order's id moves to the back at most once
            oldest = ids.popleft()
            if isinstance(records[oldest][1], Order):
                ids.append(oldest)
            else:
                del records[oldest]
                return


def _archive(order: Order) -> None:
    """Remember an ended order as plain values: its client order id may be resent."""
    records = order.account.client_orders
    records[order.client_order_id] = (records[order.client_order_id][0], order.ended())


def _answer_resend(
    cmd: PlaceOrder, first: PlaceOrder, outcome: Order | EndedOrder | OrderRejected
) -> Event:
    """A place whose client order id was used before: repeat the answer, or refuse it."""
    if msgspec.structs.replace(cmd, ts=first.ts) != first:
        return _order_rejected(
            cmd, Code.DUPLICATE_CLIENT_ORDER_ID, "client_order_id was used for another order"
        )
    if isinstance(outcome, OrderRejected):
        return outcome
    return OrderAccepted(
        order_id=outcome.order_id,
        account=cmd.account,
        client_order_id=cmd.client_order_id,
        symbol=first.symbol,
        side=first.side,
        type=first.type,
        tif=first.tif,
        price=outcome.price,
        qty=outcome.qty,
        remaining=outcome.remaining,
        status=outcome.status,
        post_only=first.post_only,
        ts=first.ts,  # an order's time is that of the place that created it
        resent=True,
    )


def _cancelled(order: Order, reason: DoneReason) -> OrderCancelled:
    return OrderCancelled(
        order.order_id, order.account.account_id, order.client_order_id, order.symbol,
        order.side, order.price, order.remaining, reason,
    )


def _replaced(order: Order, *, kept_priority: bool, remaining: int) -> OrderReplaced:
    return OrderReplaced(
        order_id=order.order_id,
        account=order.account.account_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=order.price,
        qty=order.qty,
        remaining=remaining,
        kept_priority=kept_priority,
    )
