"""Runs the simulated market against an exchange: sets up its accounts through the admin
API, connects each agent as an ordinary WebSocket client, and steps the market.

One step: the hidden value moves on by a seeded random time, one agent (drawn by its rate)
acts on what it sees, its requests are answered, and then every connection is pinged, so
everything the server sent before (fills, dones, market data) has arrived and been taken
in before the next step. So with a fixed seed, and no other client trading, a run is the
same every time, whatever the machine's speed. `speed` only paces the steps against the
wall clock (simulated seconds per second); 0 runs them as fast as the exchange answers.

An observer connection keeps a level-2 book checked by seq and checksum (resubscribing on
a gap, like every client of the library); the agents' view of the market comes from it.
"""

import asyncio
import contextlib
import json
import os
import random
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.client import Admin, Client, LocalBook, Message, ProtocolError
from loadtest.simulation import report
from loadtest.simulation.agents import (
    Action,
    Agent,
    Cancel,
    InformedTrader,
    MarketMaker,
    NoiseTrader,
    View,
)
from loadtest.simulation.fundamental import Fundamental, WalkParams

# Where the value starts when the instrument has never traded and has no book (ticks).
DEFAULT_START_TICKS = 1_000
# What each agent's account is given when the simulation creates it.
MAKER_CASH, MAKER_UNITS = "1000000.00", 20_000
TRADER_CASH, TRADER_UNITS = "200000.00", 2_000
# Levels a side read back from REST for the closing book check (the agents keep few).
BOOK_CHECK_DEPTH = 5_000
# Tries of the closing book check: another client may move the book between the barrier
# and the REST read (the seqs then differ and it is read again).
BOOK_CHECK_TRIES = 20
# Every step's (time, value, last trade) is kept for the report; a long live run keeps the
# newest this many (a day at the default rates is ~350,000 steps).
SAMPLES_KEPT = 400_000
# Resubscribes in a row at one step before the run stops: each brings a fresh snapshot, so
# a book that fails its check again at once is a broken feed, not a lost message.
MAX_RESUBSCRIBES_IN_A_ROW = 3


@dataclass(frozen=True)
class SimOptions:
    base_url: str  # http://HOST:PORT
    admin_token: str
    symbol: str = "ACME"
    seed: int = 1
    steps: int | None = None  # None: until cancelled
    speed: float = 1.0  # simulated seconds per wall-clock second; 0: as fast as answered
    maker_rate: float = 1.0  # acts a simulated second
    noise_traders: int = 3
    noise_rate: float = 0.5
    informed_traders: int = 3
    informed_rate: float = 0.5
    # The hidden value starts this far (a fraction, up or down by the seed) from the
    # market's price: the market has something to find, and the report shows it found.
    start_gap: float = 0.05
    warmup_s: float = report.WARMUP_S
    walk: WalkParams = field(default_factory=WalkParams)
    report_dir: Path | None = None
    # A JSON file of the agents' accounts and keys: reused when it exists (their orders
    # left from an earlier run are cancelled first), written (mode 0600) when not.
    accounts_file: Path | None = None


@dataclass
class Member:
    """An agent with its connection and its acting rate."""

    agent: Agent
    client: Client
    rate: float
    sent: int = 0


@dataclass
class Tally:
    orders: int = 0
    cancels: int = 0
    trades: int = 0
    volume: int = 0
    rejects: Counter[str] = field(default_factory=Counter)


class Prices:
    """Ticks <-> the instrument's wire decimals."""

    def __init__(self, tick_size: str) -> None:
        self.tick = Decimal(tick_size)

    def text(self, ticks: int) -> str:
        return str((self.tick * ticks).quantize(self.tick))

    def ticks(self, text: str) -> int:
        return int(Decimal(text) / self.tick)


