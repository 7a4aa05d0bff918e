"""The edge's text rules: ASCII decimal integers, and ids and names without invisible
characters."""

import msgspec
import pytest

from exchange.domain.text import SymbolAtEdge, VisibleName, is_symbol, parse_bounded_int


@pytest.mark.parametrize(
    ("text", "low", "high", "value"),
    [("1", 1, 5000, 1), ("0007", 1, 5000, 7), ("5000", 1, 5000, 5000), ("0", 0, 2**63 - 1, 0),
     ("9223372036854775807", 0, 2**63 - 1, 2**63 - 1)],
)  # fmt: skip
def test_ascii_digits_within_the_bounds_are_numbers(
    text: str, low: int, high: int, value: int
) -> None:
    assert parse_bounded_int(text, low, high) == value


@pytest.mark.parametrize(
    "text",
    ["", "0", "5001", "-1", "+1", " 1", "1 ", "1_0", "1.0", "1e3", "\u00b2", "\u00b3",
     "\u0663", "\uff13", "\u0967", "9" * 20, "9" * 5000],
)  # fmt: skip
def test_anything_else_is_no_number(text: str) -> None:
    assert parse_bounded_int(text, 1, 5000) is None


class _Named(msgspec.Struct):
    name: VisibleName = ""
    symbol: SymbolAtEdge = "A"


@pytest.mark.parametrize(
    "name",
    ["a\x00", "a\n", "a\r", "\x7f", "a\x85", "\u00ad", "a\u200b", "a\u200d", "a\u202e",
     "a\u2066", "a\u2028", "\ufeffa", "a\U000e0041", "a" * 129],
)  # fmt: skip
def test_invisible_or_control_characters_make_no_name(name: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode({"name": name}), type=_Named)


@pytest.mark.parametrize("name", ["Åsa Öberg", "株式会社", "O'Neil & Co.", ""])
def test_names_of_any_script_pass(name: str) -> None:
    assert msgspec.json.decode(msgspec.json.encode({"name": name}), type=_Named).name == name


@pytest.mark.parametrize("symbol", ["AB\n", "ab", "", "-AB", "A" * 17, "AB\u0000", "A B"])
def test_a_symbol_with_a_trailing_newline_or_outside_the_pattern_is_refused(symbol: str) -> None:
    assert not is_symbol(symbol)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode({"symbol": symbol}), type=_Named)
