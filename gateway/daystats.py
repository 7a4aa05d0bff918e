"""An instrument's last 24 hours of trading, as GET /v1/ticker shows them: open, high, low
and volume over its one-minute candles (and the value traded and the trades, for the
Binance dialect's ticker).

The day ends with the minute of the instrument's last trade, not at the gateway's clock:
the figures are a function of the journal (the same on every gateway and after a
restart), and an instrument that has not traded for a while shows its last day of
trading. Reading them costs one pass over at most a day of candles, never over trades.
"""

from collections import deque
from dataclasses import dataclass

from gateway.readstate import CANDLES_KEPT, MINUTE_NS, Candle

# One-minute candles in the day: the 24 h the ticker covers.
DAY_MINUTES = 1_440
# The read side keeps enough one-minute candles to cover a whole day (there is at most
# one a minute, and a minute without trades has none).
assert CANDLES_KEPT >= DAY_MINUTES


@dataclass(frozen=True, slots=True)
class Day:
    """Prices in ticks; None (and volume 0) when the instrument never traded."""

    since: int | None  # ns: the start of the day's first minute
    open: int | None
    high: int | None
    low: int | None
    volume: int
    notional: int = 0  # price (ticks) x qty, summed over the day's trades
    trades: int = 0


NO_TRADES = Day(None, None, None, None, 0)


def last_day(minutes: deque[Candle]) -> Day:
    """The day of one-minute candles (oldest first) ending with the newest one."""
    if not minutes:
        return NO_TRADES
    since = minutes[-1].start - (DAY_MINUTES - 1) * MINUTE_NS
    first = minutes[-1]
    high, low, volume, notional, trades = first.high, first.low, 0, 0, 0
    for candle in reversed(minutes):  # newest first; at most DAY_MINUTES candles are in it
        if candle.start < since:
            break
        first = candle
        high, low = max(high, candle.high), min(low, candle.low)
        volume += candle.volume
        notional += candle.notional
        trades += candle.trades
    return Day(since, first.open, high, low, volume, notional, trades)
