"""How far a cluster node may prune its local journal: never past the stream's first record.

A snapshot covers the records before it, so `exchange serve` prunes its journal below
its oldest kept snapshot. In a cluster the journal is also what refills a stream that
lost records (exchange/sequencer_node.py's StreamPublisher): the stream and the journal
together must hold every record from the stream's first on, whatever the stream lost. So
a node (leader or standby) prunes only below the smaller of its oldest kept snapshot + 1
and the stream's first record as it last saw it (StreamFloor), and the stream's trim
(exchange/streamtrim.py) needs no bound from any journal: the journal follows the trim,
never the other way round.

The floor is looked at before each of a standby's snapshots and after each of the
leader's trims; until a look succeeds it is 1 (nothing pruned). A stale look is safe:
the stream's first record only grows (a trim), except when a lost stream is refilled,
from this very journal.
"""

import asyncio
import logging

import nats.errors
from nats.js import JetStreamContext

from exchange.natsstream import first_record

log = logging.getLogger(__name__)

# One look at most: two small requests. A NATS that does not answer within it keeps the
# last look (the journal is pruned less, never more), and a stop waits no longer for it.
LOOK_TIMEOUT_S = 1.0


class StreamFloor:
    """The stream's first record as this node last saw it (1: not seen, or empty)."""

    def __init__(self, first: int = 1) -> None:
        self.first_record = first

    def prune_below(self, oldest_kept: int) -> int:
        """The seq below which the journal may be pruned, its oldest kept snapshot being
        at `oldest_kept` (Journal.prune_before's argument)."""
        return min(oldest_kept + 1, self.first_record)

    def saw(self, first: int | None) -> None:
        """A look at the stream found `first` its first record (None: it holds none, so
        the journal must keep everything: a refill would need it)."""
        self.first_record = 1 if first is None else first

    async def look(self, js: JetStreamContext) -> None:
        """Look again; a NATS error keeps the last look (logged)."""
        try:
            async with asyncio.timeout(LOOK_TIMEOUT_S):
                self.saw(await first_record(js))
        except (nats.errors.Error, TimeoutError, OSError) as problem:
            log.warning("cannot see where the stream starts (%r): the journal is pruned "
                        "as the last look said (%d)", problem, self.first_record)  # fmt: skip
