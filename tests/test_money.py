"""Exact parsing of decimal strings at the edge: ticks, prices and cash."""

from decimal import Decimal

import pytest

from exchange.domain.money import (
    MoneyError,
    format_cash,
    format_price,
    parse_cash,
    parse_price,
    parse_tick_size,
    tick_size_of,
)

CENT = Decimal("0.01")


@pytest.mark.parametrize(
    ("text", "ticks"), [("12", 1200), ("12.5", 1250), ("12.500", 1250), ("101.25", 10125)]
)
def test_any_exact_multiple_of_the_tick_is_accepted(text: str, ticks: int) -> None:
    assert parse_price(text, CENT) == ticks


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("12.001", "OFF_TICK"),
        ("12.00000000000000000001", "OFF_TICK"),
        ("0", "BAD_PRICE"),
        ("-1", "BAD_PRICE"),
        ("1e3", "BAD_PRICE"),
        ("NaN", "BAD_PRICE"),
        ("Infinity", "BAD_PRICE"),
        (" 1", "BAD_PRICE"),
        ("1,5", "BAD_PRICE"),
        ("", "BAD_PRICE"),
        ("\uff11.\uff10\uff10", "BAD_PRICE"),  # fullwidth 1.00: Decimal() takes it
        ("\u0661.\u0660\u0660", "BAD_PRICE"),  # Arabic-Indic 1.00
        ("1.0\u0660", "BAD_PRICE"),
        ("10000000.01", "BAD_PRICE"),
        (12.5, "BAD_PRICE"),
        (12, "BAD_PRICE"),
        (None, "BAD_PRICE"),
    ],
)
def test_bad_prices_are_refused_with_a_code(text: object, code: str) -> None:
    with pytest.raises(MoneyError) as refused:
        parse_price(text, CENT)
    assert refused.value.code == code


def test_coarse_tick_refuses_prices_between_ticks() -> None:
    tick = tick_size_of(parse_tick_size("0.05"))
    assert parse_price("10.05", tick) == 201
    with pytest.raises(MoneyError):
        parse_price("10.03", tick)


def test_prices_are_written_with_the_tick_decimals() -> None:
    assert format_price(1200, CENT) == "12.00"
    assert format_price(201, Decimal("0.05")) == "10.05"
    assert format_price(7, Decimal(1)) == "7"


def test_tick_size_must_be_a_whole_number_of_cents() -> None:
    assert parse_tick_size("0.01") == 1
    assert parse_tick_size("1") == 100
    for bad in ("0.001", "0", "-0.01", 0.01):
        with pytest.raises(MoneyError) as refused:
            parse_tick_size(bad)
        assert refused.value.code == "BAD_TICK_SIZE"


def test_cash_round_trips_through_minor_units() -> None:
    assert parse_cash("10000.00") == 1_000_000
    assert parse_cash("0.5") == 50
    assert format_cash(1_000_000) == "10000.00"
    assert format_cash(5) == "0.05"
    for bad in ("0.001", "0", "1e2", 10.0):
        with pytest.raises(MoneyError) as refused:
            parse_cash(bad)
        assert refused.value.code == "BAD_AMOUNT"
