"""A hostile client for tests, in a process of its own: `python -m tests.flood_subscribes
URL SYMBOL SECONDS CONNECTIONS`. Each connection re-sends `subscribe` to SYMBOL's book as
fast as its socket takes it, reading (and dropping) whatever comes back, and reconnects
when the exchange closes it, until SECONDS have passed. It prints "flooding" once the first
snapshot arrived, then, at the end, how many subscribes it sent, snapshots it got and
connections were refused (it knocks again after KNOCK_AGAIN_S).
Loopback only: it refuses any other host."""

import asyncio
import os
import sys
import time

import aiohttp

# Frames one connection may have sent ahead of what it has read back: enough to keep the
# exchange busy, small enough that the socket's own buffers bound it.
AHEAD = 64
NICENESS = 19
# After a refused connection (429), it tries again this soon: a reconnecting client, not a
# connection flood (that one needs a firewall in front of any server; see PROTOCOL.md).
KNOCK_AGAIN_S = 0.05
# The biggest frame it accepts (a 30,000-level snapshot is ~380 KB).
MAX_FRAME = 16 * 1024 * 1024


async def flood(
    url: str, symbol: str, deadline: float, started: asyncio.Event
) -> tuple[int, int, int]:
    subscribe = f'{{"op":"subscribe","channels":["book"],"symbols":["{symbol}"]}}'
    sent = snapshots = refused = 0
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:  # bounded by the deadline; reconnects on close
            try:
                ws = await http.ws_connect(url, max_msg_size=MAX_FRAME)
            except aiohttp.WSServerHandshakeError:  # refused (429): knock again soon
                refused += 1
                await asyncio.sleep(KNOCK_AGAIN_S)
                continue
            async with ws:
                ahead = 0
                while time.monotonic() < deadline and not ws.closed:
                    while ahead < AHEAD and not ws.closed:
                        await ws.send_str(subscribe)
                        sent += 1
                        ahead += 1
                    message = await ws.receive()
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    if '"book_snapshot"' in message.data[:40] or "RATE_LIMITED" in message.data:
                        ahead -= 1
                        snapshots += '"book_snapshot"' in message.data[:40]
                        if not started.is_set():
                            started.set()
                            print("flooding", flush=True)
    return sent, snapshots, refused


async def main(url: str, symbol: str, seconds: float, connections: int) -> None:
    if not url.startswith(("ws://127.", "ws://localhost")):
        sys.exit("loopback only")
    started = asyncio.Event()
    deadline = time.monotonic() + seconds
    floods = (flood(url, symbol, deadline, started) for _ in range(connections))
    counts = await asyncio.gather(*floods)
    sent, snapshots, refused = (sum(c[i] for c in counts) for i in range(3))
    print(f"sent {sent} snapshots {snapshots} connections refused {refused}", flush=True)


if __name__ == "__main__":
    # The attacker stands for another machine: on the test's shared cores it must not win
    # CPU from the exchange or the honest client, only load the exchange with its requests.
    os.nice(NICENESS)
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
