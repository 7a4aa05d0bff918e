"""The load test's subscriber: typed frames checked as the contract says (seq, checksum)."""

import json
import sys
import time

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from gateway.client import LocalBook, ProtocolError, book_checksum
from loadtest import feed as feed_module
from loadtest import harness
from loadtest.feed import Feed, Peers
from tests.scripted_ws import ws_server

NOW_NS = 5_000_000_000


def frame(message: dict[str, object]) -> str:
    return json.dumps(message)


def snapshot(seq: int, ask: int = 7, trade_seq: int | None = None) -> str:
    """A snapshot at book seq `seq` and trade seq `trade_seq` (by default the same)."""
    bids, asks = {"9.95": 100}, {"10.05": ask}
    return frame({
        "type": "book_snapshot", "symbol": "ACME", "seq": seq,
        "trade_seq": seq if trade_seq is None else trade_seq,
        "bids": list(bids.items()), "asks": list(asks.items()),
        "checksum": book_checksum(bids, asks),
    })  # fmt: skip


def trade(seq: int, ts: int) -> dict[str, object]:
    return {"type": "trade", "symbol": "ACME", "seq": seq, "trade_id": "1",
            "price": "10.05", "qty": 1, "aggressor": "buy", "ts": ts}  # fmt: skip


def update(seq: int, checksum: int, ask: int = 6) -> dict[str, object]:
    return {"type": "book_update", "symbol": "ACME", "seq": seq,
            "changes": [["sell", "10.05", ask]], "checksum": checksum}  # fmt: skip


AFTER_TRADE = book_checksum({"9.95": 100}, {"10.05": 6})


