"""A journal written before events gained their fee and underwriting fields (and an
acceptance its expire_at) still replays: recovery compares events as values when the bytes differ
(exchange/recovery.py, Replayer)."""

from typing import Any

import msgspec
import pytest

from exchange.domain.commands import (
    CloseOffering,
    Command,
    CreateAccount,
    DepositCash,
    ListInstrument,
    OpenOffering,
    PlaceOrder,
    SubscribeOffering,
    Uncross,
)
from exchange.domain.engine import Engine
from exchange.domain.events import Event, InstrumentListed
from exchange.recovery import RecoveryError, Replayer

# Fields each event gained with fees and underwriting (and market phases: an acceptance's
# expire_at; stops and icebergs: its trigger_price, display_qty and budget), all last and
# with defaults: a record from before holds the event without them.
ADDED_FIELDS = {
    "TradeExecuted": 2,
    "InstrumentListed": 2,
    "OfferingOpened": 3,
    "OfferingClosed": 2,
    "OrderAccepted": 4,  # expire_at; trigger_price, display_qty, budget (stops, icebergs)
}
HISTORY: list[Command] = [
    CreateAccount(ts=1, name="issuer"),
    CreateAccount(ts=2, name="alice"),
    CreateAccount(ts=3, name="bob"),
    DepositCash(ts=4, account="A2", amount=100_000),
    DepositCash(ts=5, account="A3", amount=100_000),
    ListInstrument(ts=6, symbol="OLD", kind="share", tick=1, issuer="A1"),
    OpenOffering(ts=7, symbol="OLD", price=100, qty=50),
    SubscribeOffering(ts=8, account="A2", offering_id=1, qty=50),
    CloseOffering(ts=9, offering_id=1),
    Uncross(ts=10, symbol="OLD"),  # the close left it in its opening auction
    PlaceOrder(ts=11, account="A2", symbol="OLD", side="sell", price=101, qty=20),
    PlaceOrder(ts=12, account="A3", symbol="OLD", side="buy", price=101, qty=5),
]


def _as_before(event: Event) -> list[Any]:
    """The event as a build from before the new fields encoded it."""
    fields: list[Any] = msgspec.to_builtins(event)
    dropped = ADDED_FIELDS.get(type(event).__name__, 0)
    return fields[: len(fields) - dropped]


def _old_journal(history: list[Command]) -> list[bytes]:
    engine = Engine()
    return [
        msgspec.msgpack.encode([seq, command, [_as_before(e) for e in engine.apply(command)]])
        for seq, command in enumerate(history, start=1)
    ]


def test_records_from_before_the_fee_fields_replay() -> None:
    records = _old_journal(HISTORY)
    fresh = Engine()
    new = [msgspec.msgpack.encode([seq, c, fresh.apply(c)]) for seq, c in enumerate(HISTORY, 1)]
    # The listing, the offering opened and closed, both orders (the second trades):
    # encoded shorter than today.
    assert sum(a != b for a, b in zip(records, new, strict=True)) == 5
    engine = Engine()
    replay = Replayer(engine, 1)
    for seq, payload in enumerate(records, start=1):
        replay(seq, memoryview(payload))
    straight = Engine()
    for command in HISTORY:
        straight.apply(command)
    assert engine.state_hash() == straight.state_hash()


def test_a_record_whose_events_differ_in_value_is_still_refused() -> None:
    records = _old_journal(HISTORY[:6])
    listed = msgspec.to_builtins(
        InstrumentListed(symbol="OLD", kind="share", tick=2, issuer="A1")  # tick 2, not 1
    )
    records[-1] = msgspec.msgpack.encode([6, HISTORY[5], [listed[:-2]]])
    replay = Replayer(Engine(), 1)
    for seq, payload in enumerate(records[:-1], start=1):
        replay(seq, memoryview(payload))
    with pytest.raises(RecoveryError, match="gave other events"):
        replay(6, memoryview(records[-1]))
