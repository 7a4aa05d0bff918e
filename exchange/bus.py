"""The seam between the gateway and the sequencer: how commands go in, how durable records
come back. The gateway is written against `Bus` alone, so the same gateway runs in one
process with the sequencer (the `Sequencer` itself is the in-process bus) or in its own
process with the sequencer elsewhere (a bus over NATS: commands on core NATS subjects,
durable batches as a JetStream stream).

What every bus promises the gateway:
- `post` / `submit` take a command or refuse it at once (BusyError: full;
  SequencerStoppedError: stopping; InvalidCommandError: breaks its schema);
- every command taken is, later, either durable (its `Sequenced` reaches the subscribers
  with the `origin` it was posted with, and `submit`'s future completes) or refused
  (`on_refused(origin, reason)` for a posted one, the future's exception for a submitted
  one) — never both, never neither;
- subscribers get every durable record once, in seq order, with `batch_end` after the
  records of each durable batch; a record posted by another gateway has origin None.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from exchange.domain.commands import Command
from exchange.domain.events import Event

if TYPE_CHECKING:
    import asyncio


class BusyError(Exception):
    """The input queue is full: the command was not taken. Answer BUSY."""


class InvalidCommandError(Exception):
    """The command breaks its own schema (a bound or pattern of commands.py): it was not
    taken. Journaling it would leave a record no reader could decode."""


class SequencerStoppedError(Exception):
    """The sequencer is stopping or has stopped: the command was not taken."""


class UnavailableError(Exception):
    """No answer came within the bound (the sequencer is gone or taking over): the outcome
    is unknown; resending with the same client_order_id never makes a second order."""


class SequencerFailedError(Exception):
    """The engine raised (a bug; the journal holds nothing of that command) or the journal
    could not be written (nothing of that batch was acknowledged). The process must stop:
    retrying a failed fsync is not safe, the kernel may have dropped the dirty pages."""


@dataclass(frozen=True, slots=True)
class Sequenced:
    """A command as journaled, with its events: the answer to `submit`, and what
    subscribers receive (after it is durable, in sequence order)."""

    seq: int
    command: Command
    events: list[Event]
    # Whatever the submitter passed along (the gateway: which connection and request
    # to answer); None for a command another gateway sent.
    origin: object = None


Subscriber = Callable[[Sequenced], None]
# Told (origin, reason) when a posted command (one without a future) is refused.
Refused = Callable[[object, Exception], None]
# (records, write and sync seconds, seconds its first command waited): after each batch.
BatchObserver = Callable[[int, float, float], None]


class Bus(Protocol):
    on_refused: Refused | None
    batch_observers: list[BatchObserver]
    last_snapshot_seq: int  # the newest engine snapshot's seq (read snapshots follow it)

    @property
    def queue_depth(self) -> int:
        """Commands taken and not yet sequenced (as far as this side knows)."""
        ...

    def post(self, command: Command, origin: object) -> None:
        """Take a command whose outcome goes to the subscribers (or `on_refused`)."""
        ...

    def submit(self, command: Command, origin: object = None) -> "asyncio.Future[Sequenced]":
        """Take a command; the future completes once its record is durable."""
        ...

    def subscribe(
        self, subscriber: Subscriber, batch_end: Callable[[], None] | None = None
    ) -> None:
        """Hear every durable record in seq order, and `batch_end` after each batch."""
        ...


class ManualClock:
    """The sequencer's clock when tests step time by hand (`exchange serve --test-clock NS`,
    `POST /v1/admin/clock`): it reads `now`, and moving it wakes the sequencer so what is
    then due happens (expiries, auctions)."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.wake: Callable[[], None] | None = None

    def __call__(self) -> int:
        return self.now

    def advance_to(self, now: int) -> int:
        """Move forward to `now` (never back); the clock's time after."""
        self.now = max(self.now, now)
        if self.wake is not None:
            self.wake()
        return self.now

