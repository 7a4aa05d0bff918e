"""`exchange serve`: recover, then run the sequencer and the aiohttp app on one uvloop loop.

Clean shutdown on SIGTERM or SIGINT: stop accepting connections, close every WebSocket
with 1001, let the sequencer finish what it took, snapshot the engine and the read side,
exit 0. On start the read side is rebuilt from its snapshot and the journal. An engine or journal
failure stops the process with a non-zero status and the reason.
"""

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aiohttp import WSCloseCode, web

from exchange import compiled_core
from exchange.bus import Bus, ManualClock
from exchange.datadir import DataDirError, claim
from exchange.journal.journal import JournalCorruptError
from exchange.recovery import JOURNAL_DIR, SNAPSHOT_DIR, RecoveryError
from exchange.runtime import stop_on_signals, tune_gc
from exchange.sequencer import GATHER_MS, recover_sequencer, stop_and_wait
from gateway import demo
from gateway.app import build_app
from gateway.auth import admin_token
from gateway.clusterview import ClusterSource
from gateway.demofeed import DemoFeed
from gateway.halfopen import HalfOpenGuard, listen
from gateway.limits import HEADER_TIMEOUT_S, MAX_CONNECTIONS, MAX_HALF_OPEN, RATE_PER_S
from gateway.readmodel import ReadModel
from gateway.readsnapshots import (
    READ_SNAPSHOT_DIR,
    ReadSnapshots,
    ReadSnapshotStore,
    recover_read,
)

if TYPE_CHECKING:
    from gateway.ws import Hub

log = logging.getLogger(__name__)

# What runs beside a demo server (the simulated market, wired by the CLI): given the
# server's URL, the admin token and the demo feed to tell the hidden value to.
Companion = Callable[[str, str, DemoFeed], Awaitable[object]]
# The instrument the simulated market of the demo trades, and its feed shows.
DEMO_SIMULATED_SYMBOL = "ACME"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    durability: str = "fsync"
    demo: bool = False
    max_connections: int = MAX_CONNECTIONS
    rate_limit: float = RATE_PER_S
    gather_ms: float = GATHER_MS
    # None: gateway.limits.account_rate's default (ACCOUNT_RATE_PER_S, at least rate_limit)
    account_rate_limit: float | None = None
    header_timeout: float = HEADER_TIMEOUT_S
    max_half_open: int = MAX_HALF_OPEN
    # Tests only (hidden flag --test-clock NS): the sequencer's clock starts at NS and
    # moves only by POST /v1/admin/clock. 0: the wall clock.
    test_clock: int = 0
    # `--simulate`: run the simulated market beside the server (and its demo feed).
    companion: Companion | None = None
    # The cash currency: the quote asset of the Binance dialect's symbols (ACME + USD).
    currency: str = "USD"
    # The Binance dialect's request weight a minute and address (None: its default).
    binance_weight_limit: int | None = None


def serve(options: ServeOptions) -> int:
    """Run until stopped; the exit status. Problems a person must fix (the data directory
    in use or unwritable, a journal that lost acknowledged records) are one line on stderr
    and status 2, before the port opens."""
    import uvloop  # noqa: PLC0415 - only the server needs it

    try:
        lock = claim(options.data_dir, (JOURNAL_DIR, SNAPSHOT_DIR, READ_SNAPSHOT_DIR))
    except DataDirError as problem:
        print(f"exchange: {problem}", file=sys.stderr, flush=True)
        return 2
    try:
        return uvloop.run(_serve(options))
    except (JournalCorruptError, RecoveryError) as problem:
        line = f"exchange: cannot recover {options.data_dir}: {problem}"
        print(line, file=sys.stderr, flush=True)
        return 2
    finally:
        lock.release()


