"""Exact conversion of decimal strings at the edge: prices to ticks, cash to minor units.

The only place where decimal text meets the core's integers. Floats are never
accepted; a value that is not an exact multiple of its unit is refused, not rounded.
"""

import re
from decimal import Decimal

from exchange.domain.codes import RejectCode
from exchange.domain.limits import CASH_DECIMALS, MAX_CASH, MAX_PRICE_TICKS, MAX_TICK

# Plain decimal notation only: no sign, exponent, NaN, Infinity, spaces or separators, and
# ASCII digits only ([0-9], not \d: \d and Decimal() also take fullwidth and Arabic-Indic
# digits, U+FF11 and U+0661).
_DECIMAL = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")
CASH_UNIT = Decimal(1).scaleb(-CASH_DECIMALS)


class MoneyError(ValueError):
    """A decimal string that cannot become the integer it stands for; `code` says why."""

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _exact_quotient(value: Decimal, unit: Decimal) -> int | None:
    """value / unit when that is a whole number, else None; exact at any size (no context)."""
    vn, vd = value.as_integer_ratio()
    un, ud = unit.as_integer_ratio()
    quotient, rest = divmod(vn * ud, vd * un)
    return None if rest else quotient


def _parse(text: object, code: RejectCode, what: str) -> Decimal:
    if not isinstance(text, str):
        raise MoneyError(code, f"{what} must be a decimal string, not {type(text).__name__}")
    if not _DECIMAL.fullmatch(text):
        raise MoneyError(code, f"{what} {text[:40]!r} is not a plain positive decimal")
    return Decimal(text)


def parse_tick_size(text: object) -> int:
    """A tick size such as "0.01" as cash minor units per tick (a positive whole number)."""
    value = _parse(text, RejectCode.BAD_TICK_SIZE, "tick_size")
    units = _exact_quotient(value, CASH_UNIT)
    if units is None or not 0 < units <= MAX_TICK:
        msg = f"tick_size must be a positive multiple of {CASH_UNIT} up to {MAX_TICK * CASH_UNIT}"
        raise MoneyError(RejectCode.BAD_TICK_SIZE, msg)
    return units


def tick_size_of(tick: int) -> Decimal:
    """The tick size (as written on the wire) of an instrument whose tick is `tick` minor units."""
    return (Decimal(tick) * CASH_UNIT).quantize(CASH_UNIT)


def parse_price(text: object, tick_size: Decimal) -> int:
    """A price string as a whole number of ticks: "101.25" at tick 0.01 is 10125."""
    value = _parse(text, RejectCode.BAD_PRICE, "price")
    ticks = _exact_quotient(value, tick_size)
    if ticks is None:
        raise MoneyError(RejectCode.OFF_TICK, f"price {text} is not a multiple of {tick_size}")
    if not 0 < ticks <= MAX_PRICE_TICKS:
        raise MoneyError(RejectCode.BAD_PRICE, f"price {text} is out of range")
    return ticks


def format_price(ticks: int, tick_size: Decimal) -> str:
    """Ticks as a price string with exactly as many decimals as the tick size has."""
    return str((Decimal(ticks) * tick_size).quantize(tick_size))


def parse_cash(text: object) -> int:
    """A cash amount string as minor units: "10000.00" is 1000000."""
    value = _parse(text, RejectCode.BAD_AMOUNT, "amount")
    units = _exact_quotient(value, CASH_UNIT)
    if units is None:
        msg = f"amount {text} has more than {CASH_DECIMALS} decimals"
        raise MoneyError(RejectCode.BAD_AMOUNT, msg)
    if not 0 < units <= MAX_CASH:
        raise MoneyError(RejectCode.BAD_AMOUNT, f"amount {text} is out of range")
    return units


def format_cash(minor_units: int) -> str:
    """Minor units as a cash string with the currency's decimals: 1000000 is "10000.00"."""
    return str(Decimal(minor_units).scaleb(-CASH_DECIMALS).quantize(CASH_UNIT))
