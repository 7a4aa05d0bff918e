"""The `exchange` command line: parses arguments and hands over to the part that does the work."""

import argparse
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.logs import LOG_FORMATS, configure
from exchange.sequencer import GATHER_MS
from gateway.limits import (
    ACCOUNT_RATE_PER_S,
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_HALF_OPEN,
    RATE_PER_S,
)

if TYPE_CHECKING:
    from gateway.demofeed import DemoFeed
    from gateway.server import Companion


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exchange", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the exchange: WebSocket and REST on one port")
    _client_flags(serve)
    serve.add_argument("--data-dir", type=Path, default=Path("data"))
    serve.add_argument("--durability", choices=("fsync", "none"), default="fsync")
    serve.add_argument("--demo", action="store_true", help="seed a demo market on a new data dir")
    serve.add_argument(  # tests only: time moves by POST /v1/admin/clock (docs/PROTOCOL.md)
        "--test-clock", type=_positive_int, default=0, help=argparse.SUPPRESS
    )
    serve.add_argument(
        "--simulate", action="store_true",
        help="run the simulated market beside the server (agents trading ACME over WebSocket "
        "around a hidden value; the demo-only feed /v1/demo/fundamental shows it)",
    )  # fmt: skip
    _gather_flag(serve)
    sequencer = commands.add_parser(
        "sequencer", help="cluster role: sequence, match and journal commands from NATS"
    )
    _nats_flag(sequencer)
    sequencer.add_argument("--data-dir", type=Path, default=Path("data"))
    sequencer.add_argument("--durability", choices=("fsync", "none"), default="fsync")
    sequencer.add_argument(
        "--node-id", type=_node_id, default="sequencer-1",
        help="this sequencer's name (letters, digits, - and _; at most 64)",
    )  # fmt: skip
    _gather_flag(sequencer)
    sequencer.add_argument(  # tests only: the leader's fsync fails once PATH exists
        "--fail-sync-when", type=Path, default=None, metavar="PATH", help=argparse.SUPPRESS
    )
    sequencer.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    # Tests take snapshots and trim the stream more often than operators need to.
    sequencer.add_argument("--snapshot-every", type=_positive_int, help=argparse.SUPPRESS)
    sequencer.add_argument("--trim-margin", type=_positive_int, help=argparse.SUPPRESS)
    gateway = commands.add_parser(
        "gateway", help="cluster role: serve the client protocol, sequencer over NATS"
    )
    _nats_flag(gateway)
    _client_flags(gateway)
    gateway.add_argument(
        "--demo", action="store_true",
        help="seed the demo market through this gateway when the exchange has no account yet",
    )  # fmt: skip
    gateway.add_argument(
        "--demo-keys", type=Path, metavar="FILE", default=Path("demo-keys.json"),
        help="where --demo writes the demo API keys (mode 0600; default demo-keys.json)",
    )  # fmt: skip
    gateway.add_argument(  # tests take snapshots more often than operators need to
        "--read-snapshot-every", type=_positive_int, default=None, help=argparse.SUPPRESS
    )
    gateway.add_argument(  # tests only: a kill loop answers lost commands sooner
        "--answer-timeout-s", type=_positive, default=None, help=argparse.SUPPRESS
    )
    cluster = commands.add_parser(
        "cluster", help="run a local cluster: nats-server(s), the sequencer and the gateways"
    )
    cluster.add_argument("--data-dir", type=Path, default=Path("data"))
    # The contract's defaults (API.md): a replicated cluster, as a venue would run it.
    cluster.add_argument("--nats-nodes", type=int, choices=(1, 3), default=3)
    cluster.add_argument(
        "--sequencers", type=_positive_int, default=2,
        help="sequencer nodes: the first leads, the others follow as standbys",
    )  # fmt: skip
    cluster.add_argument("--gateways", type=_positive_int, default=2)
    cluster.add_argument("--host", default="127.0.0.1")
    cluster.add_argument(
        "--port", type=_port, default=8080, help="gateway i (from 0) listens on port+i"
    )
    cluster.add_argument("--demo", action="store_true", help="seed a demo market once")
    cluster.add_argument(
        "--currency", type=_currency, default="USD",
        help="the cash currency's code, for every gateway (as `exchange gateway --currency`)",
    )  # fmt: skip
    commands.add_parser("demo", help="play a short scripted session on the in-process engine")
    _simulate_parser(commands)
    journal = commands.add_parser("journal", help="look at a data directory's journal")
    journal_commands = journal.add_subparsers(dest="journal_command", required=True)
    verify = journal_commands.add_parser(
        "verify", help="check and replay every record; exit 0 when intact"
    )
    verify.add_argument("dir", type=Path, help="the data directory (or its journal/)")
    inspect = journal_commands.add_parser("inspect", help="print records as JSON, one a line")
    inspect.add_argument("dir", type=Path, help="the data directory (or its journal/)")
    inspect.add_argument("--from", dest="from_seq", type=_whole, default=1, metavar="SEQ")
    inspect.add_argument("--limit", type=_positive_int, default=1_000, metavar="N")
    return parser


