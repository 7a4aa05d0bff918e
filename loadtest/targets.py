"""`python -m loadtest targets`: the exchange's three performance targets in one command.

Runs one after another, each in a process of its own, what BENCHMARKS.md runs by hand:
the echo baseline with as many clients as the exchange run has traders; the closed-loop
peak through the exchange; half of that peak, open loop; and the closed-loop peak again
with 100 market-data subscribers. Prints one JSON object: each phase's report, and each
target's figures and verdict. The clients and the exchange share this machine's cores:
the figures say what they do together.
"""

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The targets (issue 5): sustained orders/s at least this share of the echo baseline...
RATIO_TARGET = 0.40
# ...at half that peak, order-to-ack under these...
HALF_P99_MS = 10.0
HALF_P999_MS = 25.0
# ...and this many subscribers under the peak rate, with no gap and a lag p99 under this.
MD_SUBSCRIBERS = 100
MD_LAG_P99_MS = 50.0
# A phase that has not reported this long after its own duration has hung.
PHASE_GRACE_S = 120.0


@dataclass(frozen=True)
class Plan:
    url: str
    admin_token: str
    duration: float
    processes: int
    nice: int
    report_dir: Path
    traders: int = 8  # 4 makers, 4 takers: the run's defaults
    md_subscribers: int = MD_SUBSCRIBERS


class PhaseError(Exception):
    """A phase ended without its report."""


async def phase(args: list[str], duration: float) -> dict[str, Any]:
    """`python -m loadtest ARGS` in a process of its own; its JSON report."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", *args, stdout=asyncio.subprocess.PIPE
    )  # its progress line goes to this process's stderr as it runs
    try:
        async with asyncio.timeout(duration + PHASE_GRACE_S):
            out, _ = await child.communicate()
    except TimeoutError:
        child.kill()
        await child.wait()
        raise PhaseError(f"loadtest {args[0]} did not finish") from None
    if child.returncode != 0 or not out.strip():
        raise PhaseError(f"loadtest {args[0]} failed with {child.returncode}")
    report: dict[str, Any] = json.loads(out.splitlines()[-1])
    return report


def progress(message: str) -> None:
    print(f"== {message}", file=sys.stderr, flush=True)


async def check(plan: Plan) -> dict[str, Any]:
    plan.report_dir.mkdir(parents=True, exist_ok=True)
    seconds, nice = str(plan.duration), str(plan.nice)
    progress(f"echo baseline, {plan.traders} clients")
    base = await phase(
        ["baseline", "--clients", str(plan.traders), "--duration", seconds,
         "--processes", str(plan.processes), "--nice", nice],
        plan.duration,
    )  # fmt: skip
    run = ["run", "--url", plan.url, "--admin-token", plan.admin_token, "--duration", seconds,
           "--processes", str(plan.processes), "--nice", nice, "--batched-md"]  # fmt: skip
    progress("peak: closed loop")
    peak = await phase([*run, "--rate", "max", "--report", str(plan.report_dir / "peak.json")],
                        plan.duration)  # fmt: skip
    half_rate = round(peak["orders_per_s"] / 2, 1)
    progress(f"half of the peak: {half_rate} orders/s, open loop")
    half = await phase(
        [*run, "--rate", str(half_rate), "--report", str(plan.report_dir / "half.json")],
        plan.duration,
    )
    progress(f"peak with {plan.md_subscribers} subscribers")
    md = await phase(
        [*run, "--rate", "max", "--subscribers", str(plan.md_subscribers),
         "--report", str(plan.report_dir / "md.json")],
        plan.duration,
    )  # fmt: skip
    return summary(base, peak, half, md)


def summary(
    base: dict[str, Any], peak: dict[str, Any], half: dict[str, Any], md: dict[str, Any]
) -> dict[str, Any]:
    """Each target's figures and verdict, from the four phases' reports."""
    ratio = peak["orders_per_s"] / base["messages_per_s"] if base["messages_per_s"] else 0.0
    half_p99, half_p999 = half["ack_ms"]["p99"], half["ack_ms"]["p99.9"]
    faults = md["seq_gaps"] + md["checksum_mismatches"] + md["md_divergences"]
    closed = sum(n for code, n in md["rejects"].items() if code.startswith("SUBSCRIBER_CLOSED"))
    return {
        "throughput": {
            "baseline_msgs_per_s": base["messages_per_s"],
            "peak_orders_per_s": peak["orders_per_s"],
            "ratio": round(ratio, 3),
            "target": RATIO_TARGET,
            "met": ratio >= RATIO_TARGET,
        },
        "half_peak_latency": {
            "rate": half["offered_rate"],
            "achieved_orders_per_s": half["orders_per_s"],
            "ack_p99_ms": half_p99,
            "ack_p99.9_ms": half_p999,
            "target_ms": {"p99": HALF_P99_MS, "p99.9": HALF_P999_MS},
            "met": half_p99 < HALF_P99_MS and half_p999 < HALF_P999_MS,
        },
        "market_data": {
            "subscribers": md["subscribers"],
            "orders_per_s": md["orders_per_s"],
            "md_messages_per_s": md["md_messages_per_s"],
            "lag_p99_ms": md["md_lag_ms"]["p99"],
            "gaps_mismatches_divergences": faults,
            "subscribers_closed": closed,
            "target_lag_p99_ms": MD_LAG_P99_MS,
            "met": md["md_lag_ms"]["p99"] < MD_LAG_P99_MS and faults == 0 and closed == 0,
        },
        "reports": {"baseline": base, "peak": peak, "half": half, "market_data": md},
    }
