"""Sequenced time: the sequencer journals a Timer when the engine's next deadline has passed
(before a later command, or woken with no command at all), so a replay of the journal
reproduces every expiry and auction. The clock is injected: no test waits on real time."""

import asyncio
from typing import TYPE_CHECKING

import msgspec
import pytest

from exchange.bus import InvalidCommandError
from exchange.domain.commands import (
    Command,
    CreateAccount,
    DepositCash,
    DepositUnits,
    ListInstrument,
    PlaceOrder,
    SetInstrumentStatus,
    SetTradingRules,
    Timer,
)
from exchange.domain.engine import Engine
from exchange.domain.events import InstrumentStatusChanged, OrderCancelled, TradeExecuted
from exchange.journal.faulty import FaultySegmentStore
from exchange.journal.journal import Journal
from exchange.journal.records import decode_entry
from exchange.sequencer import Sequencer

if TYPE_CHECKING:
    from exchange.bus import Sequenced

WAIT_S = 10.0
T0 = 1_800_000_000_000_000_000
SECOND = 1_000_000_000


class ManualClock:
    """Sequenced time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


async def _market(seq: Sequencer) -> None:
    """A1 buys, A2 sells ACME (trading); 2 seconds' volatility interruptions."""
    for name in ("buyer", "seller"):
        await seq.submit(CreateAccount(name=name))
    await seq.submit(DepositCash(account="A1", amount=1_000_000))
    await seq.submit(ListInstrument(symbol="ACME", kind="share", tick=1, issuer="A2"))
    await seq.submit(DepositUnits(account="A2", symbol="ACME", qty=100))
    await seq.submit(SetInstrumentStatus(symbol="ACME", status="trading"))
    await seq.submit(SetTradingRules(symbol="ACME", band_pct=10, interruption_s=2))


def _replayed(store: FaultySegmentStore) -> tuple[Engine, list[Command]]:
    engine = Engine()
    commands = []
    for record in Journal.open(store.durable_copy()).read_from(1):
        entry = decode_entry(record.payload)
        assert engine.apply(entry.command) == entry.events, f"replay differs at {entry.seq}"
        commands.append(entry.command)
    return engine, commands


async def test_a_gtd_order_expires_when_the_clock_passes_it_with_no_command_coming() -> None:
    store, clock = FaultySegmentStore(), ManualClock()
    seq = Sequencer(Engine(), Journal.open(store), clock=clock)
    task = asyncio.create_task(seq.run())
    timers: asyncio.Queue[Sequenced] = asyncio.Queue()
    seq.subscribe(lambda s: timers.put_nowait(s) if isinstance(s.command, Timer) else None)
    await _market(seq)
    await seq.submit(
        PlaceOrder(account="A1", symbol="ACME", side="buy", price=100, qty=5, tif="gtd",
                   expire_at=T0 + 5 * SECOND)
    )  # fmt: skip
    assert seq.engine.next_deadline() == T0 + 5 * SECOND
    clock.now = T0 + 5 * SECOND
    seq.poke()  # what the loop's own wake-up does when the deadline passes
    timer = await asyncio.wait_for(timers.get(), WAIT_S)
    assert timer.command.ts == T0 + 5 * SECOND
    (expired,) = timer.events
    assert isinstance(expired, OrderCancelled)
    assert expired.reason == "expired"
    assert seq.engine.next_deadline() is None
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)
    engine, _ = _replayed(store)
    assert engine.state_hash() == seq.engine.state_hash()


async def test_a_wake_up_before_the_deadline_journals_nothing() -> None:
    store, clock = FaultySegmentStore(), ManualClock()
    seq = Sequencer(Engine(), Journal.open(store), clock=clock)
    task = asyncio.create_task(seq.run())
    await _market(seq)
    await seq.submit(
        PlaceOrder(account="A1", symbol="ACME", side="buy", price=100, qty=5, tif="gtd",
                   expire_at=T0 + 5 * SECOND)
    )  # fmt: skip
    before = seq.last_seq
    seq.poke()
    await seq.submit(CreateAccount(name="later"))  # after the wake-up, in queue order
    assert seq.last_seq == before + 1
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)


async def test_a_volatility_interruption_reopens_by_a_timer_before_the_next_command() -> None:
    store, clock = FaultySegmentStore(), ManualClock()
    seq = Sequencer(Engine(), Journal.open(store), clock=clock)
    task = asyncio.create_task(seq.run())
    await _market(seq)
    sell = PlaceOrder(account="A2", symbol="ACME", side="sell", price=100, qty=1)
    buy = PlaceOrder(account="A1", symbol="ACME", side="buy", price=100, qty=1)
    await seq.submit(sell)
    await seq.submit(buy)  # reference price 100, band 90..110
    await seq.submit(PlaceOrder(account="A2", symbol="ACME", side="sell", price=110, qty=5))
    # A trade at 99 moves the reference to 99: 110 is now beyond the band (89..108).
    await seq.submit(msgspec.structs.replace(sell, price=99))
    await seq.submit(msgspec.structs.replace(buy, price=99))
    market_buy = PlaceOrder(account="A1", symbol="ACME", side="buy", type="market", qty=3)
    done = await seq.submit(market_buy)
    halted = [e for e in done.events if isinstance(e, InstrumentStatusChanged)]
    assert [(e.status, e.reason, e.open_at) for e in halted] == [
        ("pre_open", "volatility", T0 + 2 * SECOND)
    ]
    assert not [e for e in done.events if isinstance(e, TradeExecuted)]
    await seq.submit(PlaceOrder(account="A1", symbol="ACME", side="buy", price=108, qty=2))
    await seq.submit(PlaceOrder(account="A2", symbol="ACME", side="sell", price=107, qty=2))
    clock.now = T0 + 2 * SECOND
    later = await seq.submit(CreateAccount(name="after the interruption"))
    await seq.stop()
    await asyncio.wait_for(task, WAIT_S)
    engine, commands = _replayed(store)
    # The Timer is journaled just before the command whose stamp passed the deadline.
    assert isinstance(commands[later.seq - 2], Timer)
    assert commands[later.seq - 2].ts == later.command.ts
    assert engine.instruments["ACME"].status == "trading"
    # The uncross: 2 units trade at 107 or 108 alike; 107 is nearer the reference (99).
    assert engine.instruments["ACME"].ref == 107
    assert engine.state_hash() == seq.engine.state_hash()



async def test_a_timer_from_outside_is_refused() -> None:
    seq = Sequencer(Engine(), Journal.open(FaultySegmentStore()), clock=ManualClock())
    task = asyncio.create_task(seq.run())
    try:
        with pytest.raises(InvalidCommandError):
            seq.submit(Timer())
    finally:
        await seq.stop()
        await asyncio.wait_for(task, WAIT_S)
