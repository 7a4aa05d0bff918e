"""The hidden value the informed traders see through noise: a random walk with news jumps.

Pure and seeded: the same seed and the same time steps give the same path. Values are in
ticks (floats: the walk is finer than a tick; prices sent are rounded to one).
"""

import math
import random
from dataclasses import dataclass

# The walk never goes below this many ticks: a price is at least one tick.
FLOOR_TICKS = 10.0


@dataclass(frozen=True)
class WalkParams:
    """How the value moves, per simulated second: the walk's standard deviation (as a
    fraction of the value, so a 10.00 share and a 1000.00 one look alike), how often news
    comes, and how large a jump is (a fraction of the value, either way)."""

    volatility_per_s: float = 0.0015
    news_per_s: float = 1 / 120
    jump_fraction: float = 0.03


class Fundamental:
    def __init__(self, rng: random.Random, start_ticks: float, params: WalkParams) -> None:
        self._rng = rng
        self.params = params
        self.value = max(start_ticks, FLOOR_TICKS)
        self.jumps = 0

    def advance(self, dt_s: float) -> float:
        """Move the value `dt_s` simulated seconds on; returns the new value."""
        p = self.params
        step = self._rng.gauss(0.0, p.volatility_per_s * math.sqrt(dt_s)) * self.value
        # News: a Poisson arrival within dt (at most one per step: steps are short).
        if self._rng.random() < 1.0 - math.exp(-p.news_per_s * dt_s):
            self.jumps += 1
            step += self._rng.choice((-1.0, 1.0)) * p.jump_fraction * self.value
        self.value = max(self.value + step, FLOOR_TICKS)
        return self.value
