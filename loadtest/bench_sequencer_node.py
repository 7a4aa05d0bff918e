"""`python -m loadtest.bench_sequencer_node`: the serial core's CPU per command, alone.

Starts, on 127.0.0.1 in a temporary directory, one nats-server and `exchange sequencer`,
then drives the sequencer from this process through the gateway's own bus
(gateway/natsbus.py, no read side, no WebSocket, no JSON) with a fixed mix of commands:
for each pair, a resting sell and the buy that fills it, and every CANCEL_EVERY-th pair
a resting buy cancelled after. At most `--window` commands are unanswered at once (a
gateway's clients in a closed loop). The sequencer process's CPU time (user + system,
/proc/PID/stat) over the measured commands, divided by them, is the figure: the part of
the cluster that cannot be scaled out. Prints one JSON object. The driver and NATS share
the machine's cores with the sequencer: the rate says what they do together, the CPU per
command is the sequencer's own.
"""

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from exchange import natsserver
from exchange.bus import Sequenced
from exchange.domain import commands as cmd
from exchange.domain.events import AccountCreated, OrderAccepted
from exchange.domain.limits import MAX_CASH, MAX_QTY
from exchange.natsstream import log_nats_error
from exchange.natswire import STREAM
from gateway.natsbus import NatsBus
from loadtest.bench_roles import cpu_seconds, start, stop

SYMBOL = "BENCH"
# A resting buy placed and cancelled once every this many pairs (the load test's mix
# has about one cancel per five orders).
CANCEL_EVERY = 2
CANCELLED_PRICE = 1  # far below the pairs' prices: it rests until cancelled
SETUP_COMMANDS = 6  # _setup's: two accounts, the listing, its status, two deposits
# Commands sent before measuring (imports warm, the book and journal past their start).
WARMUP_COMMANDS = 5_000


async def _one(bus: NatsBus, command: cmd.Command) -> Sequenced:
    return await bus.submit(command)


async def _setup(bus: NatsBus) -> tuple[str, str]:
    accounts = []
    for name in ("seller", "buyer"):
        created = (await _one(bus, cmd.CreateAccount(name=name))).events[0]
        assert isinstance(created, AccountCreated)
        accounts.append(created.account)
    seller, buyer = accounts
    await _one(bus, cmd.ListInstrument(symbol=SYMBOL, kind="share", tick=1, issuer=seller))
    await _one(bus, cmd.SetInstrumentStatus(symbol=SYMBOL, status="trading"))
    await _one(bus, cmd.DepositUnits(account=seller, symbol=SYMBOL, qty=MAX_QTY))
    await _one(bus, cmd.DepositCash(account=buyer, amount=MAX_CASH))
    return seller, buyer


class Driver:
    """Keeps `window` commands in flight, in pairs, until `count` are answered."""

    def __init__(self, bus: NatsBus, seller: str, buyer: str, window: int) -> None:
        self.bus, self.seller, self.buyer = bus, seller, buyer
        self.slots = asyncio.Semaphore(window)
        self.pairs = 0
        self.orders = 0
        self.answered = 0
        self.done = asyncio.Event()
        self.target = 0
        self.failure: BaseException | None = None

    def _answered(self, future: "asyncio.Future[Sequenced]") -> None:
        self.answered += 1
        if isinstance(future.result() if future.exception() is None else None, Sequenced):
            self.orders += isinstance(future.result().command, cmd.PlaceOrder)
        if self.answered >= self.target:
            self.done.set()
        if future.exception() is not None:
            self.failure = future.exception()
            self.done.set()
            return
        sequenced = future.result()
        command = sequenced.command
        if isinstance(command, cmd.PlaceOrder) and command.price == CANCELLED_PRICE:
            event = sequenced.events[0]
            if isinstance(event, OrderAccepted):  # its slot passes on to its cancel
                self._send(cmd.CancelOrder(account=self.buyer, order_id=event.order_id))
                return
        self.slots.release()

    def _send(self, command: cmd.Command) -> None:
        self.bus.submit(command).add_done_callback(self._answered)

    async def run(self, count: int) -> None:
        self.done.clear()
        self.target = self.answered + count
        sent = 0
        while sent < count:  # bounded by count
            await self.slots.acquire()
            await self.slots.acquire()
            price = 100 + self.pairs % 10
            self._send(cmd.PlaceOrder(account=self.seller, symbol=SYMBOL, side="sell",
                                      price=price, qty=1))  # fmt: skip
            self._send(cmd.PlaceOrder(account=self.buyer, symbol=SYMBOL, side="buy",
                                      price=price, qty=1))  # fmt: skip
            sent += 2
            self.pairs += 1
            if self.pairs % CANCEL_EVERY == 0:
                await self.slots.acquire()
                self._send(cmd.PlaceOrder(account=self.buyer, symbol=SYMBOL, side="buy",
                                          price=CANCELLED_PRICE, qty=1))  # fmt: skip
                sent += 2  # the order and, once answered, its cancel
        await self.done.wait()
        if self.failure is not None:
            raise RuntimeError(f"a command failed: {self.failure!r}")


async def main(commands: int, window: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-seq-") as name:
        directory = Path(name)
        cluster = await natsserver.start(directory / "nats", nodes=1)
        url = cluster.nodes[0].url
        sequencer = await start(
            ["sequencer", "--nats", url, "--data-dir", str(directory / "sequencer")],
            "exchange sequencer",
        )
        try:
            nc = await nats.connect(url, allow_reconnect=False, error_cb=log_nats_error)
            bus = NatsBus(nc, nc.jetstream())
            await bus.start()
            seller, buyer = await _setup(bus)
            driver = Driver(bus, seller, buyer, window)
            await driver.run(WARMUP_COMMANDS)
            answered, orders = driver.answered, driver.orders
            cpu_before = cpu_seconds(sequencer.pid)
            started = time.perf_counter()
            await driver.run(commands)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(sequencer.pid) - cpu_before
            measured = driver.answered - answered
            measured_orders = driver.orders - orders
            stream = (await nc.jetstream().stream_info(STREAM)).state
            # Every record is in the stream: the setup's, then each answered command's.
            records = SETUP_COMMANDS + driver.answered
            await bus.close()
            await nc.close()
        finally:
            await stop(sequencer)
            await cluster.stop()
    return {
        "commands": measured,
        "window": window,
        "commands_per_s": round(measured / elapsed),
        "orders": measured_orders,
        "records_per_stream_message": round(records / stream.messages, 1),
        "sequencer_us_per_command": round(cpu / measured * 1e6, 2),
        "sequencer_us_per_order": round(cpu / measured_orders * 1e6, 2),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_sequencer_node", description=__doc__
    )
    parser.add_argument("--commands", type=int, default=100_000, help="measured commands")
    parser.add_argument("--window", type=int, default=2_000, help="commands in flight")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.commands, args.window))))


if __name__ == "__main__":
    cli()
