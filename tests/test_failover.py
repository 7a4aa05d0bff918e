"""Failover over a real nats-server, with real `exchange sequencer` processes: a leader and
a standby, a gateway, and clients streaming orders through it (resending each order with
the same client_order_id while it is answered UNAVAILABLE, as docs/PROTOCOL.md says).

- kill -9 of the leader: the standby leads within 5 s; every order answered `accepted`
  is there once, with the id it was answered with; the killed node, restarted, rejoins
  as a standby; both sequencers' state hashes equal a clean replay of the stream.
- a stale leader (SIGSTOP past its lease; the standby takes over and trades; SIGCONT):
  it steps down and cuts what the stream does not hold; nothing it held was answered
  `accepted`; the hashes converge.
- NATS killed and restarted: the standby lives through it (it looks again), then leads
  when the leader is killed.
- the kill loop (slow): the same kill, 20 times, leaders alternating (its gateway
  answers a lost command UNAVAILABLE after 1 s: the hidden --answer-timeout-s).
- the leader's local fsync fails (the hidden `--fail-sync-when`, exchange/journal/
  faulty.py): the batch is never answered `accepted` and never in the stream; the node
  exits with status 2 and one line, the standby leads, and the node restarted rejoins as a
  standby, cutting the batch its journal holds unsynced.
"""

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from exchange.natsserver import NatsNode
from gateway.client import Admin, Client
from tests.cluster_trading import RESEND_PAUSE_S, RETRY_CODES, market
from tests.sequencers import (
    NodeWatch,
    journal_records,
    start_sequencer,
    state_hash,
    stream_hash,
    stream_records,
    watching,
)
from tests.server import ADMIN_TOKEN, RunningServer, stop
from tests.wirings import Roles, roles

pytest_plugins = ("tests.nats_fixtures",)

# The API's promise: a standby leads within this of the leader's death.
TAKEOVER_S = 5.0
# A node started or caught up, and a whole test, on a loaded 2-core machine.
CATCH_UP_S = 30.0
TEST_TIMEOUT_S = 150.0
# Sends of one order at most: UNAVAILABLE answers come while no one leads (5 s each),
# BUSY ones at once (RESEND_PAUSE_S apart) while a failing leader stops.
MAX_SENDS = 200
# Orders each trader places between faults.
ORDERS_BETWEEN = 4
KILL_LOOPS = 20
LOOP_ORDERS = 2  # each trader's orders around each kill of the loop
# The kill loop's gateway answers a command lost with a killed leader UNAVAILABLE after
# this (the hidden --answer-timeout-s), not ANSWER_TIMEOUT_S: the 5 s wait for the order on
# its way at each kill was what paced the loop (~5 s a kill); the lease's 2 s lapse, the
# takeover and the killed node's restart now do (~3.5 s). More resends, each answered
# with the original.
LOOP_ANSWER_TIMEOUT_S = 1.0
# The kill loop's bound: about 3.5 s a kill, up to twice that on a loaded machine.
KILL_LOOP_TIMEOUT_S = 240.0

Message = dict[str, Any]


@dataclass
class Trader:
    """One account sending orders one after another, each resent until answered."""

    name: str
    client: Client
    side: str
    price: str
    answers: dict[str, Message] = field(default_factory=dict)  # cid -> final answer
    resent: set[str] = field(default_factory=set)
    count: int = 0

    async def place(self, orders: int) -> None:
        for _ in range(orders):
            cid = f"{self.name}-{self.count}"
            self.count += 1
            for _ in range(MAX_SENDS):  # bounded resends of the same order
                answer = await self.client.place("XYZ", self.side, 1, self.price,
                                                 client_order_id=cid)  # fmt: skip
                if answer.get("code") not in RETRY_CODES:
                    break
                self.resent.add(cid)
                await asyncio.sleep(RESEND_PAUSE_S)
            assert answer["type"] == "accepted", answer
            self.answers[cid] = answer


