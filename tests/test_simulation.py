"""The simulated market against the real server: with a fixed seed and a bounded number of
steps, the traded price tracks the hidden value within the report's stated bound, the run
is the same every time, and the book the agents saw (checked by seq and checksum) is the
book REST serves."""

from pathlib import Path

import msgspec

from loadtest.simulation import report
from loadtest.simulation.runner import SimOptions, simulate
from tests import server as srv

STEPS = 1_500  # ~6 simulated minutes at the default rates: a minute of warm-up and five


def _options(server: srv.RunningServer, symbol: str, report_dir: Path | None) -> SimOptions:
    return SimOptions(
        server.base_url, srv.ADMIN_TOKEN, symbol=symbol, seed=1, steps=STEPS, speed=0,
        report_dir=report_dir,
    )  # fmt: skip


async def test_the_price_tracks_the_hidden_value_and_the_book_stays_consistent(
    tmp_path: Path,
) -> None:
    async with srv.running(tmp_path / "data", extra=("--durability", "none")) as server:
        status = await simulate(_options(server, "SIMA", tmp_path / "report"))
        again = await simulate(_options(server, "SIMB", tmp_path / "again"))
    summary = msgspec.json.decode((tmp_path / "report" / report.SUMMARY_FILE).read_bytes())
    assert status == 0, summary
    assert again == 0
    assert summary["steps"] == STEPS
    assert summary["trades"] > 100, summary
    assert summary["orders"] > 500, summary
    assert summary["book_consistent"] is True
    assert summary["book_gaps"] == 0
    assert summary["book_bad_checksums"] == 0
    assert summary["tracking_error_fraction"] < report.TRACKING_BOUND_FRACTION, summary
    assert summary["within_bound"] is True
    assert summary["mae_per_minute"][0]["minute"] == 0
    png = (tmp_path / "report" / report.PLOT_FILE).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # The same seed on a fresh instrument: the same run, step for step.
    second = msgspec.json.decode((tmp_path / "again" / report.SUMMARY_FILE).read_bytes())
    drop = {"symbol"}
    assert {k: v for k, v in second.items() if k not in drop} == {
        k: v for k, v in summary.items() if k not in drop
    }
