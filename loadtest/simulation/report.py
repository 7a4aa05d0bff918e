"""The simulation's report: a JSON summary (orders, trades, mean absolute error of the last
traded price against the hidden value per simulated minute) and a PNG of the two over time.

The claim it checks (the project's seed): through many independent trades the market's
price is driven towards the securities' value. After the warm-up, with the default agents
and rates, the mean absolute error stays below `TRACKING_BOUND_FRACTION` of the value
(tests/test_simulation.py runs it with a fixed seed).
"""

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from loadtest.simulation.runner import Simulation

# Simulated seconds before the error counts: the maker starts from the book it finds.
WARMUP_S = 60.0
# The stated bound: after the warm-up, the last trade is on average within 1.5% of the
# value (seed 1 at the defaults: 0.5%; a news jump moves the value 3% at once).
TRACKING_BOUND_FRACTION = 0.015
MINUTE_S = 60.0
SUMMARY_FILE = "simulation.json"
PLOT_FILE = "simulation.png"


def summary(sim: "Simulation") -> dict[str, Any]:
    o = sim.options
    tick = float(sim.prices.tick)
    minutes: dict[int, list[float]] = {}
    after: list[float] = []
    relative: list[float] = []
    for t, value, last in sim.samples:
        if last is None:
            continue
        error = abs(last - value)
        minutes.setdefault(int(t // MINUTE_S), []).append(error * tick)
        if t >= o.warmup_s:
            after.append(error * tick)
            relative.append(error / value)
    tracking = sum(after) / len(after) if after else None
    tracking_fraction = sum(relative) / len(relative) if relative else None
    final_value = sim.samples[-1][1] if sim.samples else None
    return {
        "symbol": o.symbol,
        "seed": o.seed,
        "steps": len(sim.samples),
        "simulated_s": round(sim.time_s, 3),
        "agents": {
            "market_makers": 1,
            "noise_traders": o.noise_traders,
            "informed_traders": o.informed_traders,
        },
        "orders": sim.tally.orders,
        "cancels": sim.tally.cancels,
        "trades": sim.tally.trades,
        "volume": sim.tally.volume,
        "rejects": dict(sorted(sim.tally.rejects.items())),
        "news_jumps": sim.fundamental.jumps if sim.fundamental is not None else 0,
        "mae_per_minute": [
            {"minute": m, "mae": round(sum(e) / len(e), 6), "samples": len(e)}
            for m, e in sorted(minutes.items())
        ],
        "warmup_s": o.warmup_s,
        "tracking_error": round(tracking, 6) if tracking is not None else None,
        "tracking_error_fraction": (
            round(tracking_fraction, 6) if tracking_fraction is not None else None
        ),
        "bound_fraction": TRACKING_BOUND_FRACTION,
        "within_bound": tracking_fraction is not None
        and tracking_fraction < TRACKING_BOUND_FRACTION,
        "final_value": round(final_value * tick, 6) if final_value is not None else None,
        "final_last": round(sim.last * tick, 6) if sim.last is not None else None,
        "book_consistent": sim.book_consistent,
        "book_gaps": sim.book.gaps,
        "book_bad_checksums": sim.book.bad_checksums,
    }


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The one line printed at the end."""
    keys = (
        "symbol", "seed", "steps", "simulated_s", "orders", "trades", "tracking_error",
        "tracking_error_fraction", "bound_fraction", "within_bound", "book_consistent",
    )  # fmt: skip
    return {k: summary[k] for k in keys}


def write(
    directory: Path,
    summary: dict[str, Any],
    samples: list[tuple[float, float, int | None]],
    tick: Decimal,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SUMMARY_FILE).write_bytes(msgspec.json.format(msgspec.json.encode(summary)))
    _plot(directory / PLOT_FILE, summary, samples, float(tick))


def _plot(
    path: Path, summary: dict[str, Any], samples: list[tuple[float, float, int | None]], tick: float
) -> None:
    import matplotlib as mpl  # noqa: PLC0415 - only for the plot

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    minutes = [t / 60 for t, _, _ in samples]
    top.plot(minutes, [v * tick for _, v, _ in samples], color="#1f6feb", lw=1.6,
             label="fundamental value (hidden)")  # fmt: skip
    traded = [(t / 60, last * tick) for t, _, last in samples if last is not None]
    top.step([m for m, _ in traded], [p for _, p in traded], where="post", color="#d97706",
             lw=1.0, label="last traded price")  # fmt: skip
    top.axvline(summary["warmup_s"] / 60, color="grey", ls=":", lw=1, label="end of warm-up")
    top.set_ylabel("price")
    top.set_title(
        f"{summary['symbol']} simulated market, seed {summary['seed']}: "
        f"{summary['trades']} trades from {summary['orders']} orders"
    )
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    per_minute = summary["mae_per_minute"]
    bottom.bar([m["minute"] + 0.5 for m in per_minute], [m["mae"] for m in per_minute],
               width=0.8, color="#6b7280", label="mean |price - value| per minute")  # fmt: skip
    fraction = summary["tracking_error_fraction"]
    if fraction is not None:
        bottom.set_title(
            f"tracking error after warm-up: {fraction:.2%} of the value "
            f"(bound {summary['bound_fraction']:.1%})",
            fontsize=9,
        )
    bottom.set_xlabel("simulated minutes")
    bottom.set_ylabel("abs. error")
    bottom.legend(loc="upper right", fontsize=8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
