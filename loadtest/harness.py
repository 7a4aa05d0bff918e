"""`python -m loadtest run`: many WebSocket clients against a running exchange.

Makers quote around a moving mid and cancel, takers cross the spread with IOC orders,
subscribers keep a checked local book. The offered rate is fixed (open loop): each
order has an intended send time and its latency is measured from it, so queueing is
never hidden (coordinated omission); `--rate max` runs closed loop instead. Latencies go
into HdrHistograms; a live line shows progress; a JSON report (and a PNG plot when
matplotlib is installed) is saved. Everything targets the URL given: run it against
127.0.0.1 only. Given several URLs (the gateways of one cluster), the run is set up
through the first, waits until every other one has applied that set-up, and spreads its
traders and subscribers over them in turn; the subscribers of a client process compare
their frames whatever gateway they read from (`loadtest/feed.py`).
"""

import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from hdrh.histogram import HdrHistogram

from gateway.client import Admin, ProtocolError, RefusedError
from loadtest.feed import Feed, Peers
from loadtest.trader import Orders, Tally, Trader, connect

# Latencies are recorded in microseconds, from 1 µs to 60 s, 3 significant digits.
HIST_MAX_US = 60_000_000
# Orders one client may have awaiting an answer at once, by default (closed loop keeps
# this many); `--in-flight` sets it.
MAX_IN_FLIGHT_PER_CLIENT = 64
# Added to the niceness of client processes by default; `--nice 10` lets the exchange
# under test win cores it shares with them, as if it had its own.
CLIENT_NICE = 0
PROGRESS_EVERY_S = 1.0
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)
SYMBOL = "LOAD"
# Names tried for the run's instrument before giving up (earlier runs' stay listed).
SYMBOL_ATTEMPTS = 100
MID_TICKS = 10_000  # 100.00 at tick 0.01
# Another gateway of a cluster applies the set-up the first one answered within milliseconds
# (it follows the same stream); one that has not within this bound is not following.
CATCH_UP_TIMEOUT_S = 30.0
CATCH_UP_POLL_S = 0.05


# Distinct latencies a Latencies keeps counted before it folds them into its histogram.
PENDING_VALUES_BOUND = 16_384
# The histogram's resolution: 3 significant decimal digits are 2,048 sub-buckets.
SIGNIFICANT_BITS = 11


class Latencies:
    """An HdrHistogram fed through a dict of counts: the pure-Python histogram costs
    microseconds a value, more than the client's whole handling of a message, while the
    same few values recur (every trade of one market-data frame has the same lag)."""

    def __init__(self) -> None:
        self._histogram = HdrHistogram(1, HIST_MAX_US, 3)
        self._pending: dict[int, int] = {}

    def record(self, microseconds: int) -> None:
        value = _rounded(microseconds)
        pending = self._pending
        pending[value] = pending.get(value, 0) + 1
        if len(pending) >= PENDING_VALUES_BOUND:
            self._fold()

    def record_lags(self, now_ns: int, counts: dict[int, int]) -> None:
        """Record `now_ns - ts` (in µs) `n` times for each `ts: n` of `counts`: the lags
        of one market-data frame's trades, in one call."""
        pending = self._pending
        for ts, count in counts.items():
            value = _rounded((now_ns - ts) // 1_000)
            pending[value] = pending.get(value, 0) + count
        if len(pending) >= PENDING_VALUES_BOUND:
            self._fold()

    def histogram(self) -> HdrHistogram:
        self._fold()
        return self._histogram

    def _fold(self) -> None:
        for value, count in self._pending.items():
            self._histogram.record_value(value, count)
        self._pending.clear()


def _rounded(microseconds: int) -> int:
    """Clamped to the histogram's range and cut to its resolution (3 significant digits
    are 11 bits): the histogram counts it the same, and equal values count together."""
    value = max(1, min(microseconds, HIST_MAX_US))
    shift = value.bit_length() - SIGNIFICANT_BITS
    return value >> shift << shift if shift > 0 else value


@dataclass
class Stats(Tally):
    ack: Latencies = field(default_factory=Latencies)
    fill: Latencies = field(default_factory=Latencies)  # trade stamp -> fill received
    order_fill: Latencies = field(default_factory=Latencies)  # order sent -> taker fill
    md_lag: Latencies = field(default_factory=Latencies)
    md_messages: int = 0
    gaps: int = 0
    bad_checksums: int = 0
    divergences: int = 0  # md frames unlike those the subscriber's peers got
    cross_frames: int = 0  # md frames equal to one a peer on another URL checked
    niceness: int = 0  # the client processes' own, as they ran
    feeds: list[Feed] = field(default_factory=list)  # running: their messages count live

    def md_so_far(self) -> int:
        """Market-data messages received so far, those of running subscribers included."""
        return self.md_messages + sum(feed.messages for feed in self.feeds)


@dataclass(frozen=True)
class Options:
    url: str
    admin_token: str
    makers: int = 4
    takers: int = 4
    subscribers: int = 4
    rate: float | None = 2_000.0  # orders/s offered in all; None: closed loop
    duration: float = 10.0
    report: Path = Path("loadtest-report.json")
    seed: int = 1
    processes: int = 1
    batched_md: bool = False  # subscribers ask for one market-data frame a batch
    in_flight: int = MAX_IN_FLIGHT_PER_CLIENT  # orders a trader may await at once
    nice: int = CLIENT_NICE  # added to the niceness of client processes
    other_urls: tuple[str, ...] = ()  # more gateways of the same cluster, used in turn

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.other_urls)


