"""What each simulated trader decides, given what it can see: pure and seeded.

An agent is asked to act with a `View` (the best bid and ask of the checked book, the last
trade, and for the informed only, a noisy look at the hidden value) and answers with
`Place` and `Cancel` actions; the runner sends them over the WebSocket protocol and tells
the agent what came back (`on_accepted`, `on_fill`, `on_ended`). Nothing here does I/O,
reads a clock or draws from anything but the agent's own seeded `random.Random`.

Prices are integer ticks here; the runner writes them as wire decimals.
"""

import math
import random
from dataclasses import dataclass, field
from typing import Literal

Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class View:
    best_bid: int | None
    best_ask: int | None
    last: int | None
    fundamental: float  # ticks; only the informed traders look at it (through their noise)

    def mid(self) -> float | None:
        if self.best_bid is not None and self.best_ask is not None:
            return (self.best_bid + self.best_ask) / 2
        if self.last is not None:
            return float(self.last)
        return None


@dataclass(frozen=True)
class Place:
    side: Side
    price: int | None  # None: a market order
    qty: int
    tif: Literal["gtc", "ioc"] = "gtc"
    post_only: bool = False


@dataclass(frozen=True)
class Cancel:
    order_id: str


Action = Place | Cancel


@dataclass
class Resting:
    side: Side
    price: int
    remaining: int


@dataclass
class Agent:
    """What every agent keeps: its open orders and its position (units) from its fills."""

    name: str
    rng: random.Random
    units: int
    open_orders: dict[str, Resting] = field(default_factory=dict)  # by order_id, oldest first

    def act(self, view: View) -> list[Action]:
        raise NotImplementedError

    def on_accepted(self, order_id: str, place: Place, remaining: int, status: str) -> None:
        if status == "open" and place.price is not None:
            self.open_orders[order_id] = Resting(place.side, place.price, remaining)

    def on_fill(self, order_id: str, side: Side, qty: int, remaining: int) -> None:
        self.units += qty if side == "buy" else -qty
        resting = self.open_orders.get(order_id)
        if resting is not None:
            resting.remaining = remaining

    def on_ended(self, order_id: str) -> None:
        self.open_orders.pop(order_id, None)


@dataclass(frozen=True)
class MakerParams:
    levels: int = 3
    size: int = 50
    half_spread_fraction: float = 0.002  # of the price: 2 ticks at 10.00
    level_gap_ticks: int = 2
    # How far a fill of one quote's size moves the maker's estimate, in ticks: it learns
    # the value from the flow that trades against it (informed flow is one-sided).
    learn_ticks_per_size: float = 1.5
    # Quotes lean against the maker's inventory (ticks a unit) so it is not run dry.
    skew_ticks_per_unit: float = 0.002


@dataclass
class MarketMaker(Agent):
    """Quotes a few levels each side around its estimate, which it moves by the flow."""

    params: MakerParams = field(default_factory=MakerParams)
    estimate: float | None = None
    start_units: int | None = None

    def act(self, view: View) -> list[Action]:
        if self.estimate is None:
            mid = view.mid()
            self.estimate = mid if mid is not None else view.fundamental
        if self.start_units is None:
            self.start_units = self.units
        p = self.params
        centre = self.estimate - p.skew_ticks_per_unit * (self.units - self.start_units)
        half = max(1.0, p.half_spread_fraction * centre)
        wanted: dict[tuple[Side, int], int] = {}
        for level in range(p.levels):
            bid = math.floor(centre - half) - level * p.level_gap_ticks
            ask = math.ceil(centre + half) + level * p.level_gap_ticks
            if bid >= 1:
                wanted["buy", bid] = p.size
            wanted["sell", ask] = p.size
        actions: list[Action] = []
        have: set[tuple[Side, int]] = set()
        for order_id, resting in self.open_orders.items():
            key = (resting.side, resting.price)
            if key in wanted and key not in have:
                have.add(key)
            else:
                actions.append(Cancel(order_id))
        for (side, price), qty in wanted.items():
            if (side, price) not in have and (side == "buy" or self.units >= qty):
                actions.append(Place(side, price, qty, post_only=True))
        return actions

    def on_fill(self, order_id: str, side: Side, qty: int, remaining: int) -> None:
        super().on_fill(order_id, side, qty, remaining)
        if self.estimate is not None:
            moved = self.params.learn_ticks_per_size * qty / self.params.size
            # Its bid was hit (it bought): sellers think it is worth less, and so on.
            self.estimate += -moved if side == "buy" else moved


@dataclass(frozen=True)
class NoiseParams:
    take_probability: float = 0.5
    max_qty: int = 20
    max_offset_ticks: int = 8
    max_open: int = 4


@dataclass
class NoiseTrader(Agent):
    """Trades for reasons of its own: a random side, sometimes at once (IOC through the
    touch), sometimes resting a limit order near the middle."""

    params: NoiseParams = field(default_factory=NoiseParams)

    def act(self, view: View) -> list[Action]:
        p = self.params
        rng = self.rng
        side: Side = "buy" if rng.random() < 0.5 else "sell"
        qty = rng.randint(1, p.max_qty)
        actions: list[Action] = []
        if len(self.open_orders) >= p.max_open:
            actions.append(Cancel(next(iter(self.open_orders))))
        if side == "sell" and self.units < qty:
            return actions
        mid = view.mid()
        if rng.random() < p.take_probability:
            touch = view.best_ask if side == "buy" else view.best_bid
            if touch is None:
                return actions
            price = touch + 2 if side == "buy" else max(1, touch - 2)
            actions.append(Place(side, price, qty, tif="ioc"))
        elif mid is not None:
            offset = rng.randint(1, p.max_offset_ticks)
            price = math.floor(mid) - offset if side == "buy" else math.ceil(mid) + offset
            if price >= 1:
                actions.append(Place(side, price, qty))
        return actions


@dataclass(frozen=True)
class InformedParams:
    noise_fraction: float = 0.004  # each look at the value is off by this much (sd)
    edge_fraction: float = 0.002  # trades only when the book is this far off its estimate
    max_qty: int = 40


@dataclass
class InformedTrader(Agent):
    """Has a noisy private estimate of the hidden value and trades the book towards it:
    buys what is offered below its estimate, sells to bids above it (IOC, limited to its
    estimate less its edge, so it never pays more than it thinks a unit is worth)."""

    params: InformedParams = field(default_factory=InformedParams)

    def act(self, view: View) -> list[Action]:
        p = self.params
        estimate = view.fundamental * (1.0 + self.rng.gauss(0.0, p.noise_fraction))
        edge = max(1.0, p.edge_fraction * estimate)
        if view.best_ask is not None and view.best_ask <= estimate - edge:
            gap = estimate - edge - view.best_ask
            qty = min(p.max_qty, 5 + int(gap * 5))
            return [Place("buy", math.floor(estimate - edge), qty, tif="ioc")]
        if view.best_bid is not None and view.best_bid >= estimate + edge:
            gap = view.best_bid - estimate - edge
            qty = min(p.max_qty, 5 + int(gap * 5), self.units)
            if qty > 0:
                return [Place("sell", math.ceil(estimate + edge), qty, tif="ioc")]
        return []
