"""One client process of a multi-process load test: runs its share, prints its result."""

import asyncio
import sys

import msgspec

from loadtest.harness import Share, Stats, WorkerResult, drive


async def _main(share: Share) -> WorkerResult:
    stats = Stats()
    elapsed = await drive(share, stats, show_progress=False)
    return WorkerResult.of(stats, elapsed)


def main() -> None:
    share = msgspec.json.decode(sys.argv[1], type=Share)
    result = asyncio.run(_main(share))
    sys.stdout.buffer.write(msgspec.json.encode(result))


if __name__ == "__main__":
    main()