async def _list_new_instrument(admin: Admin, rng: random.Random) -> tuple[str, str]:
    """A symbol this exchange has not listed yet (an earlier run's stays listed), and its
    issuer's account, named after it; (symbol, issuer)."""
    for _ in range(SYMBOL_ATTEMPTS):  # bounded: a million names, a few taken
        symbol = f"{SYMBOL}{rng.randrange(10**6)}"
        issuer, _ = await admin.account(f"{symbol}-issuer")
        listing = {"symbol": symbol, "kind": "share", "tick_size": "0.01", "issuer": issuer}
        try:
            await admin.ok("POST", "/v1/admin/instruments", listing)
        except RefusedError as refused:
            if refused.payload.get("code") != "DUPLICATE_SYMBOL":
                raise
            continue
        return symbol, issuer
    raise ProtocolError(f"no free symbol in {SYMBOL_ATTEMPTS} tries")


@dataclass(frozen=True)
class Setup:
    """What a run created on the exchange: its instrument, and its accounts by name (each
    name starts with the symbol, so a person can tell whose they are)."""

    symbol: str
    accounts: dict[str, str]  # name -> account id
    keys: list[str]  # the traders' API keys, makers first


async def _setup(options: Options, base_url: str) -> Setup:
    """An instrument of our own and funded accounts, all named after the run's symbol."""
    async with Admin(base_url, options.admin_token) as admin:
        symbol, issuer = await _list_new_instrument(admin, random.Random(options.seed))
        accounts = {f"{symbol}-issuer": issuer}
        await admin.ok("POST", f"/v1/admin/instruments/{symbol}/status", {"status": "trading"})
        keys = []
        for n in range(options.makers + options.takers):
            role = "maker" if n < options.makers else "taker"
            name = f"{symbol}-{role}-{n}"
            account, key = await admin.account(name, "100000000.00")
            await admin.ok("POST", "/v1/admin/deposits",
                           {"account": account, "symbol": symbol, "qty": 100_000_000})  # fmt: skip
            accounts[name] = account
            keys.append(key)
        return Setup(symbol, accounts, keys)


def _http(url: str) -> str:
    return url.replace("ws://", "http://").removesuffix("/v1/ws")


async def _caught_up(url: str, admin_token: str, key: str, symbol: str) -> None:
    """Wait until the gateway at `url` has applied the run's set-up: its last step, the
    last trader's deposit, shows in that trader's account there."""
    async with Admin(_http(url), admin_token) as reader, asyncio.timeout(CATCH_UP_TIMEOUT_S):
        while True:  # bounded by the timeout
            status, account = await reader.call("GET", "/v1/account", token=key)
            if status == 200 and account.get("positions", {}).get(symbol):
                return
            await asyncio.sleep(CATCH_UP_POLL_S)


async def _halt(base_url: str, admin_token: str, symbol: str) -> str:
    """Halt the run's instrument once the run is over, so nothing trades on it after the
    run; its orders, trades and accounts stay for a person to read. The status reached."""
    async with Admin(base_url, admin_token) as admin:
        await admin.ok("POST", f"/v1/admin/instruments/{symbol}/status", {"status": "halted"})
    return "halted"


async def _subscriber(feed: Feed, stats: Stats, deadline: float) -> None:
    await feed.follow(deadline)
    stats.gaps += feed.gaps
    stats.bad_checksums += feed.bad_checksums
    stats.divergences += feed.divergences
    stats.cross_frames += feed.cross_frames
    if feed.closed_with is not None:  # its market data stopped: the report must say so
        stats.reject(f"SUBSCRIBER_CLOSED_{feed.closed_with}")


