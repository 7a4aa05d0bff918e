"""The matching engine: the one place where the exchange's state changes.

`Engine.apply(command)` validates a command against the current state and either
refuses it (one rejection event, nothing changed) or applies it and returns the
events it produced. It must never raise on bad business input, never read a
clock or randomness, and never iterate anything whose order depends on hashing.
The rules it implements are written down in docs/ENGINE.md.

This module owns the entry point, its dispatch table and the read views. The state is
`market.Market`; the rules live one module each: admin (accounts, API keys, instruments,
statuses), settlement (cash and units in and out, holds), primary_market (offerings and
allocation), order_entry (placing orders), matching (the book walk and fills) and
cancel_replace (cancel, cancel-all, replace); market_phases (statuses, trading rules,
sequenced time) with auction (call auctions and their uncross).
"""

from collections.abc import Callable
from typing import Any

from mypy_extensions import mypyc_attr

from exchange.domain.admin import add_api_key, create_account, list_instrument
from exchange.domain.cancel_replace import cancel_all, cancel_order, replace_order
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
    SetInstrumentFees,
    SetInstrumentStatus,
    SetTradingRules,
    SubscribeOffering,
    Timer,
    Uncross,
    WithdrawCash,
    WithdrawUnits,
)
from exchange.domain.events import Event
from exchange.domain.fees import set_fees
from exchange.domain.market import Market
from exchange.domain.market_phases import (
    next_deadline,
    run_timers,
    set_rules,
    set_status,
    uncross_now,
)
from exchange.domain.order_entry import place_order
from exchange.domain.primary_market import close_offering, open_offering, subscribe_offering
from exchange.domain.settlement import deposit_cash, deposit_units, withdraw_cash, withdraw_units

# A rule: a function of the state and one command, returning the events it produced.
Handler = Callable[[Market, Any], list[Event]]


@mypyc_attr(allow_interpreted_subclasses=True)  # tests wrap apply() to fail on purpose
class Engine(Market):
    """The exchange's whole state and the rules that change it."""

    def __init__(self) -> None:
        super().__init__()
        self._handlers: dict[type[Any], Handler] = {
            CreateAccount: create_account,
            AddApiKey: add_api_key,
            DepositCash: deposit_cash,
            WithdrawCash: withdraw_cash,
            DepositUnits: deposit_units,
            WithdrawUnits: withdraw_units,
            ListInstrument: list_instrument,
            SetInstrumentStatus: set_status,
            OpenOffering: open_offering,
            SubscribeOffering: subscribe_offering,
            CloseOffering: close_offering,
            PlaceOrder: place_order,
            CancelOrder: cancel_order,
            CancelAll: cancel_all,
            ReplaceOrder: replace_order,
            SetTradingRules: set_rules,
            Uncross: uncross_now,
            Timer: run_timers,
            SetInstrumentFees: set_fees,
        }

    # --- the one entry point --------------------------------------------------------------

    def apply(self, command: Command) -> list[Event]:
        # Places and cancels, most of all traffic, called directly: in the compiled core that
        # is a C call, where the table's entries are called as Python functions.
        if type(command) is PlaceOrder:  # `is`, not isinstance(): a pointer compare, compiled
            return place_order(self, command)
        if type(command) is CancelOrder:
            return cancel_order(self, command)
        return self._handlers[type(command)](self, command)

    def next_deadline(self) -> int | None:
        """When something is next due (ns of sequenced time): the sequencer sends a Timer
        command once its clock has passed it (market_phases.py)."""
        return next_deadline(self)

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
