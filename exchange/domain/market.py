"""The exchange's whole state: accounts, instruments, books, offerings and the id counters.

Plain data with no rules. The rule modules (admin, settlement, primary_market, order_entry,
matching, cancel_replace) are functions of a `Market`; `Engine` is the `Market` that applies
commands to itself. state.py exports, restores and hashes exactly these fields.
"""

from heapq import heappush
from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from exchange.domain.accounts import Account
    from exchange.domain.book import OrderBook
    from exchange.domain.instruments import Instrument, Offering


@mypyc_attr(allow_interpreted_subclasses=True)  # as Engine, its subclass, must
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
        # Deadlines (market_phases.py): a heap of (due ns, kind, order id, account or
        # symbol). Derived from the orders' and instruments' own times, so it is not
        # exported: an entry whose order or time has changed since is skipped when due.
        self.timers: list[Timer] = []

    def add_timer(self, due: int, kind: int, order_id: int, key: str) -> None:
        heappush(self.timers, (due, kind, order_id, key))


# A deadline's kinds, in the order deadlines due at the same time happen.
EXPIRE_ORDER: Final = 0  # a gtd order's expire_at (order id, account)
CLOSE_SESSION: Final = 1  # an instrument's close_at (0, symbol)
END_AUCTION: Final = 2  # an instrument's open_at while in pre_open (0, symbol)
Timer = tuple[int, int, int, str]
