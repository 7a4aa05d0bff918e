"""A bare aiohttp WebSocket echo server: the baseline the exchange is measured against.

It answers every text frame with the same frame, on the same uvloop + aiohttp stack the
exchange runs on, so a figure can be given as a ratio to what the framework alone does.
"""

import argparse
import asyncio

import uvloop
from aiohttp import WSMsgType, web


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=64 * 1024)
    await ws.prepare(request)
    async for message in ws:  # until the client closes
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
    return ws


async def _serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/v1/ws", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"echo listening on ws://127.0.0.1:{port}/v1/ws", flush=True)
    await asyncio.Event().wait()  # until the parent kills it


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.echo")
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(_serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
