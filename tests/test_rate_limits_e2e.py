"""Rate limits against the real server: a flood closed with 4029 still gets the answer of
every request the server took before, and one account's connections share one limit."""

import json
from pathlib import Path

from tests.raw_ws import OP_CLOSE, OP_TEXT, RawWebSocket
from tests.server import running

FLOOD = 1_200  # past a burst of 100 and the 1,000 refusals that close the connection


def _key(data_dir: Path, name: str) -> str:
    keys = json.loads((data_dir / "demo-keys.json").read_text())
    return str(keys[name]["api_key"])


def _place(n: int) -> str:
    return json.dumps({
        "op": "place", "req_id": n, "client_order_id": f"flood-{n}", "symbol": "ACME",
        "side": "buy", "type": "limit", "price": "1.00", "qty": 1,
    })  # fmt: skip


async def test_a_flood_closed_with_4029_first_gets_the_answer_of_every_order_taken(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "data", demo=True, extra=("--rate-limit", "50")) as server:
        headers = {"Authorization": f"Bearer {_key(server.data_dir, 'alice')}"}
        ws = await RawWebSocket.connect(server.ws_url, headers=headers)
        try:
            await ws.send_text([_place(n) for n in range(FLOOD)])  # one write, as a flood
            answers: dict[int, str] = {}
            frame = await ws.next_frame()
            while frame.opcode == OP_TEXT:  # bounded by what the server sends
                message = json.loads(frame.payload)
                if "req_id" in message:
                    assert message["req_id"] not in answers, f"answered twice: {message}"
                    answers[message["req_id"]] = message.get("code") or message["type"]
                frame = await ws.next_frame()
            assert (frame.opcode, frame.close_code) == (OP_CLOSE, 4029)
            await ws.send_close()
        finally:
            ws.close()
    # Every request up to the one that ended it was answered, none after it; the orders
    # taken (the burst, and what refilled meanwhile) were all answered `accepted`.
    assert sorted(answers) == list(range(len(answers)))
    outcomes = list(answers.values())
    assert outcomes.count("RATE_LIMITED") == 1_000
    assert outcomes.count("accepted") == len(outcomes) - 1_000 >= 100


async def test_the_connections_of_one_account_share_its_rate_limit(tmp_path: Path) -> None:
    # Each connection alone is far within its own limit (a burst of 4,000); together the
    # account has a burst of 10 and 5 a second more.
    extra = ("--account-rate-limit", "5")
    async with running(tmp_path / "data", demo=True, extra=extra) as server:
        headers = {"Authorization": f"Bearer {_key(server.data_dir, 'bob')}"}
        sockets = [await RawWebSocket.connect(server.ws_url, headers=headers) for _ in range(3)]
        other = await RawWebSocket.connect(server.ws_url)  # no account: only its own limit
        try:
            for ws in [*sockets, other]:
                await ws.send_text([json.dumps({"op": "ping", "req_id": n}) for n in range(50)])
            outcomes: list[str] = []
            for ws in sockets:
                for _ in range(50):  # one answer a request
                    message = json.loads((await ws.next_frame()).payload)
                    outcomes.append(message.get("code") or message["type"])
            other_outcomes = [
                json.loads((await other.next_frame()).payload)["type"] for _ in range(50)
            ]
        finally:
            for ws in [*sockets, other]:
                ws.close()
    assert outcomes.count("pong") + outcomes.count("RATE_LIMITED") == 150
    # 150 pings against a burst of 10: unless the test took more than 20 s, well over half
    # are refused (each connection alone would have let all of its 50 through).
    assert outcomes.count("RATE_LIMITED") > 75, outcomes
    assert other_outcomes == ["pong"] * 50
