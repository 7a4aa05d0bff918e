"""The load-test harness runs against the real server and checks what it measures."""

import json
import os
from pathlib import Path

import aiohttp
from hdrh.histogram import HdrHistogram
from hypothesis import given
from hypothesis import strategies as st

from loadtest import harness
from loadtest.feed import Feed
from tests.server import ADMIN_TOKEN, running


def status_of(instruments: dict[str, list[dict[str, str]]], symbol: str) -> str:
    (status,) = (i["status"] for i in instruments["instruments"] if i["symbol"] == symbol)
    return status


async def test_a_short_open_loop_run_reports_latencies_and_no_gaps(tmp_path: Path) -> None:
    async with running(tmp_path / "data") as server:
        report_path = tmp_path / "report.json"
        options = harness.Options(
            url=server.ws_url, admin_token=ADMIN_TOKEN, makers=2, takers=2, subscribers=2,
            rate=300.0, duration=2.0, report=report_path,
        )  # fmt: skip
        report = await harness.run(options)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{server.base_url}/v1/instruments") as answer,
        ):
            instruments_after = await answer.json()
    assert report["orders"] >= 500
    assert report["ack_ms"]["count"] == report["orders"]
    assert report["ack_ms"]["p50"] <= report["ack_ms"]["p99"] <= report["ack_ms"]["p100"]
    assert report["fills"] > 0
    # Takers cross the spread: their fills, timed from the order, are a share of all fills.
    assert 0 < report["order_to_fill_ms"]["count"] < report["fills"]
    assert report["order_to_fill_ms"]["p50"] <= report["order_to_fill_ms"]["p100"]
    assert report["md_messages"] > 0
    assert (report["seq_gaps"], report["checksum_mismatches"]) == (0, 0)
    assert json.loads(report_path.read_text())["orders"] == report["orders"]
    assert report_path.with_suffix(".png").stat().st_size > 1_000
    # What the run leaves on the exchange is named after it, listed, and halted.
    symbol = report["symbol"]
    assert report["symbol_status_after"] == "halted"
    assert sorted(report["accounts"]) == sorted(
        [f"{symbol}-issuer", f"{symbol}-maker-0", f"{symbol}-maker-1",
         f"{symbol}-taker-2", f"{symbol}-taker-3"]
    )  # fmt: skip
    assert status_of(instruments_after, symbol) == "halted"


async def test_the_clients_can_run_in_several_processes(tmp_path: Path) -> None:
    async with running(tmp_path / "data") as server:
        options = harness.Options(
            url=server.ws_url, admin_token=ADMIN_TOKEN, makers=2, takers=2, subscribers=2,
            rate=200.0, duration=2.0, report=tmp_path / "report.json", processes=2,
            in_flight=4, nice=3,
        )  # fmt: skip
        report = await harness.run(options)
    assert report["processes"] == 2
    assert report["in_flight_per_trader"] == 4
    # The workers lowered their own priority, below this process's.
    assert report["client_niceness"] == min(19, os.nice(0) + 3)
    assert report["orders"] >= 300
    # Half the makers' accepted orders are cancelled: counted apart from the orders.
    assert 0 < report["cancels"] < report["orders"]
    assert report["commands_per_s"] > report["orders_per_s"]
    assert report["ack_ms"]["count"] == report["orders"]
    assert report["order_to_fill_ms"]["count"] > 0  # gathered from the worker processes
    assert report["md_lag_ms"]["count"] > 0
    assert (report["seq_gaps"], report["checksum_mismatches"]) == (0, 0)


async def test_a_single_process_run_lowers_its_own_priority_when_asked(tmp_path: Path) -> None:
    import asyncio
    import sys

    report_path = tmp_path / "report.json"
    async with running(tmp_path / "data") as server:
        # In a child process: the run nices the process it runs in, for good.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest", "run", "--url", server.ws_url,
            "--admin-token", ADMIN_TOKEN, "--makers", "1", "--takers", "1",
            "--subscribers", "1", "--rate", "100", "--duration", "1", "--nice", "2",
            "--report", str(report_path), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await asyncio.wait_for(child.wait(), 60) == 0
    report = json.loads(report_path.read_text())
    assert report["processes"] == 1
    assert report["client_nice"] == 2
    assert report["client_niceness"] == min(19, os.nice(0) + 2)
    assert report["orders"] > 0


