"""An account's balances and holds: cash in minor units, positions in units.

Holds are what open orders and offering subscriptions have reserved; available
is balance minus hold, and no rule may spend more than is available.
"""

from collections import deque
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from exchange.domain.book import Order
    from exchange.domain.commands import PlaceOrder
    from exchange.domain.events import OrderRejected

# What answered a client order id the first time: the order it created (open or ended: it
# keeps its place), or the place and its rejection.
ClientOrderRecord: TypeAlias = "Order | tuple[PlaceOrder, OrderRejected]"


def hash_keeping_dict() -> "dict[str, ClientOrderRecord]":
    """An empty dict for string keys whose table keeps each key's hash.

    CPython lays out a dict of only `str` keys without their hashes and, probing for a key,
    reads the hash from each key string it meets: in an account's large map of client order
    ids every probe of a new id is then a cache miss (~90 ns a place, BENCHMARKS.md). Once
    any other key has been in a dict its table keeps hashes for good, resizes included; so
    one int key, put in and taken out at once. Nothing else about the dict changes.
    """
    table: dict[Any, Any] = {0: None}
    del table[0]
    return table


class Account:
    """Mutable balances of one account. Positions and unit holds are keyed by symbol."""

    __slots__ = (
        "account_id",
        "api_key_hashes",
        "cash",
        "cash_held",
        "client_order_ids",
        "client_orders",
        "name",
        "open_orders",
        "positions",
        "units_held",
    )

    def __init__(self, account_id: str, name: str) -> None:
        self.account_id = account_id
        self.name = name
        self.api_key_hashes: list[str] = []
        self.cash = 0
        self.cash_held = 0
        self.positions: dict[str, int] = {}
        self.units_held: dict[str, int] = {}
        # Open orders by id; ids grow with acceptance, so this dict is in id order.
        self.open_orders: dict[int, Order] = {}
        self.client_orders = hash_keeping_dict()
        # The same ids, oldest first: the order in which they are forgotten.
        self.client_order_ids: deque[str] = deque()

    def available_cash(self) -> int:
        return self.cash - self.cash_held

    def available_units(self, symbol: str) -> int:
        return self.positions.get(symbol, 0) - self.units_held.get(symbol, 0)
