"""The log's formats (exchange/logs.py) and the gateway's bounded auth-failure lines
(gateway/audit.py), on records and clocks made here."""

import json
import logging
import sys

import pytest

from exchange.logs import JsonFormatter, LineBudget, TextFormatter
from gateway import audit

# 2025-01-02T03:04:05.678Z as a LogRecord's `created`.
CREATED = 1_735_787_045.678


def _record(
    msg: str = "websocket closed", levelno: int = logging.INFO, **fields: object
) -> logging.LogRecord:
    record = logging.LogRecord("gateway.audit", levelno, __file__, 1, msg, None, None)
    record.created = CREATED
    record.__dict__.update(fields)
    return record


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_json_lines_carry_ts_level_logger_msg_and_the_fields_given_in_extra() -> None:
    line = JsonFormatter().format(_record(event="ws_close", conn=7, account="A3", code=4029))
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2025-01-02T03:04:05.678Z",
        "level": "INFO",
        "logger": "gateway.audit",
        "msg": "websocket closed",
        "event": "ws_close",
        "conn": 7,
        "account": "A3",
        "code": 4029,
    }


def test_a_json_line_keeps_its_traceback_in_one_field() -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        record = _record("failed", logging.ERROR)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    decoded = json.loads(line)
    assert decoded["level"] == "ERROR"
    assert "RuntimeError: a bug" in decoded["exc"]


def test_a_json_field_never_hides_the_four_every_line_has() -> None:
    decoded = json.loads(JsonFormatter().format(_record(ts="forged", level="forged")))
    assert (decoded["ts"], decoded["level"]) == ("2025-01-02T03:04:05.678Z", "INFO")


def test_a_value_json_cannot_encode_is_written_as_its_repr() -> None:
    decoded = json.loads(JsonFormatter().format(_record(peer=object)))
    assert decoded["peer"] == repr(object)


def test_text_lines_put_the_fields_after_the_message_as_key_value() -> None:
    line = TextFormatter().format(_record(event="ws_open", conn=3, account=None, peer="1.2.3.4:5"))
    assert line == (
        "2025-01-02T03:04:05.678Z INFO gateway.audit: websocket closed "
        "event=ws_open conn=3 account=- peer=1.2.3.4:5"
    )


def test_a_text_value_a_client_chose_cannot_forge_a_line_or_a_field() -> None:
    line = TextFormatter().format(_record(name_given='Eve\n2025 WARNING x: y="z" code=1'))
    assert "\n" not in line
    assert line.endswith(r'name_given="Eve\n2025 WARNING x: y=\"z\" code=1"')


def test_a_line_budget_lets_n_lines_a_second_through_and_reports_the_rest_later() -> None:
    clock = FakeClock()
    budget = LineBudget(3, clock)
    assert [budget.take() for _ in range(5)] == [0, 0, 0, None, None]
    clock.now += 0.999
    assert budget.take() is None  # still the same second
    clock.now += 0.001
    assert budget.take() == 3  # the first line of the next second says what was held back
    assert budget.take() == 0


def test_auth_failures_are_logged_at_most_the_bound_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    failures = audit.AuthFailures(clock)
    key = "ek_" + "s3cret" * 6
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        for _ in range(audit.AUTH_FAILURE_LINES_PER_S + 50):
            failures.failed("rest_key", "10.0.0.1:4000", key)
        assert len(caplog.records) == audit.AUTH_FAILURE_LINES_PER_S
        clock.now += 1.0
        failures.failed("ws_auth", "10.0.0.2:4000", key, conn=9)
    lines = caplog.records
    assert len(lines) == audit.AUTH_FAILURE_LINES_PER_S + 1
    assert {r.levelno for r in lines} == {logging.WARNING}
    last = lines[-1].__dict__
    assert (last["where"], last["conn"], last["not_logged_before"]) == ("ws_auth", 9, 50)
    assert last["key_prefix"] == key[: audit.KEY_PREFIX_LOGGED]
    assert key not in caplog.text


def test_a_short_refused_key_is_not_logged_at_all(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        audit.AuthFailures(FakeClock()).failed("rest_key", "10.0.0.1:4000", "hunter2")
    assert "key_prefix" not in caplog.records[0].__dict__
    assert "hunt" not in caplog.text


def test_an_admin_parameter_named_like_a_record_attribute_is_logged_under_another_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        audit.admin_action("create_account", "10.0.0.1:4000", "ok", {"name": "Ann", "by": "x"})
    fields = caplog.records[0].__dict__
    assert (fields["param_name"], fields["param_by"], fields["by"]) == ("Ann", "x", "admin")
