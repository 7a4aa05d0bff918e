"""`exchange gateway --nats URL --port P`: the whole client protocol in a process of its own.

Any number of them may run, each for any account. It builds its read side from the
newest read snapshot in the cluster's bucket (gateway/readbucket.py; none: from the
stream's first message) and the stream's batches after it, as every other gateway built
it, so books, orders and market-data seqs are the same on all of them; it sends commands to the
sequencer over NATS (gateway/natsbus.py) and answers its own clients from the stream.
The admin token comes from $EXCHANGE_ADMIN_TOKEN (every gateway of a cluster needs the
same one). With `--demo` it seeds the demo market through its own bus once it has caught
up with the stream, when no account exists yet (gateway/demo.py), and writes the keys to
`--demo-keys FILE`; pass it to one gateway of a cluster. It puts its share of the
read snapshots in the bucket, and at a clean stop logs its read state's digest (two
gateways with the same digest at the same seq answer every read alike).
"""

import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nats
from aiohttp import WSCloseCode

from exchange.bus import BusyError, SequencerStoppedError, UnavailableError
from exchange.natsstream import ensure_stream, log_nats_error
from exchange.runtime import stop_on_signals, tune_gc
from gateway import demo
from gateway.auth import ADMIN_TOKEN_ENV
from gateway.clusterview import NatsClusterView
from gateway.limits import HEADER_TIMEOUT_S, MAX_CONNECTIONS, MAX_HALF_OPEN, RATE_PER_S
from gateway.natsbus import ANSWER_TIMEOUT_S, NatsBus
from gateway.readbucket import READ_SNAPSHOT_EVERY, SharedSnapshots, load_newest, open_bucket
from gateway.readmodel import ReadModel
from gateway.readsnapshots import state_digest
from gateway.server import start_app

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GatewayOptions:
    nats_urls: list[str]
    host: str = "127.0.0.1"
    port: int = 8080
    max_connections: int = MAX_CONNECTIONS
    rate_limit: float = RATE_PER_S
    account_rate_limit: float | None = None
    header_timeout: float = HEADER_TIMEOUT_S
    max_half_open: int = MAX_HALF_OPEN
    # Where the demo market's keys go; None: no demo market.
    demo_keys: Path | None = None
    # Records between the read snapshots put in the bucket (a hidden flag: tests).
    read_snapshot_every: int = READ_SNAPSHOT_EVERY
    # A command unanswered this long is answered UNAVAILABLE (a hidden flag: tests).
    answer_timeout_s: float = ANSWER_TIMEOUT_S
    # The cash currency: the quote asset of the Binance dialect's symbols.
    currency: str = "USD"
    binance_weight_limit: int | None = None  # a hidden flag: tests


def run(options: GatewayOptions) -> int:
    import uvloop  # noqa: PLC0415 - only the roles need it

    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not token:
        print(
            f"exchange: a gateway needs the cluster's admin token in ${ADMIN_TOKEN_ENV}",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        return 2
    try:
        return uvloop.run(_run(options, token))
    except (OSError, TimeoutError, nats.errors.NoServersError) as problem:
        urls = ",".join(options.nats_urls)
        print(f"exchange: cannot reach NATS at {urls}: {problem}", file=sys.stderr, flush=True)
        return 2


async def _run(options: GatewayOptions, token: str) -> int:
    nc = await nats.connect(
        servers=options.nats_urls, name="gateway", connect_timeout=CONNECT_TIMEOUT_S,
        max_reconnect_attempts=-1, allow_reconnect=True, error_cb=log_nats_error,
    )  # fmt: skip
    js = nc.jetstream()
    await ensure_stream(js)
    bucket = await open_bucket(js)
    loaded = await load_newest(js, bucket)
    state, after_stream_seq = loaded if loaded is not None else (None, 0)
    read = ReadModel(state)
    bus = NatsBus(
        nc, js, durable_seq=read.durable_seq, answer_timeout_s=options.answer_timeout_s
    )
    bus.subscribe(read, batch_end=read.end_batch)
    await bus.start(after_stream_seq)
    if bus.failure is not None:
        await bus.close()
        await nc.close()
        print(f"exchange: gateway cannot follow the stream: {bus.failure}", file=sys.stderr)
        return 2
    log.info(
        "gateway %s caught up with the stream at seq %d: %d records applied after stream "
        "message %d", bus.gateway_id, read.durable_seq, bus.replayed, after_stream_seq,
    )  # fmt: skip
    newest = state.durable_seq if state is not None else 0
    snapshots = SharedSnapshots(bucket, read, bus, newest, options.read_snapshot_every)
    read.after_batch(snapshots.after_batch)
    cluster = NatsClusterView(nc, js)
    await cluster.start()
    if options.demo_keys is not None and not read.state.balances:
        try:
            await demo.seed(bus, options.demo_keys, token)
        except (BusyError, SequencerStoppedError, UnavailableError) as problem:
            line = f"exchange: cannot seed the demo market: {problem!r}"
            print(line, file=sys.stderr, flush=True)
            await bus.close()
            await nc.close()
            return 2
    tune_gc()

    stop = stop_on_signals()
    loop = asyncio.get_running_loop()
    app, runner, listener = await start_app(bus, read, token, options, cluster)
    if listener is None:
        await snapshots.close()
        await cluster.close()
        await bus.close()
        await runner.cleanup()
        await nc.close()
        return 2
    where = f"{options.host}:{options.port}"
    print(
        f"exchange gateway {bus.gateway_id} listening on http://{where}  (WebSocket: "
        f"ws://{where}/v1/ws), following the stream at seq {read.durable_seq}",
        flush=True,
    )
    stopping = loop.create_task(stop.wait())
    failing = loop.create_task(bus.failed.wait())
    await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    failing.cancel()
    for session in list(app["hub"].sessions):
        session.close(WSCloseCode.GOING_AWAY, "server shutting down")
    listener.close()
    await snapshots.close()
    await cluster.close()
    await bus.close()
    await runner.cleanup()
    await nc.close()
    if bus.failure is not None:
        print(f"exchange: gateway stopped: {bus.failure}", file=sys.stderr, flush=True)
        return 2
    log.info(
        "gateway %s stopped at seq %d, read state digest %s",
        bus.gateway_id, read.durable_seq, state_digest(read.state),
    )  # fmt: skip
    return 0
