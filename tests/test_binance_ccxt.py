"""End to end: unmodified ccxt (async and ccxt.pro, its `binance` class with the URL table
of the README) trades on the real server through the Binance-spot dialect: markets and
public reads, every kind of order (stops that wait and trigger, icebergs), queries,
cancels, edits, fills with their fees, the ccxt exception each error must raise, and the
streams (trades, ticker, orders, my trades, balance, and an order book kept in sync over
1,000 updates while others trade)."""

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.pro
import pytest
import pytest_asyncio

from exchange.domain.limits import MAX_QTY
from gateway.client import Client
from tests.binance_helpers import ccxt_client, instrument, trader
from tests.server import ROOT, RunningServer, running, start, stop
from tests.wirings import cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")
WAIT_S = 10.0
# The in-sync test's whole run: 1,100 orders and ccxt's book following them.
SYNC_TIMEOUT_S = 240.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    async with running(tmp_path_factory.mktemp("binance") / "data", demo=True) as market:
        yield market


async def get(server: RunningServer, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(server.base_url + path) as reply:
        return await reply.json()


async def client(server: RunningServer, name: str, **kwargs: Any) -> ccxt.pro.binance:
    _, key, secret = await trader(server, name, **kwargs)
    return ccxt_client(server, key, secret)


async def native_fees(server: RunningServer, key: str) -> dict[str, tuple[float, str]]:
    """trade id -> (fee, fee asset) of the account's fills, as our own REST shows them."""
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + "/v1/fills", headers=headers) as reply,
    ):
        fills = (await reply.json())["fills"]
    return {str(f["trade_id"]): (float(f["fee"]), f["fee_asset"]) for f in fills}


async def test_markets_time_book_tickers_trades_and_candles(server: RunningServer) -> None:
    ex = await client(server, "reader", units={"ACME": 10})
    try:
        markets = await ex.load_markets()
        acme = markets["ACME/USD"]
        assert (acme["id"], acme["base"], acme["quote"], acme["active"]) == (
            "ACMEUSD",
            "ACME",
            "USD",
            True,
        )
        assert acme["precision"]["amount"] == 1
        assert acme["precision"]["price"] == 0.01
        assert "BOND/USD" in markets
        assert await ex.fetch_time() > 0

        ours = await get(server, "/v1/book/ACME?depth=100")
        book = await ex.fetch_order_book("ACME/USD")
        assert book["nonce"] == ours["seq"]
        assert book["bids"] == [[float(p), float(q)] for p, q in ours["bids"]]
        assert book["asks"] == [[float(p), float(q)] for p, q in ours["asks"]]

        sold = await ex.create_order("ACME/USD", "market", "sell", 1)  # a trade to read back
        price = sold["average"]
        trades = await ex.fetch_trades("ACME/USD")
        assert trades[-1]["price"] == price
        assert trades[-1]["amount"] == 1
        assert trades[-1]["side"] == "sell"
        candles = await ex.fetch_ohlcv("ACME/USD", "1m")
        assert candles
        assert candles[-1][5] >= 1
        assert candles[-1][4] == price
        # The newest 1m kline's value traded, trade count and taker buys are its trades'.
        row = (await ex.publicGetKlines({"symbol": "ACMEUSD", "interval": "1m"}))[-1]
        opened, closed = int(row[0]), int(row[6])
        inside = [t for t in await ex.fetch_trades("ACME/USD", limit=1000)
                  if opened <= t["timestamp"] <= closed]  # fmt: skip
        assert inside
        assert Decimal(row[7]) == sum(Decimal(str(t["price"])) * int(t["amount"]) for t in inside)
        assert int(row[8]) == len(inside)
        bought = [t for t in inside if t["side"] == "buy"]
        assert int(row[9]) == sum(int(t["amount"]) for t in bought)
        assert Decimal(row[10]) == sum(Decimal(str(t["price"])) * int(t["amount"]) for t in bought)
        ticker = await ex.fetch_ticker("ACME/USD")
        after = await get(server, "/v1/book/ACME?depth=1")
        assert ticker["quoteVolume"] >= float(row[7]) > 0
        assert ticker["low"] <= ticker["vwap"] <= ticker["high"]
        assert int(ticker["info"]["count"]) >= len(inside)
        assert ticker["last"] == price
        assert ticker["bid"] == float(after["bids"][0][0])
        assert ticker["ask"] == float(after["asks"][0][0])
        tickers = await ex.fetch_tickers()
        assert {"ACME/USD", "BOND/USD"} <= tickers.keys()
    finally:
        await ex.close()