class Lags:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def __call__(self, now_ns: int, counts: dict[int, int]) -> None:
        self.seen += [((now_ns - ts) // 1_000, n) for ts, n in counts.items()]


def batch(*messages: dict[str, object]) -> str:
    return frame({"type": "batch", "symbol": "ACME", "messages": list(messages)})


def test_a_batch_in_sequence_is_applied_and_its_trades_lags_counted() -> None:
    lags = Lags()
    feed = Feed("ACME", lags)
    assert feed.on_frame(frame({"type": "subscribed", "req_id": 1}), NOW_NS)
    assert feed.on_frame(snapshot(10), NOW_NS)
    ts = NOW_NS - 3_000_000
    ticker = {"type": "ticker", "symbol": "ACME", "seq": 11}
    # Trades and book updates are numbered apart: trades 11 and 12, then update 11.
    assert feed.on_frame(
        batch(trade(11, ts), trade(12, ts), update(11, AFTER_TRADE), ticker), NOW_NS
    )
    assert feed.book.levels() == ([["9.95", 100]], [["10.05", 6]])
    assert lags.seen == [(3_000, 2)]
    assert feed.messages == 1 + 4
    # Single-message frames (an unbatched subscriber) are checked the same way.
    assert feed.on_frame(frame(trade(13, ts)), NOW_NS)
    heartbeat: dict[str, object] = {
        "type": "heartbeat",
        "seqs": {"ACME": {"book": 11, "trades": 13}},
    }
    assert feed.on_frame(frame(heartbeat), NOW_NS)
    assert (feed.gaps, feed.bad_checksums) == (0, 0)


def test_a_gap_or_a_bad_checksum_fails_the_frame_until_a_new_snapshot() -> None:
    feed = Feed("ACME", Lags())
    feed.on_frame(snapshot(10), NOW_NS)
    assert not feed.on_frame(batch(trade(12, NOW_NS)), NOW_NS)
    assert feed.gaps == 1
    # Until the resubscription's snapshot, what the old subscription delivers is ignored.
    assert feed.on_frame(batch(trade(13, NOW_NS)), NOW_NS)
    assert feed.on_frame(snapshot(20), NOW_NS)
    assert not feed.on_frame(batch(update(21, AFTER_TRADE + 1)), NOW_NS)
    assert feed.bad_checksums == 1
    assert feed.gaps == 1


def test_a_refused_subscription_is_an_error_not_silence() -> None:
    feed = Feed("NOPE", Lags())
    refusal = frame({"type": "error", "code": "UNKNOWN_SYMBOL", "message": "NOPE", "req_id": 1})
    with pytest.raises(ProtocolError, match="UNKNOWN_SYMBOL"):
        feed.on_frame(refusal, NOW_NS)


@given(st.dictionaries(st.integers(0, 10**12), st.integers(1, 50), max_size=300))
def test_lags_counted_per_timestamp_are_those_recorded_one_by_one(
    counts: dict[int, int],
) -> None:
    now_ns = 10**12
    together, one_by_one = harness.Latencies(), harness.Latencies()
    together.record_lags(now_ns, counts)
    for ts, n in counts.items():
        for _ in range(n):
            one_by_one.record((now_ns - ts) // 1_000)
    a, b = together.histogram(), one_by_one.histogram()
    assert a.get_total_count() == b.get_total_count()
    for percentile in (0.0, 50.0, 99.0, 100.0):
        assert a.get_value_at_percentile(percentile) == b.get_value_at_percentile(percentile)


async def test_a_subscriber_closed_by_the_exchange_says_so() -> None:
    async def evict(ws: web.WebSocketResponse, request: dict[str, object]) -> None:
        await ws.send_str(json.dumps({"type": "subscribed", "req_id": request["req_id"]}))
        await ws.close(code=4008, message=b"slow consumer")

    feed = Feed("ACME", Lags())
    async with ws_server(evict) as url:
        await feed.run(url, time.perf_counter() + 30)  # returns at the close, not the end
    assert feed.closed_with == 4008


def stream(plan: list[str]) -> list[str]:
    """Frames as the exchange would send them, one per step of `plan`, with the faults
    the plan asks for: "trade", "update", "fill" (a trade and its update in one frame),
    "gap" (a seq skipped), "bad" (a wrong checksum), "snapshot" (as after a resubscribe)."""
    seq, trade_seq, ask, frames = 10, 10, 7, [snapshot(10)]

    def next_update() -> dict[str, object]:
        nonlocal seq, ask
        seq, ask = seq + 1, ask - 1 if ask > 1 else 9
        return update(seq, book_checksum({"9.95": 100}, {"10.05": ask}), ask)

    for step in plan:
        ts = NOW_NS - 1_000_000 * ((seq + trade_seq) % 7)
        if step in {"trade", "fill"}:
            trade_seq += 1
            messages = [trade(trade_seq, ts)] + ([next_update()] if step == "fill" else [])
            frames.append(batch(*messages))
        elif step == "update":
            frames.append(batch(next_update()))
        elif step == "gap":
            trade_seq += 2
            frames.append(batch(trade(trade_seq, ts)))
        elif step == "bad":
            seq += 1
            frames.append(batch(update(seq, 12345)))
        else:
            frames.append(snapshot(seq, ask, trade_seq))
    return frames


STEPS = st.sampled_from(("trade", "update", "fill", "fill", "gap", "bad", "snapshot"))


@given(st.lists(STEPS, max_size=40), st.lists(st.integers(0, 40), max_size=5))
def test_subscribers_sharing_their_checks_see_what_each_would_alone(
    plan: list[str], heartbeats_at: list[int]
) -> None:
    frames = stream(plan)
    peers = Peers("ACME")
    shared = [Feed("ACME", Lags(), peers=peers) for _ in range(3)]
    alone = [Feed("ACME", Lags()) for _ in range(2)]
    for i, text in enumerate(frames):
        answers = set()
        for n, feed in enumerate(shared + alone):
            if n == 1 and i in heartbeats_at:  # heartbeats fall between frames as they may
                assert feed.on_frame(frame({"type": "heartbeat", "seqs": {}}), NOW_NS)
            answers.add(feed.on_frame(text, NOW_NS))
        assert len(answers) == 1, f"frame {i} judged differently"
    first = alone[0]
    for feed in shared + alone:
        assert (feed.messages, feed.gaps, feed.bad_checksums, feed.divergences) == (
            first.messages, first.gaps, first.bad_checksums, 0,
        )  # fmt: skip
        assert feed._record_lag.seen == first._record_lag.seen  # type: ignore[attr-defined]
    # The first fault is always found (every feed starts from a good snapshot).
    assert (first.gaps + first.bad_checksums > 0) == any(s in {"gap", "bad"} for s in plan)


def test_a_frame_is_checked_once_for_all_the_subscribers_sharing_a_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[int] = []
    real_check = feed_module.check

    def counting(book: LocalBook, messages: feed_module.Messages) -> feed_module.Outcome:
        checked.append(len(messages))
        return real_check(book, messages)

    monkeypatch.setattr(feed_module, "check", counting)
    peers = Peers("ACME")
    feeds = [Feed("ACME", Lags(), peers=peers) for _ in range(3)]
    frames = stream(["trade", "fill", "update", "trade"])
    for text in frames:
        for feed in feeds:
            assert feed.on_frame(text, NOW_NS)
    assert len(checked) == len(frames) - 1  # every frame but the snapshot, once
    assert [feed.messages for feed in feeds] == [1 + 1 + 2 + 1 + 1] * 3


def test_a_subscriber_sent_another_frame_than_its_peers_counts_a_divergence() -> None:
    peers = Peers("ACME")
    a, b = Feed("ACME", Lags(), peers=peers), Feed("ACME", Lags(), peers=peers)
    for feed in (a, b):
        assert feed.on_frame(snapshot(10), NOW_NS)
    assert a.on_frame(batch(trade(11, NOW_NS)), NOW_NS)
    # b gets a frame just as valid on its own, but not the one a got after the same one.
    assert not b.on_frame(batch(trade(11, NOW_NS - 1)), NOW_NS)
    assert (b.divergences, a.divergences) == (1, 0)
    # b then waits for its resubscription's snapshot; a goes on.
    assert b.on_frame(batch(trade(12, NOW_NS)), NOW_NS)
    assert a.on_frame(batch(trade(12, NOW_NS)), NOW_NS)
    assert (a.gaps, b.gaps) == (0, 0)


def test_subscribers_of_two_gateways_compare_their_frames_and_catch_a_difference() -> None:
    """A cluster's gateways must send the same market data: a subscriber on one gateway
    compares each frame with the one a subscriber on the other got at the same point."""
    peers = Peers("ACME")
    one = Feed("ACME", Lags(), peers=peers, url="ws://127.0.0.1:8080/v1/ws")
    two = Feed("ACME", Lags(), peers=peers, url="ws://127.0.0.1:8081/v1/ws")
    for feed in (one, two):
        assert feed.on_frame(snapshot(10), NOW_NS)
    same = batch(trade(11, NOW_NS), update(11, AFTER_TRADE))
    assert two.on_frame(same, NOW_NS)  # gateway 2's frame is checked first...
    assert one.on_frame(same, NOW_NS)  # ...and gateway 1's compared with it
    assert (one.cross_frames, two.cross_frames) == (1, 0)
    # Then the gateways send different books at the same seq, each valid on its own.
    def ask(qty: int) -> str:
        return batch(update(12, book_checksum({"9.95": 100}, {"10.05": qty}), ask=qty))

    assert one.on_frame(ask(4), NOW_NS)
    assert not two.on_frame(ask(5), NOW_NS)
    assert (one.divergences, two.divergences) == (0, 1)
    assert (one.gaps, two.gaps, one.bad_checksums, two.bad_checksums) == (0, 0, 0, 0)


def test_a_frame_lost_by_one_subscriber_is_its_gap_and_leaves_its_peers_alone() -> None:
    peers = Peers("ACME")
    healthy, lossy = Feed("ACME", Lags(), peers=peers), Feed("ACME", Lags(), peers=peers)
    lone = Feed("ACME", Lags())
    for feed in (healthy, lossy, lone):
        assert feed.on_frame(snapshot(10), NOW_NS)
    # The lossy one never got seq 11 and is first past the chain's end with seq 12: its
    # frame must not become the chain's next step.
    assert not lossy.on_frame(batch(trade(12, NOW_NS)), NOW_NS)
    assert not lone.on_frame(batch(trade(12, NOW_NS)), NOW_NS)
    assert (lossy.gaps, lossy.divergences, lossy.messages) == (1, 0, lone.messages)
    assert healthy.on_frame(batch(trade(11, NOW_NS)), NOW_NS)
    assert healthy.on_frame(batch(trade(12, NOW_NS)), NOW_NS)
    # A peer that lost a frame the chain already has finds the same gap.
    late = Feed("ACME", Lags(), peers=peers)
    assert late.on_frame(snapshot(10, trade_seq=12), NOW_NS)  # joins where the chain stands
    assert late.on_frame(batch(trade(13, NOW_NS)), NOW_NS)
    assert healthy.on_frame(batch(trade(13, NOW_NS)), NOW_NS)
    assert not late.on_frame(batch(trade(15, NOW_NS)), NOW_NS)
    assert (late.gaps, late.divergences, healthy.gaps) == (1, 0, 0)


def test_when_a_peers_frame_breaks_the_chain_the_others_resubscribe_without_a_fault() -> None:
    peers = Peers("ACME")
    faulty, healthy = Feed("ACME", Lags(), peers=peers), Feed("ACME", Lags(), peers=peers)
    for feed in (faulty, healthy):
        assert feed.on_frame(snapshot(10), NOW_NS)
    # In sequence at first, then a bad checksum: the chain's book is spoilt by it.
    assert not faulty.on_frame(batch(trade(11, NOW_NS), update(11, AFTER_TRADE + 1)), NOW_NS)
    assert faulty.bad_checksums == 1
    assert not healthy.on_frame(batch(trade(11, NOW_NS), update(11, AFTER_TRADE)), NOW_NS)
    assert (healthy.gaps, healthy.bad_checksums, healthy.divergences) == (0, 0, 0)


async def test_a_subscriber_closed_early_no_longer_holds_its_peers_steps() -> None:
    async def evict(ws: web.WebSocketResponse, request: dict[str, object]) -> None:
        await ws.send_str(json.dumps({"type": "subscribed", "req_id": request["req_id"]}))
        await ws.send_str(snapshot(10))
        await ws.close(code=4008, message=b"slow consumer")

    peers = Peers("ACME")
    evicted, live = Feed("ACME", Lags(), peers=peers), Feed("ACME", Lags(), peers=peers)
    async with ws_server(evict) as url:
        await evicted.run(url, time.perf_counter() + 30)
    assert evicted.closed_with == 4008
    assert live.on_frame(snapshot(10), NOW_NS)
    step = live._at
    for seq in range(11, 111):  # the live peer follows on, as for the rest of a run
        assert live.on_frame(batch(trade(seq, NOW_NS)), NOW_NS)
    assert step is not None
    assert sys.getrefcount(step) == 2  # only this test's name: no one stands on it
