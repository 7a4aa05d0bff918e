"""The trading page: `GET /` and its static files (`GET /web/{name}`) from gateway/web/.

Only the files in that folder with a known type are served, read once at start (a few
KiB each), so no request can name a path outside it. The page is a client of the public
protocol like any other; the Content-Security-Policy lets it load nothing but this server's
own files and talk to nothing but this server.
"""

from pathlib import Path

from aiohttp import web

WEB_DIR = Path(__file__).resolve().parent / "web"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# Nothing from another origin: scripts, styles and data only from this server.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP,
           "X-Content-Type-Options": "nosniff"}  # fmt: skip


def _load() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(WEB_DIR.iterdir()):
        kind = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and kind is not None:
            files[path.name] = (path.read_bytes(), kind)
    return files


FILES = _load()


def _serve(name: str) -> web.Response:
    found = FILES.get(name)
    if found is None:
        raise web.HTTPNotFound(reason=f"no such file: {name[:64]}")
    body, kind = found
    return web.Response(body=body, content_type=kind, charset="utf-8", headers=HEADERS)


async def index(request: web.Request) -> web.Response:
    return _serve("index.html")


async def asset(request: web.Request) -> web.Response:
    return _serve(request.match_info["name"])


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", index)
    router.add_get("/web/{name}", asset)