async def test_orders_of_every_kind_queried_edited_and_cancelled(server: RunningServer) -> None:
    ex = await client(server, "orders", units={"ACME": 100})
    try:
        await ex.load_markets()
        book = await ex.fetch_order_book("ACME/USD")
        best_bid, best_ask = book["bids"][0][0], book["asks"][0][0]
        low = round(best_bid - 0.5, 2)

        resting = await ex.create_order("ACME/USD", "limit", "buy", 3, low)
        assert (resting["status"], resting["amount"], resting["price"]) == ("open", 3, low)
        assert [o["id"] for o in await ex.fetch_open_orders("ACME/USD")] == [resting["id"]]
        assert (await ex.fetch_order(resting["id"], "ACME/USD"))["status"] == "open"
        by_client_id = await ex.fetch_order(
            None, "ACME/USD", {"origClientOrderId": resting["clientOrderId"]}
        )
        assert by_client_id["id"] == resting["id"]

        edited = await ex.edit_order(resting["id"], "ACME/USD", "limit", "buy", 4, low + 0.01)
        assert edited["id"] != resting["id"]
        assert edited["amount"] == 4
        assert edited["price"] == round(low + 0.01, 2)
        assert (await ex.fetch_order(resting["id"], "ACME/USD"))["status"] == "canceled"
        cancelled = await ex.cancel_order(edited["id"], "ACME/USD")
        assert cancelled["status"] == "canceled"

        market = await ex.create_order("ACME/USD", "market", "buy", 2)
        assert (market["status"], market["filled"]) == ("closed", 2)
        assert market["trades"]
        assert market["trades"][0]["price"] == best_ask
        ioc = await ex.create_order("ACME/USD", "limit", "sell", 1, low, {"timeInForce": "IOC"})
        assert (ioc["status"], ioc["filled"]) == ("closed", 1)
        at_best = (await ex.fetch_order_book("ACME/USD"))["asks"][0]
        fok = await ex.create_order(  # one more than the best level holds: no fill at all
            "ACME/USD", "limit", "buy", at_best[1] + 1, at_best[0], {"timeInForce": "FOK"}
        )
        assert (fok["status"], fok["filled"]) == ("expired", 0)
        post_only = {"postOnly": True}
        maker = await ex.create_order("ACME/USD", "limit", "sell", 2, best_ask + 1, post_only)
        assert maker["status"] == "open"
        assert maker["postOnly"]
        # Read back, open and listed, it is still LIMIT_MAKER (the read side keeps post-only).
        again = await ex.fetch_order(maker["id"], "ACME/USD")
        assert (again["info"]["type"], again["postOnly"]) == ("LIMIT_MAKER", True)
        listed = await ex.fetch_open_orders("ACME/USD")
        assert [(o["id"], o["info"]["type"]) for o in listed] == [(maker["id"], "LIMIT_MAKER")]
        gone = await ex.cancel_all_orders("ACME/USD")
        assert [o["id"] for o in gone] == [maker["id"]]
        assert gone[0]["status"] == "canceled"
        assert await ex.fetch_open_orders() == []

        mine = await ex.fetch_my_trades("ACME/USD")
        assert {t["order"] for t in mine} == {market["id"], ioc["id"]}
        assert sum(t["amount"] for t in mine) == 3
        # The demo's ACME charges a taker fee: each trade's commission is our fill's fee.
        fees = await native_fees(server, ex.apiKey)
        assert {t["id"]: (t["fee"]["cost"], t["fee"]["currency"]) for t in mine} == {
            t["id"]: fees[t["id"]] for t in mine
        }
        assert all(t["fee"]["cost"] > 0 for t in mine)
        assert {t["takerOrMaker"] for t in mine} == {"taker"}

        ask = (await ex.fetch_order_book("ACME/USD"))["asks"][0][0]
        by_cost = await ex.create_market_buy_order_with_cost("ACME/USD", 2 * ask + 1)
        assert by_cost["info"]["origQty"] == str(MAX_QTY)  # as many as the amount buys
        assert (by_cost["filled"], by_cost["cost"]) == (2, round(2 * ask, 2))

        balance = await ex.fetch_balance()
        cash = await _account(server, ex.apiKey)
        assert balance["USD"]["total"] == float(cash["cash"])
        assert balance["ACME"]["total"] == cash["positions"]["ACME"] == 100 + 2 - 1 + 2
    finally:
        await ex.close()


