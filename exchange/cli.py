"""The `exchange` command line: parses arguments and hands over to the part that does the work."""

import argparse
import dataclasses
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from exchange.logs import LOG_FORMATS, configure
from gateway.limits import (
    ACCOUNT_RATE_PER_S,
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_HALF_OPEN,
    RATE_PER_S,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exchange", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the exchange: WebSocket and REST on one port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8080)
    serve.add_argument("--data-dir", type=Path, default=Path("data"))
    serve.add_argument("--durability", choices=("fsync", "none"), default="fsync")
    serve.add_argument("--demo", action="store_true", help="seed a demo market on a new data dir")
    serve.add_argument(
        "--max-connections", type=_positive_int, default=MAX_CONNECTIONS,
        help="open WebSockets at most",
    )  # fmt: skip
    serve.add_argument(
        "--rate-limit", type=_positive, default=RATE_PER_S,
        help="requests a second per WebSocket connection (bursts of twice as many)",
    )  # fmt: skip
    serve.add_argument(
        "--account-rate-limit", type=_positive, metavar="N",
        help="requests a second of all the WebSocket connections of one account together "
        f"(bursts of twice as many; default {ACCOUNT_RATE_PER_S:.0f}, never below --rate-limit)",
    )  # fmt: skip
    serve.add_argument(
        "--header-timeout", type=_positive, metavar="S",
        help="seconds a new connection has to send its first request's headers "
        f"(default {HEADER_TIMEOUT_S:g})",
    )  # fmt: skip
    serve.add_argument(
        "--max-half-open", type=_positive_int, metavar="N",
        help=f"connections at once still sending their first request (default {MAX_HALF_OPEN}); "
        "past it new ones are closed at once",
    )  # fmt: skip
    serve.add_argument(
        "--gather-ms", type=_non_negative, metavar="MS",
        help="journal writes start at least this far apart (unless 256 commands wait), "
        "so more commands share one fsync (default 2; 0: write whenever the disk is free)",
    )  # fmt: skip
    serve.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text",
        help="log lines on stderr: text for people, json one object a line (default text)",
    )  # fmt: skip
    commands.add_parser("demo", help="play a short scripted session on the in-process engine")
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
    if args.command == "serve":
        configure(args.log_format, logging.INFO)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        from gateway.server import ServeOptions, serve  # noqa: PLC0415

        options = ServeOptions(
            args.host, args.port, args.data_dir, args.durability, args.demo,
            args.max_connections, args.rate_limit,
            account_rate_limit=args.account_rate_limit,
        )  # fmt: skip
        if args.header_timeout is not None:
            options = dataclasses.replace(options, header_timeout=args.header_timeout)
        if args.max_half_open is not None:
            options = dataclasses.replace(options, max_half_open=args.max_half_open)
        if args.gather_ms is not None:
            options = dataclasses.replace(options, gather_ms=args.gather_ms)
        return serve(options)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from exchange import demo  # noqa: PLC0415

        demo.run()
        return 0
    from exchange import journal_tools  # noqa: PLC0415

    if args.journal_command == "verify":
        return journal_tools.verify(args.dir)
    return journal_tools.inspect(args.dir, args.from_seq, args.limit)


if __name__ == "__main__":
    sys.exit(main())
