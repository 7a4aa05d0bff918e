"""The order book's data structures: orders, price levels and the two sides of a book.

A level is a FIFO list of orders with lazy deletion (O(1) append, leave and head; see
`Level`), a side keeps a sorted list of its prices with the best one last (O(1)
best price, O(1) removal of the best level). No matching rules live here: the
engine owns them, and this module never creates events.
"""

from bisect import bisect_left, insort
from typing import Final

from exchange.domain.accounts import Account
from exchange.domain.commands import OrderType, PlaceOrder, SelfTradePrevention, Side, TimeInForce
from exchange.domain.events import OrderStatus
from exchange.domain.order_values import EndedOrder, OrderState

# Departed entries a level's queue may hold beyond twice its live orders before `leave`
# rebuilds it: the rebuild costs O(live), so this slack keeps small levels from rebuilding
# on every cancel while memory stays O(live orders + 64) per level.
DEPARTED_SLACK: Final = 64
# Emptied levels a side keeps to reuse (the Level and its queue's list object; clearing
# frees the list's items): the levels nearest the spread empty and come back all the time,
# most of all in a shallow book.
# A bound so that a book which once had many levels gives their memory back.
SPARE_LEVELS: Final = 16


class Order:
    """An order: open, or ended and kept as its client order id's record (client_orders.py;
    its fields no longer change then). Mutable on purpose: the hot path updates it in place;
    compared by identity. A plain class, not a Struct: compiled (docs/ENGINE.md, "Compiled
    core") its fields are read and written as C struct members."""

    __slots__ = (
        "account", "budget", "client_order_id", "display_qty", "expire_at", "is_buy", "level",
        "maker_bps", "order_id", "place", "post_only", "price", "qty", "remaining", "shown", "side",
        "status", "stp", "symbol", "taker_bps", "tif", "trigger_price", "ts", "type",
    )  # fmt: skip

    def __init__(
        self, order_id: int, account: Account, client_order_id: str, symbol: str, side: Side,
        is_buy: bool, type: OrderType, tif: TimeInForce, price: int, qty: int,  # noqa: A002
        remaining: int, post_only: bool, stp: SelfTradePrevention, ts: int,
        status: OrderStatus = "open", *, maker_bps: int = 0, taker_bps: int = 0,
        expire_at: int = 0,
    ) -> None:  # fmt: skip
        self.order_id = order_id
        self.account = account
        self.client_order_id = client_order_id
        self.symbol = symbol
        self.side = side
        self.is_buy = is_buy
        self.type = type
        self.tif = tif
        self.price = price
        self.qty = qty
        self.remaining = remaining
        self.post_only = post_only
        self.stp = stp
        self.ts = ts
        self.status = status
        self.level: Level | None = None
        # Stops: the trigger; `type` is "stop" or "stop_limit" while the order waits for
        # it, and "market" or "limit" once triggered (the trigger stays, for the views).
        self.trigger_price = 0
        # Icebergs: the most shown at once (0: not an iceberg), and what the book shows now
        # (counted in its level's total instead of `remaining`).
        self.display_qty = 0
        self.shown = 0
        # A stop buy's budget (its max_notional), held in cash while it waits.
        self.budget = 0
        # The instrument's fee rates when the order was accepted: it keeps them for life
        # (a stop through its wait and after its trigger).
        self.maker_bps = maker_bps
        self.taker_bps = taker_bps
        self.expire_at = expire_at  # a gtd order's expiry (ns); 0 for any other
        # The place that created it, kept for resends when it has a client order id: the
        # order itself is that id's record, open or ended (client_orders.py).
        self.place: PlaceOrder | None = None

    @property
    def visible(self) -> int:
        """What the book shows of this order: `shown` for an iceberg, else all of it."""
        return self.shown if self.display_qty else self.remaining

    @property
    def waiting(self) -> bool:
        """A stop order not triggered yet: open, but in its book's stops, not a level."""
        return self.type in {"stop", "stop_limit"}

    def ended(self) -> EndedOrder:
        return EndedOrder(self.order_id, self.price, self.qty, self.remaining, self.status)

    def state(self) -> OrderState:
        return OrderState(
            self.order_id, self.account.account_id, self.client_order_id, self.symbol,
            self.side, self.type, self.tif, self.price, self.qty, self.remaining,
            self.post_only, self.stp, self.ts, self.status,
        )


