"""The page's files and the demo feed over HTTP, against the real server: what a browser
gets, what it never gets (a file outside gateway/web/), and the feed's shape."""

from pathlib import Path

import aiohttp

from gateway.demofeed import POINT_EVERY_NS, DemoFeed
from gateway.webpage import CSP
from tests import server as srv


async def test_the_page_and_its_files_are_served_from_the_package(tmp_path: Path) -> None:
    async with srv.running(tmp_path / "data") as server, aiohttp.ClientSession() as http:
        async with http.get(server.base_url + "/") as reply:
            assert reply.status == 200
            assert reply.content_type == "text/html"
            assert reply.headers["Content-Security-Policy"] == CSP
            page = await reply.text()
        assert 'data-testid="book-bids"' in page
        assert "http://" not in page  # nothing from another origin
        assert "https://" not in page
        async with http.get(server.base_url + "/web/main.js") as reply:
            assert reply.status == 200
            assert reply.content_type == "text/javascript"
        for missing in ("/web/nope.js", "/web/..%2Fapp.py", "/web/__init__.py"):
            async with http.get(server.base_url + missing) as reply:
                assert reply.status == 404, missing
                assert (await reply.json())["code"] == "NOT_FOUND"
        async with http.get(server.base_url + "/v1/demo/fundamental") as reply:
            assert reply.status == 200
            assert await reply.json() == {
                "running": False, "symbol": None, "value": None, "points": [],
            }  # fmt: skip
        async with http.get(server.base_url + "/?bogus=1") as reply:
            assert reply.status == 400


def test_the_demo_feed_keeps_one_point_a_second() -> None:
    feed = DemoFeed("ACME")
    feed.record("10.00", now_ns=0)
    feed.record("10.01", now_ns=POINT_EVERY_NS - 1)  # within the second: replaces
    feed.record("10.02", now_ns=POINT_EVERY_NS)
    assert feed.shown() == {
        "running": True, "symbol": "ACME", "value": "10.02",
        "points": [[0, "10.01"], [POINT_EVERY_NS, "10.02"]],
    }  # fmt: skip