async def _serve(options: ServeOptions) -> int:
    token = admin_token(options.data_dir)
    durable = options.durability == "fsync"
    recovered, sequencer = recover_sequencer(
        options.data_dir, options.durability, options.gather_ms
    )
    if options.test_clock:
        clock = ManualClock(options.test_clock)
        clock.wake = sequencer.poke
        sequencer.clock = clock
    read_store = ReadSnapshotStore(options.data_dir / READ_SNAPSHOT_DIR, durable=durable)
    read = ReadModel(recover_read(read_store, recovered.journal, recovered.engine))
    read_snapshots = ReadSnapshots(read_store)
    # A read snapshot follows each engine snapshot (readsnapshots.py says why).
    read.after_batch(lambda: read_snapshots.maybe_take(read.state, sequencer.last_snapshot_seq))
    sequencer.subscribe(read, batch_end=read.end_batch)
    tune_gc()
    sequencing = asyncio.get_running_loop().create_task(sequencer.run(), name="sequencer")

    # Before the port opens: a client that sees the server up may stop it at once, and a
    # signal that arrived before the handlers would kill it without a clean shutdown.
    stop = stop_on_signals()
    loop = asyncio.get_running_loop()

    feed = DemoFeed(DEMO_SIMULATED_SYMBOL) if options.companion is not None else None
    app, runner, listener = await start_app(sequencer, read, token, options, demo_feed=feed)
    if listener is None:
        await sequencer.stop()
        await sequencing
        await runner.cleanup()
        return 2

    keys_path = options.data_dir / demo.DEMO_KEYS_FILE
    keys = demo.saved_keys(keys_path)
    if options.demo and not read.state.balances:
        keys = await demo.seed(sequencer, keys_path, token)
    _welcome(options, keys)
    beside = None
    if options.companion is not None and feed is not None:
        base = f"http://{_local(options.host)}:{listener.sockets[0].getsockname()[1]}"
        beside = loop.create_task(_companion(options.companion(base, token, feed)))

    stopping = loop.create_task(stop.wait())
    await asyncio.wait({stopping, sequencing}, return_when=asyncio.FIRST_COMPLETED)
    if beside is not None:  # first: its clients' orders go while the exchange still takes them
        beside.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beside

    hub: Hub = app["hub"]
    for session in list(hub.sessions):
        session.close(WSCloseCode.GOING_AWAY, "server shutting down")
    listener.close()  # no new connections; runner.cleanup() closes the open ones
    status = await stop_and_wait(sequencer, sequencing)
    # Nothing applies records any more: the read side as of the last durable one.
    await loop.run_in_executor(None, read_snapshots.take_now, read.state)
    await runner.cleanup()
    stopping.cancel()
    return status


def _local(host: str) -> str:
    """Where a client on this machine reaches a server listening on `host`."""
    return "127.0.0.1" if host in {"0.0.0.0", "", "::"} else host  # noqa: S104


async def _companion(running: Awaitable[object]) -> None:
    """Run what goes beside the server; its failure is logged, the exchange goes on."""
    try:
        await running
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the simulated market stopped")


class ClientLimits(Protocol):
    """Where a role that serves clients listens, and its bounds on them (ServeOptions and
    the gateway's options both carry them)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def rate_limit(self) -> float: ...
    @property
    def account_rate_limit(self) -> float | None: ...
    @property
    def header_timeout(self) -> float: ...
    @property
    def max_half_open(self) -> int: ...


async def start_app(
    bus: Bus, read: ReadModel, token: str, options: ClientLimits,
    cluster: ClusterSource | None = None, demo_feed: DemoFeed | None = None,
) -> tuple[web.Application, web.AppRunner, asyncio.Server | None]:
    """The app, set up, and its listening socket: None (with one line on stderr) when the
    port cannot be had; the caller then cleans up the runner."""
    guard = HalfOpenGuard(options.header_timeout, options.max_half_open)
    app = build_app(
        bus, read, token, options.max_connections, options.rate_limit,
        options.account_rate_limit, guard, cluster, demo_feed,
        getattr(options, "currency", "USD"), getattr(options, "binance_weight_limit", None),
    )  # fmt: skip
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    return app, runner, await open_port(runner, guard, options.host, options.port)


async def open_port(
    runner: web.AppRunner, guard: HalfOpenGuard, host: str, port: int
) -> asyncio.Server | None:
    """The listening socket; None (and one line on stderr) when the port is taken or the
    address is not this machine's."""
    try:
        return await listen(runner, guard, host, port)
    except OSError as problem:
        print(
            f"exchange: cannot listen on {host}:{port}: {problem.strerror or problem}; stop "
            "what uses it or pass another --port",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        return None


def _welcome(options: ServeOptions, keys: dict[str, dict[str, str]]) -> None:
    base = f"http://{options.host}:{options.port}"
    lines = [
        (
            f"exchange listening on {base}/  (the trading page: open it in a browser; "
            f"WebSocket: ws://{options.host}:{options.port}/v1/ws)"
        ),
        f"admin token: in $EXCHANGE_ADMIN_TOKEN or {options.data_dir / 'admin-token'}",
        f"core: {compiled_core.describe()}",
    ]
    if keys:
        lines.extend(demo.key_lines(keys, options.data_dir))
        alice = keys.get("alice", {}).get("api_key", "KEY")
        lines.append(
            f"try:  curl -s {base}/v1/book/ACME ; "
            f"curl -s -H 'Authorization: Bearer {alice}' {base}/v1/account"
        )
    if options.companion is not None:
        lines.append(
            f"simulated market: agents trade {DEMO_SIMULATED_SYMBOL} around a hidden value "
            f"the page shows (demo only: {base}/v1/demo/fundamental)"
        )
    print("\n".join(lines), flush=True)
