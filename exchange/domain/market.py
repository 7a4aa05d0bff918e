"""The exchange's whole state: accounts, instruments, books, offerings and the id counters.

Plain data with no rules. The rule modules (admin, settlement, primary_market, order_entry,
matching, cancel_replace) are functions of a `Market`; `Engine` is the `Market` that applies
commands to itself. state.py exports, restores and hashes exactly these fields.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exchange.domain.accounts import Account
    from exchange.domain.book import OrderBook
    from exchange.domain.instruments import Instrument, Offering


class Market:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.instruments: dict[str, Instrument] = {}
        self.books: dict[str, OrderBook] = {}
        self.offerings: dict[int, Offering] = {}
        self.next_account = 1
        self.next_order = 1
        self.next_trade = 1
        self.next_offering = 1
