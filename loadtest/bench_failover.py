"""`python -m loadtest.bench_failover`: what a leader's death costs, and what replication
costs, in one run (issue 15's figures).

Starts everything itself on 127.0.0.1 in a temporary directory and stops it at the end:

1. Throughput, one wiring after another, each driven by `python -m loadtest run` (its
   traders spread over the gateways): `exchange serve`; then R1 (one nats-server, the
   stream and the lease bucket R1) and R3 (three nats-servers, both R3), each with
   SEQUENCERS sequencers (a leader, standbys) and GATEWAYS gateways. Each wiring: the
   closed-loop peak (orders/s, and its ack p99), then `--ack-rate` orders/s open loop,
   the same rate for all three (ack p99 at a load they all carry).
2. Takeover, on the R3 cluster: clients (`loadtest/probe.py`: sellers and buyers, open
   loop at `--rate` orders/s in all, over both gateways, resending what is answered
   UNAVAILABLE with its client_order_id) trade while the leader is killed (kill -9)
   `--kills` times: each time, after `--settle` seconds of trading, the leader is killed;
   the run waits (bounded) for another node's heartbeat saying `leader` and an accepted
   answer to an order sent after the kill, restarts the killed node (it rejoins as a
   standby) and waits until every order sent before the takeover is answered and every
   one answered UNAVAILABLE resent, so each kill's cost falls in its own window. The figures
   (`loadtest/takeover.py`) come from those events: time to the first accepted answer
   and to the new leader's heartbeat, UNAVAILABLE answers, the longest time without an
   accepted answer (and without any answer), median and max over the kills.

Prints one JSON object on stdout and a short summary on stderr. The clients, NATS and
every role share this machine's cores: the figures say what they do together.
"""

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.msg import Msg

from exchange import nodestatus
from loadtest import bench_roles, probe, takeover
from loadtest.local_cluster import LocalCluster, local_cluster
from loadtest.targets import phase, progress

# The API's promise is a standby leading within 5 s; past this the run calls it no
# takeover, says so and stops killing (the cluster is not recovering).
TAKEOVER_BOUND_S = 30.0
# A restarted node rejoins as a standby once it has read the stream: on a loaded machine.
REJOIN_BOUND_S = 60.0
# Every order sent before a kill is answered within the gateway's UNAVAILABLE bound (5 s)
# of its send, or resent and answered; this leaves room on a loaded machine.
ANSWERED_BOUND_S = 30.0
# After the loop, the clients stop sending and await what is in flight.
DRAIN_BOUND_S = 30.0
# How often the run looks at what it heard while it waits for something (bounded waits).
POLL_S = 0.02
# Heartbeats kept: one a second a node; a kill loop of hours keeps fewer.
MAX_BEATS = 100_000


@dataclass(frozen=True)
class Plan:
    kills: int = 20
    rate: float = 400.0  # the kill loop's clients' orders/s, in all
    settle_s: float = 2.0  # trading before each kill
    duration: float = 5.0  # each throughput phase
    ack_rate: float = 1_000.0  # the open-loop rate all three wirings are measured at
    sequencers: int = 2
    gateways: int = 2
    pairs: int = 2  # the kill loop's (seller, buyer) clients
    throughput: bool = True  # False: the kill loop alone (on R3)


class Heard:
    """Every sequencer's heartbeats, as they come, with when they came."""

    def __init__(self) -> None:
        self.beats: list[takeover.Beat] = []

    async def heard(self, msg: Msg) -> None:
        status = nodestatus.decode(msg.data)
        if len(self.beats) < MAX_BEATS:
            self.beats.append(takeover.Beat(time.monotonic(), status.node_id, status.role))

    def latest(self, since: float = 0.0) -> dict[str, str]:
        """Each node's role in its newest heartbeat heard after `since`."""
        roles: dict[str, str] = {}
        for beat in self.beats:
            if beat.at > since:
                roles[beat.node] = beat.role
        return roles