async def _account(server: RunningServer, key: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + "/v1/account", headers=headers) as reply,
    ):
        return await reply.json()


async def test_each_error_raises_the_ccxt_exception_binance_would(server: RunningServer) -> None:
    ex = await client(server, "errors", cash="100.00", units={"ACME": 5})
    try:
        await ex.load_markets()
        best_ask = (await ex.fetch_order_book("ACME/USD"))["asks"][0][0]
        cases = [
            (ccxt.InsufficientFunds, ex.create_order("ACME/USD", "limit", "buy", 50, 9.0)),
            (ccxt.InsufficientFunds, ex.create_order("ACME/USD", "limit", "sell", 6, 20.0)),
            (ccxt.OrderImmediatelyFillable,
             ex.create_order("ACME/USD", "limit", "buy", 1, best_ask, {"postOnly": True})),
            (ccxt.OrderNotFound, ex.cancel_order("987654", "ACME/USD")),
            (ccxt.OrderNotFound, ex.fetch_order("987654", "ACME/USD")),
            (ccxt.InvalidOrder,  # off the tick
             ex.create_order("ACME/USD", "limit", "buy", 1, 9.0, {"price": "9.001"})),
            (ccxt.InvalidOrder,  # a fraction of a unit
             ex.create_order("ACME/USD", "limit", "buy", 1, 9.0, {"quantity": "1.5"})),
            (ccxt.BadSymbol, ex.public_get_depth({"symbol": "NOPEUSD"})),
        ]  # fmt: skip
        for expected, call in cases:
            with pytest.raises(expected):
                await call
    finally:
        await ex.close()
    stranger = ccxt_client(server, "ek_nobody", "0" * 64)
    wrong_secret = await client(server, "wrong-secret")
    wrong_secret.secret = "0" * 64
    late = await client(server, "late")
    late.options["timeDifference"] = 3_600_000  # ccxt's own clock offset: an hour behind
    try:
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            await stranger.private_get_account()
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            await wrong_secret.private_get_account()
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await late.private_get_account()
    finally:
        for each in (stranger, wrong_secret, late):
            await each.close()