def _simulate_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    simulate = commands.add_parser(
        "simulate", help="a simulated market: agents trading over WebSocket around a hidden value"
    )
    simulate.add_argument("--url", default="http://127.0.0.1:8080", help="the exchange's HTTP URL")
    simulate.add_argument(
        "--admin-token", default=None,
        help="default: $EXCHANGE_ADMIN_TOKEN, else the file ./data/admin-token",
    )  # fmt: skip
    simulate.add_argument("--symbol", default="ACME", help="listed (trading) if it is not yet")
    simulate.add_argument("--seed", type=_whole, default=1)
    simulate.add_argument("--steps", type=_positive_int, default=None, help="default: until Ctrl-C")
    simulate.add_argument(
        "--speed", type=_non_negative, default=1.0,
        help="simulated seconds a wall-clock second (0: as fast as the exchange answers)",
    )  # fmt: skip
    simulate.add_argument("--maker-rate", type=_positive, default=1.0, help="acts a second")
    simulate.add_argument("--noise-traders", type=_whole, default=3)
    simulate.add_argument("--noise-rate", type=_positive, default=0.5, help="acts a second each")
    simulate.add_argument("--informed-traders", type=_whole, default=3)
    simulate.add_argument("--informed-rate", type=_positive, default=0.5, help="acts a second each")
    simulate.add_argument(
        "--report", type=Path, default=None, metavar="DIR",
        help="write DIR/simulation.json and DIR/simulation.png at the end",
    )  # fmt: skip
    simulate.add_argument(
        "--accounts", type=Path, default=None, metavar="FILE",
        help="the agents' accounts and keys: reused if FILE exists, else made and written there",
    )  # fmt: skip


def _client_flags(command: argparse.ArgumentParser) -> None:
    """What every role that serves clients takes: where, and the bounds on clients."""
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=_port, default=8080)
    command.add_argument(
        "--max-connections", type=_positive_int, default=MAX_CONNECTIONS,
        help="open WebSockets at most",
    )  # fmt: skip
    command.add_argument(
        "--rate-limit", type=_positive, default=RATE_PER_S,
        help="requests a second per WebSocket connection (bursts of twice as many)",
    )  # fmt: skip
    command.add_argument(
        "--account-rate-limit", type=_positive, metavar="N",
        help="requests a second of all the WebSocket connections of one account together "
        f"(bursts of twice as many; default {ACCOUNT_RATE_PER_S:.0f}, never below --rate-limit)",
    )  # fmt: skip
    command.add_argument(
        "--header-timeout", type=_positive, metavar="S", default=HEADER_TIMEOUT_S,
        help=f"seconds a new connection has to send its first request's headers "
        f"(default {HEADER_TIMEOUT_S:g})",
    )  # fmt: skip
    command.add_argument(
        "--max-half-open", type=_positive_int, metavar="N", default=MAX_HALF_OPEN,
        help=f"connections at once still sending their first request (default {MAX_HALF_OPEN}); "
        "past it new ones are closed at once",
    )  # fmt: skip
    command.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text",
        help="log lines on stderr: text for people, json one object a line (default text)",
    )  # fmt: skip
    command.add_argument(
        "--currency", type=_currency, default="USD",
        help="the cash currency's code: the quote asset of the Binance dialect's symbols "
        "(ACME + USD = ACMEUSD; default USD)",
    )  # fmt: skip
    command.add_argument(  # tests only: the Binance dialect's request weight a minute
        "--binance-weight-limit", type=_positive_int, default=None, help=argparse.SUPPRESS
    )


def _gather_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--gather-ms", type=_non_negative, metavar="MS", default=GATHER_MS,
        help="journal writes start at least this far apart (unless 256 commands wait), "
        f"so more commands share one fsync (default {GATHER_MS:g}; 0: write whenever the "
        "disk is free)",
    )  # fmt: skip


def _nats_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--nats", type=_nats_urls, required=True, metavar="URL[,URL..]",
        help="the NATS servers (JetStream on), e.g. nats://127.0.0.1:4222",
    )  # fmt: skip


def _node_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise argparse.ArgumentTypeError(
            f"a node id is 1..64 letters, digits, - or _, not {text[:80]!r}"
        )
    return text


def _currency(text: str) -> str:
    if not re.fullmatch(r"[A-Z]{2,10}", text):
        raise argparse.ArgumentTypeError(f"a currency code is 2..10 of A-Z, not {text[:80]!r}")
    return text


def _nats_urls(text: str) -> list[str]:
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls or not all(url.startswith(("nats://", "tls://")) for url in urls):
        raise argparse.ArgumentTypeError(f"NATS URLs look like nats://HOST:PORT, not {text!r}")
    return urls