async def until(check: Callable[[], bool], bound: float) -> None:
    """Until `check()` holds; TimeoutError past `bound` seconds."""
    async with asyncio.timeout(bound):
        while not check():  # bounded by the timeout
            await asyncio.sleep(POLL_S)


def accepted_since(probes: Sequence[probe.Probe], moment: float) -> bool:
    """Some client got `accepted` for an order sent at or after `moment`."""
    for client in probes:
        for answer in reversed(client.answers):  # newest first, back to `moment`
            if answer.at < moment:
                break
            if answer.outcome == takeover.ACCEPTED and answer.sent >= moment:
                return True
    return False


def settled(probes: Sequence[probe.Probe], moment: float) -> bool:
    """No order sent before `moment` (the takeover) still awaits its answer, and none
    answered UNAVAILABLE waits to be resent: what a kill cost is counted in its own window,
    not the next one's."""
    return all((p.oldest_pending() or moment) >= moment and not p.to_resend for p in probes)


async def settle(probes: Sequence[probe.Probe], moment: float) -> None:
    """Until `settled(probes, moment)` (bounded)."""
    await until(lambda: settled(probes, moment), ANSWERED_BOUND_S)


@contextlib.asynccontextmanager
async def heartbeats(urls: list[str]) -> AsyncIterator[Heard]:
    heard = Heard()
    nc = await nats.connect(servers=urls)
    try:
        await nc.subscribe(nodestatus.STATUS_SUBJECTS, cb=heard.heard)
        yield heard
    finally:
        await nc.close()


async def kill_loop(cluster: LocalCluster, plan: Plan) -> dict[str, Any]:
    """The kills under load, and what the clients and the heartbeats saw."""
    token = bench_roles.ADMIN_TOKEN
    symbol, keys = await probe.set_up(cluster.http_urls[0], token, plan.pairs)
    for url in cluster.http_urls:
        await probe.caught_up(url, token, keys[-1], symbol)
    probes = [
        probe.Probe(f"p{i}", cluster.urls[i % len(cluster.urls)], key, symbol,
                    "sell" if i % 2 == 0 else "buy", plan.rate / len(keys))
        for i, key in enumerate(keys)
    ]  # fmt: skip
    kills: list[takeover.Kill] = []
    stopped_early: str | None = None  # why the loop stopped before its last kill
    stop = asyncio.Event()
    async with heartbeats(cluster.nats_urls) as heard, aiohttp.ClientSession() as session:
        trading = [asyncio.create_task(p.run(session, stop)) for p in probes]
        try:
            started = time.monotonic()
            nodes = set(cluster.sequencers)
            await until(lambda: sorted(heard.latest(started).values())
                        == sorted(["leader"] + ["standby"] * (len(nodes) - 1)),
                        REJOIN_BOUND_S)  # fmt: skip
            for number in range(1, plan.kills + 1):
                await asyncio.sleep(plan.settle_s)  # trading before the kill
                kill = await _kill_leader(cluster, heard)
                kills.append(kill)
                if not await _taken_over(kill, heard, probes):
                    stopped_early = f"kill {number}: no takeover within {TAKEOVER_BOUND_S:g} s"
                    break
                taken = time.monotonic()
                progress(f"kill {number}/{plan.kills}: {kill.node} killed, taken over")
                try:
                    await _rejoin(cluster, kill, heard)
                    await settle(probes, taken)
                except (TimeoutError, RuntimeError) as problem:
                    stopped_early = (f"kill {number}: {kill.node} not back as a standby, or "
                                     f"orders still unanswered, within bounds ({problem!r})")
                    break
            if stopped_early is None:
                await asyncio.sleep(plan.settle_s)
                await settle(probes, time.monotonic())
            else:
                progress(f"{stopped_early}; stopping (the figures so far are reported)")
        finally:
            stop.set()
            await _drained(trading)
        end = time.monotonic()
        answers = sorted((a for p in probes for a in p.answers), key=lambda a: a.at)
        found = takeover.takeovers(kills, end, answers, heard.beats)
    return {
        "wiring": f"{len(cluster.nats.nodes)} NATS nodes (R{len(cluster.nats.nodes)}), "
        f"{len(cluster.sequencers)} sequencers, {len(cluster.gateways)} gateways",
        "rate": plan.rate,
        "clients": len(probes),
        "answers": len(answers),
        "accepted": sum(1 for a in answers if a.outcome == takeover.ACCEPTED),
        "resends": sum(p.resends for p in probes),
        "unresolved_at_end": sum(p.unresolved for p in probes),
        "held_back": sum(p.held_back for p in probes),
        "answers_dropped": sum(p.dropped for p in probes),
        "stopped_early": stopped_early,
        **takeover.summary(found),
    }


