"""The demo-only fundamental feed: `GET /v1/demo/fundamental`.

When `exchange serve --demo --simulate` runs the simulated market, the simulation tells
this feed the hidden value its informed traders look at, and the trading page draws it
beside the traded price, so the seed's lesson (trades drive the price towards the value)
can be watched. Any other server answers `{"running": false, ...}` with no points: no real
market knows its securities' value (a 200, so the page's look costs no console error).
"""

import time
from collections import deque
from typing import Any

from aiohttp import web

# One point a second, the newest hour of them: what the page's chart spans.
POINT_EVERY_NS = 1_000_000_000
POINTS_KEPT = 3_600
NOT_RUNNING: dict[str, Any] = {"running": False, "symbol": None, "value": None, "points": []}


class DemoFeed:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.points: deque[tuple[int, str]] = deque(maxlen=POINTS_KEPT)  # (ts ns, price)

    def record(self, price: str, now_ns: int | None = None) -> None:
        """The value now; within a second of the last point it replaces that point."""
        now = time.time_ns() if now_ns is None else now_ns
        if self.points and now - self.points[-1][0] < POINT_EVERY_NS:
            self.points[-1] = (self.points[-1][0], price)
        else:
            self.points.append((now, price))

    def shown(self) -> dict[str, Any]:
        return {
            "running": True,
            "symbol": self.symbol,
            "value": self.points[-1][1] if self.points else None,
            "points": [list(point) for point in self.points],
        }


async def handler(request: web.Request) -> web.Response:
    feed: DemoFeed | None = request.app["demo_feed"]
    shown = feed.shown() if feed is not None else NOT_RUNNING
    return web.json_response(shown, headers={"Cache-Control": "no-cache"})
