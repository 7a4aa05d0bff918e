"""The shape of `exchange serve`'s log lines, and the bound on lines of one kind a second.

A line's structured fields travel in its record's `extra=`; both formats show them: text
(for people: ISO time, level, logger, message, then `key=value` pairs) and JSON (for
machines: one object a line, encoded with msgspec). What is logged is decided elsewhere.
"""

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has; any other attribute of a record came from `extra=`
# (which may not name one of these: logging refuses it).
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",  # 3.12+
}
# A text value shown as it is; anything else (spaces, quotes, newlines, `=`) is quoted as
# a JSON string, so a value a client chose can never forge a line or a field.
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+\-]+")
_encode = msgspec.json.Encoder(enc_hook=repr).encode


def iso_utc(created: float) -> str:
    """A record's time as ISO-8601 in UTC, to the millisecond: 2025-01-02T03:04:05.678Z."""
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a log call passed in `extra=`, in the order given."""
    return {k: v for k, v in vars(record).items() if k not in RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, then the record's fields (and `exc`
    with the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            line.setdefault(key, value)  # a field never hides one of the four above
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _encode(line).decode()


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger: message key=value ...`, a traceback (if any) on the lines after."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return iso_utc(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        fields = fields_of(record)
        if not fields:
            return text
        return text + " " + " ".join(f"{key}={_text_value(v)}" for key, v in fields.items())


def _text_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool | int | float):
        return str(value)
    text = str(value)
    return text if _PLAIN.fullmatch(text) else _encode(text).decode()


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Every log line to stderr, in `log_format` (one of LOG_FORMATS)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)


class LineBudget:
    """At most `per_second` lines of one kind in each one-second window; the lines past it
    are only counted, and the count is reported with the next line let through."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.clock = clock
        self.window_start = clock()
        self.used = 0
        self.held_back = 0

    def take(self) -> int | None:
        """None: do not log this one (it is counted). Otherwise: log it, with the number of
        lines held back since the last one logged."""
        now = self.clock()
        if now - self.window_start >= 1.0:
            self.window_start, self.used = now, 0
        if self.used >= self.per_second:
            self.held_back += 1
            return None
        self.used += 1
        held_back, self.held_back = self.held_back, 0
        return held_back