async def _drained(trading: list["asyncio.Task[None]"]) -> None:
    """The clients' ends: what is still unanswered after DRAIN_BOUND_S stays unresolved
    (counted); a client that failed fails the run."""
    _, late = await asyncio.wait(trading, timeout=DRAIN_BOUND_S)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    for task in trading:
        if task not in late:
            task.result()  # raises what stopped a client


async def _taken_over(kill: takeover.Kill, heard: Heard, probes: Sequence[probe.Probe]) -> bool:
    """Until another node's heartbeat says leader and a client got `accepted` for an order
    sent after the kill; False past TAKEOVER_BOUND_S."""

    def done() -> bool:
        others = (role for node, role in heard.latest(kill.at).items() if node != kill.node)
        return "leader" in others and accepted_since(probes, kill.at)

    try:
        await until(done, TAKEOVER_BOUND_S)
    except TimeoutError:
        return False
    return True


async def _rejoin(cluster: LocalCluster, kill: takeover.Kill, heard: Heard) -> None:
    """The killed node restarted, until its heartbeat says standby (bounded)."""
    await cluster.restart(kill.node)
    back = time.monotonic()
    await until(lambda: heard.latest(back).get(kill.node) == "standby", REJOIN_BOUND_S)


async def _kill_leader(cluster: LocalCluster, heard: Heard) -> takeover.Kill:
    leaders = [n for n, role in heard.latest().items() if role == "leader"]
    if len(leaders) != 1:
        raise RuntimeError(f"not one leader before a kill: {heard.latest()}")
    at = time.monotonic()
    await cluster.kill(leaders[0])
    return takeover.Kill(at, leaders[0])


async def throughput(urls: list[str], plan: Plan, report_dir: Path, name: str) -> dict[str, Any]:
    """The closed-loop peak, then the plan's fixed rate, open loop, through `urls`."""

    def run(rate: str, part: str) -> list[str]:
        return ["run", *(a for url in urls for a in ("--url", url)),
                "--admin-token", bench_roles.ADMIN_TOKEN, "--duration", str(plan.duration),
                "--rate", rate, "--report", str(report_dir / f"{name}-{part}.json")]  # fmt: skip

    progress(f"{name}: peak, closed loop")
    peak = await phase(run("max", "peak"), plan.duration)
    progress(f"{name}: {plan.ack_rate:g} orders/s, open loop")
    fixed = await phase(run(str(plan.ack_rate), "rate"), plan.duration)
    return {
        "peak_orders_per_s": peak["orders_per_s"],
        "peak_ack_p99_ms": peak["ack_ms"]["p99"],
        "rate": plan.ack_rate,
        "rate_orders_per_s": fixed["orders_per_s"],
        "rate_ack_p99_ms": fixed["ack_ms"]["p99"],
        "rejects": dict(Counter(peak["rejects"]) + Counter(fixed["rejects"])),
    }


