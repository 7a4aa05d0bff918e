"""Binance's REST rate limit: request weight per address per minute.

Each /api/v3 call costs its weight (Binance's figures, roughly: 1 for a small read, more
for a deep book or a list of every symbol); the sum per address over the current minute
is returned in `X-MBX-USED-WEIGHT-1M` on every answer. Past WEIGHT_PER_MINUTE a call is
refused 429 with -1003 and `Retry-After` (seconds to the next minute). This comes on top
of the native protocol's limits, which count WebSocket requests.
"""

import time
from collections.abc import Callable

# Binance's spot default (REQUEST_WEIGHT, 1 MINUTE) in exchangeInfo's rateLimits.
WEIGHT_PER_MINUTE = 6_000
WINDOW_S = 60
# Addresses tracked at once; past it the oldest window is dropped (a fresh minute for it).
MAX_ADDRESSES = 65_536


class Weights:
    def __init__(
        self, limit: int = WEIGHT_PER_MINUTE, clock: Callable[[], float] = time.time
    ) -> None:
        self.limit = limit
        self.clock = clock
        self._used: dict[str, tuple[int, int]] = {}  # address -> (minute, weight used)

    def spend(self, address: str, weight: int) -> tuple[int, int | None]:
        """Spend `weight` for `address`: (weight used this minute, None) when allowed,
        else (used, seconds until the minute ends: Retry-After). A refused call costs
        nothing more."""
        now = self.clock()
        minute = int(now // WINDOW_S)
        start, used = self._used.get(address, (minute, 0))
        if start != minute:
            used = 0
        if used + weight > self.limit:
            self._keep(address, minute, used)
            return used, max(1, int((minute + 1) * WINDOW_S - now + 0.999))
        used += weight
        self._keep(address, minute, used)
        return used, None

    def _keep(self, address: str, minute: int, used: int) -> None:
        if address not in self._used and len(self._used) >= MAX_ADDRESSES:
            del self._used[next(iter(self._used))]
        self._used[address] = (minute, used)
