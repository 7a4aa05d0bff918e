"""The average price in integers equals the Decimal rule it replaced: notional x tick size
/ filled, quantized to the prices' decimals plus AVG_PRICE_EXTRA_DECIMALS, half to even,
trailing zeros past the prices' decimals dropped."""

from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from exchange.domain.limits import MAX_PRICE_TICKS, MAX_QTY, MAX_TICK
from exchange.domain.money import tick_size_of
from gateway.readmodel import AVG_PRICE_EXTRA_DECIMALS, average_price


def _by_decimal(notional: int, filled: int, tick: int) -> str:
    size = tick_size_of(tick)
    places = size.scaleb(-AVG_PRICE_EXTRA_DECIMALS)
    text = str((Decimal(notional) * size / filled).quantize(places, ROUND_HALF_EVEN))
    whole, _, decimals = text.partition(".")
    shortest = -int(size.as_tuple().exponent)
    return f"{whole}.{decimals.rstrip('0').ljust(shortest, '0')}"


@given(
    st.integers(1, MAX_QTY),
    st.integers(1, MAX_PRICE_TICKS),
    st.integers(0, MAX_PRICE_TICKS),
    st.integers(1, MAX_TICK),
)
@example(filled=2, low=1, spread=1, tick=1)  # 1.5 ticks at 0.01: "0.015"
@example(filled=16, low=1, spread=1, tick=1)  # a tie at the last decimal, rounded to even
@example(filled=3, low=100, spread=1, tick=100)
def test_the_integer_average_equals_the_decimal_one(
    filled: int, low: int, spread: int, tick: int
) -> None:
    # Some units at `low`, the rest a spread above: a real order's fills.
    at_low = max(1, filled // 3)
    notional = low * at_low + (low + spread) * (filled - at_low)
    assert average_price(notional, filled, tick) == _by_decimal(notional, filled, tick)


def test_ties_at_the_last_decimal_go_to_even() -> None:
    # 20,001 ticks of 0.01 over 20,000 units: 0.0100005, halfway: down to the even 0.010000.
    assert average_price(20_001, 20_000, 1) == "0.01" == _by_decimal(20_001, 20_000, 1)
    # 0.0100015, halfway: up to the even 0.010002.
    assert average_price(20_003, 20_000, 1) == "0.010002" == _by_decimal(20_003, 20_000, 1)
