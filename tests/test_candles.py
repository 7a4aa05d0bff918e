"""Candles from a batch's trades summed a minute at a time equal candles built trade by
trade (the naive rule, written out here), however the trades fall into batches: prices,
volume, the value traded, the trades and what takers bought."""

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.domain.commands import Side
from exchange.domain.events import TradeExecuted
from gateway.readstate import CANDLE_INTERVALS, MINUTE_NS, Candle, _add_to_candles

# Steps between trades: the same instant, seconds, minutes, hours and days apart.
STEPS = st.sampled_from([0, 1, 10**9, 30 * 10**9, MINUTE_NS, 7 * MINUTE_NS, 61 * MINUTE_NS,
                         1_441 * MINUTE_NS])  # fmt: skip


SIDES: tuple[Side, Side] = ("buy", "sell")


def _trade(ts: int, price: int, qty: int, aggressor: Side) -> TradeExecuted:
    return TradeExecuted(1, "X", price, qty, aggressor, 1, "a", 0, 2, "b", 0, ts)


def _naive(trades: list[TradeExecuted]) -> dict[str, list[Candle]]:
    built: dict[str, list[Candle]] = {interval: [] for interval in CANDLE_INTERVALS}
    for t in trades:
        for interval, kept in built.items():
            start = t.ts - t.ts % CANDLE_INTERVALS[interval]
            if not kept or kept[-1].start != start:
                kept.append(Candle(start, t.price, t.price, t.price, t.price, 0))
            last = kept[-1]
            last.high, last.low = max(last.high, t.price), min(last.low, t.price)
            last.close, last.volume = t.price, last.volume + t.qty
            last.notional += t.price * t.qty
            last.trades += 1
            if t.aggressor == "buy":
                last.buy_volume += t.qty
                last.buy_notional += t.price * t.qty
    return built


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(STEPS, st.integers(1, 50), st.integers(1, 9), st.sampled_from(SIDES)),
        min_size=1, max_size=60,
    ),
    st.lists(st.integers(1, 12), min_size=1, max_size=60),
)
def test_batched_candles_equal_candles_built_trade_by_trade(
    steps: list[tuple[int, int, int, Side]], batch_sizes: list[int]
) -> None:
    ts, trades = 5 * MINUTE_NS + 3, []
    for step, price, qty, aggressor in steps:
        ts += step
        trades.append(_trade(ts, price, qty, aggressor))
    candles: dict[str, deque[Candle]] = {i: deque() for i in CANDLE_INTERVALS}
    start, sizes = 0, iter(batch_sizes * len(trades))
    while start < len(trades):  # bounded: every turn takes at least one trade
        end = start + next(sizes)
        _add_to_candles(candles, trades[start:end])
        start = end
    assert {i: list(kept) for i, kept in candles.items()} == _naive(trades)