async def _progress(stats: Stats, started: float, deadline: float) -> None:
    while time.perf_counter() < deadline:  # bounded by the deadline
        await asyncio.sleep(PROGRESS_EVERY_S)
        elapsed = time.perf_counter() - started
        p99 = stats.ack.histogram().get_value_at_percentile(99.0) / 1000
        print(
            f"\r{elapsed:5.1f}s  orders {stats.orders:>8}  {stats.orders / elapsed:>8.0f}/s  "
            f"fills {stats.fills:>7}  md {stats.md_so_far():>8}  ack p99 {p99:7.2f} ms",
            end="", file=sys.stderr, flush=True,
        )  # fmt: skip
    print(file=sys.stderr)


def _summary(latencies: Latencies) -> dict[str, float]:
    h = latencies.histogram()
    return {f"p{p:g}": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES} | {
        "count": h.get_total_count()
    }


class Share(msgspec.Struct, frozen=True):
    """One process's part of a run: its traders' keys, subscribers and offered rate."""

    url: str
    symbol: str
    keys: list[str]
    makers: int  # the first `makers` keys quote; the rest take
    subscribers: int
    rate: float | None
    duration: float
    seed: int
    batched_md: bool = False
    in_flight: int = MAX_IN_FLIGHT_PER_CLIENT
    nice: int = CLIENT_NICE
    other_urls: tuple[str, ...] = ()  # more gateways: client i uses (url, *other_urls)[i % n]


async def drive(share: Share, stats: Stats, show_progress: bool) -> float:
    """Run one share's clients until the deadline; returns the seconds it ran."""
    rng = random.Random(share.seed)
    mid = [MID_TICKS]
    per_client = share.rate / len(share.keys) if share.rate and share.keys else None
    urls = (share.url, *share.other_urls)
    async with aiohttp.ClientSession() as session:
        trading = zip(spread(urls, len(share.keys)), share.keys, strict=True)
        sockets = [await connect(session, url, key) for url, key in trading]
        traders = [
            Trader(ws, Orders(share.symbol, i < share.makers, random.Random(rng.random()), mid),
                   share.in_flight, per_client, stats.ack.record, stats.fill.record, stats,
                   stats.order_fill.record)
            for i, ws in enumerate(sockets)
        ]  # fmt: skip
        peers = Peers(share.symbol)  # the process's subscribers check each frame once
        feeds = [
            Feed(share.symbol, stats.md_lag.record_lags, batched=share.batched_md, peers=peers)
            for _ in range(share.subscribers)
        ]
        stats.feeds = feeds
        try:
            # Every subscriber has its snapshot before the first order: all start from the
            # same book (on every gateway) and so follow one chain, compared frame by frame.
            opening = zip(feeds, spread(urls, len(feeds)), strict=True)
            await asyncio.gather(*(feed.open(url) for feed, url in opening))
            started = time.perf_counter()
            deadline = started + share.duration
            await asyncio.gather(
                *([_progress(stats, started, deadline)] if show_progress else []),
                *(_subscriber(feed, stats, deadline) for feed in feeds),
                *(trader.run(deadline, started) for trader in traders),
            )
        finally:
            stats.md_messages = stats.md_so_far()
            stats.feeds = []
            for feed in feeds:
                await feed.close()
            for ws in sockets:
                await ws.close()
    return time.perf_counter() - started


def spread(urls: tuple[str, ...], count: int) -> list[str]:
    """The URL each of `count` clients connects to: the URLs in turn (a share's keys are
    makers then takers, so both kinds land on every gateway)."""
    return [urls[i % len(urls)] for i in range(count)]


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def shares(options: Options, symbol: str, keys: list[str]) -> list[Share]:
    """The run cut into `processes` shares: traders, subscribers and rate spread evenly."""
    parts = max(1, options.processes)
    makers, takers = keys[: options.makers], keys[options.makers :]
    maker_counts, taker_counts = _split(len(makers), parts), _split(len(takers), parts)
    out = []
    for i, (m, t, sub) in enumerate(
        zip(maker_counts, taker_counts, _split(options.subscribers, parts), strict=True)
    ):
        own = makers[sum(maker_counts[:i]) :][:m] + takers[sum(taker_counts[:i]) :][:t]
        rate = options.rate * len(own) / len(keys) if options.rate and keys else None
        out.append(Share(options.url, symbol, own, m, sub, rate, options.duration,
                         options.seed + i, options.batched_md, options.in_flight,
                         options.nice, options.other_urls))  # fmt: skip
    return out


