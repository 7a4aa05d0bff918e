"""End to end, roles as processes: a real nats-server, `exchange sequencer` and two or three
`exchange gateway` processes on 127.0.0.1, real sockets.

An order placed through one gateway is answered there and its fills reach the
counterparty's session on the other; both gateways show the same book, seqs and orders;
a gateway started late builds the same read side; bad messages on the command subject
are refused and never journaled."""

import asyncio
from pathlib import Path

import msgspec
import nats

from exchange import natswire
from exchange.domain.commands import CreateAccount
from exchange.natsserver import NatsNode
from exchange.sequencer_node import BAD_MESSAGE_LINES_PER_S
from gateway.client import Admin, Client, RefusedError
from tests.cluster_trading import ANSWER_WAIT_S, market, reads, trade
from tests.server import ADMIN_TOKEN, RunningServer, start_role, stop
from tests.wirings import roles

pytest_plugins = ("tests.nats_fixtures",)


async def test_two_gateways_answer_their_own_clients_and_agree_on_everything(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with roles(nats_server, tmp_path / "sequencer", gateways=2) as cluster:
        one, other = cluster.gateways
        async with Admin(one.base_url, ADMIN_TOKEN) as admin:
            keys = await market(admin)
        await trade(one, other, keys)
        seen = [await reads(gateway, keys) for gateway in (one, other)]
        assert seen[0] == seen[1]
        assert seen[0]["book"]["asks"] == [["5.00", 6]]
        assert [o["status"] for o in seen[0]["orders"]["bob"]["orders"]] == ["open"]

        # A gateway started after all that builds the same read side from the stream.
        late = await cluster.add_gateway()
        assert await reads(late, keys) == seen[0]


async def test_bad_messages_on_the_command_subject_are_refused_and_never_journaled(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    async with roles(nats_server, tmp_path / "sequencer", gateways=1) as cluster:
        (gateway,) = cluster.gateways
        async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
            await admin.account("before")
            before = (await admin.ok("GET", "/healthz"))["seq"]
        client = await nats.connect(servers=[nats_server.url])
        try:
            valid = CreateAccount(name="sneaked", api_key_hash="0" * 64)
            sent = [natswire.Sent(1, valid)]
            stale = natswire.CommandMessage(natswire.WIRE_VERSION + 1, "abcdef12", sent)
            bad_messages = [
                b"\xc1not msgpack",
                b"\x92\x01",  # a two-element array: not a command message
                natswire.encode(stale),  # a schema version this build does not speak
                b"\x94" + bytes(natswire.MAX_COMMAND_BYTES + 10),  # past the size bound
                msgspec.msgpack.encode([natswire.WIRE_VERSION, "NOT-HEX", [[1, ["x"]]]]),
            ]
            for data in bad_messages:
                await client.publish(natswire.COMMANDS, data)
            await client.flush()
        finally:
            await client.close()
        # One line each (within the sequencer's budget of lines a second for them), once
        # its output has reached the test's copy of it: then all were handled.
        assert len(bad_messages) <= BAD_MESSAGE_LINES_PER_S
        async with asyncio.timeout(ANSWER_WAIT_S):
            while refused_lines(cluster.sequencer) < len(bad_messages):  # bounded by it
                await asyncio.sleep(0.02)
        async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
            await admin.account("after")  # the sequencer still serves, after all of them
            after = (await admin.ok("GET", "/healthz"))["seq"]
        assert after == before + 1, "nothing of the bad messages was journaled"
        assert refused_lines(cluster.sequencer) == len(bad_messages), cluster.sequencer.log()


def refused_lines(role: RunningServer) -> int:
    return sum("refused a message" in line for line in list(role.output))


async def test_a_batch_stored_twice_in_the_stream_is_applied_once(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    """JetStream forgets a message id after its duplicate window: a publish retried after
    it could store a batch twice (before the fence; another writer still can). Gateways
    apply each seq once. The leader's next append is refused (the stream moved on
    without it): it steps down, finds the stream holds nothing new, and leads again."""
    async with roles(nats_server, tmp_path / "sequencer", gateways=2) as cluster:
        one, other = cluster.gateways
        async with Admin(one.base_url, ADMIN_TOKEN) as admin:
            keys = await market(admin)
        await trade(one, other, keys)
        before = [await reads(gateway, keys) for gateway in (one, other)]
        client = await nats.connect(servers=[nats_server.url])
        try:
            js = client.jetstream()
            last = await js.get_last_msg(natswire.STREAM, natswire.BATCHES)
            await js.publish(natswire.BATCHES, last.data or b"", stream=natswire.STREAM,
                             headers={"Nats-Msg-Id": "a-retry-after-the-window"})  # fmt: skip
        finally:
            await client.close()
        async with Admin(one.base_url, ADMIN_TOKEN) as admin:
            for _ in range(MAX_SENDS):  # a record after the duplicate, through the stream
                try:
                    await admin.account("later")
                    break
                except RefusedError as refused:  # answered while the leader stepped down
                    if refused.payload["code"] != "UNAVAILABLE":
                        raise
        assert "steps down" in cluster.sequencer.log()
        after = [await reads(gateway, keys) for gateway in (one, other)]
        assert after == before


async def test_a_stream_message_a_gateway_cannot_read_stops_it_in_one_line(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    """A read side that skipped a record would answer wrongly for ever after: the gateway
    stops (status 2, one line) instead."""
    async with roles(nats_server, tmp_path / "sequencer", gateways=1) as cluster:
        (gateway,) = cluster.gateways
        client = await nats.connect(servers=[nats_server.url])
        try:
            stale = natswire.encode(natswire.BatchMessage(natswire.WIRE_VERSION + 1, 1, [], True))
            await client.jetstream().publish(natswire.BATCHES, stale, stream=natswire.STREAM)
        finally:
            await client.close()
        async with asyncio.timeout(ANSWER_WAIT_S):
            await gateway.process.wait()
        status = await stop(gateway)  # collects the rest of its output too
        assert status == 2, gateway.log()
        assert "exchange: gateway stopped: stream message" in gateway.log()
        assert gateway.tracebacks == 0, gateway.log()
        # The sequencer cannot read the stream's end either: it goes on for now, and a
        # restart of it would stop with one line (the stream needs a person's look).


# Orders of the sequencer-kill test, and after which of them the sequencer is killed.
ORDERS = 16
KILL_AFTER = 8
# Sends of one order at most: the first, and resends after UNAVAILABLE answers.
MAX_SENDS = 4


async def test_a_sequencer_killed_and_restarted_loses_nothing_acknowledged(
    nats_server: NatsNode, tmp_path: Path
) -> None:
    """kill -9 of the sequencer between orders: an order sent while it is gone is answered
    UNAVAILABLE; resent with the same client_order_id after the restart it is placed once;
    every order answered `accepted` is there, the gateway's read side equal to a fresh one."""
    data_dir = tmp_path / "sequencer"
    async with roles(nats_server, data_dir, gateways=1) as cluster:
        (gateway,) = cluster.gateways
        async with Admin(gateway.base_url, ADMIN_TOKEN) as admin:
            keys = await market(admin)
        accepted: dict[str, str] = {}  # client_order_id -> order_id
        unavailable = 0
        restarted: RunningServer | None = None
        try:
            async with await Client.connect(gateway.ws_url, keys["bob"]) as bob:
                for n in range(ORDERS):
                    if n == KILL_AFTER:
                        cluster.sequencer.process.kill()
                        await cluster.sequencer.process.wait()
                    cid = f"o-{n}"
                    for _ in range(MAX_SENDS):  # bounded resends of the same order
                        answer = await bob.place("XYZ", "sell", 1, f"{6 + n / 100:.2f}",
                                                 client_order_id=cid)  # fmt: skip
                        if answer.get("code") != "UNAVAILABLE":
                            break
                        unavailable += 1
                        if restarted is None:  # the operator's restart
                            args = ["sequencer", "--nats", nats_server.url, "--data-dir",
                                    str(data_dir)]  # fmt: skip
                            restarted = await start_role(args, 0, data_dir, "exchange sequencer")
                    assert answer["type"] == "accepted", answer
                    accepted[cid] = answer["order_id"]
            assert unavailable >= 1, "an order was sent while the sequencer was gone"
            assert restarted is not None
            late = await cluster.add_gateway()
            for server in (gateway, late):
                async with Admin(server.base_url, ADMIN_TOKEN) as admin:
                    orders = await admin.ok("GET", "/v1/orders?status=all", token=keys["bob"])
                mine = {o["client_order_id"]: o["order_id"] for o in orders["orders"]
                        if o["client_order_id"].startswith("o-")}  # fmt: skip
                assert mine == accepted, "every accepted order, each once"
            assert await reads(gateway, keys) == await reads(late, keys)
        finally:
            if restarted is not None:
                assert await stop(restarted) == 0, restarted.log()
                assert restarted.tracebacks == 0, restarted.log()
