"""`python -m loadtest targets`: its verdicts follow the figures, and the whole command runs
its four phases against the real server."""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from loadtest import targets
from tests.server import ADMIN_TOKEN, ROOT, running

# Bounds a failing run of the whole command; it takes seconds.
COMMAND_TIMEOUT_S = 300.0


def _reports(
    *, echo: float = 100_000.0, peak: float = 40_000.0, p99: float = 5.0, p999: float = 20.0,
    lag: float = 30.0, gaps: int = 0, rejects: dict[str, int] | None = None,
) -> tuple[dict[str, Any], ...]:  # fmt: skip
    base = {"messages_per_s": echo}
    peak_report = {"orders_per_s": peak}
    half = {"offered_rate": peak / 2, "orders_per_s": peak / 2,
            "ack_ms": {"p99": p99, "p99.9": p999}}  # fmt: skip
    md = {"subscribers": 100, "orders_per_s": peak, "md_messages_per_s": 1e6,
          "md_lag_ms": {"p99": lag}, "seq_gaps": gaps, "checksum_mismatches": 0,
          "md_divergences": 0, "rejects": rejects or {}}  # fmt: skip
    return base, peak_report, half, md


def test_each_verdict_follows_its_figures() -> None:
    met = targets.summary(*_reports())
    assert [met[t]["met"] for t in ("throughput", "half_peak_latency", "market_data")] == [
        True, True, True,
    ]  # fmt: skip
    assert met["throughput"]["ratio"] == 0.4
    assert not targets.summary(*_reports(peak=39_000.0))["throughput"]["met"]
    assert not targets.summary(*_reports(p99=10.0))["half_peak_latency"]["met"]
    assert not targets.summary(*_reports(p999=25.0))["half_peak_latency"]["met"]
    assert not targets.summary(*_reports(lag=50.0))["market_data"]["met"]
    assert not targets.summary(*_reports(gaps=1))["market_data"]["met"]
    closed = targets.summary(*_reports(rejects={"SUBSCRIBER_CLOSED_4008": 1, "BUSY": 3}))
    assert closed["market_data"]["subscribers_closed"] == 1
    assert not closed["market_data"]["met"]


async def test_the_command_runs_its_four_phases_against_the_exchange(tmp_path: Path) -> None:
    async with running(tmp_path / "data", extra=("--rate-limit", "100000")) as server:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest", "targets", "--url", server.ws_url,
            "--admin-token", ADMIN_TOKEN, "--duration", "1", "--nice", "0",
            "--md-subscribers", "10", "--report-dir", str(tmp_path / "reports"),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            out, _ = await child.communicate()
    assert child.returncode == 0
    result = json.loads(out)
    reports = result["reports"]
    peak = reports["peak"]["orders_per_s"]
    assert peak > 0
    assert result["throughput"]["ratio"] == round(peak / reports["baseline"]["messages_per_s"], 3)
    assert reports["half"]["offered_rate"] == round(peak / 2, 1)
    assert reports["market_data"]["subscribers"] == 10
    assert result["market_data"]["gaps_mismatches_divergences"] == 0
    for name in ("peak", "half", "md"):
        saved = json.loads((tmp_path / "reports" / f"{name}.json").read_text())
        assert saved["orders"] > 0