async def test_stop_orders_wait_show_their_stop_price_and_trigger(server: RunningServer) -> None:
    await instrument(server, "STOPS")
    seller = await client(server, "stops-seller", units={"STOPS": 100})
    buyer = await client(server, "stops-buyer")
    owner = await client(server, "stops-owner", units={"STOPS": 10})
    try:
        for ex in (seller, buyer, owner):
            await ex.load_markets()
        info = (await get(server, "/api/v3/exchangeInfo?symbol=STOPSUSD"))["symbols"][0]
        assert {"STOP_LOSS", "STOP_LOSS_LIMIT"} <= set(info["orderTypes"])
        await buyer.create_order("STOPS/USD", "limit", "buy", 1, 10.0)
        await seller.create_order("STOPS/USD", "market", "sell", 1)  # the last trade: 10.00

        stop_limit = await owner.create_order(
            "STOPS/USD", "STOP_LOSS_LIMIT", "sell", 2, 9.4, {"stopPrice": 9.5}
        )
        loss = await owner.create_order(
            "STOPS/USD", "STOP_LOSS", "sell", 1, None, {"triggerPrice": 9.0}
        )
        shown = await owner.fetch_order(stop_limit["id"], "STOPS/USD")
        assert (shown["status"], shown["triggerPrice"], shown["price"]) == ("open", 9.5, 9.4)
        assert (shown["info"]["type"], shown["info"]["stopPrice"]) == ("STOP_LOSS_LIMIT", "9.50")
        shown = await owner.fetch_order(loss["id"], "STOPS/USD")
        assert (shown["status"], shown["triggerPrice"]) == ("open", 9.0)
        assert (shown["info"]["type"], shown["info"]["stopPrice"]) == ("STOP_LOSS", "9.00")
        book = await owner.fetch_order_book("STOPS/USD")
        assert book["asks"] == []  # waiting stops are off the book

        await buyer.create_order("STOPS/USD", "limit", "buy", 5, 9.5)
        # Trades at the trigger: the stop-limit runs within the same command (after the
        # order that triggered it), so its fill is read side history once this answers.
        await seller.create_order("STOPS/USD", "market", "sell", 1)
        mine = await owner.fetch_my_trades("STOPS/USD")
        assert [(t["order"], t["price"], t["amount"]) for t in mine] == [
            (stop_limit["id"], 9.5, 2)
        ]
        done = await owner.fetch_order(stop_limit["id"], "STOPS/USD")
        assert (done["status"], done["info"]["type"], done["triggerPrice"]) == (
            "closed", "STOP_LOSS_LIMIT", 9.5,
        )  # fmt: skip
        assert (await owner.fetch_order(loss["id"], "STOPS/USD"))["status"] == "open"
        await owner.cancel_order(loss["id"], "STOPS/USD")

        with pytest.raises(ccxt.OrderImmediatelyFillable):  # BAD_TRIGGER: past the last trade
            await owner.create_order("STOPS/USD", "STOP_LOSS", "sell", 1, None, {"stopPrice": 10})
        with pytest.raises(ccxt.BadRequest, match="quoteOrderQty"):  # a stop buy needs a budget
            await owner.create_order("STOPS/USD", "STOP_LOSS", "buy", 1, None, {"stopPrice": 11})
        budgeted = await owner.private_post_order({  # ccxt's raw call: the budget goes through
            "symbol": "STOPSUSD", "side": "BUY", "type": "STOP_LOSS", "stopPrice": "11.00",
            "quoteOrderQty": "20.00"})  # fmt: skip
        assert (budgeted["type"], budgeted["stopPrice"], budgeted["status"]) == (
            "STOP_LOSS", "11.00", "NEW",
        )  # fmt: skip
    finally:
        for ex in (seller, buyer, owner):
            await ex.close()


async def test_an_iceberg_shows_only_its_iceberg_qty(server: RunningServer) -> None:
    await instrument(server, "BERG")
    ex = await client(server, "berg", units={"BERG": 50})
    try:
        await ex.load_markets()
        placed = await ex.create_order("BERG/USD", "limit", "sell", 10, 12.0, {"icebergAmount": 3})
        assert placed["info"]["icebergQty"] == "3"
        shown = await ex.fetch_order(placed["id"], "BERG/USD")
        assert (shown["amount"], shown["remaining"], shown["info"]["icebergQty"]) == (10, 10, "3")
        assert (await ex.fetch_order_book("BERG/USD"))["asks"] == [[12.0, 3.0]]
        ours = await get(server, "/v1/book/BERG")
        assert ours["asks"] == [["12.00", 3]]
    finally:
        await ex.close()


