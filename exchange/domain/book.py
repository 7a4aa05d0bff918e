"""The order book's data structures: orders, price levels and the two sides of a book.

A level is an intrusive doubly linked FIFO of orders (O(1) append, unlink and
head), a side keeps a sorted list of its prices with the best one last (O(1)
best price, O(1) removal of the best level). No matching rules live here: the
engine owns them, and this module never creates events.
"""

from bisect import bisect_left, insort

import msgspec

from exchange.domain.accounts import Account
from exchange.domain.commands import OrderType, SelfTradePrevention, Side, TimeInForce
from exchange.domain.events import OrderStatus


class OrderState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A resting order as plain values, as a snapshot stores it (its fee rates and a gtd
    order's expiry, when not zero, are kept apart: state.FeeRates, state.OrderExpiry)."""

    order_id: int
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    remaining: int
    post_only: bool
    stp: SelfTradePrevention
    ts: int
    status: OrderStatus


class EndedOrder(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What is remembered of an ended order for resends of its client order id; the rest
    is in the place that created it. Plain values, so the garbage collector skips it."""

    order_id: int
    price: int
    qty: int
    remaining: int
    status: OrderStatus


class Order:
    """A live order. Mutable on purpose: the hot path updates it in place."""

    __slots__ = (
        "account",
        "client_order_id",
        "expire_at",
        "is_buy",
        "level",
        "maker_bps",
        "next",
        "order_id",
        "post_only",
        "prev",
        "price",
        "qty",
        "remaining",
        "side",
        "status",
        "stp",
        "symbol",
        "taker_bps",
        "tif",
        "ts",
        "type",
    )

    def __init__(
        self,
        order_id: int,
        account: Account,
        client_order_id: str,
        symbol: str,
        side: Side,
        type_: OrderType,
        tif: TimeInForce,
        price: int,
        qty: int,
        post_only: bool,
        stp: SelfTradePrevention,
        ts: int,
        expire_at: int = 0,
        maker_bps: int = 0,
        taker_bps: int = 0,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.client_order_id = client_order_id
        self.symbol = symbol
        self.side = side
        self.is_buy = side == "buy"
        self.type = type_
        self.tif = tif
        self.price = price
        self.qty = qty
        self.remaining = qty
        self.post_only = post_only
        self.stp = stp
        self.ts = ts
        self.expire_at = expire_at  # a gtd order's expiry (ns); 0 for any other
        # The instrument's fee rates when the order was accepted: it keeps them for life.
        self.maker_bps = maker_bps
        self.taker_bps = taker_bps
        self.status: OrderStatus = "open"
        self.level: Level | None = None
        self.prev: Order | None = None
        self.next: Order | None = None

    def ended(self) -> EndedOrder:
        return EndedOrder(self.order_id, self.price, self.qty, self.remaining, self.status)

    def state(self) -> OrderState:
        return OrderState(
            self.order_id, self.account.account_id, self.client_order_id, self.symbol,
            self.side, self.type, self.tif, self.price, self.qty, self.remaining,
            self.post_only, self.stp, self.ts, self.status,
        )


class Level:
    """All resting orders at one price, oldest first, with their total remaining quantity."""

    __slots__ = ("head", "price", "tail", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.total = 0
        self.head: Order | None = None
        self.tail: Order | None = None

    def append(self, order: Order) -> None:
        order.level = self
        order.next = None
        order.prev = tail = self.tail
        if tail is None:
            self.head = order
        else:
            tail.next = order
        self.tail = order
        self.total += order.remaining

    def unlink(self, order: Order) -> None:
        """Take `order` out of the queue; its remaining quantity leaves the level's total."""
        prev, nxt = order.prev, order.next
        if prev is None:
            self.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.prev = prev
        self.total -= order.remaining
        order.level = order.prev = order.next = None

    def orders(self) -> list[Order]:
        """The queue as a list, oldest first (for views and snapshots, not the hot path)."""
        out: list[Order] = []
        node = self.head
        while node is not None:
            out.append(node)
            node = node.next
        return out


class BookSide:
    """One side of a book. `keys` holds each level's sort key, best last: the price itself
    for bids (highest is best), minus the price for asks (lowest is best)."""

    __slots__ = ("is_bid", "keys", "levels", "sign")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.sign = 1 if is_bid else -1
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []

    def best_price(self) -> int | None:
        keys = self.keys
        return keys[-1] * self.sign if keys else None

    def add_level(self, price: int) -> Level:
        """A new, empty level at `price` (there must be none), placed in price order."""
        level = self.levels[price] = Level(price)
        insort(self.keys, price * self.sign)
        return level

    def drop_level(self, price: int) -> None:
        """Remove an empty level."""
        del self.levels[price]
        keys = self.keys
        key = price * self.sign
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def rest(self, order: Order) -> None:
        """Append `order` to the back of its price level."""
        level = self.levels.get(order.price)
        if level is None:
            level = self.add_level(order.price)
        level.append(order)

    def remove(self, order: Order) -> None:
        """Unlink a resting order and drop its level when that empties it."""
        level = order.level
        assert level is not None, "only resting orders can be removed"
        level.unlink(order)
        if level.head is None:
            self.drop_level(level.price)

    def levels_best_first(self) -> list[Level]:
        sign = self.sign
        levels = self.levels
        return [levels[key * sign] for key in reversed(self.keys)]


class OrderBook:
    """Both sides of one instrument's book."""

    __slots__ = ("asks", "bids", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)

    def side_of(self, order: Order) -> BookSide:
        return self.bids if order.is_buy else self.asks

    def opposite_of(self, is_buy: bool) -> BookSide:
        return self.asks if is_buy else self.bids