async def main(plan: Plan) -> dict[str, Any]:
    result: dict[str, Any] = {"plan": asdict(plan), "throughput": {}}
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as name:
        directory = Path(name)
        if plan.throughput:
            progress("starting exchange serve")
            async with bench_roles.single(directory) as (_, urls):
                result["throughput"]["single"] = await throughput(urls, plan, directory, "single")
        for replicas in (1, 3) if plan.throughput else (3,):
            progress(f"starting R{replicas}: {replicas} nats-server(s), {plan.sequencers} "
                     f"sequencers, {plan.gateways} gateways")  # fmt: skip
            async with local_cluster(
                directory / f"r{replicas}", replicas, plan.sequencers, plan.gateways
            ) as cluster:
                if plan.throughput:
                    result["throughput"][f"r{replicas}"] = await throughput(
                        cluster.urls, plan, directory, f"r{replicas}"
                    )
                if replicas == 3 and plan.kills:
                    progress(f"kill loop: {plan.kills} kills of the leader at {plan.rate:g} "
                             "orders/s")  # fmt: skip
                    result["takeover"] = await kill_loop(cluster, plan)
    return result


def _s(spread: dict[str, float | None]) -> str:
    if spread["median"] is None or spread["max"] is None:
        return "none"
    return f"median {spread['median']:.2f} s, max {spread['max']:.2f} s"


def human(result: dict[str, Any]) -> str:
    """A few lines: the takeover's figures, then each wiring's."""
    lines = []
    t = result.get("takeover")
    if t is not None:
        lines += [
            (f"takeover ({t['wiring']}, {t['rate']:g} orders/s): {t['taken_over']} of "
             f"{t['kills']} kills taken over"),
            *([f"  stopped early: {t['stopped_early']}"] if t["stopped_early"] else []),
            f"  kill to first accepted answer: {_s(t['to_accepted_s'])}",
            f"  kill to new leader's heartbeat: {_s(t['to_leader_s'])}",
            (f"  longest without an accepted answer: {_s(t['silence_s'])}; "
             f"without any answer: {_s(t['quiet_s'])}"),
            (f"  answered UNAVAILABLE: {t['unavailable']['total']:,} in all, at most "
             f"{t['unavailable']['max']:,} a kill; {t['resends']:,} resends"),
        ]  # fmt: skip
    for name, w in result["throughput"].items():
        lines.append(
            f"{name:<6} peak {w['peak_orders_per_s']:>9,.0f} orders/s (ack p99 "
            f"{w['peak_ack_p99_ms']:.1f} ms); at {w['rate']:g}/s ack p99 "
            f"{w['rate_ack_p99_ms']:.2f} ms"
        )
    return "\n".join(lines)


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_failover", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    defaults = Plan()
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--rate", type=float, default=defaults.rate,
                        help="the kill loop's orders/s, in all")  # fmt: skip
    parser.add_argument("--settle", type=float, default=defaults.settle_s,
                        help="seconds of trading before each kill")  # fmt: skip
    parser.add_argument("--duration", type=float, default=defaults.duration,
                        help="seconds of each throughput phase")  # fmt: skip
    parser.add_argument("--ack-rate", type=float, default=defaults.ack_rate,
                        help="the open-loop orders/s of each wiring's ack p99")  # fmt: skip
    parser.add_argument("--sequencers", type=int, default=defaults.sequencers)
    parser.add_argument("--gateways", type=int, default=defaults.gateways)
    parser.add_argument("--no-throughput", action="store_true", help="the kill loop alone")
    args = parser.parse_args(argv)
    if args.kills < 0 or args.rate <= 0 or args.settle < 0 or args.duration <= 0:
        parser.error("--kills >= 0; --rate, --duration > 0; --settle >= 0")
    if args.kills and args.sequencers < 2:
        parser.error("a kill loop needs --sequencers 2 or more (a standby to take over)")
    if args.gateways < 1 or args.ack_rate <= 0:
        parser.error("--gateways >= 1, --ack-rate > 0")
    plan = Plan(args.kills, args.rate, args.settle, args.duration, args.ack_rate,
                args.sequencers, args.gateways, throughput=not args.no_throughput)  # fmt: skip
    result = asyncio.run(main(plan))
    print(human(result), file=sys.stderr, flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    cli()
