"""The load test's trader loop against small real WebSocket servers on 127.0.0.1: the
window of requests in flight, the makers' cancels, and what is counted when answers
never come."""

import json
import random
import time

import aiohttp
import pytest
from aiohttp import web

from loadtest import trader as trader_module
from loadtest.trader import Orders, Pinger, Tally, Trader, connect
from tests.scripted_ws import Handler, ws_server


def no_record(_: int) -> None:
    pass


async def trade_against(
    exchange: Handler, *, maker: bool, seed: int, window: int, seconds: float
) -> Tally:
    """One trader against the scripted `exchange` for `seconds`; what it counted."""
    tally = Tally()
    async with ws_server(exchange) as url, aiohttp.ClientSession() as session:
        ws = await connect(session, url)
        orders = Orders("ACME", maker=maker, rng=random.Random(seed), mid=[10_000])
        trader = Trader(ws, orders, window, None, no_record, no_record, tally)
        await trader.run(time.perf_counter() + seconds)
        await ws.close()
    return tally


async def test_a_maker_cancels_about_half_and_only_places_count_as_orders() -> None:
    seen: list[str] = []

    async def exchange(ws: web.WebSocketResponse, request: dict[str, object]) -> None:
        seen.append(str(request["op"]))
        if request["op"] == "place":
            answer = {"type": "accepted", "order_id": str(len(seen)), "req_id": request["req_id"]}
        else:
            answer = {"type": "done", "reason": "cancelled", "req_id": request["req_id"]}
        await ws.send_str(json.dumps(answer))

    tally = await trade_against(exchange, maker=True, seed=7, window=3, seconds=0.3)
    places, cancels = seen.count("place"), seen.count("cancel")
    assert tally.orders == places > 10
    assert 0 < cancels < places  # about half the accepted orders are cancelled
    assert tally.cancels == cancels
    assert tally.rejects == {}


async def test_no_more_than_the_window_is_sent_and_the_unanswered_are_counted() -> None:
    received: list[object] = []

    async def silent_then_gone(ws: web.WebSocketResponse, request: dict[str, object]) -> None:
        received.append(request["req_id"])
        if len(received) == 4:
            await ws.close()  # nothing was answered

    tally = Tally()
    async with ws_server(silent_then_gone) as url, aiohttp.ClientSession() as session:
        ws = await connect(session, url)
        # With 4 in flight and no answer, the pinger sends 4 and waits; the close ends it
        # long before its deadline, and the 4 are lost, not waited for.
        await Pinger(ws, 4, None, no_record, no_record, tally).run(time.perf_counter() + 30)
    assert received == [1, 2, 3, 4]
    assert tally.orders == 0
    assert tally.rejects == {"CONNECTION_LOST": 4}


async def test_an_error_answer_counts_as_a_reject_by_its_code() -> None:
    async def busy(ws: web.WebSocketResponse, request: dict[str, object]) -> None:
        answer = {"type": "error", "code": "RATE_LIMITED", "req_id": request["req_id"]}
        await ws.send_str(json.dumps(answer))

    tally = await trade_against(busy, maker=False, seed=1, window=2, seconds=0.2)
    assert tally.orders > 0
    assert tally.rejects == {"RATE_LIMITED": tally.orders}


async def test_order_to_fill_is_timed_for_taker_fills_only_and_kept_for_recent_orders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each place is answered `accepted`, then, for every other one, a taker fill of all
    of it; a maker fill of an older order follows each. Only the taker fills are timed
    from their order's send, no later than the fill arrived, and the orders kept waiting
    for fills stay within the bound."""
    monkeypatch.setattr(trader_module, "ORDERS_AWAITING_FILLS", 4)
    places = 0
    order_fills: list[int] = []
    sent_at_sizes: list[int] = []

    async def exchange(ws: web.WebSocketResponse, request: dict[str, object]) -> None:
        nonlocal places
        if request["op"] != "place":
            await ws.send_str(json.dumps({"type": "done", "req_id": request["req_id"]}))
            return
        places += 1
        order_id = str(places)
        await ws.send_str(json.dumps(
            {"type": "accepted", "order_id": order_id, "req_id": request["req_id"]}
        ))  # fmt: skip
        if places % 2:
            fill = {"type": "fill", "order_id": order_id, "liquidity": "taker", "remaining": 0,
                    "ts": time.time_ns()}  # fmt: skip
            await ws.send_str(json.dumps(fill))
        await ws.send_str(json.dumps(
            {"type": "fill", "order_id": "1", "liquidity": "maker", "ts": time.time_ns()}
        ))  # fmt: skip

    tally = Tally()
    async with ws_server(exchange) as url, aiohttp.ClientSession() as session:
        ws = await connect(session, url)
        orders = Orders("ACME", maker=False, rng=random.Random(3), mid=[10_000])
        trader = Trader(ws, orders, 2, None, no_record, no_record, tally, order_fills.append)
        original = trader._await_fills

        def await_fills(order_id: str, intended: float) -> None:
            original(order_id, intended)
            sent_at_sizes.append(len(trader._sent_at))

        trader._await_fills = await_fills  # type: ignore[method-assign]
        started = time.perf_counter()
        await trader.run(started + 0.3)
        elapsed_us = (time.perf_counter() - started) * 1e6
        await ws.close()
    assert places > 10
    assert len(order_fills) == (places + 1) // 2  # the taker fills, not the maker ones
    assert all(0 <= us <= elapsed_us for us in order_fills)
    assert max(sent_at_sizes) <= 4
    assert tally.fills == places + (places + 1) // 2
