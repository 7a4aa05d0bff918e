"""`python -m loadtest targets --cluster`: its verdicts follow the figures, and the whole
command starts a single process and a cluster of its own and measures both, end to end."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest import cluster_targets, harness
from loadtest.cluster_targets import Measured
from tests.server import ROOT

# Bounds a failing run of the whole command; it takes tens of seconds.
COMMAND_TIMEOUT_S = 400.0
ORDERS = 100_000


def _figures(
    *, echo: float = 100_000.0, single: float = 30_000.0, p99: float = 9.99,
    serve_cpu_s: float = 2.8, sequencer_cpu_s: float = 1.2, clustered: float = 18_000.0,
    gaps: int = 0, divergences: int = 0, compared: int = 500,
    rejects: dict[str, int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The summary of phases with these figures (CPU seconds over ORDERS orders)."""
    base = {"messages_per_s": echo}
    peak = Measured({"orders_per_s": single, "orders": ORDERS}, {"serve": serve_cpu_s})
    half = {"offered_rate": single / 2, "orders_per_s": single / 2, "ack_ms": {"p99": p99}}
    cluster_cpu = {"sequencer": sequencer_cpu_s, "gateway-1": 2.0, "gateway-2": 2.1, "nats": 0.7}
    cluster_peak = Measured({"orders_per_s": clustered, "orders": ORDERS}, cluster_cpu)
    md = {"subscribers": 100, "orders_per_s": clustered, "md_messages_per_s": 1e6,
          "seq_gaps": gaps, "checksum_mismatches": 0, "md_divergences": divergences,
          "md_cross_gateway_frames": compared, "rejects": rejects or {}}  # fmt: skip
    return cluster_targets.summary(base, peak, half, cluster_peak, md)


TARGETS = ("single_throughput", "half_peak_latency", "single_cpu_per_order",
           "sequencer_cpu_per_order", "cluster_throughput", "cluster_market_data")  # fmt: skip


def _met(**figures: Any) -> dict[str, bool]:
    result = _figures(**figures)
    return {target: result[target]["met"] for target in TARGETS}


def test_each_verdict_follows_its_figures() -> None:
    assert all(_met().values())  # every figure exactly at its bound
    result = _figures()
    assert result["single_throughput"]["ratio"] == 0.3
    assert result["single_cpu_per_order"]["serve_us"] == 28.0
    assert result["sequencer_cpu_per_order"]["sequencer_us"] == 12.0
    assert result["sequencer_cpu_per_order"]["gateways_us"] == {"gateway-1": 20.0,
                                                                "gateway-2": 21.0}  # fmt: skip
    assert result["cluster_throughput"]["ratio"] == 0.6
    missed = {
        "single_throughput": {"single": 29_990.0, "clustered": 17_994.0},
        "half_peak_latency": {"p99": 10.0},
        "single_cpu_per_order": {"serve_cpu_s": 2.81},
        "sequencer_cpu_per_order": {"sequencer_cpu_s": 1.21},
        "cluster_throughput": {"clustered": 17_990.0},
    }
    for target, figures in missed.items():
        assert [t for t, met in _met(**figures).items() if not met] == [target], target


def test_market_data_needs_no_gap_no_divergence_and_frames_compared_across_gateways() -> None:
    assert not _met(gaps=1)["cluster_market_data"]
    assert not _met(divergences=1)["cluster_market_data"]
    # Subscribers that never compared a frame with another gateway's proved nothing.
    assert not _met(compared=0)["cluster_market_data"]
    closed = _figures(rejects={"SUBSCRIBER_CLOSED_4008": 1, "BUSY": 3})["cluster_market_data"]
    assert (closed["subscribers_closed"], closed["met"]) == (1, False)


def test_the_verdicts_print_one_line_a_target() -> None:
    lines = cluster_targets.verdicts(_figures(divergences=2)).splitlines()
    assert len(lines) == len(TARGETS)
    assert [line.rsplit("]", 1)[1].strip() for line in lines] == ["MET"] * 5 + ["NOT MET"]
    assert "gateway-1 20.0, gateway-2 21.0 us" in lines[3]
    assert "2 divergences" in lines[5]


def test_clients_are_spread_over_the_gateways_in_turn() -> None:
    assert harness.spread(("a", "b"), 5) == ["a", "b", "a", "b", "a"]
    assert harness.spread(("a",), 2) == ["a", "a"]
    options = harness.Options(url="a", other_urls=("b",), admin_token="T", processes=2)
    keys = [f"k{n}" for n in range(8)]
    assert all(share.other_urls == ("b",) for share in harness.shares(options, "S", keys))


def _targets(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest", "targets", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_command_says_which_flags_go_together() -> None:
    alone = _targets("--cluster", "--admin-token", "T")
    assert alone.returncode != 0
    assert "starts its own servers" in alone.stderr
    missing = _targets("--url", "ws://127.0.0.1:1/v1/ws")
    assert missing.returncode != 0
    assert "--admin-token is needed" in missing.stderr


@pytest.mark.slow
async def test_the_command_measures_one_process_and_a_cluster_of_two_gateways(
    tmp_path: Path,
) -> None:
    reports = tmp_path / "reports"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", "targets", "--cluster", "--duration", "1",
        "--nice", "0", "--processes", "2", "--md-subscribers", "6", "--report-dir", str(reports),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(COMMAND_TIMEOUT_S):
        out, err = await child.communicate()
    assert child.returncode == 0, err.decode()[-2000:]
    result = json.loads(out)
    single, clustered = result["reports"]["single_peak"], result["reports"]["cluster_peak"]
    assert len(single["urls"]) == 1
    assert len(set(clustered["urls"])) == 2
    assert result["cluster_throughput"]["ratio"] == round(
        clustered["orders_per_s"] / single["orders_per_s"], 3
    )
    cpu = result["sequencer_cpu_per_order"]
    assert cpu["sequencer_us"] > 0
    assert sorted(cpu["gateways_us"]) == ["gateway-1", "gateway-2"]
    md = result["cluster_market_data"]
    assert md["subscribers"] == 6
    assert (md["seq_gaps"], md["checksum_mismatches"], md["md_divergences"]) == (0, 0, 0)
    # The subscribers of each client process read from both gateways and compared frames.
    assert md["frames_compared_across_gateways"] > 0
    verdict_lines = [line for line in err.decode().splitlines() if "[target" in line]
    assert len(verdict_lines) == len(TARGETS)
    for name in ("single-peak", "single-half", "cluster-peak", "cluster-md"):
        assert json.loads((reports / f"{name}.json").read_text())["orders"] > 0