async def run(options: Options) -> dict[str, Any]:
    base_url = _http(options.url)
    setup = await _setup(options, base_url)
    symbol, keys = setup.symbol, setup.keys
    if keys:
        for url in options.other_urls:
            await _caught_up(url, options.admin_token, keys[-1], symbol)
    stats = Stats()
    try:
        if options.processes <= 1:
            stats.niceness = os.nice(options.nice)  # this process is the client: for good
            elapsed = await drive(shares(options, symbol, keys)[0], stats, show_progress=True)
        else:
            elapsed = await _run_processes(shares(options, symbol, keys), stats)
    finally:
        status = await _halt(base_url, options.admin_token, symbol)
    report = {
        "url": options.url,
        "urls": list(options.urls),
        "symbol": symbol,
        "symbol_status_after": status,
        "accounts": setup.accounts,
        "makers": options.makers,
        "takers": options.takers,
        "subscribers": options.subscribers,
        "batched_md": options.batched_md,
        "in_flight_per_trader": options.in_flight,
        "client_nice": options.nice,  # as asked
        "client_niceness": stats.niceness,  # as the client processes ran
        "processes": max(1, options.processes),
        "offered_rate": options.rate or "max",
        "duration_s": round(elapsed, 3),
        "orders": stats.orders,
        "orders_per_s": round(stats.orders / elapsed, 1),
        "cancels": stats.cancels,
        # Every command the exchange journaled and answered: places and cancels.
        "commands_per_s": round((stats.orders + stats.cancels) / elapsed, 1),
        "fills": stats.fills,
        "fills_per_s": round(stats.fills / elapsed, 1),
        "md_messages": stats.md_messages,
        "md_messages_per_s": round(stats.md_messages / elapsed, 1),
        "ack_ms": _summary(stats.ack),
        # Intended send -> each fill an order gets on arrival (as taker).
        "order_to_fill_ms": _summary(stats.order_fill),
        "fill_delivery_ms": _summary(stats.fill),  # trade stamp -> fill received
        "md_lag_ms": _summary(stats.md_lag),
        "rejects": stats.rejects,
        "seq_gaps": stats.gaps,
        "checksum_mismatches": stats.bad_checksums,
        "md_divergences": stats.divergences,
        # Frames a subscriber took as equal to one a subscriber on another URL checked.
        "md_cross_gateway_frames": stats.cross_frames,
    }
    options.report.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    _plot(stats, options.report.with_suffix(".png"))
    print(summary_table(report), file=sys.stderr, flush=True)
    return report


