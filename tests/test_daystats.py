"""The ticker's day (gateway/daystats.py): the 1,440 minutes ending with the last trade's."""

from collections import deque

from gateway.daystats import DAY_MINUTES, NO_TRADES, Day, last_day
from gateway.readstate import CANDLES_KEPT, MINUTE_NS, Candle

START = 1_700_000_000 * 1_000_000_000 // MINUTE_NS * MINUTE_NS


def minute(n: int, open_: int, high: int, low: int, close: int, volume: int) -> Candle:
    return Candle(START + n * MINUTE_NS, open_, high, low, close, volume)


def test_no_candles_no_figures() -> None:
    assert last_day(deque()) == NO_TRADES


def test_the_day_is_the_1440_minutes_up_to_the_newest_candle() -> None:
    too_old = minute(0, 1, 99, 1, 50, 1_000)
    first = minute(1, 20, 30, 10, 25, 2)  # exactly 1,439 minutes before the newest
    newest = minute(DAY_MINUTES, 26, 28, 5, 7, 3)
    between = minute(700, 25, 40, 24, 26, 4)
    day = last_day(deque([too_old, first, between, newest]))
    assert day == Day(since=first.start, open=20, high=40, low=5, volume=9)


def test_a_single_candle_is_the_whole_day() -> None:
    only = minute(3, 10, 12, 9, 11, 5)
    assert last_day(deque([only])) == Day(only.start - (DAY_MINUTES - 1) * MINUTE_NS, 10, 12, 9, 5)


def test_the_kept_minutes_cover_a_day() -> None:
    assert CANDLES_KEPT >= DAY_MINUTES
