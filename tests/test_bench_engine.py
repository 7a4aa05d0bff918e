"""The engine benchmark's deep mix is the reference book's stream, and --compare reports ratios."""

import subprocess
import sys

import msgspec
import pytest

from loadtest.bench_engine import DEFAULT_REFERENCE, compare, run

OPS = 20_000
needs_reference = pytest.mark.skipif(
    not DEFAULT_REFERENCE.exists(), reason=f"no reference book at {DEFAULT_REFERENCE}"
)


@needs_reference
def test_the_deep_mix_trades_exactly_as_the_reference_book_on_the_same_seed() -> None:

    out = subprocess.run(
        [sys.executable, str(DEFAULT_REFERENCE), str(OPS), "3"],
        check=True, capture_output=True, text=True,
    ).stdout
    reference_fills = msgspec.json.decode(out)["trades"]
    result = run(OPS, 3, mix="deep")
    assert result.places_rejected == 0
    assert result.trades == reference_fills
    # Most GTC orders rest: a deep book over many levels, unlike the shallow mix.
    assert result.resting_at_end > 2_000
    assert result.levels_at_end > 60


def test_the_shallow_mix_keeps_its_stream_and_hash() -> None:
    first, second = run(5_000, 1), run(5_000, 1)
    assert first.state_hash == second.state_hash
    assert first.resting_at_end < 100


@needs_reference
@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_compare_reports_both_ratios_from_interleaved_rounds(clock: str) -> None:
    report = compare(2_000, 1, 1, str(DEFAULT_REFERENCE), clock)
    assert report["clock"] == clock
    rounds = report["rounds"]
    assert isinstance(rounds, list)
    assert len(rounds) == 1
    assert set(rounds[0]) == {"reference", "shallow", "deep"}
    assert isinstance(report["ratio_deep"], float)
    assert report["ratio_deep"] > 0
    assert isinstance(report["ratio_shallow"], float)
    assert report["ratio_shallow"] > 0

