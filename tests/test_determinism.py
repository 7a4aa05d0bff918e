"""The core is deterministic: same commands, same events and state hash, whatever the process."""

import os
import subprocess
import sys
from pathlib import Path

import msgspec

from exchange.domain.engine import Engine
from exchange.domain.events import AuctionUncrossed, Event, TradeExecuted
from exchange.domain.state import decode_state, encode_state, export_state, restore_state
from tests.streams import mixed_stream

ROOT = Path(__file__).resolve().parent.parent
STREAM_SEED = 7
STREAM_LENGTH = 4_000

# Replays the stream in a fresh interpreter and prints a digest of every event and the
# state hash: strings hash differently under each PYTHONHASHSEED.
REPLAY = """
import hashlib, msgspec
from exchange.domain.engine import Engine
from exchange.domain.events import Event, TradeExecuted
from tests.streams import mixed_stream
engine, digest = Engine(), hashlib.sha256()
for command in mixed_stream({seed}, {length}, timed=True):
    for event in engine.apply(command):
        digest.update(msgspec.msgpack.encode(event))
print(digest.hexdigest(), engine.state_hash())
"""


def replay_in_subprocess(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    script = REPLAY.format(seed=STREAM_SEED, length=STREAM_LENGTH)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True, timeout=120,
    )
    return done.stdout.strip()


def test_same_stream_gives_same_events_and_hash_under_different_hash_seeds() -> None:
    results = {seed: replay_in_subprocess(seed) for seed in ("0", "1", "12345")}
    assert len(set(results.values())) == 1, f"runs disagree: {results}"


def test_the_stream_exercises_trading() -> None:
    engine = Engine()
    kinds: set[str] = set()
    reasons: set[str] = set()
    for command in mixed_stream(STREAM_SEED, STREAM_LENGTH, timed=True):
        events = engine.apply(command)
        kinds.update(type(e).__name__ for e in events)
        reasons.update(str(getattr(e, "reason", "")) for e in events)
    expected = {"TradeExecuted", "OrderCancelled", "OrderReplaced", "UnitsAllocated",
                "OfferingUnderwritten", "InstrumentFeesSet",
                "AuctionUncrossed", "AuctionIndicative", "TradingRulesSet"}  # fmt: skip
    assert expected <= kinds
    # Time moves the market: expiries, closes and auction ends by Timer, interruptions.
    assert {"expired", "close_at", "open_at", "volatility"} <= reasons


def test_the_stream_charges_fees_and_rebates() -> None:
    engine = Engine()
    fees: set[int] = set()
    for command in mixed_stream(STREAM_SEED, STREAM_LENGTH):
        for e in engine.apply(command):
            if isinstance(e, TradeExecuted):
                fees.update((e.maker_fee, e.taker_fee))
    assert min(fees) < 0 < max(fees), "rebates and charges both appear"
    state = export_state(engine)
    assert state.instrument_fees
    assert state.order_fees
    assert state.underwriting


def test_the_timed_stream_charges_fees_in_call_auctions() -> None:
    engine = Engine()
    auction_fees: set[int] = set()
    for command in mixed_stream(STREAM_SEED, STREAM_LENGTH, timed=True):
        events = engine.apply(command)
        if any(isinstance(e, AuctionUncrossed) for e in events):
            auction_fees.update(
                fee for e in events if isinstance(e, TradeExecuted)
                for fee in (e.maker_fee, e.taker_fee)
            )  # fmt: skip
    assert any(auction_fees), "some uncross fills pay fees"
    assert export_state(engine).phases


def test_export_and_restore_mid_stream_gives_the_same_final_hash() -> None:
    stream = mixed_stream(STREAM_SEED, STREAM_LENGTH, timed=True)
    straight = Engine()
    for command in stream:
        straight.apply(command)
    half = len(stream) // 2
    first = Engine()
    for command in stream[:half]:
        first.apply(command)
    restored = restore_state(decode_state(encode_state(export_state(first))))
    assert restored.state_hash() == first.state_hash()
    tail_events = [restored.apply(command) for command in stream[half:]]
    assert restored.state_hash() == straight.state_hash()
    again = Engine()
    for command in stream[:half]:
        again.apply(command)
    assert tail_events == [again.apply(command) for command in stream[half:]]
    assert restored.next_deadline() == straight.next_deadline()


def test_state_hash_changes_with_the_state() -> None:
    stream = mixed_stream(STREAM_SEED, 50)
    engine = Engine()
    seen = set()
    for command in stream:
        if engine.apply(command):
            seen.add(engine.state_hash())
    assert len(seen) > 40


def test_events_round_trip_through_msgpack_and_json() -> None:
    engine = Engine()
    events = [e for c in mixed_stream(STREAM_SEED, 500, timed=True) for e in engine.apply(c)]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(events), type=list[Event]) == events
    assert msgspec.json.decode(msgspec.json.encode(events), type=list[Event]) == events
