"""Per-connection request rate limiting: a token bucket, and when abuse ends the session.

Each WebSocket connection may send RATE_PER_S requests a second on average, in bursts of
up to BURST (twice the rate; `exchange serve --rate-limit` sets the rate). A request over
the limit is answered RATE_LIMITED and not executed; a
connection that is refused REFUSALS_BEFORE_CLOSE times within one window is closed with
4029.
"""

import time
from collections.abc import Callable

RATE_PER_S = 2_000.0
BURST = 4_000.0
REFUSALS_BEFORE_CLOSE = 1_000
REFUSAL_WINDOW_S = 10.0


class TokenBucket:
    def __init__(
        self,
        rate: float = RATE_PER_S,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.updated = clock()
        self.refusals = 0
        self.window_start = self.updated

    def take(self) -> bool:
        """One request: True when it may go ahead."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        if now - self.window_start > REFUSAL_WINDOW_S:
            self.window_start, self.refusals = now, 0
        self.refusals += 1
        return False

    @property
    def abusive(self) -> bool:
        return self.refusals >= REFUSALS_BEFORE_CLOSE