@dataclass
class Market:
    cluster: Roles
    nodes: NodeWatch
    dirs: dict[str, Path]
    sequencers: dict[str, RunningServer]
    traders: list[Trader]
    keys: dict[str, str]

    @property
    def gateway(self) -> RunningServer:
        """The first gateway still running (a test may kill one)."""
        return next(g for g in self.cluster.gateways if g.process.returncode is None)

    def leader(self) -> str:
        leaders = [n for n, s in self.nodes.latest.items() if s.role == "leader"]
        assert len(leaders) == 1, self.nodes.latest
        return leaders[0]

    async def trade(self, orders: int = ORDERS_BETWEEN) -> None:
        await asyncio.gather(*(t.place(orders) for t in self.traders))

    async def restart(self, node_id: str) -> None:
        self.sequencers[node_id] = await start_sequencer(
            self.cluster.nats.url, self.dirs[node_id], node_id
        )

    async def until_role(self, node_id: str, role: str, timeout: float) -> None:
        await self.nodes.until(lambda latest: node_id in latest
                               and latest[node_id].role == role, timeout)  # fmt: skip

    async def until_level(self, timeout: float = CATCH_UP_S) -> None:
        """Every live sequencer has applied the gateway's last seq."""
        async with Admin(self.gateway.base_url, ADMIN_TOKEN) as admin:
            seq = (await admin.ok("GET", "/healthz"))["seq"]
        live = [n for n, s in self.sequencers.items() if s.process.returncode is None]
        await self.nodes.until(lambda latest: all(
            n in latest and latest[n].applied_seq >= seq for n in live), timeout)  # fmt: skip

    async def check_orders(self) -> None:
        """Every accepted order listed once, with the id it was answered with."""
        async with Admin(self.gateway.base_url, ADMIN_TOKEN) as admin:
            for trader in self.traders:
                listed = (await admin.ok("GET", "/v1/orders?status=all",
                                         token=self.keys[trader.name]))["orders"]  # fmt: skip
                counts = Counter(o["client_order_id"] for o in listed)
                assert max(counts.values()) == 1, f"{trader.name}: a cid made two orders"
                mine = {o["client_order_id"]: o["order_id"] for o in listed}
                answered = {cid: a["order_id"] for cid, a in trader.answers.items()}
                assert mine == answered, trader.name

    async def stop_all_and_compare(self) -> None:
        for sequencer in self.sequencers.values():
            if sequencer.process.returncode is None:
                assert await stop(sequencer) == 0, sequencer.log()
            else:
                await stop(sequencer)
        hashes = {n: state_hash(d) for n, d in self.dirs.items()}
        assert len(set(hashes.values())) == 1, hashes
        assert next(iter(hashes.values())) == await stream_hash(self.cluster.nats.url)


@contextlib.asynccontextmanager
async def failover_market(
    nats_server: NatsNode, base: Path, timeout: float = TEST_TIMEOUT_S,
    leader_args: tuple[str, ...] = (), gateway_args: tuple[str, ...] = (), gateways: int = 1,
) -> AsyncIterator[Market]:  # fmt: skip
    """sequencer-1 (started with `leader_args` too) leads, sequencer-2 follows;
    `gateways` gateways (started with `gateway_args`); the traders trade through the
    first."""
    dirs = {"sequencer-1": base / "s1", "sequencer-2": base / "s2"}
    async with (
        asyncio.timeout(timeout),
        watching(nats_server.url) as nodes,
        roles(nats_server, dirs["sequencer-1"], gateways=0, sequencer_args=leader_args) as cluster,
    ):
        for _ in range(gateways):
            await cluster.add_gateway(*gateway_args)
        sequencers = {"sequencer-1": cluster.sequencer}
        market_ = None
        try:
            sequencers["sequencer-2"] = await start_sequencer(
                nats_server.url, dirs["sequencer-2"], "sequencer-2"
            )
            async with Admin(cluster.gateways[0].base_url, ADMIN_TOKEN) as admin:
                keys = await market(admin)
            async with (
                await Client.connect(cluster.gateways[0].ws_url, keys["bob"]) as bob,
                await Client.connect(cluster.gateways[0].ws_url, keys["alice"]) as alice,
            ):
                traders = [
                    Trader("bob", bob, "sell", "6.00"), Trader("alice", alice, "buy", "4.00")
                ]
                market_ = Market(cluster, nodes, dirs, sequencers, traders, keys)
                await market_.until_role("sequencer-2", "standby", CATCH_UP_S)
                yield market_
        finally:
            for sequencer in sequencers.values():
                if sequencer is not cluster.sequencer and sequencer.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        sequencer.process.send_signal(signal.SIGCONT)
                    await stop(sequencer)
            with contextlib.suppress(ProcessLookupError):
                cluster.sequencer.process.send_signal(signal.SIGCONT)


async def kill_leader_and_take_over(m: Market, orders: int = ORDERS_BETWEEN) -> None:
    """kill -9 the leader while the traders stream orders; the other leads within
    TAKEOVER_S; the killed one restarts and rejoins as a standby."""
    leader = m.leader()
    other = next(n for n in m.dirs if n != leader)
    trading = asyncio.create_task(m.trade(orders))
    await asyncio.sleep(0)  # the traders' first orders are on their way
    m.sequencers[leader].process.kill()
    await m.sequencers[leader].process.wait()
    await m.until_role(other, "leader", TAKEOVER_S)
    await m.restart(leader)  # ready once it follows as a standby
    await trading
    assert m.nodes.role(leader) != "leader"