async def test_streams_of_trades_ticker_orders_my_trades_and_balance(
    server: RunningServer,
) -> None:
    ex = await client(server, "watcher", units={"ACME": 10})
    other = await client(server, "counterparty", units={"ACME": 10})
    try:
        await ex.load_markets()
        await other.load_markets()
        watches = {
            "trades": asyncio.ensure_future(ex.watch_trades("ACME/USD")),
            "ticker": asyncio.ensure_future(ex.watch_ticker("ACME/USD")),
            "orders": asyncio.ensure_future(ex.watch_orders("ACME/USD")),
            "my_trades": asyncio.ensure_future(ex.watch_my_trades("ACME/USD")),
            "balance": asyncio.ensure_future(ex.watch_balance()),
        }
        await _subscribed(ex)
        bid = (await ex.fetch_order_book("ACME/USD"))["bids"][0][0]
        price = round(bid + 0.01, 2)
        quote = await other.create_order("ACME/USD", "limit", "buy", 1, price)
        sold = await ex.create_order("ACME/USD", "limit", "sell", 1, price)
        got = {name: await asyncio.wait_for(w, WAIT_S) for name, w in watches.items()}
        assert got["trades"][-1]["price"] == price
        assert got["trades"][-1]["amount"] == 1
        assert got["ticker"]["symbol"] == "ACME/USD"
        assert got["orders"][-1]["id"] == sold["id"]
        assert got["my_trades"][-1]["order"] == sold["id"]
        assert got["my_trades"][-1]["fee"]["currency"] == "USD"
        assert "USD" in got["balance"]
        assert "ACME" in got["balance"]
        orders = got["orders"]
        async with asyncio.timeout(WAIT_S):
            while orders[-1]["status"] != "closed":  # NEW, then the TRADE that fills it
                orders = await ex.watch_orders("ACME/USD")
        assert orders[-1]["id"] == sold["id"]
        assert orders[-1]["filled"] == 1
        assert quote["status"] == "open"
    finally:
        await ex.close()
        await other.close()


async def _subscribed(ex: ccxt.pro.binance) -> None:
    """Until every stream ccxt asked for was answered (its futures settled)."""
    async with asyncio.timeout(WAIT_S):
        while True:  # bounded by the timeout
            pending = [c for c in ex.clients.values() if c.subscriptions and not c.connected.done()]
            if not pending and ex.clients:
                await asyncio.sleep(0.2)  # the SUBSCRIBE answers are in flight
                return
            await asyncio.sleep(0.05)


async def test_a_trade_on_either_face_shows_on_the_other(server: RunningServer) -> None:
    _, native_key, _ = await trader(server, "native", units={"ACME": 10})
    ex = await client(server, "binance-face", units={"ACME": 10})
    async with await Client.connect(server.ws_url, native_key) as native:
        try:
            await ex.load_markets()
            await native.subscribe(["trades"], ["ACME"])
            watching = asyncio.ensure_future(ex.watch_trades("ACME/USD"))
            await _subscribed(ex)
            ask = (await ex.fetch_order_book("ACME/USD"))["asks"][0][0]
            bought = await ex.create_order("ACME/USD", "market", "buy", 1)
            seen = await native.next_event("trade")
            assert (seen["price"], seen["qty"], seen["aggressor"]) == (f"{ask:.2f}", 1, "buy")
            assert bought["trades"][0]["id"] == seen["trade_id"]
            await asyncio.wait_for(watching, WAIT_S)

            watching = asyncio.ensure_future(ex.watch_trades("ACME/USD"))
            await asyncio.sleep(0)  # ccxt's future is in place before the trade
            placed = await native.place("ACME", "sell", 2, type="market")
            assert placed["type"] == "accepted"
            trade = (await native.next_event("trade"))["trade_id"]
            streamed = await asyncio.wait_for(watching, WAIT_S)
            assert any(t["id"] == trade and t["side"] == "sell" for t in streamed)
            rest = await ex.fetch_trades("ACME/USD")
            assert any(t["id"] == trade and t["side"] == "sell" for t in rest)
        finally:
            await ex.close()


