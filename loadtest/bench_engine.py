"""Engine throughput benchmark: times `Engine.apply` alone over a seeded order stream.

This module owns the engine's headline figure (`make bench`). It builds, before any timing,
a deterministic stream of commands from `random.Random(seed)`: on one instrument with a mid
of 100.00 (10000 ticks at tick 0.01), 50% GTC limit orders at mid +/- 0..50 ticks, 30%
cancels of open orders (known from a shadow model of the book) and 20% IOC limit orders
crossing the mid by up to 10 ticks, from 100 well-funded accounts. Only the loop over
`Engine.apply` is timed; set-up, stream generation and the counting of events afterwards
are not. The same ops and seed give the same commands, so `state_hash` doubles as a
determinism check across runs and builds.

`--mix deep` times instead the stream of the reference book (`../shared/yardsticks/refbook.py`,
drawn from the same `random.Random(seed)` in the same order): GTC buys at mid - 0..50 ticks and
sells at mid + 0..50, so most rest (about 50k resting orders over ~90 levels after 300k
commands), 30% cancels, 20% IOC orders crossing the mid by up to 10 ticks. `--compare` runs
the reference book and both mixes as separate processes, interleaved, and reports each mix's
throughput as a ratio of the reference's measured in the same round.

    python -m loadtest.bench_engine --ops 200000 --seed 1 --json [--profile]
        [--gc tuned|default|off] [--mix shallow|deep]
    python -m loadtest.bench_engine --compare --ops 300000 --seed 1 --rounds 5
"""

import argparse
import cProfile
import gc
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from exchange.compiled_core import describe
from exchange.domain.commands import (
    CancelOrder,
    Command,
    CreateAccount,
    DepositCash,
    DepositUnits,
    ListInstrument,
    PlaceOrder,
    SetInstrumentStatus,
    Side,
)
from exchange.domain.engine import Engine
from exchange.domain.events import Event, OrderRejected, Rejected
from exchange.runtime import tune_gc