async def test_a_killed_leader_is_replaced_and_loses_nothing_acknowledged(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with failover_market(nats_server, tmp_path) as m:
        await m.trade()
        assert m.leader() == "sequencer-1"
        await kill_leader_and_take_over(m)
        assert m.leader() == "sequencer-2"
        await m.trade()  # the new leader trades
        await m.check_orders()
        await m.until_level()
        await m.stop_all_and_compare()


async def test_a_stale_leader_steps_down_and_cuts_what_the_stream_does_not_hold(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with failover_market(nats_server, tmp_path) as m:
        await m.trade()
        stale = m.sequencers["sequencer-1"]
        stale.process.send_signal(signal.SIGSTOP)
        trading = asyncio.create_task(m.trade())  # sent to both; only the new leader answers
        await m.until_role("sequencer-2", "leader", TAKEOVER_S + CATCH_UP_S)
        await trading
        await m.trade()  # the new leader trades on
        stale.process.send_signal(signal.SIGCONT)
        await m.until_role("sequencer-1", "standby", CATCH_UP_S)
        async with asyncio.timeout(CATCH_UP_S):
            while "rejoins as a standby" not in stale.log():  # bounded by the timeout
                await asyncio.sleep(0.05)
        assert "steps down" in stale.log() or "lease was lost" in stale.log(), stale.log()
        await m.trade()
        await m.check_orders()  # nothing the stale leader held was answered accepted
        await m.until_level()
        await m.stop_all_and_compare()
        assert stale.tracebacks == 0, stale.log()


async def test_a_standby_outlives_a_nats_outage_and_then_takes_over(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with failover_market(nats_server, tmp_path) as m:
        await m.trade()
        standby = m.sequencers["sequencer-2"]
        await nats_server.kill()
        async with asyncio.timeout(CATCH_UP_S):  # NATS stays away until the standby saw it
            while "cannot read the stream" not in standby.log():  # bounded by the timeout
                await asyncio.sleep(0.05)
        await nats_server.start()  # the same port and store directory
        await kill_leader_and_take_over(m)  # the standby that lived through it leads
        assert m.leader() == "sequencer-2"
        await m.trade()
        await m.check_orders()
        await m.until_level()
        await m.stop_all_and_compare()
        assert standby.tracebacks == 0, standby.log()


@pytest.mark.slow
async def test_twenty_leader_kills_lose_nothing_acknowledged(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    answer_timeout = ("--answer-timeout-s", str(LOOP_ANSWER_TIMEOUT_S))
    async with failover_market(
        nats_server, tmp_path, KILL_LOOP_TIMEOUT_S, gateway_args=answer_timeout
    ) as m:
        for _ in range(KILL_LOOPS):
            await kill_leader_and_take_over(m, LOOP_ORDERS)
        await m.check_orders()
        await m.until_level()
        await m.stop_all_and_compare()


async def test_a_leader_whose_fsync_fails_answers_nothing_of_that_batch_and_another_leads(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    trigger = tmp_path / "fail-sync"  # while it exists, sequencer-1's fsyncs fail (EIO)
    async with failover_market(
        nats_server, tmp_path, leader_args=("--fail-sync-when", str(trigger))
    ) as m:
        await m.trade()
        assert m.leader() == "sequencer-1"
        failing = m.sequencers["sequencer-1"]
        trigger.touch()
        await m.trade()  # refused (UNAVAILABLE, BUSY) or unanswered, resent: the other places it
        assert await failing.process.wait() == 2, failing.log()  # bounded by the test's timeout
        await stop(failing)
        assert "exchange stopped: journal write failed" in failing.log(), failing.log()
        assert "injected fsync failure" in failing.log()
        await m.until_role("sequencer-2", "leader", TAKEOVER_S)
        # The batch whose sync failed is in sequencer-1's journal (written, never known
        # durable) and none of its records is in the stream: gateways answer only from it.
        stream = await stream_records(nats_server.url)
        held = dict(stream)
        mine = [(seq, payload) for seq, payload, _ in journal_records(m.dirs["sequencer-1"])]
        unsynced = [(seq, p) for seq, p in mine if held.get(seq) != p]
        assert unsynced, "the failed batch was not written at all"
        assert [seq for seq, _ in unsynced] == list(range(unsynced[0][0], mine[-1][0] + 1))
        assert not {p for _, p in unsynced} & {p for _, p in stream}
        trigger.unlink()
        await m.restart("sequencer-1")  # its journal differs from the stream: it cuts the batch
        await m.trade()
        async with asyncio.timeout(CATCH_UP_S):
            while "rejoins as a standby" not in m.sequencers["sequencer-1"].log():  # bounded
                await asyncio.sleep(0.05)
        assert m.nodes.role("sequencer-2") == "leader"
        await m.check_orders()  # every cid once, with the order id it was answered with
        await m.until_level()
        await m.stop_all_and_compare()
