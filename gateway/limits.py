"""Request rate limits: token buckets per connection and per account, and the count of
refusals that makes a connection abusive. The defaults of every connection and rate bound
`exchange serve` takes as a flag live here (the command line reads them without aiohttp).

Each WebSocket connection may send RATE_PER_S requests a second on average, in bursts of
up to twice that (`exchange serve --rate-limit` sets the rate). All the connections of one
account share a second bucket of ACCOUNT_RATE_PER_S (`--account-rate-limit`), so opening
more sockets does not multiply an account's rate. A request over either limit is answered
RATE_LIMITED and not executed; a connection refused REFUSALS_BEFORE_CLOSE times within
one window is closed with 4029 (once the answers of what it sent before are written).
"""

import time
from collections.abc import Callable

RATE_PER_S = 2_000.0
BURST = 4_000.0
# Every connection of an account together: a trader with two or three busy connections
# fits; twenty sockets of one account no longer run twenty connections' worth. Never below
# the per-connection rate (see account_rate), so one connection's limit is what it says.
ACCOUNT_RATE_PER_S = 5_000.0
# Every unauthenticated connection from one address together (they are anonymous: the
# address is all that ties a reconnecting client to its spent burst). As an account's;
# never below the per-connection rate either.
PEER_RATE_PER_S = 5_000.0
REFUSALS_BEFORE_CLOSE = 1_000
REFUSAL_WINDOW_S = 10.0
# Open WebSockets at once by default (`exchange serve --max-connections`); past it an
# upgrade is answered 503 BUSY.
MAX_CONNECTIONS = 10_000
# Seconds a new connection has to send its first request's headers (`--header-timeout`):
# an honest client sends them in one packet, at once; a few seconds covers a slow link.
HEADER_TIMEOUT_S = 5.0
# Connections at once that have not sent a complete first request (`--max-half-open`).
# Far more than honest clients have in flight at any moment; small against the process's
# file handles, so half-open ones can never crowd out the WebSockets and the journal.
MAX_HALF_OPEN = 512


def account_rate(rate_per_connection: float, account_rate_per_s: float | None) -> float:
    """The per-account rate in force: as set, or by default ACCOUNT_RATE_PER_S but never
    less than one connection's rate (a server started with a high `--rate-limit` for a
    benchmark is not throttled by the account default)."""
    if account_rate_per_s is not None:
        return account_rate_per_s
    return max(ACCOUNT_RATE_PER_S, rate_per_connection)


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

    def take(self, cost: float = 1.0) -> bool:
        """A request costing `cost` tokens (1 for most): True when it may go ahead. A cost
        past the burst can never be paid, so such a request is always refused."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class Refusals:
    """RATE_LIMITED refusals within the current window, of a connection or of an address's
    anonymous connections. Abusive from the refusal that reaches the bound until
    REFUSAL_WINDOW_S later: then the count starts again (an address is not shut out for
    good, and every client behind one NAT with it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.count = 0
        self.window_start = clock()
        self.abusive_since: float | None = None

    def note(self) -> None:
        now = self.clock()
        if now - self.window_start > REFUSAL_WINDOW_S:
            self.window_start, self.count = now, 0
        self.count += 1
        if self.count >= REFUSALS_BEFORE_CLOSE and self.abusive_since is None:
            self.abusive_since = now

    @property
    def abusive(self) -> bool:
        since = self.abusive_since
        if since is None:
            return False
        now = self.clock()
        if now - since > REFUSAL_WINDOW_S:
            self.abusive_since, self.count, self.window_start = None, 0, now
            return False
        return True