class Level:
    """All resting orders at one price, oldest first, with their total remaining quantity.

    `queue[start:]` holds the orders in time priority, and may still hold orders which
    left the level (cancelled or ended): an order is in the level exactly while its `level`
    is this level. Leaving is O(1) and touches neither neighbour (lazy deletion); matching
    steps `start` past the departed and filled orders at the head (a list and an index, not
    a deque: the compiled core indexes a list in C but calls a deque's methods by name), and
    `leave` compacts the queue once its entries outnumber twice the live ones by
    DEPARTED_SLACK, as matching trims the taken head; so a level's memory stays within a
    constant factor of its live orders. Entries before `start` are never read again (an
    iceberg refreshed to the back has its old entry there).
    """

    __slots__ = ("live", "price", "queue", "start", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.total = 0
        self.live = 0  # orders in the level (entries of `queue` whose level is this one)
        self.queue: list[Order] = []
        self.start = 0  # where the level's entries begin in `queue`

    @property
    def head(self) -> Order | None:
        """The oldest order in the level (views and tests; matching reads `queue`)."""
        queue = self.queue
        for i in range(self.start, len(queue)):
            if queue[i].level is self:
                return queue[i]
        return None

    def append(self, order: Order) -> None:
        order.level = self
        self.queue.append(order)
        self.live += 1
        self.total += order.shown if order.display_qty else order.remaining

    def leave(self, order: Order) -> None:
        """Take `order` out of the level; its remaining quantity leaves the level's total."""
        order.level = None
        self.total -= order.shown if order.display_qty else order.remaining
        live = self.live = self.live - 1
        if len(self.queue) > 2 * live + DEPARTED_SLACK:
            self.compact()

    def compact(self) -> None:
        """Drop the departed entries (O(queue)): a new list, so holders must re-read it and
        `start`."""
        self.queue = self.orders()
        self.start = 0

    def remove_now(self, order: Order) -> None:
        """Take `order` out at once (O(level)): for an order that rests again elsewhere in
        this book, so its old entry can never be taken for it."""
        del self.queue[self.queue.index(order, self.start)]
        order.level = None
        self.total -= order.shown if order.display_qty else order.remaining
        self.live -= 1

    def orders(self) -> list[Order]:
        """The orders in the level, oldest first (for views and snapshots, not the hot path)."""
        queue = self.queue
        return [queue[i] for i in range(self.start, len(queue)) if queue[i].level is self]


class BookSide:
    """One side of a book. `keys` holds each level's sort key, best last: the price itself
    for bids (highest is best), minus the price for asks (lowest is best)."""

    __slots__ = ("is_bid", "keys", "levels", "sign", "spare")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.sign = 1 if is_bid else -1
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []
        # Dropped levels, empty, for add_level to reuse (no state: never exported).
        self.spare: list[Level] = []

    def best_price(self) -> int | None:
        keys = self.keys
        return keys[-1] * self.sign if keys else None

    def add_level(self, price: int) -> Level:
        """A new, empty level at `price` (there must be none), placed in price order."""
        spare = self.spare
        if spare:
            level = spare.pop()
            level.price = price
        else:
            level = Level(price)
        self.levels[price] = level
        insort(self.keys, price * self.sign)
        return level

    def drop_level(self, price: int) -> None:
        """Remove an empty level (no order's `level` names it any more: it may be reused)."""
        level = self.levels.pop(price)
        keys = self.keys
        key = price * self.sign
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]
        if len(self.spare) < SPARE_LEVELS:
            level.queue.clear()  # departed entries only
            level.total = level.live = level.start = 0
            self.spare.append(level)

    def rest(self, order: Order) -> None:
        """Append `order` to the back of its price level."""
        level = self.levels.get(order.price)
        if level is None:
            level = self.add_level(order.price)
        level.append(order)

    def remove(self, order: Order) -> None:
        """Take a resting order out at once and drop its level when that empties it."""
        level = order.level
        assert level is not None, "only resting orders can be removed"
        level.remove_now(order)
        if not level.live:
            self.drop_level(level.price)

    def levels_best_first(self) -> list[Level]:
        sign = self.sign
        levels = self.levels
        return [levels[key * sign] for key in reversed(self.keys)]


class StopBook:
    """Stop orders waiting for their trigger. Each side keeps (key, order id) pairs sorted so
    the ones a price reaches are a prefix: buys by trigger (a trade at or above triggers),
    sells by minus the trigger (a trade at or below triggers)."""

    __slots__ = ("buys", "orders", "sells")

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}  # by order id: acceptance order
        self.buys: list[tuple[int, int]] = []
        self.sells: list[tuple[int, int]] = []

    def add(self, order: Order) -> None:
        self.orders[order.order_id] = order
        if order.is_buy:
            insort(self.buys, (order.trigger_price, order.order_id))
        else:
            insort(self.sells, (-order.trigger_price, order.order_id))

    def remove(self, order: Order) -> None:
        del self.orders[order.order_id]
        keys = self.buys if order.is_buy else self.sells
        key = (order.trigger_price if order.is_buy else -order.trigger_price, order.order_id)
        del keys[bisect_left(keys, key)]

    def next_triggered(self, low: int, high: int) -> Order | None:
        """The oldest waiting stop that trades between `low` and `high` reached: a buy
        whose trigger is <= high, a sell whose trigger is >= low."""
        best = 0
        for order_id in (
            [k[1] for k in self.buys[: bisect_left(self.buys, (high + 1, 0))]]
            + [k[1] for k in self.sells[: bisect_left(self.sells, (-low + 1, 0))]]
        ):
            if not best or order_id < best:
                best = order_id
        return self.orders[best] if best else None


class OrderBook:
    """Both sides of one instrument's book, its waiting stop orders and its last trade price."""

    __slots__ = ("asks", "bids", "last_price", "stops", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)
        self.last_price = 0  # the price of the last trade (0: none yet); stops trigger on it
        self.stops = StopBook()

    def side_of(self, order: Order) -> BookSide:
        return self.bids if order.is_buy else self.asks

    def opposite_of(self, is_buy: bool) -> BookSide:
        return self.asks if is_buy else self.bids