SYMBOL = "BENCH"
N_ACCOUNTS = 100
# Ample funds: no order in the mix is ever refused for cash or units, so every place is
# accepted and the generator can predict the engine's order ids (1, 2, 3, ...).
CASH_PER_ACCOUNT = 10**12
UNITS_PER_ACCOUNT = 10**8
MID = 10_000  # 100.00 at tick 0.01
GTC_SPREAD = 50  # GTC limits at MID - 50 .. MID + 50
IOC_CROSS = 10  # IOC buys at MID + 0..10, sells at MID - 0..10
MAX_ORDER_QTY = 100
TS_STEP = 1_000_000_000  # one second between commands, in nanoseconds
PROFILE_TOP = 25
# The yardstick: a bare pure-Python book beside the repository (../shared/yardsticks/).
DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "yardsticks" / "refbook.py"
# Runs the reference book script (argv[1], its arguments after it) timing CPU seconds.
REFERENCE_ON_CPU_TIME = (
    "import runpy, sys, time; time.perf_counter = time.process_time; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)

_SIDES: tuple[Side, Side] = ("buy", "sell")


def account_id(n: int) -> str:
    """The id the engine gives the n-th created account (1-based)."""
    return f"A{n}"


def build_setup() -> list[Command]:
    """Accounts A1..A100 with ample cash and units, and BENCH listed and trading."""
    accounts = [account_id(n) for n in range(1, N_ACCOUNTS + 1)]
    cmds: list[Command] = [CreateAccount(name=f"bench-{a}") for a in accounts]
    cmds.append(ListInstrument(symbol=SYMBOL, kind="share", tick=1, issuer=accounts[0]))
    cmds.extend(DepositCash(account=a, amount=CASH_PER_ACCOUNT) for a in accounts)
    cmds.extend(DepositUnits(account=a, symbol=SYMBOL, qty=UNITS_PER_ACCOUNT) for a in accounts)
    cmds.append(SetInstrumentStatus(symbol=SYMBOL, status="trading"))
    # Stamp increasing timestamps as the sequencer would.
    return [msgspec.structs.replace(c, ts=TS_STEP * (i + 1)) for i, c in enumerate(cmds)]


class ShadowBook:
    """The generator's model of which orders rest, so that cancels name open orders.

    A real client knows its open orders from its execution reports; the generator cannot
    see the engine's events (they come after generation), so it replays the book rules of
    docs/ENGINE.md restricted to this mix: limit orders only, best price then oldest first,
    trades at the maker's price, self-trade prevention `cancel_newest` (meeting an own
    order ends the taker), a GTC remainder rests, an IOC remainder expires. It tracks no
    cash or units: the mix never runs short of either. If the engine disagreed with these
    rules, cancels would miss; the benchmark reports those as `cancel_misses`.
    """

    def __init__(self) -> None:
        # price -> queue of order ids, oldest first; cancelled ids are dropped lazily.
        self._bids: dict[int, deque[int]] = {}
        self._asks: dict[int, deque[int]] = {}
        self._remaining: dict[int, int] = {}  # open order id -> remaining qty
        self._owner: dict[int, str] = {}
        self._open_ids: list[int] = []  # the same ids, for a uniform random pick
        self._slot: dict[int, int] = {}  # order id -> its index in _open_ids

    def __len__(self) -> int:
        return len(self._open_ids)

    def place(
        self, order_id: int, account: str, side: Side, *, price: int, qty: int, gtc: bool
    ) -> None:
        """Match a new limit order against the book; a GTC remainder rests."""
        buy = side == "buy"
        book = self._asks if buy else self._bids
        remaining = self._remaining
        left = qty
        while left and book:
            best = min(book) if buy else max(book)
            if (best > price) if buy else (best < price):
                break
            queue = book[best]
            while queue and left:
                maker = queue[0]
                if maker not in remaining:  # cancelled earlier
                    queue.popleft()
                    continue
                if self._owner[maker] == account:  # cancel_newest: the taker ends
                    return
                traded = min(left, remaining[maker])
                left -= traded
                remaining[maker] -= traded
                if not remaining[maker]:
                    queue.popleft()
                    self._forget(maker)
            if not queue:
                del book[best]
        if left and gtc:
            (self._bids if buy else self._asks).setdefault(price, deque()).append(order_id)
            remaining[order_id] = left
            self._owner[order_id] = account
            self._slot[order_id] = len(self._open_ids)
            self._open_ids.append(order_id)

    def cancel_random(self, rng: random.Random) -> tuple[int, str]:
        """Forget a uniformly chosen open order; its id and owner. The book must be non-empty."""
        order_id = self._open_ids[rng.randrange(len(self._open_ids))]
        owner = self._owner[order_id]
        self._forget(order_id)
        return order_id, owner

    def _forget(self, order_id: int) -> None:
        del self._remaining[order_id]
        del self._owner[order_id]
        slot = self._slot.pop(order_id)
        last = self._open_ids.pop()
        if last != order_id:
            self._open_ids[slot] = last
            self._slot[last] = slot


@dataclass(frozen=True, slots=True)
class Stream:
    """The generated commands and what they hold (by the `ShadowBook`'s account)."""

    commands: list[Command]
    gtc: int  # GTC places, including cancels drawn while no order was open
    ioc: int
    cancels: int
    mean_open: float  # open orders in the book, averaged over the commands
    open_at_end: int


def _limit_place(
    i: int, account: str, side: Side, price: int, qty: int, *, gtc: bool, ts: int
) -> PlaceOrder:
    """Both mixes' place: a limit order on BENCH with the i-th client order id."""
    return PlaceOrder(
        account=account, client_order_id=f"c{i}", symbol=SYMBOL, side=side, type="limit",
        price=price, qty=qty, tif="gtc" if gtc else "ioc", ts=ts,
    )


def build_stream(ops: int, seed: int, first_ts: int) -> Stream:
    """`ops` order commands drawn from `random.Random(seed)`; timestamps from `first_ts`.

    Order ids are predicted: the engine numbers accepted orders 1, 2, 3, ... and no place
    in this mix is refused. A cancel names a uniformly chosen open order (per the
    `ShadowBook`) of its owner; a cancel drawn while no order is open becomes a GTC place.
    """
    rng = random.Random(seed)
    accounts = [account_id(n) for n in range(1, N_ACCOUNTS + 1)]
    book = ShadowBook()
    next_order_id = 1
    cmds: list[Command] = []
    gtc_count = ioc_count = cancel_count = open_sum = 0
    for i in range(ops):
        open_sum += len(book)
        ts = first_ts + TS_STEP * i
        roll = rng.random()
        if 0.5 <= roll < 0.8 and book:
            order_id, owner = book.cancel_random(rng)
            cmds.append(CancelOrder(account=owner, order_id=order_id, ts=ts))
            cancel_count += 1
            continue
        account = rng.choice(accounts)
        side = rng.choice(_SIDES)
        qty = rng.randint(1, MAX_ORDER_QTY)
        gtc = roll < 0.8  # a GTC place (or a cancel with nothing to cancel)
        if gtc:
            price = MID + rng.randint(-GTC_SPREAD, GTC_SPREAD)
            gtc_count += 1
        else:
            cross = rng.randint(0, IOC_CROSS)
            price = MID + cross if side == "buy" else MID - cross
            ioc_count += 1
        cmds.append(_limit_place(i, account, side, price, qty, gtc=gtc, ts=ts))
        book.place(next_order_id, account, side, price=price, qty=qty, gtc=gtc)
        next_order_id += 1
    return Stream(
        commands=cmds,
        gtc=gtc_count,
        ioc=ioc_count,
        cancels=cancel_count,
        mean_open=open_sum / ops if ops else 0.0,
        open_at_end=len(book),
    )


DEEP_SPREAD = 50  # deep mix: GTC buys at MID - 0..50, sells at MID + 0..50
DEEP_BUYERS = N_ACCOUNTS // 2  # A1..A50 buy, A51..A100 sell: no self-trade ever, so the
# engine's trades are exactly the reference book's fills (a check that both ran one stream)


def build_deep_stream(ops: int, seed: int, first_ts: int) -> Stream:
    """The reference book's stream (refbook.py), draw for draw, as engine commands.

    Its rules: with r = random(), r < 0.5 a GTC limit (side, then offset 0..50 away from the
    mid on its own side, then qty 1..100); r < 0.8 with any order placed and not yet
    cancelled, a cancel of a uniformly chosen one (it may have filled meanwhile: the engine
    then answers UNKNOWN_ORDER, a cancel_miss, and the reference does nothing); otherwise an
    IOC limit crossing the mid by 0..10. Order ids count every place from 1, as the engine's
    do. Buys come from A1..A50 and sells from A51..A100 in turn.
    """
    rng = random.Random(seed)
    rand, randint, randrange = rng.random, rng.randint, rng.randrange
    cmds: list[Command] = []
    live: list[int] = []  # placed GTC ids not yet cancelled, as the reference keeps them
    owner: dict[int, str] = {}
    next_id = 0
    gtc_count = ioc_count = cancel_count = 0
    for i in range(ops):
        ts = first_ts + TS_STEP * i
        r = rand()
        if 0.5 <= r < 0.8 and live:
            slot = randrange(len(live))
            order_id = live[slot]
            live[slot] = live[-1]
            live.pop()
            cmds.append(CancelOrder(account=owner.pop(order_id), order_id=order_id, ts=ts))
            cancel_count += 1
            continue
        buy = rand() < 0.5
        gtc = r < 0.5
        offset = randint(0, DEEP_SPREAD if gtc else IOC_CROSS)
        price = (MID - offset if buy else MID + offset) if gtc else (
            MID + offset if buy else MID - offset
        )
        qty = randint(1, MAX_ORDER_QTY)
        next_id += 1
        account = account_id(1 + next_id % DEEP_BUYERS + (0 if buy else DEEP_BUYERS))
        if gtc:
            live.append(next_id)
            owner[next_id] = account
            gtc_count += 1
        else:
            ioc_count += 1
        cmds.append(_limit_place(i, account, "buy" if buy else "sell", price, qty, gtc=gtc, ts=ts))
    return Stream(
        commands=cmds,
        gtc=gtc_count,
        ioc=ioc_count,
        cancels=cancel_count,
        mean_open=0.0,  # not modelled: the reference's own count is the one to quote
        open_at_end=0,
    )


@dataclass(frozen=True, slots=True)
class Result:
    stream: Stream
    ops: int
    seconds: float
    events: int
    trades: int
    rejected: int
    places_rejected: int
    cancel_misses: int
    state_hash: str
    resting_at_end: int  # open orders in the engine's book when the stream ends
    levels_at_end: int


def setup_engine() -> tuple[Engine, int]:
    """A fresh engine after set-up, and the ts of the first benchmark command."""
    engine = Engine()
    setup = build_setup()
    for cmd in setup:
        for ev in engine.apply(cmd):
            if isinstance(ev, Rejected | OrderRejected):
                raise SystemExit(f"bench set-up refused {type(cmd).__name__}: {ev.code}")
    return engine, setup[-1].ts + TS_STEP


# What times the loop: wall time (perf_counter), or the process's CPU time (process_time),
# which leaves out the time the process waited for a core on a shared machine.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed_loop(
    engine: Engine, cmds: Sequence[Command], clock: Callable[[], float] = time.perf_counter
) -> tuple[float, int, list[Event]]:
    """Apply every command; keep only the count of events and the rejections, as a server
    keeps nothing of what it has journaled and published."""
    apply = engine.apply
    events = 0
    refusals: list[Event] = []
    t0 = clock()
    for cmd in cmds:
        produced = apply(cmd)
        events += len(produced)
        first = produced[0]
        if type(first) is OrderRejected or type(first) is Rejected:
            refusals.append(first)
    return clock() - t0, events, refusals