def summary_table(report: dict[str, Any]) -> str:
    """A few lines a person reads at a glance; the JSON report has everything."""
    symbol, accounts = report["symbol"], len(report["accounts"])
    rejects = ", ".join(f"{code} {n:,}" for code, n in sorted(report["rejects"].items()))
    status = report["symbol_status_after"]
    rates = f"{report['orders_per_s']:,.0f}/s, offered {report['offered_rate']}"
    md = f"{report['md_messages']:,} messages, {report['seq_gaps']} gaps"
    rows = [
        ("symbol", f"{symbol}, {status} after the run; {accounts} accounts named {symbol}-*"),
        ("orders", f"{report['orders']:,} ({rates})"),
        ("fills", f"{report['fills']:,} ({report['fills_per_s']:,.0f}/s)"),
        ("market data", f"{md}, {report['checksum_mismatches']} bad checksums"),
        ("rejects", rejects or "none"),
    ]
    for label, key in LATENCY_ROWS:
        ms = report[key]
        figures = f"p50 {ms['p50']:.2f}  p99 {ms['p99']:.2f}  p99.9 {ms['p99.9']:.2f}"
        rows.append((f"{label} ms", f"{figures}  max {ms['p100']:.2f}"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


# The latencies the summary table shows: (label, the report's key).
LATENCY_ROWS = (("order to ack", "ack_ms"), ("order to fill", "order_to_fill_ms"),
                ("md lag", "md_lag_ms"))  # fmt: skip


class WorkerResult(msgspec.Struct):
    """What a worker process reports: counts and its HdrHistograms, encoded."""

    elapsed: float
    orders: int
    cancels: int
    fills: int
    md_messages: int
    rejects: dict[str, int]
    gaps: int
    bad_checksums: int
    divergences: int
    cross_frames: int
    ack: str
    fill: str
    order_fill: str
    md_lag: str
    niceness: int

    @classmethod
    def of(cls, stats: Stats, elapsed: float) -> "WorkerResult":
        return cls(
            elapsed, stats.orders, stats.cancels, stats.fills, stats.md_messages, stats.rejects,
            stats.gaps, stats.bad_checksums, stats.divergences, stats.cross_frames,
            _encoded(stats.ack),
            _encoded(stats.fill), _encoded(stats.order_fill), _encoded(stats.md_lag),
            stats.niceness,
        )  # fmt: skip

    def add_to(self, stats: Stats) -> None:
        stats.orders += self.orders
        stats.cancels += self.cancels
        stats.fills += self.fills
        stats.md_messages += self.md_messages
        for code, n in self.rejects.items():
            stats.rejects[code] = stats.rejects.get(code, 0) + n
        stats.gaps += self.gaps
        stats.bad_checksums += self.bad_checksums
        stats.divergences += self.divergences
        stats.cross_frames += self.cross_frames
        stats.niceness = max(stats.niceness, self.niceness)
        for mine, theirs in (
            (stats.ack, self.ack),
            (stats.fill, self.fill),
            (stats.order_fill, self.order_fill),
            (stats.md_lag, self.md_lag),
        ):
            mine.histogram().add(HdrHistogram.decode(theirs))


def _encoded(latencies: Latencies) -> str:
    data = latencies.histogram().encode()
    return data.decode() if isinstance(data, bytes) else str(data)


async def _run_processes(parts: list[Share], stats: Stats) -> float:
    """One `python -m loadtest.worker` per share, so the client side is not the limit."""
    started = time.perf_counter()
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "loadtest.worker",
            msgspec.json.encode(part).decode(),
            stdout=asyncio.subprocess.PIPE,
        )
        for part in parts
    ]
    progress: list[Progress] = [Progress() for _ in children]
    results = await asyncio.gather(
        _show_progress(progress, started, started + parts[0].duration),
        *(_follow(child, progress, i) for i, child in enumerate(children)),
    )
    for result in results[1:]:
        assert isinstance(result, WorkerResult)
        result.add_to(stats)
    return time.perf_counter() - started


class Progress(msgspec.Struct):
    """A worker's figures so far, one JSON line a second on its stdout."""

    orders: int = 0
    fills: int = 0
    md_messages: int = 0
    p99_ms: float = 0.0


async def _follow(
    child: asyncio.subprocess.Process, progress: list[Progress], index: int
) -> WorkerResult:
    """Read a worker's progress lines, then its result (the last line)."""
    assert child.stdout is not None
    result: WorkerResult | None = None
    async for line in child.stdout:  # until the worker exits
        if line.startswith(b'{"orders"'):
            progress[index] = msgspec.json.decode(line, type=Progress)
        else:
            result = msgspec.json.decode(line, type=WorkerResult)
    if await child.wait() != 0 or result is None:
        raise RuntimeError(f"client process {index} failed with {child.returncode}")
    return result


async def _show_progress(progress: list[Progress], started: float, deadline: float) -> None:
    while time.perf_counter() < deadline:  # bounded by the deadline
        await asyncio.sleep(PROGRESS_EVERY_S)
        elapsed = time.perf_counter() - started
        orders = sum(p.orders for p in progress)
        print(
            f"\r{elapsed:5.1f}s  {len(progress)} processes  orders {orders:>8}  "
            f"{orders / elapsed:>8.0f}/s  fills {sum(p.fills for p in progress):>7}  "
            f"md {sum(p.md_messages for p in progress):>8}  "
            f"ack p99 (worst process) {max(p.p99_ms for p in progress):7.2f} ms",
            end="", file=sys.stderr, flush=True,
        )  # fmt: skip
    print(file=sys.stderr)


def _plot(stats: Stats, path: Path) -> None:
    try:
        import matplotlib as mpl  # noqa: PLC0415 - only for the plot

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name, latencies in (
        ("order to ack", stats.ack),
        ("order to fill (taker)", stats.order_fill),
        ("market data lag", stats.md_lag),
    ):
        h = latencies.histogram()
        if h.get_total_count() == 0:
            continue
        ps = [50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]
        axes.plot([str(p) for p in ps], [h.get_value_at_percentile(p) / 1000 for p in ps],
                  marker="o", label=name)  # fmt: skip
    axes.set_xlabel("percentile")
    axes.set_ylabel("ms")
    axes.set_yscale("log")
    axes.legend()
    axes.set_title("latency by percentile")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
