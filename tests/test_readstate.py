"""The read side built from events alone: it holds the engine's books, balances and open
orders after every batch; rebuilt record by record from the journal's events (as on a
restart) it is the one built live; a snapshot's export and restore changes nothing."""

import msgspec
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from exchange.domain.engine import Engine
from exchange.domain.events import Event
from gateway.readstate import ReadSnapshot, ReadState
from tests.streams import mixed_stream

STREAM_LENGTH = 400


def _records(seed: int, count: int = STREAM_LENGTH) -> tuple[Engine, list[list[Event]]]:
    engine = Engine()
    # Timed: call auctions (FUND-1's uncross fills pay fees), expiries and closes too.
    return engine, [engine.apply(command) for command in mixed_stream(seed, count, timed=True)]


def _batches(records: list[list[Event]], cuts: list[int]) -> list[list[tuple[int, list[Event]]]]:
    numbered = list(enumerate(records, start=1))
    out, start, cut = [], 0, 0
    while start < len(numbered):  # bounded: each batch takes at least one record
        size = cuts[cut % len(cuts)]
        out.append(numbered[start : start + size])
        start, cut = start + size, cut + 1
    return out


def _live(records: list[list[Event]], cuts: list[int]) -> ReadState:
    state = ReadState()
    for batch in _batches(records, cuts):
        for seq, events in batch:
            state.apply(seq, events)
        state.end_batch()
    return state


def _engine_view(engine: Engine) -> dict[str, object]:
    return {
        "balances": {a: engine.balances(a) for a in engine.accounts},
        "books": {s: engine.book(s) for s in engine.books},
        "open": sorted(
            (o.order_id, a.account_id, o.side, o.price, o.qty, o.remaining)
            for a in engine.accounts.values()
            for o in a.open_orders.values()
        ),
        "status": {s: i.status for s, i in engine.instruments.items()},
        "keys": {k: a.account_id for a in engine.accounts.values() for k in a.api_key_hashes},
        "offerings": {
            o.offering_id: (o.is_open, sum(o.subscriptions.values()))
            for o in engine.offerings.values()
        },
    }


def _read_view(state: ReadState) -> dict[str, object]:
    return {
        "balances": {a: state.balances_of(a) for a in state.balances},
        "books": {s: (b.bids.all(), b.asks.all()) for s, b in state.books.items()},
        "open": sorted(
            (r.order_id, r.account, r.side, r.price, r.qty, r.remaining)
            for r in state.open_orders.values()
        ),
        "status": {s: i.status for s, i in state.instruments.items()},
        "keys": dict(state.accounts_by_key),
        "offerings": {o.offering_id: (o.is_open, o.subscribed) for o in state.offerings.values()},
    }


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_the_read_state_built_from_events_is_the_engines_view(seed: int, cuts: list[int]) -> None:
    engine, records = _records(seed)
    state = _live(records, cuts)
    assert _read_view(state) == _engine_view(engine)
    # Every open order rests, but a stop waiting for its trigger (issue 16).
    assert all(r.resting != (r.type in {"stop", "stop_limit"}) for r in state.open_orders.values())
    assert _read_view(ReadState.from_engine(engine)) == _engine_view(engine)


def _without_book_seqs(snapshot: ReadSnapshot) -> ReadSnapshot:
    tapes = [msgspec.structs.replace(t, book_seq=0) for t in snapshot.tapes]
    return msgspec.structs.replace(snapshot, tapes=tapes)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=20))
@example(seed=1013, cuts=[1])  # a stream without a trade: assumed away, not failed
def test_rebuilt_record_by_record_it_is_the_live_one(seed: int, cuts: list[int]) -> None:
    """A restart replays records one by one, not in the batches they were published in:
    everything but the book seq (one a published update) is the same, and the book seq
    never falls behind the live one (a client never sees a number used again)."""
    _, records = _records(seed)
    live = _live(records, cuts).export()
    # About 1 seed in 300 draws a stream without a trade (1013 is one): not this test's case.
    assume(sum(len(fills) for _, fills in live.fills) > 0)
    rebuilt = _live(records, [1]).export()
    assert _without_book_seqs(rebuilt) == _without_book_seqs(live)
    for again, before in zip(rebuilt.tapes, live.tapes, strict=True):
        assert again.book_seq >= before.book_seq
    assert sum(t.trade_seq for t in live.tapes) == sum(len(t.trades) for t in live.tapes)


def test_a_restored_snapshot_goes_on_as_the_state_it_was_taken_from() -> None:
    _, records = _records(seed=7, count=2 * STREAM_LENGTH)
    half = len(records) // 2
    live = _live(records[:half], [25])
    data = msgspec.msgpack.encode(live.export())
    restored = ReadState.restore(msgspec.msgpack.decode(data, type=ReadSnapshot))
    assert restored.export() == live.export()
    for seq, events in enumerate(records[half:], start=half + 1):
        for state in (live, restored):
            state.apply(seq, events)
            state.end_batch()
    assert restored.export() == live.export()