# The highest TCP port; 0 asks the OS for a free one.
MAX_PORT = 65_535


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text}")
    return value


def _whole(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _port(text: str) -> int:
    value = _whole(text)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"a TCP port is 0..{MAX_PORT}, not {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Imports wait for the command that needs them: `journal verify` should not load aiohttp.
    if args.command in {"serve", "gateway"}:
        configure(args.log_format, logging.INFO)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if args.command == "serve":
        from gateway.server import ServeOptions, serve  # noqa: PLC0415

        return serve(ServeOptions(
            args.host, args.port, args.data_dir, args.durability, args.demo,
            args.max_connections, args.rate_limit, gather_ms=args.gather_ms,
            account_rate_limit=args.account_rate_limit, header_timeout=args.header_timeout,
            max_half_open=args.max_half_open, currency=args.currency,
            binance_weight_limit=args.binance_weight_limit, test_clock=args.test_clock,
            companion=_companion(args.data_dir) if args.simulate else None,
        ))  # fmt: skip
    if args.command == "gateway":
        from gateway import gateway_node, natsbus, readbucket  # noqa: PLC0415

        return gateway_node.run(gateway_node.GatewayOptions(
            args.nats, args.host, args.port, args.max_connections, args.rate_limit,
            args.account_rate_limit, args.header_timeout, args.max_half_open,
            demo_keys=args.demo_keys if args.demo else None,
            read_snapshot_every=args.read_snapshot_every or readbucket.READ_SNAPSHOT_EVERY,
            answer_timeout_s=args.answer_timeout_s or natsbus.ANSWER_TIMEOUT_S,
            currency=args.currency, binance_weight_limit=args.binance_weight_limit,
        ))  # fmt: skip
    if args.command == "sequencer":
        configure(args.log_format, logging.INFO)
        from exchange import sequencer_node, streamtrim  # noqa: PLC0415
        from exchange.sequencer import SNAPSHOT_EVERY  # noqa: PLC0415

        return sequencer_node.run(sequencer_node.NodeOptions(
            args.nats, args.data_dir, args.durability, args.node_id, args.gather_ms,
            fail_sync_when=args.fail_sync_when,
            snapshot_every=args.snapshot_every or SNAPSHOT_EVERY,
            trim_margin=args.trim_margin or streamtrim.TRIM_MARGIN_MESSAGES,
        ))  # fmt: skip
    if args.command == "cluster":
        from exchange import cluster_launcher  # noqa: PLC0415

        if args.port + args.gateways - 1 > MAX_PORT or args.port == 0:
            print(f"exchange: gateways listen on --port .. --port+{args.gateways - 1}, "
                  f"each in 1..{MAX_PORT}", file=sys.stderr)  # fmt: skip
            return 2
        return cluster_launcher.run(cluster_launcher.ClusterOptions(
            args.data_dir, args.nats_nodes, args.sequencers, args.gateways, args.port,
            args.host, args.demo, args.currency,
        ))  # fmt: skip
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "demo":
        from exchange import demo  # noqa: PLC0415

        demo.run()
        return 0
    from exchange import journal_tools  # noqa: PLC0415

    if args.journal_command == "verify":
        return journal_tools.verify(args.dir)
    return journal_tools.inspect(args.dir, args.from_seq, args.limit)


# The simulated market beside `exchange serve --simulate`: its agents' accounts are kept
# here, so a restart trades on with them (cancelling what they left resting).
SIM_ACCOUNTS_FILE = "sim-accounts.json"


def _companion(data_dir: Path) -> "Companion":
    """`exchange serve --simulate`'s simulated market, at the default (gentle) rates."""
    from loadtest.simulation import runner  # noqa: PLC0415

    async def run(base_url: str, admin_token: str, feed: "DemoFeed") -> None:
        options = runner.SimOptions(
            base_url, admin_token, symbol=feed.symbol, accounts_file=data_dir / SIM_ACCOUNTS_FILE
        )
        await runner.live(options, feed.record)

    return run


def _simulate(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from loadtest.simulation import runner  # noqa: PLC0415

    token = args.admin_token or os.environ.get("EXCHANGE_ADMIN_TOKEN")
    token_file = Path("data") / "admin-token"
    if not token and token_file.exists():
        token = token_file.read_text().strip()
    if not token:
        print("exchange simulate: give --admin-token (or set $EXCHANGE_ADMIN_TOKEN)",
              file=sys.stderr)  # fmt: skip
        return 2
    options = runner.SimOptions(
        args.url, token, args.symbol, args.seed, args.steps, args.speed, args.maker_rate,
        args.noise_traders, args.noise_rate, args.informed_traders, args.informed_rate,
        report_dir=args.report, accounts_file=args.accounts,
    )  # fmt: skip
    try:
        return asyncio.run(runner.simulate(options))
    except KeyboardInterrupt:
        return 130
    except OSError as problem:
        print(f"exchange simulate: cannot reach {args.url}: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