def run(
    ops: int,
    seed: int,
    *,
    profile: bool = False,
    gc_mode: str = "tuned",
    mix: str = "shallow",
    clock: str = "wall",
) -> Result:
    """Set up, generate, then time `Engine.apply` over the stream; count events afterwards."""
    engine, first_ts = setup_engine()
    first_trade = engine.next_trade
    stream = (build_deep_stream if mix == "deep" else build_stream)(ops, seed, first_ts)

    gc_enabled = gc_mode != "off"
    if gc_mode == "tuned":
        tune_gc()
    else:
        gc.collect()
        gc.freeze()
    if not gc_enabled:
        gc.disable()
    profiler = cProfile.Profile() if profile else None
    try:
        if profiler is not None:
            profiler.enable()
        seconds, events, refusals = _timed_loop(engine, stream.commands, CLOCKS[clock])
        if profiler is not None:
            profiler.disable()
    finally:
        if not gc_enabled:
            gc.enable()
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats(pstats.SortKey.TIME).print_stats(PROFILE_TOP)

    trades = engine.next_trade - first_trade
    rejected = len(refusals)
    places_rejected = cancel_misses = 0
    for ev in refusals:
        if isinstance(ev, OrderRejected):
            if ev.client_order_id:  # only places carry one in this mix
                places_rejected += 1
            elif ev.code == "UNKNOWN_ORDER":
                cancel_misses += 1
    if places_rejected:
        print(
            f"warning: {places_rejected} places refused; predicted order ids drifted, so "
            "later cancels name the wrong orders",
            file=sys.stderr,
        )
    return Result(
        stream=stream,
        ops=ops,
        seconds=seconds,
        events=events,
        trades=trades,
        rejected=rejected,
        places_rejected=places_rejected,
        cancel_misses=cancel_misses,
        state_hash=engine.state_hash(),
        resting_at_end=sum(len(a.open_orders) for a in engine.accounts.values()),
        levels_at_end=sum(len(b.bids.levels) + len(b.asks.levels) for b in engine.books.values()),
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_engine",
        description=(
            "Time Engine.apply over a seeded stream of order commands (50% GTC limits at "
            "mid +/- 50 ticks, 30% cancels, 20% crossing IOC limits; 100 accounts, one "
            "instrument). Set-up and stream generation are not timed."
        ),
        epilog=(
            "Garbage collection: after set-up and generation the harness runs gc.collect() "
            "and gc.freeze(), so the set-up heap is never rescanned. --gc tuned (default) "
            "also raises the thresholds as the server does (exchange.runtime.tune_gc); "
            "--gc default keeps CPython's thresholds; --gc off disables the collector for "
            "the loop (collection resumes afterwards)."
        ),
    )
    parser.add_argument("--ops", type=int, default=200_000, help="commands to time")
    parser.add_argument("--seed", type=int, default=1, help="seed of random.Random")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"run the timed loop under cProfile; top {PROFILE_TOP} by tottime to stderr "
        "(the timing then includes the profiler's overhead)",
    )
    parser.add_argument(
        "--gc",
        choices=("tuned", "default", "off"),
        default="tuned",
        help="'tuned' (default): freeze and raise thresholds as the server does; "
        "'default': freeze, CPython's thresholds; 'off': freeze and disable while timing",
    )
    parser.add_argument(
        "--mix",
        choices=("shallow", "deep"),
        default="shallow",
        help="'shallow' (default): the mix above; 'deep': the reference book's stream "
        "(refbook.py), where most GTC orders rest",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run the reference book and both mixes as separate processes, interleaved, "
        "--rounds times; print each mix's ratio to the reference of its round",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --compare")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="'wall' (default): perf_counter; 'cpu': process_time, which leaves out the time "
        "spent waiting for a core (on a shared machine)",
    )
    parser.add_argument(
        "--reference",
        default=str(DEFAULT_REFERENCE),
        help="the reference book script (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.ops < 0:
        parser.error("--ops must be >= 0")
    return args


def _ops_per_s(cmd: list[str]) -> float:
    """Run one benchmark process; its JSON line's ops_per_s."""
    out = subprocess.run(  # noqa: S603 - our own interpreter and scripts
        cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
    ).stdout
    return float(msgspec.json.decode(out.strip().splitlines()[-1])["ops_per_s"])


def compare(
    ops: int, seed: int, rounds: int, reference: str, clock: str = "wall"
) -> dict[str, object]:
    """Reference, shallow, deep, one process each, `rounds` times over; ratios per round.

    Interleaving puts each ratio's two figures a second apart, so the machine's drift (other
    processes, a slower minute) moves both; the median of the rounds' ratios is the figure.
    With `clock` "cpu" both time CPU seconds: the reference book runs unchanged, with its
    `time.perf_counter` pointed at `time.process_time`.
    """
    engine_cmd = [sys.executable, "-m", "loadtest.bench_engine", "--ops", str(ops),
                  "--seed", str(seed), "--json", "--clock", clock, "--mix"]
    ref_cmd = [sys.executable, reference, str(ops), str(seed)]
    if clock == "cpu":
        ref_cmd = [sys.executable, "-c", REFERENCE_ON_CPU_TIME, reference, str(ops), str(seed)]
    ratios: dict[str, list[float]] = {"shallow": [], "deep": []}
    runs: list[dict[str, float]] = []
    for _ in range(rounds):
        ref = _ops_per_s(ref_cmd)
        row = {"reference": ref}
        for mix in ("shallow", "deep"):
            row[mix] = _ops_per_s([*engine_cmd, mix])
            ratios[mix].append(row[mix] / ref)
        runs.append(row)
        sys.stderr.write(
            f"reference {ref:,.0f}  shallow {row['shallow']:,.0f} "
            f"({ratios['shallow'][-1]:.3f}x)  deep {row['deep']:,.0f} "
            f"({ratios['deep'][-1]:.3f}x)\n"
        )
    return {
        "ops": ops,
        "seed": seed,
        "clock": clock,
        "rounds": runs,
        "ratio_shallow": round(statistics.median(ratios["shallow"]), 3),
        "ratio_deep": round(statistics.median(ratios["deep"]), 3),
        "ratio_shallow_range": [round(min(ratios["shallow"]), 3), round(max(ratios["shallow"]), 3)],
        "ratio_deep_range": [round(min(ratios["deep"]), 3), round(max(ratios["deep"]), 3)],
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.compare:
        sys.stdout.write(
            msgspec.json.encode(
                compare(args.ops, args.seed, args.rounds, args.reference, args.clock)
            ).decode()
            + "\n"
        )
        return
    result = run(
        args.ops, args.seed, profile=args.profile, gc_mode=args.gc, mix=args.mix, clock=args.clock
    )
    ops_per_s = result.ops / result.seconds if result.seconds > 0 else 0.0
    if args.json:
        line = {
            "ops": result.ops,
            "seconds": round(result.seconds, 6),
            "ops_per_s": round(ops_per_s, 1),
            "trades": result.trades,
            "events": result.events,
            "state_hash": result.state_hash,
            "rejected": result.rejected,
            "cancel_misses": result.cancel_misses,
            "gtc": result.stream.gtc,
            "ioc": result.stream.ioc,
            "cancels": result.stream.cancels,
            "mean_open_orders": round(result.stream.mean_open, 1),
            "resting_at_end": result.resting_at_end,
            "levels_at_end": result.levels_at_end,
            "mix": args.mix,
            "clock": args.clock,
            "seed": args.seed,
            "gc": args.gc,
            "profile": args.profile,
            "core": describe(),
        }
        sys.stdout.write(msgspec.json.encode(line).decode() + "\n")
    else:
        print(
            f"{result.ops:,} ops in {result.seconds:.3f} s: {ops_per_s:,.0f} ops/s "
            f"(seed {args.seed}, gc {args.gc}{', profiled' if args.profile else ''})\n"
            f"{result.trades:,} trades, {result.events:,} events, {result.rejected:,} "
            f"rejected ({result.cancel_misses:,} cancels of orders no longer open)\n"
            f"mix: {result.stream.gtc:,} GTC, {result.stream.ioc:,} IOC, "
            f"{result.stream.cancels:,} cancels; {result.stream.mean_open:,.1f} open orders "
            "on average\n"
            f"state_hash {result.state_hash}\n"
            f"core: {describe()}"
        )


if __name__ == "__main__":
    main()