@pytest.mark.slow
async def test_watch_order_book_stays_in_sync_over_1000_updates(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """ccxt checks every depthUpdate's U/u against its book's nonce (from the snapshot's
    lastUpdateId) and fails on a gap; its book must end equal to ours. (A server of its
    own without fsync: 1,100 orders one after another.)"""
    data_dir = tmp_path_factory.mktemp("binance-sync") / "data"
    own = await start(data_dir, durability="none")
    try:
        await _book_in_sync(own)
    finally:
        assert await stop(own) == 0, own.log()


async def _book_in_sync(server: RunningServer) -> None:
    await instrument(server, "SYNC")
    _, buyer_key, _ = await trader(server, "sync-buyer", "1000000.00")
    _, seller_key, _ = await trader(server, "sync-seller", units={"SYNC": 100_000})
    ex = ccxt_client(server)
    try:
        await ex.load_markets()
        first = await asyncio.wait_for(ex.watch_order_book("SYNC/USD"), WAIT_S)
        start_nonce = first["nonce"]
        trading = asyncio.ensure_future(_trade_sync(server, buyer_key, seller_key))
        async with asyncio.timeout(SYNC_TIMEOUT_S):
            while not trading.done():  # bounded by the timeout: follow while they trade
                watching = asyncio.ensure_future(ex.watch_order_book("SYNC/USD"))
                await asyncio.wait({watching, trading}, return_when=asyncio.FIRST_COMPLETED)
                if not watching.done():
                    watching.cancel()
                else:
                    watching.result()  # raises if ccxt found a gap
            await trading
            last = (await get(server, "/v1/book/SYNC"))["seq"]
            book = ex.orderbooks["SYNC/USD"]
            while book["nonce"] < last:  # bounded by the timeout: the last updates
                book = await ex.watch_order_book("SYNC/USD")
        assert book["nonce"] - start_nonce >= 1_000
        ours = await get(server, "/v1/book/SYNC?depth=5000")
        assert book["nonce"] == ours["seq"]
        assert book["bids"] == [[float(p), float(q)] for p, q in ours["bids"]]
        assert book["asks"] == [[float(p), float(q)] for p, q in ours["asks"]]
    finally:
        await ex.close()


async def _trade_sync(server: RunningServer, buyer_key: str, seller_key: str) -> None:
    """Two native clients quote and trade: 1,100 orders, each changing the book."""
    async with (
        await Client.connect(server.ws_url, buyer_key) as buyer,
        await Client.connect(server.ws_url, seller_key) as seller,
    ):
        for n in range(550):  # each round: a new bid level, then a sell that hits one
            price = f"{10 + (n % 50) / 100:.2f}"
            await buyer.place("SYNC", "buy", 2, price)
            await seller.place("SYNC", "sell", 1, "10.00")


async def test_demo_keys_carry_their_secret(server: RunningServer) -> None:
    keys = json.loads((server.data_dir / "demo-keys.json").read_text())
    assert all(len(entry["api_secret"]) == 64 for entry in keys.values())


async def test_the_readme_snippet_runs_as_written(server: RunningServer) -> None:
    """The README's ccxt example, with this server's address and a demo key put in."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(import asyncio\nimport ccxt\.pro.*?)```", readme, re.DOTALL)
    assert code is not None, "README.md: the ccxt example is gone"
    keys = json.loads((server.data_dir / "demo-keys.json").read_text())
    alice = keys["alice"]
    text = (
        code.group(1)
        .replace("http://127.0.0.1:8080", server.base_url)
        .replace("ws://127.0.0.1:8080", f"ws://127.0.0.1:{server.port}")
        .replace('"ek_...", "..."', f"{alice['api_key']!r}, {alice['api_secret']!r}")
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", text, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert b"ACMEUSD" in output


async def test_every_cluster_gateway_speaks_the_dialect_with_the_same_secrets(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A key made through gateway 1 signs on gateway 2 (the secret is derived from the
    shared admin token, never stored); an order placed on one shows on the other's
    user-data stream and REST."""
    async with cluster(tmp_path_factory.mktemp("binance-cluster"), gateways=2) as roles:
        first, second = roles.gateways
        _, key, secret = await trader(first, "cluster-trader")
        await instrument(first, "CLU")
        one, two = ccxt_client(first, key, secret), ccxt_client(second, key, secret)
        try:
            await one.load_markets()
            await two.load_markets()
            watching = asyncio.ensure_future(two.watch_orders("CLU/USD"))
            await _subscribed(two)
            placed = await one.create_order("CLU/USD", "limit", "buy", 2, 1.25)
            streamed = await asyncio.wait_for(watching, WAIT_S)
            assert streamed[-1]["id"] == placed["id"]
            assert (await two.fetch_order(placed["id"], "CLU/USD"))["status"] == "open"
            assert (await two.cancel_order(placed["id"], "CLU/USD"))["status"] == "canceled"
        finally:
            await one.close()
            await two.close()
