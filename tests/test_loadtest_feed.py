"""The load test's subscriber: typed frames checked as the contract says (seq, checksum)."""

import json
import time

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from gateway.client import ProtocolError, book_checksum
from loadtest import harness
from loadtest.feed import Feed
from tests.scripted_ws import ws_server

NOW_NS = 5_000_000_000


def frame(message: dict[str, object]) -> str:
    return json.dumps(message)


def snapshot(seq: int) -> str:
    bids, asks = {"9.95": 100}, {"10.05": 7}
    return frame({
        "type": "book_snapshot", "symbol": "ACME", "seq": seq,
        "bids": list(bids.items()), "asks": list(asks.items()),
        "checksum": book_checksum(bids, asks),
    })  # fmt: skip


def trade(seq: int, ts: int) -> dict[str, object]:
    return {"type": "trade", "symbol": "ACME", "seq": seq, "trade_id": "1",
            "price": "10.05", "qty": 1, "aggressor": "buy", "ts": ts}  # fmt: skip


def update(seq: int, checksum: int) -> dict[str, object]:
    return {"type": "book_update", "symbol": "ACME", "seq": seq,
            "changes": [["sell", "10.05", 6]], "checksum": checksum}  # fmt: skip


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
    ticker = {"type": "ticker", "symbol": "ACME", "seq": 13}
    assert feed.on_frame(
        batch(trade(11, ts), trade(12, ts), update(13, AFTER_TRADE), ticker), NOW_NS
    )
    assert feed.book.levels() == ([["9.95", 100]], [["10.05", 6]])
    assert lags.seen == [(3_000, 2)]
    assert feed.messages == 1 + 4
    # Single-message frames (an unbatched subscriber) are checked the same way.
    assert feed.on_frame(frame(trade(14, ts)), NOW_NS)
    assert feed.on_frame(frame({"type": "heartbeat", "seqs": {"ACME": 14}}), NOW_NS)
    assert (feed.book.gaps, feed.book.bad_checksums) == (0, 0)


def test_a_gap_or_a_bad_checksum_fails_the_frame_until_a_new_snapshot() -> None:
    feed = Feed("ACME", Lags())
    feed.on_frame(snapshot(10), NOW_NS)
    assert not feed.on_frame(batch(trade(12, NOW_NS)), NOW_NS)
    assert feed.book.gaps == 1
    # Until the resubscription's snapshot, what the old subscription delivers is ignored.
    assert feed.on_frame(batch(trade(13, NOW_NS)), NOW_NS)
    assert feed.on_frame(snapshot(20), NOW_NS)
    assert not feed.on_frame(batch(update(21, AFTER_TRADE + 1)), NOW_NS)
    assert feed.book.bad_checksums == 1
    assert feed.book.gaps == 1


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
