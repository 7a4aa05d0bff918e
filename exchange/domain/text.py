"""What text may enter the exchange at its edge: ASCII decimal integers, and ids, names and
symbols without control or invisible characters.

The gateway (WebSocket and REST) parses every integer it reads from text with
`parse_bounded_int` and types every id, name and symbol a client sends with the types
below; nothing here touches the journal's schema (commands keep the looser rules they
were journaled under, so old journals still decode).
"""

import re
from typing import Annotated

from msgspec import Meta

from exchange.domain.limits import MAX_ID_LENGTH, MAX_NAME_LENGTH, SYMBOL_PATTERN

# At most this many digits are read: every integer the exchange takes fits in int64
# (19 digits), and int() of a longer string is never computed (a 5,000-digit string
# would cost quadratic time, and past 4,300 digits int() raises).
MAX_INT_DIGITS = 19
# ASCII digits only: str.isdigit() also takes "²" (which int() refuses), `\d` and int()
# take the digits of other scripts (fullwidth U+FF13, Arabic-Indic U+0663).
_ASCII_DIGITS = re.compile(rf"[0-9]{{1,{MAX_INT_DIGITS}}}")

# Characters no id, name or symbol may hold: the C0 and C1 controls (NUL, newline,
# escape...), the soft hyphen, the line and paragraph separators, and the invisible
# format characters that change how text shows or compares without being seen: zero-width
# space, joiners and marks, bidi embeddings, overrides and isolates, the Arabic letter
# mark, the Mongolian vowel separator, word joiner and invisible operators, the
# byte-order mark, interlinear annotations, noncharacters U+FFFE/U+FFFF, lone surrogates
# and the tag characters. A fixed list, not unicodedata's categories, so what is accepted
# never changes with the Python version.
_INVISIBLE = (
    "\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ufffe\uffff\ud800-\udfff\U000e0000-\U000e007f"
)
# `\Z`, not `$`: `$` also matches before a final newline, so "AB\n" would pass.
VISIBLE_TEXT_PATTERN = f"^[^{_INVISIBLE}]*\\Z"
# A symbol as it may be listed: 1 to 16 of A-Z, 0-9, ".", "_" and "-", starting with a
# letter or digit (limits.SYMBOL_PATTERN, anchored so that a trailing newline fails too).
SYMBOL_AT_EDGE_PATTERN = SYMBOL_PATTERN.removesuffix("$") + r"\Z"

# A client's id (client_order_id, an account id, an order id as text).
VisibleId = Annotated[str, Meta(max_length=MAX_ID_LENGTH, pattern=VISIBLE_TEXT_PATTERN)]
# An account's name.
VisibleName = Annotated[str, Meta(max_length=MAX_NAME_LENGTH, pattern=VISIBLE_TEXT_PATTERN)]
# A symbol to list, deposit or offer.
SymbolAtEdge = Annotated[str, Meta(pattern=SYMBOL_AT_EDGE_PATTERN)]

_SYMBOL_AT_EDGE = re.compile(SYMBOL_AT_EDGE_PATTERN)


def parse_bounded_int(text: str, low: int, high: int) -> int | None:
    """`text` as an integer when it is 1 to 19 ASCII digits (no sign, space, underscore or
    other script's digits) whose value is in low..high; else None."""
    if not _ASCII_DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def is_symbol(text: str) -> bool:
    """Whether `text` is a symbol that may be listed (SYMBOL_AT_EDGE_PATTERN)."""
    return _SYMBOL_AT_EDGE.match(text) is not None
