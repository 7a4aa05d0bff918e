"""The Binance dialect's rules that need no server: signing over the bytes as received,
the timestamp window, whole-unit quantities, the request-weight minute, and the one table
that maps every reject code of ours to Binance's."""

import hashlib
import hmac
from pathlib import Path

import pytest

from exchange import cli
from exchange.domain.codes import RejectCode
from gateway.binance import errors, shapes, signing
from gateway.binance.errors import BinanceError
from gateway.binance.weights import Weights
from gateway.readmodel import ReadModel
from gateway.readstate import InstrumentView


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def test_the_secret_is_derived_from_the_admin_token_and_the_key_and_stored_nowhere() -> None:
    key = signing.secret_key("token-1")
    secret = signing.api_secret(key, "ek_abc")
    assert len(secret) == 64
    assert int(secret, 16) >= 0
    assert signing.api_secret(key, "ek_abc") == secret  # any gateway derives the same
    assert signing.api_secret(key, "ek_abd") != secret
    assert signing.api_secret(signing.secret_key("token-2"), "ek_abc") != secret


def test_the_signature_covers_the_query_then_the_body_as_received() -> None:
    query, body = "symbol=ACMEUSD&newClientOrderId=a%2Fb", "side=BUY&timestamp=5"
    signature = sign("s3cret", query + body)
    got = signing.split_signed(query, body + "&signature=" + signature)
    signing.check_signature("s3cret", got)
    assert got.params["newClientOrderId"] == "a/b"  # decoded for use, signed as sent
    as_decoded = "symbol=ACMEUSD&newClientOrderId=a/b"
    decoded = signing.split_signed(as_decoded, body + "&signature=" + signature)
    with pytest.raises(BinanceError) as refused:
        signing.check_signature("s3cret", decoded)
    assert refused.value.code == -1022


def test_a_missing_or_repeated_signature_or_parameter_is_refused() -> None:
    with pytest.raises(BinanceError) as missing:
        signing.check_signature("s", signing.split_signed("a=1", ""))
    assert missing.value.code == -1102
    with pytest.raises(BinanceError) as twice:
        signing.split_signed("a=1&a=2", "")
    assert twice.value.code == -1102


@pytest.mark.parametrize(
    ("timestamp", "window", "code"),
    [
        (100_000, None, None),  # now
        (95_000, None, None),  # 5 s old: the default window's edge
        (94_999, None, -1021),  # older than the default 5,000 ms
        (50_000, "60000", None),  # inside a 60 s window
        (101_000, None, None),  # 1 s ahead: allowed
        (101_001, None, -1021),  # more than 1 s ahead
        (100_000, "60001", -1131),  # a window past 60 s
        (100_000, "0", -1131),
    ],
)
def test_the_timestamp_must_be_within_recv_window_and_at_most_a_second_ahead(
    timestamp: int, window: str | None, code: int | None
) -> None:
    params = {"timestamp": str(timestamp)} | ({"recvWindow": window} if window else {})
    if code is None:
        signing.check_timestamp(params, now_ms=100_000)
        return
    with pytest.raises(BinanceError) as refused:
        signing.check_timestamp(params, now_ms=100_000)
    assert refused.value.code == code


def test_quantities_are_whole_units_and_a_fraction_is_refused_clearly() -> None:
    assert shapes.quantity("3") == 3
    assert shapes.quantity("3.00000000") == 3
    with pytest.raises(BinanceError) as fraction:
        shapes.quantity("1.5")
    assert fraction.value.code == -1013
    assert "LOT_SIZE" in fraction.value.msg
    assert "whole units" in fraction.value.msg
    for bad in ("1e3", "-1", " 1", "0x10", "\uff11"):  # the last: a fullwidth one
        with pytest.raises(BinanceError) as illegal:
            shapes.quantity(bad)
        assert illegal.value.code == -1100, bad
    with pytest.raises(BinanceError) as zero:
        shapes.quantity("0")
    assert zero.value.code == -1013


def test_every_reject_code_has_its_binance_equivalent_in_the_table() -> None:
    missing = [code.value for code in RejectCode if code not in errors.REJECTS]
    assert not missing, f"add to gateway/binance/errors.py REJECTS: {missing}"


def test_the_codes_that_decide_a_ccxt_exception() -> None:
    assert errors.REJECTS[RejectCode.INSUFFICIENT_FUNDS].msg == (
        "Account has insufficient balance for requested action."
    )
    assert errors.REJECTS[RejectCode.POST_ONLY_WOULD_TAKE].msg == (
        "Order would immediately match and take."
    )
    assert errors.from_reject(RejectCode.UNKNOWN_ORDER, cancelling=True).code == -2011
    assert errors.from_reject(RejectCode.UNKNOWN_ORDER).code == -2013
    assert errors.REJECTS[RejectCode.RATE_LIMITED].status == 429
    assert errors.mapped("SOMETHING_NEW").code == -2010


def test_request_weight_is_counted_per_address_and_minute() -> None:
    now = [600.0]
    weights = Weights(limit=10, clock=lambda: now[0])
    assert weights.spend("a", 6) == (6, None)
    assert weights.spend("b", 6) == (6, None)  # another address: its own minute
    assert weights.spend("a", 4) == (10, None)
    used, retry_after = weights.spend("a", 1)
    assert (used, retry_after) == (10, 60)
    now[0] = 659.5
    assert weights.spend("a", 1)[1] == 1  # half a second left: retry after 1 s
    now[0] = 660.0
    assert weights.spend("a", 1) == (1, None)  # a new minute


def test_docs_binance_shows_the_table_the_code_answers_with() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "BINANCE.md").read_text()
    for code, m in errors.REJECTS.items():
        row = f"| `{code}` | {m.status} | {m.code} | {m.msg} |"
        assert row in page, f"docs/BINANCE.md lacks or differs from: {row}"


def test_symbols_are_the_instrument_then_the_currency_of_serve_currency() -> None:
    read = ReadModel()
    read.state.instruments["ACME"] = InstrumentView("ACME", "share", 1, "A1", "trading")
    names = shapes.Names(read, "EUR")
    assert names.wire("ACME") == "ACMEEUR"
    assert names.ours("ACMEEUR") == names.ours("acmeeur") == "ACME"
    for unknown in ("ACMEUSD", "ACME", "EUR", "BONDEUR"):
        with pytest.raises(BinanceError) as refused:
            names.ours(unknown)
        assert refused.value.code == -1121
    assert cli._parser().parse_args(["serve", "--currency", "EUR"]).currency == "EUR"
    assert cli._parser().parse_args(["gateway", "--nats", "nats://x:1"]).currency == "USD"
    for bad in ("eur", "E", "EU1", "ABCDEFGHIJK"):
        with pytest.raises(SystemExit):
            cli._parser().parse_args(["serve", "--currency", bad])
