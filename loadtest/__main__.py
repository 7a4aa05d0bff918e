"""`python -m loadtest run ...`, `python -m loadtest baseline ...` and
`python -m loadtest targets ...`."""

import argparse
import contextlib
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import uvloop

from exchange.runtime import tune_gc
from gateway.client import RefusedError
from loadtest import baseline, cluster_targets, harness, targets

DEFAULT_URL = "ws://127.0.0.1:8080/v1/ws"
# HTTP statuses with which the exchange refuses an admin token.
TOKEN_REFUSED = (401, 403)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Niceness a client process may add: lowering one's priority needs no privilege.
NICE_CHOICES = range(20)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _local(url: str) -> bool:
    return url.startswith(("ws://127.", "ws://localhost"))


@contextlib.contextmanager
def _one_line_errors(url: str) -> Iterator[None]:
    """A person's mistake (no exchange there, a wrong token) ends the run with one line
    saying what to do, not a traceback."""
    try:
        yield
    except aiohttp.ClientConnectorError as problem:
        refused = isinstance(problem.os_error, ConnectionRefusedError)
        reason = "connection refused" if refused else str(problem.os_error)
        sys.exit(
            f"loadtest: cannot reach the exchange at {url} ({reason}): is it running? "
            "`make run` or `exchange serve` starts one"
        )
    except RefusedError as refused:
        if refused.status in TOKEN_REFUSED:
            sys.exit(
                f"loadtest: the exchange refused the admin token ({refused.status}): pass the "
                "server's, from $EXCHANGE_ADMIN_TOKEN or DATA_DIR/admin-token"
            )
        sys.exit(f"loadtest: the exchange refused the run's set-up: {refused}")
    except targets.PhaseError as failed:
        sys.exit(f"loadtest: {failed} (its own message is above)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=harness.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="load a running exchange")
    run.add_argument(
        "--url", action="append", metavar="URL",
        help=f"the exchange ({DEFAULT_URL}); repeated, the gateways of one cluster, used in turn",
    )  # fmt: skip
    run.add_argument("--admin-token", required=True)
    run.add_argument("--makers", type=int, default=4)
    run.add_argument("--takers", type=int, default=4)
    run.add_argument("--subscribers", type=int, default=4)
    run.add_argument("--rate", default="2000", help="orders/s offered in all, or max")
    run.add_argument("--duration", type=float, default=10.0, help="seconds")
    run.add_argument("--report", type=Path, default=Path("loadtest-report.json"))
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--processes", type=int, default=1, help="client processes to spread over")
    run.add_argument("--batched-md", action="store_true", help="subscribers take one frame a batch")
    run.add_argument(
        "--in-flight", type=_at_least_one, default=harness.MAX_IN_FLIGHT_PER_CLIENT,
        help="orders each trader may await at once (closed loop keeps this many)",
    )  # fmt: skip
    run.add_argument(
        "--nice", type=int, choices=NICE_CHOICES, default=harness.CLIENT_NICE, metavar="0-19",
        help="niceness added to client processes, so the exchange wins shared cores",
    )  # fmt: skip
    base = commands.add_parser("baseline", help="the same clients against a bare echo server")
    base.add_argument("--clients", type=int, default=8)
    base.add_argument("--duration", type=float, default=10.0)
    base.add_argument("--processes", type=int, default=1, help="client processes")
    base.add_argument("--in-flight", type=_at_least_one, default=baseline.MAX_IN_FLIGHT,
                      help="requests each client keeps outstanding")  # fmt: skip
    base.add_argument("--nice", type=int, choices=NICE_CHOICES, default=harness.CLIENT_NICE,
                      metavar="0-19", help="niceness added to client processes")  # fmt: skip
    goals = commands.add_parser("targets", help="baseline, peak, half peak, 100 subscribers")
    goals.add_argument("--url", help=f"the exchange to load ({DEFAULT_URL})")
    goals.add_argument("--admin-token", help="its admin token (needed without --cluster)")
    goals.add_argument(
        "--cluster", action="store_true",
        help="issue 14's targets: start `exchange serve`, then a nats-server, a sequencer and "
        "2 gateways, and measure both (no --url or --admin-token)",
    )  # fmt: skip
    goals.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    goals.add_argument("--processes", type=int, default=1, help="client processes")
    goals.add_argument("--nice", type=int, choices=NICE_CHOICES, default=10, metavar="0-19",
                       help="niceness added to client processes (default 10)")  # fmt: skip
    goals.add_argument("--md-subscribers", type=_at_least_one, default=targets.MD_SUBSCRIBERS)
    goals.add_argument("--report-dir", type=Path, default=Path("."),
                       help="where each phase's report and plot go")  # fmt: skip
    args = parser.parse_args()
    if args.command == "targets" and args.cluster:
        _cluster_targets(args)
        return
    if args.command == "run":
        args.url = args.url or [DEFAULT_URL]
    elif args.command == "targets":
        if args.admin_token is None:
            sys.exit("loadtest targets: --admin-token is needed (or --cluster, which starts "
                     "servers of its own)")  # fmt: skip
        args.url = args.url or DEFAULT_URL
    urls = args.url if args.command == "run" else [args.url] if args.command == "targets" else []
    if not all(_local(url) for url in urls):
        sys.exit("the load test only targets this machine (ws://127.x.x.x or localhost)")
    if args.command == "targets":
        plan = targets.Plan(
            url=args.url, admin_token=args.admin_token, duration=args.duration,
            processes=args.processes, nice=args.nice, report_dir=args.report_dir,
            md_subscribers=args.md_subscribers,
        )  # fmt: skip
        with _one_line_errors(args.url):
            print(json.dumps(uvloop.run(targets.check(plan))))
        return
    # The clients' own collections must not pass for the exchange's latency (workers and
    # the baseline's client processes do the same).
    tune_gc()
    if args.command == "run":
        options = harness.Options(
            url=args.url[0], other_urls=tuple(args.url[1:]), admin_token=args.admin_token,
            makers=args.makers, takers=args.takers,
            subscribers=args.subscribers, rate=None if args.rate == "max" else float(args.rate),
            duration=args.duration, report=args.report, seed=args.seed, processes=args.processes,
            batched_md=args.batched_md, in_flight=args.in_flight, nice=args.nice,
        )  # fmt: skip
        with _one_line_errors(", ".join(args.url)):
            report = uvloop.run(harness.run(options))
    else:
        port = _free_port()
        report = uvloop.run(baseline.run(args.clients, args.duration, port, args.processes,
                                         args.in_flight, args.nice))  # fmt: skip
    print(json.dumps(report))


def _cluster_targets(args: argparse.Namespace) -> None:
    if args.url is not None or args.admin_token is not None:
        sys.exit("loadtest targets --cluster starts its own servers: it takes no --url or "
                 "--admin-token")  # fmt: skip
    plan = cluster_targets.Plan(
        duration=args.duration, processes=args.processes, nice=args.nice,
        report_dir=args.report_dir, md_subscribers=args.md_subscribers,
    )  # fmt: skip
    try:
        result = uvloop.run(cluster_targets.check(plan))
    except targets.PhaseError as failed:
        sys.exit(f"loadtest: {failed} (its own message is above)")
    except RuntimeError as failed:  # a role or the nats-server did not start
        sys.exit(f"loadtest: {failed}")
    print(cluster_targets.verdicts(result), file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
