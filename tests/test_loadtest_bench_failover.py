"""`python -m loadtest.bench_failover`, a small real run: two kills of the leader of a real
R3 cluster (3 nats-servers, 2 sequencers, 2 gateways) under its clients' load, and the
three wirings' throughput, each phase 1 s. Each kill is taken over by the other node,
every figure is there and sane, every order was answered in the end, and nothing it
started is left running. Its flags are checked before anything starts."""

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from loadtest import bench_failover
from tests.server import ROOT
from tests.test_cluster_launcher import running_with

# Three wirings' starts and two 1 s phases each, two kills (each: the lease's 2 s, a
# restart, 5 s for the UNAVAILABLE answers): about 40 s alone; room for a loaded machine.
RUN_TIMEOUT_S = 400.0


@pytest.mark.slow
async def test_a_small_run_reports_a_takeover_for_each_kill_and_each_wirings_figures(
    tmp_path: Path,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.bench_failover", "--kills", "2", "--settle", "1",
        "--duration", "1", "--rate", "200", "--ack-rate", "500",
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-4000:]
    assert running_with(tmp_path) == [], "left running"
    result = json.loads(out)
    assert "2 of 2 kills taken over" in err.decode()

    t = result["takeover"]
    assert (t["kills"], t["taken_over"], t["stopped_early"]) == (2, 2, None), t
    assert [k["killed"] for k in t["each"]] == ["sequencer-1", "sequencer-2"], t
    for kill in t["each"]:
        assert kill["new_leader"] not in (None, kill["killed"]), kill
        for figure in ("to_leader_s", "to_accepted_s", "silence_s", "quiet_s"):
            assert 0 < kill[figure] < float("inf"), kill
        assert kill["unavailable"] >= 0
        assert kill["others"] == 0, kill
    for figure in ("to_leader_s", "to_accepted_s", "silence_s"):
        assert 0 < t[figure]["median"] <= t[figure]["max"], t
    assert t["unavailable"]["total"] == sum(k["unavailable"] for k in t["each"])
    assert t["accepted"] > 0
    assert t["resends"] >= t["unavailable"]["total"], "each UNAVAILABLE order was resent"
    assert (t["unresolved_at_end"], t["answers_dropped"], t["held_back"]) == (0, 0, 0), t

    assert set(result["throughput"]) == {"single", "r1", "r3"}
    for wiring in result["throughput"].values():
        assert wiring["peak_orders_per_s"] > 0, wiring
        assert wiring["rate"] == 500
        assert wiring["rate_orders_per_s"] > 0, wiring
        assert wiring["peak_ack_p99_ms"] > 0, wiring
        assert wiring["rate_ack_p99_ms"] > 0, wiring


@pytest.mark.parametrize(
    "flags",
    [
        ["--kills", "2", "--sequencers", "1"],  # no standby to take over
        ["--rate", "0"],
        ["--kills", "-1"],
        ["--duration", "0"],
        ["--gateways", "0"],
    ],
)
def test_bad_flags_are_refused_before_anything_starts(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        bench_failover.cli(flags)
    assert exited.value.code == 2
    assert "python -m loadtest.bench_failover: error:" in capsys.readouterr().err
