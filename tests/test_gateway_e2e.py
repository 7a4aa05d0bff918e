"""End to end: the real server on 127.0.0.1, real sockets, the client library.

Each test runs against both wirings (tests/wirings.py): `single`, one `exchange serve`,
and `cluster`, a nats-server, `exchange sequencer` and `exchange gateway`. `market` is a
fresh demo market per test (for tests that read state others change); `shared_market` one
per wiring for the whole module (for tests that only look at what they did themselves).
Tests marked `single_only` are about the one process alone (its data dir, its journal).
"""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from gateway.client import Admin, Client, LocalBook
from tests.raw_ws import OP_CLOSE, OP_TEXT, RawWebSocket
from tests.server import ADMIN_TOKEN, RunningServer, metrics, running, stop
from tests.wirings import WIRINGS, serving

# One loop for the module: the shared markets' processes are read by tasks on it.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(params=WIRINGS)
def wiring(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture(loop_scope="module")
async def market(wiring: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with serving(wiring, tmp_path, demo=True) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=WIRINGS)
async def shared_market(  # type: ignore[no-untyped-def]
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
):
    base = tmp_path_factory.mktemp(str(request.param))
    async with serving(str(request.param), base, demo=True) as server:
        yield server


async def test_an_offering_then_secondary_trading_between_two_accounts(
    shared_market: RunningServer,
) -> None:
    server = shared_market
    async with Admin(server.base_url, ADMIN_TOKEN) as admin:
        issuer, issuer_key = await admin.account("issuer")
        alice, alice_key = await admin.account("alice", "10000.00")
        bob, bob_key = await admin.account("bob", "10000.00")
        listing = {"symbol": "NEWCO", "kind": "share", "tick_size": "0.01", "issuer": issuer}
        await admin.ok("POST", "/v1/admin/instruments", listing)
        terms = {"symbol": "NEWCO", "price": "5.00", "qty": 1000}
        offering = await admin.ok("POST", "/v1/admin/offerings", terms)
        async with (
            await Client.connect(server.ws_url) as a,
            await Client.connect(server.ws_url) as b,
        ):
            assert (await a.auth(alice_key))["account"] == alice
            assert (await b.auth(bob_key))["account"] == bob
            sub = await a.request(
                "subscribe_offering", offering_id=offering["offering_id"], qty=600
            )
            assert sub["type"] == "offering_subscribed"
            await b.request("subscribe_offering", offering_id=offering["offering_id"], qty=600)
            closed = await admin.ok("POST", f"/v1/admin/offerings/{offering['offering_id']}/close")
            assert (closed["issued"], closed["proceeds"]) == (1000, "5000.00")
            account = await admin.ok("GET", "/v1/account", token=alice_key)
            assert account["positions"] == {"NEWCO": 500}
            assert account["cash"] == "7500.00"
            # The offering's instrument opens through a call auction; nothing rests yet.
            opened = await admin.ok("POST", "/v1/admin/instruments/NEWCO/auction")
            assert (opened["status"], "uncrossed" in opened) == ("trading", False)

            ask = await a.place("NEWCO", "sell", 100, "5.50", client_order_id="a-1")
            assert ask["type"] == "accepted"
            taken = await b.place("NEWCO", "buy", 40, "5.60", client_order_id="b-1")
            assert taken["type"] == "accepted"
            taker_fill = await b.next_event("fill")
            assert (taker_fill["price"], taker_fill["qty"], taker_fill["liquidity"]) == (
                "5.50",
                40,
                "taker",
            )
            assert (await b.next_event("done"))["reason"] == "filled"
            maker_fill = await a.next_event("fill")
            assert (maker_fill["order_id"], maker_fill["client_order_id"]) == (
                ask["order_id"],
                "a-1",
            )
            assert maker_fill["remaining"] == 60
        issuer_account = await admin.ok("GET", "/v1/account", token=issuer_key)
        assert issuer_account["cash"] == "5000.00"  # the proceeds went to the issuer
        book = await admin.ok("GET", "/v1/book/NEWCO")
        assert book["asks"] == [["5.50", 60]]
        assert (await admin.ok("GET", "/v1/account", token=bob_key))["positions"] == {"NEWCO": 540}


def demo_key(server: RunningServer, name: str) -> str:
    keys = json.loads((server.data_dir / "demo-keys.json").read_text())
    return str(keys[name]["api_key"])


async def test_the_demo_market_has_a_live_book(market: RunningServer) -> None:
    async with Admin(market.base_url, ADMIN_TOKEN) as admin:
        book = await admin.ok("GET", "/v1/book/ACME")
        assert book["bids"][0] == ["9.95", 100]
        assert book["asks"][0] == ["10.05", 100]
        instruments = {
            i["symbol"]: i for i in (await admin.ok("GET", "/v1/instruments"))["instruments"]
        }
        assert instruments["ACME"]["kind"] == "share"
        assert instruments["BOND"]["kind"] == "bond"
        assert (await admin.ok("GET", "/v1/offerings"))["offerings"][0]["status"] == "closed"


@pytest.mark.parametrize(
    ("order", "code"),
    [
        ({"price": "10.001"}, "OFF_TICK"),
        ({"price": 10.0}, "BAD_PRICE"),
        ({"price": "NaN"}, "BAD_PRICE"),
        ({"price": "1e3"}, "BAD_PRICE"),
        ({"qty": 0}, "BAD_QTY"),
        ({"qty": -5}, "BAD_QTY"),
        ({"qty": 1.5}, "BAD_QTY"),
        ({"qty": 10**12}, "BAD_QTY"),
        ({"symbol": "NOPE"}, "UNKNOWN_SYMBOL"),
        ({"qty": 1_000_000}, "INSUFFICIENT_FUNDS"),
        ({"side": "sell", "qty": 100_000}, "INSUFFICIENT_UNITS"),
        ({"price": "10.05", "post_only": True}, "POST_ONLY_WOULD_TAKE"),
    ],
)
async def test_bad_orders_are_rejected_with_their_code(
    shared_market: RunningServer, order: dict[str, object], code: str
) -> None:
    key = demo_key(shared_market, "alice")
    async with await Client.connect(shared_market.ws_url, key) as client:
        fields: dict[str, object] = {"symbol": "ACME", "side": "buy", "qty": 1, "price": "9.00"}
        answer = await client.request("place", **{**fields, **order})
        assert (answer["type"], answer["code"]) == ("rejected", code), answer


async def test_order_entry_needs_authentication(shared_market: RunningServer) -> None:
    async with await Client.connect(shared_market.ws_url) as client:
        answer = await client.place("ACME", "buy", 1, "9.00")
        assert answer["code"] == "NOT_AUTHENTICATED"
        assert (await client.ping())["type"] == "pong"  # the socket stays usable


async def test_frames_sent_with_the_upgrade_wait_for_the_header_authentication(
    shared_market: RunningServer,
) -> None:
    # The frames reach the server with the upgrade request, so the parser finds them before
    # the handler has checked the Authorization header; they must be handled after it.
    place = (
        '{"op":"place","req_id":2,"symbol":"ACME","side":"buy","qty":1,"price":"9.00",'
        '"client_order_id":"early-1"}'
    )
    ws = await RawWebSocket.connect(
        shared_market.ws_url,
        headers={"Authorization": f"Bearer {demo_key(shared_market, 'alice')}"},
        early=['{"op":"ping","req_id":1}', place],
    )
    try:
        answers: list[tuple[int, str]] = []
        while len(answers) < 2:  # bounded: the two answers, then whatever follows
            frame = await ws.next_frame()
            assert frame.opcode == OP_TEXT, frame
            message = json.loads(frame.payload)
            if "req_id" in message:
                answers.append((message["req_id"], message["type"]))
        assert answers == [(1, "pong"), (2, "accepted")]
    finally:
        ws.close()


async def test_a_wrong_key_closes_with_4001(shared_market: RunningServer) -> None:
    client = await Client.connect(shared_market.ws_url)
    answer = await client.auth("ek_not-a-key")
    assert answer["code"] == "AUTH_FAILED"
    await client._reader
    assert client.close_code == 4001
    await client.close()


async def test_another_accounts_order_cannot_be_cancelled(shared_market: RunningServer) -> None:
    async with (
        await Client.connect(shared_market.ws_url, demo_key(shared_market, "alice")) as alice,
        await Client.connect(shared_market.ws_url, demo_key(shared_market, "bob")) as bob,
    ):
        mine = await alice.place("ACME", "buy", 1, "9.00")
        refused = await bob.cancel(order_id=mine["order_id"])
        assert refused["code"] == "UNKNOWN_ORDER"
        done = await alice.cancel(order_id=mine["order_id"])
        assert (done["type"], done["reason"]) == ("done", "cancelled")


async def test_admin_routes_refuse_a_user_key(shared_market: RunningServer) -> None:
    async with Admin(shared_market.base_url, ADMIN_TOKEN) as admin:
        status, body = await admin.call(
            "POST", "/v1/admin/accounts", {"name": "eve"}, token=demo_key(shared_market, "alice")
        )
        assert (status, body["code"]) == (403, "FORBIDDEN")
        status, body = await admin.call("GET", "/v1/account", token="ek_wrong")
        assert (status, body["code"]) == (401, "AUTH_FAILED")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "BAD_REQUEST"),
        ('{"op":"fly"}', "BAD_REQUEST"),
        ('{"op":"ping","extra":1}', "BAD_REQUEST"),
        ('{"op":"place","symbol":"ACME"}', "BAD_REQUEST"),
        ("[]", "BAD_REQUEST"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_socket_stays_open(
    shared_market: RunningServer, frame: str, code: str
) -> None:
    async with await Client.connect(shared_market.ws_url) as client:
        await client.send_raw(frame)
        error = await client.next_event("error")
        assert error["code"] == code
        assert (await client.ping())["type"] == "pong"


async def test_a_subscribers_book_matches_the_rest_book(market: RunningServer) -> None:
    async with (
        await Client.connect(market.ws_url) as watcher,
        await Client.connect(market.ws_url, demo_key(market, "alice")) as alice,
        await Client.connect(market.ws_url, demo_key(market, "bob")) as bob,
        Admin(market.base_url, ADMIN_TOKEN) as admin,
    ):
        book = LocalBook("ACME")
        await watcher.subscribe(["book", "trades"], ["ACME"])
        assert book.apply(await watcher.next_event("book_snapshot"))
        import random

        rng = random.Random(5)
        for i in range(300):
            trader = alice if i % 2 else bob
            side = rng.choice(["buy", "sell"])
            price = f"{rng.randint(990, 1010) / 100:.2f}"
            answer = await trader.place(
                "ACME", side, rng.randint(1, 30), price, tif=rng.choice(["gtc", "ioc"])
            )
            assert answer["type"] in {"accepted", "rejected"}
        rest = await admin.ok("GET", "/v1/book/ACME?depth=1000")
        while book.seq != rest["seq"]:  # bounded: the watcher receives up to the REST seq
            assert book.apply(await watcher.next_event()), "gap or checksum mismatch"
        assert book.gaps == book.bad_checksums == 0
        assert list(book.levels()) == [rest["bids"], rest["asks"]]


async def test_a_batched_subscriber_gets_one_frame_a_batch_and_the_same_book(
    market: RunningServer,
) -> None:
    """Orders sent together land in shared batches; the batched subscriber gets one frame
    per batch holding its trades then the update, and keeps the very book REST shows. The
    client library unpacks the same frames into the same messages."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(market.ws_url) as raw,
        await Client.connect(market.ws_url) as library,
        await Client.connect(market.ws_url, demo_key(market, "alice")) as alice,
        await Client.connect(market.ws_url, demo_key(market, "bob")) as bob,
        Admin(market.base_url, ADMIN_TOKEN) as admin,
    ):
        await raw.send_json({"op": "subscribe", "channels": ["book", "trades"],
                             "symbols": ["ACME"], "batched": True, "req_id": 1})  # fmt: skip
        assert (await raw.receive_json())["batched"] is True
        book = LocalBook("ACME")
        assert book.apply(await raw.receive_json())  # the snapshot
        assert (await library.subscribe(["book", "trades"], ["ACME"], batched=True))["batched"]
        library_book = LocalBook("ACME")
        assert library_book.apply(await library.next_event("book_snapshot"))
        assert library_book.seq == book.seq  # no trading between the two subscriptions
        for round_ in range(10):
            await asyncio.gather(*(
                (alice if i % 2 else bob).place(
                    "ACME", "sell" if i % 2 else "buy", 3, f"{10 + (i % 5 - 2) / 100:.2f}"
                )
                for i in range(round_, round_ + 20)
            ))  # fmt: skip
        rest = await admin.ok("GET", "/v1/book/ACME?depth=1000")
        sizes = []
        messages = []
        while book.seq != rest["seq"]:  # bounded: frames come up to the REST seq
            frame = await asyncio.wait_for(raw.receive_json(), 10)
            if frame["type"] == "heartbeat":
                continue  # once a second, not market data
            assert frame["type"] == "batch"
            assert frame["symbol"] == "ACME"
            sizes.append(len(frame["messages"]))
            kinds = [m["type"] for m in frame["messages"]]
            assert kinds == sorted(kinds, key=["trade", "book_update"].index)
            for message in frame["messages"]:
                assert book.apply(message), "gap or checksum mismatch"
            messages.extend(frame["messages"])
        assert max(sizes) > 1
        assert list(book.levels()) == [rest["bids"], rest["asks"]]
        unpacked = []
        async with asyncio.timeout(10):  # heartbeats go on: the seq alone is no bound
            while library_book.seq != rest["seq"]:  # messages come up to the REST seq
                message = await library.next_event()
                if message["type"] != "heartbeat":
                    assert library_book.apply(message), "gap or checksum mismatch"
                    unpacked.append(message)
        assert unpacked == messages
        assert library.dropped_events == 0


@pytest.mark.single_only  # the one process's data dir, restarted on the same files
async def test_a_restart_keeps_every_acknowledged_order_and_balance(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running(data, demo=True) as server:
        key = demo_key(server, "alice")
        async with await Client.connect(server.ws_url, key) as alice:
            placed = [
                await alice.place("ACME", "buy", 5, "9.50", client_order_id=f"r-{i}")
                for i in range(5)
            ]
            await alice.place("ACME", "buy", 10, "10.05")  # takes the best ask
        async with Admin(server.base_url, ADMIN_TOKEN) as admin:
            before = await admin.ok("GET", "/v1/account", token=key)
            book_before = await admin.ok("GET", "/v1/book/ACME")
    async with running(data, demo=True) as server, Admin(server.base_url, ADMIN_TOKEN) as admin:
        assert await admin.ok("GET", "/v1/account", token=key) == before
        # The levels, and the book seq: it goes on across a restart.
        assert await admin.ok("GET", "/v1/book/ACME") == book_before
        open_ids = {
            o["order_id"] for o in (await admin.ok("GET", "/v1/orders", token=key))["orders"]
        }
        assert {p["order_id"] for p in placed} <= open_ids
        async with await Client.connect(server.ws_url, key) as alice:
            again = await alice.place("ACME", "buy", 5, "9.50", client_order_id="r-0")
            assert (again["type"], again["resent"], again["order_id"]) == (
                "accepted",
                True,
                placed[0]["order_id"],
            )


async def test_metrics_in_prometheus_text(shared_market: RunningServer) -> None:
    _, before = await metrics(shared_market)
    key = demo_key(shared_market, "alice")
    async with await Client.connect(shared_market.ws_url, key) as alice:
        await alice.place("ACME", "buy", 1, "10.05")
        await alice.place("ACME", "buy", 1, "10.001")  # off tick: refused at the gateway
        assert (await alice.cancel(order_id="99999999"))["code"] == "UNKNOWN_ORDER"
    text, after = await metrics(shared_market)

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew('exchange_commands_total{type="PlaceOrder"}') == 1
    assert grew('exchange_commands_total{type="CancelOrder"}') == 1
    assert grew("exchange_orders_accepted_total") == 1
    assert sum(grew(k) for k in after if k.startswith("exchange_rejects_total{")) == 1
    assert "exchange_trades_total" in text
    assert "exchange_journal_write_seconds_bucket" in text
    if shared_market.role == "serve":  # a gateway of a cluster journals nothing itself
        assert grew("exchange_batch_wait_seconds_count") >= 1  # the place and the cancel
    assert "exchange_connected_clients" in text


async def test_a_flood_of_requests_is_rate_limited_then_closed_with_4029(
    wiring: str, tmp_path: Path
) -> None:
    # A low limit, so the flood outruns the refill on a loaded machine too.
    async with serving(wiring, tmp_path, extra=("--rate-limit", "50")) as server:
        client = await Client.connect(server.ws_url)
        try:
            frame = '{"op":"ping"}'
            answered = limited = 0

            async def read_until(count: int) -> None:
                # Read the answers as they come, as a client should.
                nonlocal answered, limited
                while answered < count:  # bounded by the count, or the close
                    try:
                        event = await client.next_event()
                    except ConnectionError:
                        return
                    answered += 1
                    limited += event.get("code") == "RATE_LIMITED"

            for sent in range(1, 3_001):  # past the burst of 100 and 1,000 refusals more
                if client._reader.done():
                    break  # the library client answered the server's close and closed
                try:
                    await client.send_raw(frame)
                except ConnectionError:  # closed while we were writing
                    break
                if sent % 20 == 0:
                    await read_until(sent - 20)
            await read_until(3_000)  # what is left, until the close
            assert limited > 0
            await asyncio.wait_for(client._reader, 30)
            assert client.close_code == 4029
            async with aiohttp.ClientSession() as http:
                metrics = await (await http.get(server.base_url + "/metrics")).text()
            refused = next(
                float(line.split()[1])
                for line in metrics.splitlines()
                if line.startswith("exchange_rate_limited_total ")
            )
            assert refused == 1000  # then the connection was closed: nothing more was read
        finally:
            await client.close()


async def test_a_flooding_client_still_gets_its_4029_close_frame_while_it_writes_on(
    wiring: str, tmp_path: Path
) -> None:
    # The server closes with 4029 while the client is still writing. Were the server to
    # close its socket before the client's close reply, the frames still arriving would
    # make its kernel reset the connection, and the reset would drop the close frame the
    # client had not read yet. The server must read (and ignore) them until the client
    # closes in turn.
    async with serving(wiring, tmp_path, extra=("--rate-limit", "50")) as server:
        ws = await RawWebSocket.connect(server.ws_url)
        try:
            # The burst of 100, 1,000 refusals, then the close.
            await ws.send_text(['{"op":"ping"}'] * 1_200)
            refused = 0
            while refused < 1_000:  # bounded: every refusal, the closing one too, is answered
                frame = await ws.next_frame()
                assert frame.opcode == OP_TEXT, frame
                refused += b"RATE_LIMITED" in frame.payload
            # The close frame is next and left unread while the client keeps writing.
            await ws.send_text(['{"op":"ping"}'] * 500)
            frame = await ws.next_frame()
            while frame.opcode == OP_TEXT:  # bounded by the frames the server sent
                assert b"RATE_LIMITED" not in frame.payload
                frame = await ws.next_frame()
            assert (frame.opcode, frame.close_code) == (OP_CLOSE, 4029)
            await ws.send_close()
            assert await ws.reader.read() == b""  # then the server closes, without a reset
        finally:
            ws.close()


async def test_cancel_on_disconnect_cancels_the_orders_placed_on_that_connection(
    shared_market: RunningServer,
) -> None:
    key = demo_key(shared_market, "alice")
    async with await Client.connect(shared_market.ws_url, key) as watcher:
        leaving = await Client.connect(shared_market.ws_url)
        await leaving.request("auth", api_key=key, cancel_on_disconnect=True)
        order = await leaving.place("ACME", "buy", 3, "9.00", client_order_id="cod-1")
        assert order["type"] == "accepted", order
        assert (await watcher.next_event("accepted"))["order_id"] == order["order_id"]
        await leaving.close()
        done = await watcher.next_event("done")
        assert (done["order_id"], done["reason"]) == (order["order_id"], "cancelled")


# Snapshots of the slow subscriber's deep book asked for in each round of trading.
SLOW_SUBSCRIBES_PER_ROUND = 5


async def test_a_slow_subscriber_is_evicted_while_a_fast_one_keeps_every_message(
    market: RunningServer,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        await Client.connect(market.ws_url) as fast,
        await Client.connect(market.ws_url, demo_key(market, "market-maker")) as maker,
        Admin(market.base_url, ADMIN_TOKEN) as admin,
    ):
        # A deep book, so each snapshot is several kilobytes.
        for chunk in range(3):
            await asyncio.gather(
                *(
                    maker.place("ACME", "buy", 1, f"{5 + (chunk * 100 + i) / 100:.2f}")
                    for i in range(100)
                )
            )
        book = LocalBook("ACME")
        await fast.subscribe(["book", "trades"], ["ACME"])
        assert book.apply(await fast.next_event("book_snapshot"))
        # The slow client asks for snapshot after snapshot and never reads one. Each costs
        # its kilobytes in rate-limit tokens, so it asks a few at a time, within the rate
        # (flooding past it would end in 4029 instead).
        slow = await http.ws_connect(market.ws_url)
        subscribe = '{"op":"subscribe","channels":["book"],"symbols":["ACME"]}'
        evicted = False
        for _ in range(2_000):  # bounded: trading goes on until the eviction shows
            for _ in range(SLOW_SUBSCRIBES_PER_ROUND):
                if not slow.closed:
                    await slow.send_str(subscribe)
            placed = await maker.place("ACME", "sell", 1, "10.50")
            await maker.cancel(order_id=placed["order_id"])
            while fast.events:
                assert book.apply(fast.events.popleft()), "the fast subscriber saw a gap"
            metrics = await (await http.get(market.base_url + "/metrics")).text()
            if "exchange_evictions_total 1.0" in metrics:
                evicted = True
                break
        assert evicted, "the slow subscriber was never evicted in 2,000 rounds of trading"
        # Read what the slow one was sent, up to the close.
        for _ in range(50_000):
            message = await slow.receive()
            if message.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}:
                break
        assert slow.close_code == 4008, market.log()[-6000:]
        rest = await admin.ok("GET", "/v1/book/ACME?depth=1000")
        while book.seq != rest["seq"]:  # bounded: up to the seq REST reports
            assert book.apply(await fast.next_event()), "gap or checksum mismatch"
        assert list(book.levels()) == [rest["bids"], rest["asks"]]
        assert book.gaps == book.bad_checksums == fast.dropped_events == 0
    # The eviction's log line, at WARNING (the close line is written as the session ends).
    async with asyncio.timeout(LOG_LINE_TIMEOUT_S):
        while not any(" WARNING " in line and "event=ws_close" in line and "code=4008" in line
                      for line in list(market.output)):  # fmt: skip
            await asyncio.sleep(0.02)  # bounded by the timeout: the output arrives on its own


# How long a log line may take to reach the test's copy of the server's output.
LOG_LINE_TIMEOUT_S = 20.0


async def test_order_history_and_candles(market: RunningServer) -> None:
    key = demo_key(market, "alice")
    async with await Client.connect(market.ws_url, key) as alice:
        resting = await alice.place("ACME", "buy", 2, "9.50", client_order_id="h-1")
        taken = await alice.place("ACME", "buy", 3, "10.05", client_order_id="h-2")
        await alice.cancel(order_id=resting["order_id"])
    async with Admin(market.base_url, ADMIN_TOKEN) as admin:
        everything = (await admin.ok("GET", "/v1/orders?status=all", token=key))["orders"]
        statuses = {o["client_order_id"]: o["status"] for o in everything}
        assert statuses == {"h-1": "cancelled", "h-2": "filled"}
        assert [o["order_id"] for o in everything] == [taken["order_id"], resting["order_id"]]
        assert (await admin.ok("GET", "/v1/orders", token=key))["orders"] == []
        one = await admin.ok("GET", f"/v1/orders/{taken['order_id']}", token=key)
        assert (one["status"], one["remaining"], one["price"]) == ("filled", 0, "10.05")
        candles = (await admin.ok("GET", "/v1/candles/ACME?interval=1m"))["candles"]
        assert candles[-1]["close"] == "10.05"
        assert candles[-1]["volume"] == 3
        assert (await admin.ok("GET", "/v1/candles/ACME?interval=1d"))["candles"][-1]["volume"] == 3
        status, body = await admin.call("GET", "/v1/candles/ACME?interval=2m")
        assert (status, body["code"]) == (400, "BAD_REQUEST")


async def test_an_oversized_frame_closes_with_1009_and_a_binary_frame_gets_an_error(
    shared_market: RunningServer,
) -> None:
    async with await Client.connect(shared_market.ws_url) as client:
        await client.ws.send_bytes(b'{"op":"ping"}')
        assert (await client.next_event("error"))["code"] == "BAD_REQUEST"
        await client.send_raw('{"op":"ping","req_id":"' + "x" * 70_000 + '"}')
        await asyncio.wait_for(client._reader, 30)
        assert client.close_code == 1009


async def test_shutdown_closes_sockets_with_1001_and_exits_0(
    wiring: str, tmp_path: Path
) -> None:
    async with serving(wiring, tmp_path) as server:
        client = await Client.connect(server.ws_url)
        assert (await client.ping())["type"] == "pong"
        assert await stop(server) == 0, server.log()
        await asyncio.wait_for(client._reader, 30)
        assert client.close_code == 1001
        await client.close()


async def test_a_flood_of_connections_past_the_bound_is_answered_503(
    wiring: str, tmp_path: Path
) -> None:
    async with serving(wiring, tmp_path, extra=("--max-connections", "5")) as server:
        clients = [await Client.connect(server.ws_url) for _ in range(5)]
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await Client.connect(server.ws_url)
            assert refused.value.status == 503
            for client in clients:  # nobody else noticed
                assert (await client.ping())["type"] == "pong"
            await clients.pop().close()
            async with await Client.connect(server.ws_url) as again:  # room again
                assert (await again.ping())["type"] == "pong"
        finally:
            for client in clients:
                await client.close()


async def test_subscribers_get_a_heartbeat_with_the_current_seqs(
    shared_market: RunningServer,
) -> None:
    async with await Client.connect(shared_market.ws_url) as client:
        await client.subscribe(["ticker"], ["ACME", "BOND"])
        ticker = await client.next_event("ticker")
        heartbeat = await client.next_event("heartbeat", timeout=5)
        assert set(heartbeat["seqs"]) == {"ACME", "BOND"}
        assert heartbeat["seqs"][ticker["symbol"]]["book"] == ticker["seq"]
        assert set(heartbeat["seqs"][ticker["symbol"]]) == {"book", "trades"}


async def test_a_book_only_subscriber_sees_no_gap_across_trades(market: RunningServer) -> None:
    """Trades take numbers of their own sequence: a subscriber of `book` alone gets every
    update in sequence however many trades happened (before, each trade took a number of
    the one shared sequence and such a client saw a false gap on every trade)."""
    async with (
        await Client.connect(market.ws_url) as watcher,
        await Client.connect(market.ws_url) as tape,
        await Client.connect(market.ws_url, demo_key(market, "alice")) as alice,
        Admin(market.base_url, ADMIN_TOKEN) as admin,
    ):
        book = LocalBook("ACME")
        await watcher.subscribe(["book"], ["ACME"])
        assert book.apply(await watcher.next_event("book_snapshot"))
        await tape.subscribe(["trades"], ["ACME"])
        for _ in range(3):  # each takes part of the best ask: a trade and an update
            answer = await alice.place("ACME", "buy", 10, "10.05")
            assert answer["type"] == "accepted"
        rest = await admin.ok("GET", "/v1/book/ACME?depth=1000")
        while book.seq != rest["seq"]:  # bounded: the watcher receives up to the REST seq
            message = await watcher.next_event()
            assert message["type"] != "trade"
            assert book.apply(message), f"gap or checksum mismatch at {message}"
        assert book.gaps == book.bad_checksums == 0
        trade_seqs = [(await tape.next_event("trade"))["seq"] for _ in range(3)]
        assert trade_seqs == [trade_seqs[0], trade_seqs[0] + 1, trade_seqs[0] + 2]


@pytest.mark.parametrize(
    ("order", "reasons"),
    [
        ({"type": "market", "qty": 150}, ["filled"]),
        ({"price": "10.10", "qty": 500, "tif": "ioc"}, ["expired"]),
        ({"price": "10.10", "qty": 500, "tif": "fok"}, ["expired"]),
        ({"price": "10.10", "qty": 300, "tif": "fok"}, ["filled"]),
    ],
)
async def test_order_types_end_as_the_rules_say(
    market: RunningServer, order: dict[str, object], reasons: list[str]
) -> None:
    async with await Client.connect(market.ws_url, demo_key(market, "alice")) as alice:
        answer = await alice.request("place", symbol="ACME", side="buy", **order)
        assert answer["type"] == "accepted"
        done = await alice.next_event("done")
        assert done["order_id"] == answer["order_id"]
        assert [done["reason"]] == reasons


@pytest.mark.single_only  # `journal verify` and a restart on the one process's data dir
async def test_an_admin_request_outside_the_schema_is_refused_and_never_journaled(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with running(data) as server, Admin(server.base_url, ADMIN_TOKEN) as admin:
        account, _ = await admin.account("a")
        for path, body, code in [
            ("/v1/admin/deposits", {"account": account, "symbol": "bad sym!", "qty": 5},
             "BAD_SYMBOL"),
            ("/v1/admin/deposits", {"account": account, "symbol": "ACME", "qty": 10**12},
             "BAD_QTY"),
            ("/v1/admin/instruments/bad%20sym/status", {"status": "trading"}, "BAD_SYMBOL"),
        ]:  # fmt: skip
            status, answer = await admin.call("POST", path, body)
            assert (status, answer["code"]) == (400, code), (path, answer)
    done = subprocess.run(
        [sys.executable, "-m", "exchange", "journal", "verify", str(data)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    async with running(data):  # and the server starts again on it
        pass


async def test_a_session_never_changes_account(shared_market: RunningServer) -> None:
    key = demo_key(shared_market, "alice")
    async with await Client.connect(shared_market.ws_url, key) as client:
        answer = await client.auth(demo_key(shared_market, "bob"))
        assert (answer["type"], answer["code"]) == ("error", "BAD_REQUEST")
        assert (await client.auth(demo_key(shared_market, "alice")))["type"] == "authenticated"
