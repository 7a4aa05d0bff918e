"""The `exchange` command line: parses arguments and hands over to the part that does the work."""

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="exchange", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="play a short scripted session on the in-process engine")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from exchange import demo  # noqa: PLC0415 - load only what the command needs

        demo.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
