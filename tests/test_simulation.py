"""The simulated market against the real server: with a fixed seed and a bounded number of
steps, the traded price tracks the hidden value within the report's stated bound, the run
is the same every time, and the book the agents saw (checked by seq and checksum) is the
book REST serves."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec

from gateway.client import Admin
from loadtest.simulation import report
from loadtest.simulation.runner import SimOptions, simulate
from tests import server as srv
from tests.wirings import serving

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


async def test_exchange_simulate_runs_from_the_command_line(tmp_path: Path) -> None:
    async with srv.running(tmp_path / "data", extra=("--durability", "none")) as server:
        args = ["--url", server.base_url, "--admin-token", srv.ADMIN_TOKEN, "--symbol", "CLI"]
        done = await asyncio.to_thread(
            _exchange, tmp_path, "simulate", *args, "--steps", "200", "--speed", "0",
            "--report", str(tmp_path / "report"), "--accounts", str(tmp_path / "accounts.json"),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        line = json.loads(done.stdout.splitlines()[-1])
        assert line["steps"] == 200
        assert line["book_consistent"] is True
        assert (tmp_path / "report" / report.PLOT_FILE).exists()
        assert (tmp_path / "accounts.json").stat().st_mode & 0o777 == 0o600
        # The accounts file is reused: no new accounts, the same agents trade on.
        again = await asyncio.to_thread(
            _exchange, tmp_path, "simulate", *args, "--steps", "200", "--speed", "0",
            "--accounts", str(tmp_path / "accounts.json"), "--report", str(tmp_path / "again"),
        )  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr
        second = json.loads((tmp_path / "again" / report.SUMMARY_FILE).read_text())
        # New client order ids each run: none is taken for a resend of the first run's.
        assert "DUPLICATE_CLIENT_ORDER_ID" not in second["rejects"], second["rejects"]
        assert second["trades"] > 0
    no_token = _exchange(tmp_path, "simulate", "--url", server.base_url)
    assert no_token.returncode == 2
    assert "--admin-token" in no_token.stderr


async def test_an_instrument_left_in_its_opening_auction_is_opened_and_traded(
    tmp_path: Path,
) -> None:
    """An offering's close leaves the instrument pre_open (market orders refused): the
    simulation uncrosses its opening auction through the admin route, then trades."""
    async with (
        srv.running(tmp_path / "data", extra=("--durability", "none")) as server,
        Admin(server.base_url, srv.ADMIN_TOKEN) as admin,
    ):
        issuer, _ = await admin.account("ipo-issuer")
        listing = {"symbol": "IPO", "kind": "share", "tick_size": "0.01", "issuer": issuer}
        await admin.ok("POST", "/v1/admin/instruments", listing)
        offer = {"symbol": "IPO", "price": "10.00", "qty": 100}
        offering_id = (await admin.ok("POST", "/v1/admin/offerings", offer))["offering_id"]
        await admin.ok("POST", f"/v1/admin/offerings/{offering_id}/close")
        options = SimOptions(
            server.base_url, srv.ADMIN_TOKEN, symbol="IPO", seed=2, steps=200, speed=0,
            report_dir=tmp_path / "report",
        )  # fmt: skip
        assert await simulate(options) == 0
        (ipo,) = [
            i for i in (await admin.ok("GET", "/v1/instruments"))["instruments"]
            if i["symbol"] == "IPO"
        ]
        assert ipo["status"] == "trading"
    summary = json.loads((tmp_path / "report" / report.SUMMARY_FILE).read_text())
    assert summary["book_consistent"] is True
    assert summary["trades"] > 0
    assert "NOT_IN_PHASE" not in summary["rejects"], summary["rejects"]


def _exchange(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EXCHANGE_ADMIN_TOKEN"}
    env["PYTHONPATH"] = str(srv.ROOT)
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_the_agents_trade_through_a_cluster_gateway_too(tmp_path: Path) -> None:
    """Ordinary clients of the protocol: the same agents against `exchange gateway` over
    NATS, the book they checked equal to the gateway's REST book at the end."""
    async with serving("cluster", tmp_path) as gateway:
        options = SimOptions(
            gateway.base_url, srv.ADMIN_TOKEN, symbol="SIMC", seed=3, steps=300, speed=0,
            report_dir=tmp_path / "report",
        )  # fmt: skip
        assert await simulate(options) == 0
    summary = json.loads((tmp_path / "report" / report.SUMMARY_FILE).read_text())
    assert summary["book_consistent"] is True
    assert summary["trades"] > 0