class Simulation:
    def __init__(self, options: SimOptions, on_value: Callable[[str], None] | None = None):
        self.options = options
        self.on_value = on_value  # told the hidden value (as a price) after each step
        self.rng = random.Random(f"simulation-{options.seed}")
        self.members: list[Member] = []
        self.observer: Client | None = None
        self.book = LocalBook(options.symbol)
        self.tally = Tally()
        self.samples: list[tuple[float, float, int | None]] = []  # (t_s, value, last)
        self.last: int | None = None
        self.prices = Prices("0.01")
        self.fundamental: Fundamental | None = None
        self.time_s = 0.0
        self.book_consistent: bool | None = None
        # Client order ids are new in every run (an accounts file carries the agents over
        # restarts; a reused id would be taken as a resend). Not part of any decision.
        self.run_id = secrets.token_hex(4)

    # --- set-up ------------------------------------------------------------------------------

    async def setup(self, admin: Admin) -> None:
        o = self.options
        instruments = (await admin.ok("GET", "/v1/instruments"))["instruments"]
        listed = {i["symbol"]: i for i in instruments}
        if o.symbol not in listed:
            issuer, _ = await admin.account(f"sim-{o.symbol}-issuer")
            body = {"symbol": o.symbol, "kind": "share", "tick_size": "0.01", "issuer": issuer}
            await admin.ok("POST", "/v1/admin/instruments", body)
            await admin.ok(
                "POST", f"/v1/admin/instruments/{o.symbol}/status", {"status": "trading"}
            )
            tick_size = "0.01"
        else:
            tick_size = listed[o.symbol]["tick_size"]
            if listed[o.symbol]["status"] == "pre_open":  # e.g. out of its offering: open it
                await admin.ok("POST", f"/v1/admin/instruments/{o.symbol}/auction")
        self.prices = Prices(tick_size)
        keys = await self._accounts(admin)
        ws_url = o.base_url.replace("http", "ws", 1).rstrip("/") + "/v1/ws"
        specs: list[tuple[str, type[Agent], float]] = [("maker", MarketMaker, o.maker_rate)]
        specs += [(f"noise-{i}", NoiseTrader, o.noise_rate) for i in range(o.noise_traders)]
        specs += [
            (f"informed-{i}", InformedTrader, o.informed_rate) for i in range(o.informed_traders)
        ]
        for name, make, rate in specs:
            api_key = keys[name][1]
            account_view = await admin.ok("GET", "/v1/account", token=api_key)
            units = int(account_view["positions"].get(o.symbol, 0))
            client = await Client.connect(ws_url, api_key)
            await client.cancel_all(o.symbol)  # what an earlier run left resting
            agent = make(name, random.Random(f"simulation-{o.seed}-{name}"), units)
            self.members.append(Member(agent, client, rate))
        self.observer = await Client.connect(ws_url)
        await self.observer.subscribe(["book", "trades"], [o.symbol])
        await self._barrier()
        ticker = await admin.ok("GET", f"/v1/ticker/{o.symbol}")
        market = self._start_ticks(ticker)
        gap = o.start_gap * self.rng.choice((-1.0, 1.0))
        self.fundamental = Fundamental(self.rng, market * (1.0 + gap), o.walk)
        for member in self.members:  # the maker starts from the market's price, not the value
            if isinstance(member.agent, MarketMaker) and member.agent.estimate is None:
                member.agent.estimate = market

    def _start_ticks(self, ticker: Message) -> float:
        if ticker.get("last"):
            return float(self.prices.ticks(ticker["last"]))
        if ticker.get("best_bid") and ticker.get("best_ask"):
            bid, ask = self.prices.ticks(ticker["best_bid"]), self.prices.ticks(ticker["best_ask"])
            return (bid + ask) / 2
        return float(DEFAULT_START_TICKS)

    async def _accounts(self, admin: Admin) -> dict[str, tuple[str, str]]:
        """name -> (account, api_key): from the accounts file, or made now (cash, units)."""
        o = self.options
        path = o.accounts_file
        if path is not None and path.exists():
            saved: dict[str, list[str]] = json.loads(path.read_text())
            return {name: (entry[0], entry[1]) for name, entry in saved.items()}
        names = ["maker"]
        names += [f"noise-{i}" for i in range(o.noise_traders)]
        names += [f"informed-{i}" for i in range(o.informed_traders)]
        keys: dict[str, tuple[str, str]] = {}
        for name in names:
            maker = name == "maker"
            cash, units = (MAKER_CASH, MAKER_UNITS) if maker else (TRADER_CASH, TRADER_UNITS)
            account, api_key = await admin.account(f"sim-{name}", cash)
            deposit = {"account": account, "symbol": o.symbol, "qty": units}
            await admin.ok("POST", "/v1/admin/deposits", deposit)
            keys[name] = (account, api_key)
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({name: list(entry) for name, entry in keys.items()}, f, indent=2)
        return keys

    # --- stepping ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Step until `steps` (or until cancelled)."""
        o = self.options
        assert self.fundamental is not None, "setup first"
        loop = asyncio.get_running_loop()
        started = loop.time()
        rates = [m.rate for m in self.members]
        total_rate = sum(rates)
        step = 0
        while o.steps is None or step < o.steps:  # bounded by steps, or by cancellation
            step += 1
            dt = self.rng.expovariate(total_rate)
            self.time_s += dt
            value = self.fundamental.advance(dt)
            member = self.rng.choices(self.members, weights=rates)[0]
            view = View(self.book_best("buy"), self.book_best("sell"), self.last, value)
            await self._execute(member, member.agent.act(view))
            await self._barrier()
            if len(self.samples) >= SAMPLES_KEPT:
                del self.samples[: SAMPLES_KEPT // 10]
            self.samples.append((self.time_s, value, self.last))
            if self.on_value is not None:
                self.on_value(self.prices.text(round(value)))
            if o.speed > 0:
                await asyncio.sleep(max(0.0, started + self.time_s / o.speed - loop.time()))

    def book_best(self, side: str) -> int | None:
        if self.book.seq is None:
            return None
        levels = self.book.bids.highest(1) if side == "buy" else self.book.asks.lowest(1)
        return self.prices.ticks(levels[0][0]) if levels else None

    async def _execute(self, member: Member, actions: list[Action]) -> None:
        """Send the actions on the member's connection (in order: the server takes one
        connection's requests in the order sent) and take in each answer."""
        await asyncio.gather(*(self._one(member, action) for action in actions))

    async def _one(self, member: Member, action: Action) -> None:
        agent, client = member.agent, member.client
        if isinstance(action, Cancel):
            self.tally.cancels += 1
            answer = await client.cancel(action.order_id)
            if answer.get("type") == "done" or answer.get("code") == "UNKNOWN_ORDER":
                agent.on_ended(action.order_id)
            elif answer.get("type") == "rejected":
                self.tally.rejects[answer.get("code", "?")] += 1
            return
        self.tally.orders += 1
        member.sent += 1
        fields: dict[str, Any] = {
            "client_order_id": f"{agent.name}-{self.run_id}-{member.sent}",
            "tif": action.tif,
            "post_only": action.post_only,
        }
        price = self.prices.text(action.price) if action.price is not None else None
        answer = await client.place(self.options.symbol, action.side, action.qty, price, **fields)
        if answer.get("type") == "accepted":
            agent.on_accepted(answer["order_id"], action, answer["remaining"], answer["status"])
        else:
            self.tally.rejects[str(answer.get("code", answer.get("type")))] += 1

    async def _barrier(self) -> None:
        """Ping every connection: what the server sent each before its pong is in, and is
        taken in here (fills and dones to their agents, market data to the book)."""
        clients = [m.client for m in self.members]
        if self.observer is not None:
            clients.append(self.observer)
        await asyncio.gather(*(c.ping() for c in clients))
        for member in self.members:
            self._take_private(member)
        if self.observer is not None:
            await self._take_market_data(self.observer)

    def _take_private(self, member: Member) -> None:
        events = member.client.events
        while events:  # what arrived before the pong
            event = events.popleft()
            kind = event.get("type")
            if event.get("symbol", self.options.symbol) != self.options.symbol:
                continue
            if kind == "fill":
                member.agent.on_fill(
                    event["order_id"], event["side"], event["qty"], event["remaining"]
                )
            elif kind == "done":
                member.agent.on_ended(event["order_id"])

    async def _take_market_data(self, observer: Client) -> None:
        """Apply what arrived before the pong to the checked book; after a resubscribe
        (a gap or a bad checksum) ping again, so the new snapshot is in before the next step."""
        for _ in range(MAX_RESUBSCRIBES_IN_A_ROW + 1):
            resubscribed = False
            while observer.events:  # what arrived before the pong
                message = observer.events.popleft()
                kind, symbol = message.get("type"), message.get("symbol")
                if kind == "trade" and symbol == self.options.symbol:
                    self.tally.trades += 1
                    self.tally.volume += message["qty"]
                    self.last = self.prices.ticks(message["price"])
                if not await observer.follow(self.book, message):
                    resubscribed = True
            if not resubscribed:
                return
            await observer.ping()
        raise ProtocolError(f"the {self.options.symbol} book failed its check after each of "
                            f"{MAX_RESUBSCRIBES_IN_A_ROW} fresh snapshots")  # fmt: skip

    # --- the end -------------------------------------------------------------------------------

    async def check_book(self, admin: Admin) -> bool:
        """The REST book equals the checked local book at the same seq."""
        path = f"/v1/book/{self.options.symbol}?depth={BOOK_CHECK_DEPTH}"
        for _ in range(BOOK_CHECK_TRIES):  # bounded: another client may be trading
            await self._barrier()
            rest = await admin.ok("GET", path)
            if rest["seq"] != self.book.seq:
                continue
            bids, asks = self.book.levels()
            self.book_consistent = rest["bids"] == bids and rest["asks"] == asks
            return self.book_consistent
        self.book_consistent = False
        return False

    async def close(self) -> None:
        for member in self.members:
            with contextlib.suppress(Exception):  # the server may be gone (shutting down)
                await member.client.cancel_all(self.options.symbol)
        for client in [m.client for m in self.members] + [self.observer]:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()

    def summary(self) -> dict[str, Any]:
        return report.summary(self)


async def simulate(options: SimOptions, on_value: Callable[[str], None] | None = None) -> int:
    """Set up, run, check the book, write the report; the exit status (0: the book was
    consistent and, with a report, the tracking error within its bound)."""
    sim = Simulation(options, on_value)
    async with Admin(options.base_url, options.admin_token) as admin:
        try:
            await sim.setup(admin)
            with contextlib.suppress(asyncio.CancelledError):
                await sim.run()
            consistent = await sim.check_book(admin)
        finally:
            await sim.close()
    summary = sim.summary()
    if options.report_dir is not None:
        report.write(options.report_dir, summary, sim.samples, sim.prices.tick)
    print(json.dumps(report.headline(summary)), flush=True)
    return 0 if consistent else 1


async def live(options: SimOptions, on_value: Callable[[str], None]) -> None:
    """Run beside a demo server until cancelled (`exchange serve --demo --simulate`),
    telling `on_value` the hidden value after each step; its orders are cancelled at the end."""
    sim = Simulation(options, on_value)
    async with Admin(options.base_url, options.admin_token) as admin:
        try:
            await sim.setup(admin)
            await sim.run()
        finally:
            await sim.close()