async def test_the_echo_baseline_counts_round_trips() -> None:
    from loadtest import baseline
    from tests.server import free_port

    report = await baseline.run(clients=2, duration=1.0, port=free_port(), processes=2)
    assert report["processes"] == 2
    assert report["messages"] > 1_000


@given(st.lists(st.integers(-5, 2 * harness.HIST_MAX_US), min_size=1, max_size=3_000))
def test_counted_latencies_give_the_histograms_own_percentiles(values: list[int]) -> None:
    """Rounding to the histogram's resolution and counting first changes no figure."""
    counted = harness.Latencies()
    direct = HdrHistogram(1, harness.HIST_MAX_US, 3)
    for value in values:
        counted.record(value)
        direct.record_value(max(1, min(value, harness.HIST_MAX_US)))
    h = counted.histogram()
    assert h.get_total_count() == direct.get_total_count()
    for percentile in (0.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        assert h.get_value_at_percentile(percentile) == direct.get_value_at_percentile(percentile)


def test_the_command_line_refuses_an_empty_window_and_a_negative_niceness() -> None:
    import subprocess
    import sys

    for args, complaint in (
        (["run", "--admin-token", "t", "--in-flight", "0"], "must be at least 1"),
        (["baseline", "--nice", "-5"], "invalid choice"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "loadtest", *args],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        assert complaint in done.stderr


def test_the_gateway_benchmark_runs_and_sends_what_the_records_make() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_gateway", "--ops", "2000", "--batch", "20"],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # 2,000 records make answers, fills and market data for the connected sessions.
    assert "2000 records, batches of 20" in done.stdout
    sent = float(done.stdout.split("(")[1].split()[0])
    assert sent > 50


async def test_a_second_run_against_the_same_exchange_lists_an_instrument_of_its_own(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "data") as server:
        symbols = []
        for n in range(2):  # the same seed: the first name it tries is taken the second time
            options = harness.Options(
                url=server.ws_url, admin_token=ADMIN_TOKEN, makers=1, takers=1, subscribers=1,
                rate=100.0, duration=0.5, report=tmp_path / f"report{n}.json",
            )  # fmt: skip
            report = await harness.run(options)
            assert report["orders"] > 0
            symbols.append(report["symbol"])
    assert symbols[0] != symbols[1]


def test_the_live_line_counts_the_market_data_of_running_subscribers() -> None:
    """Subscribers hand their counts over when they stop; until then the live line must
    still see what they received (it showed `md 0` for the whole run)."""
    stats = harness.Stats()
    feeds = [Feed("X", lambda _now, _counts: None) for _ in range(2)]
    stats.feeds = feeds
    feeds[0].messages, feeds[1].messages = 7, 5
    assert stats.md_so_far() == 12


def test_the_summary_table_names_the_run_and_its_figures() -> None:
    figures = {"p50": 1.0, "p99": 2.0, "p99.9": 3.0, "p100": 4.0, "count": 10}
    report = {
        "symbol": "LOAD7", "symbol_status_after": "halted",
        "accounts": {"LOAD7-issuer": "A1", "LOAD7-maker-0": "A2"},
        "orders": 12_345, "orders_per_s": 1234.5, "offered_rate": "max", "fills": 10,
        "fills_per_s": 1.0, "md_messages": 99, "seq_gaps": 0, "checksum_mismatches": 0,
        "rejects": {"BUSY": 3}, "ack_ms": figures, "order_to_fill_ms": figures,
        "md_lag_ms": figures,
    }  # fmt: skip
    lines = harness.summary_table(report).splitlines()
    assert lines[0].split() == ["symbol", "LOAD7,", "halted", "after", "the", "run;", "2",
                                "accounts", "named", "LOAD7-*"]  # fmt: skip
    assert "12,345 (1,234/s, offered max)" in lines[1]
    assert lines[4].split() == ["rejects", "BUSY", "3"]
    assert lines[5].split() == ["order", "to", "ack", "ms", "p50", "1.00", "p99", "2.00",
                                "p99.9", "3.00", "max", "4.00"]  # fmt: skip
