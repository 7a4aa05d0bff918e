"""The compiled core (setup.py, mypyc) behaves exactly as the interpreted one, `make test`
tests the compiled one, and `exchange serve`, `exchange sequencer` and the engine benchmark
say which build runs.

Both benchmark streams (loadtest.bench_engine: the shallow mix and the reference book's deep
one) run in this process on whichever core it imports, and in a subprocess on a copy of the
`exchange` tree without its extensions, so there every core module is its source; the state
hashes, the event counts and a digest of every event must be the same; so must they for
tests/streams.py's timed mixed stream, which reaches every other rule.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from exchange import compiled_core, natsserver
from exchange.domain.engine import Engine
from loadtest.bench_engine import build_deep_stream, build_stream, main, setup_engine
from tests.sequencers import start_sequencer
from tests.server import free_port, start_role, stop
from tests.streams import mixed_stream

if TYPE_CHECKING:
    from exchange.domain.commands import Command

pytest_plugins = ("tests.nats_fixtures",)

ROOT = Path(__file__).resolve().parents[1]
OPS = 20_000  # per stream: both together take about a second interpreted
MIXED_OPS = 3_000  # of tests/streams.py's mixed stream (its generator replays each on an engine)
SEED = 3
# Runs `outcomes()` on the interpreted copy at argv[1]; this repository (argv[2]) after it
# gives the tests and the loadtest packages.
INTERPRETED_RUN = """
import sys
sys.path[:0] = sys.argv[1:3]
import exchange.domain.matching
assert exchange.domain.matching.__file__.endswith(".py"), exchange.domain.matching.__file__
assert exchange.domain.matching.__file__.startswith(sys.argv[1]), exchange.domain.matching.__file__
from exchange import compiled_core
assert compiled_core.compiled_modules() == [], compiled_core.compiled_modules()
import msgspec
from tests.test_compiled_core import outcomes
print(msgspec.json.encode(outcomes()).decode())
"""


class Outcome(msgspec.Struct, frozen=True):
    """What a stream left: the engine's state hash, and its events counted and digested."""

    state_hash: str
    events: int
    events_digest: str


def outcomes() -> dict[str, Outcome]:
    """Each benchmark stream's outcome after OPS commands from a fresh engine, and that of
    a stream of every kind of command (stops, icebergs, auctions, fees, offerings, timers:
    the rules the benchmark streams never reach)."""
    runs: list[tuple[str, Engine, list[Command]]] = []
    for name, build in (("shallow", build_stream), ("deep", build_deep_stream)):
        engine, first_ts = setup_engine()
        runs.append((name, engine, build(OPS, SEED, first_ts).commands))
    runs.append(("mixed", Engine(), mixed_stream(SEED, MIXED_OPS, timed=True)))
    results: dict[str, Outcome] = {}
    for name, engine, commands in runs:
        digest = hashlib.sha256()
        events = 0
        for cmd in commands:
            produced = engine.apply(cmd)
            events += len(produced)
            digest.update(msgspec.json.encode(produced))
        results[name] = Outcome(engine.state_hash(), events, digest.hexdigest())
    return results


def test_the_compiled_and_the_interpreted_core_give_the_same_events_and_state(
    tmp_path: Path,
) -> None:
    shutil.copytree(
        ROOT / "exchange",
        tmp_path / "exchange",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"),
    )
    child = subprocess.run(
        [sys.executable, "-c", INTERPRETED_RUN, str(tmp_path), str(ROOT)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    interpreted = msgspec.json.decode(child.stdout, type=dict[str, Outcome])
    here = outcomes()
    assert here == interpreted
    # Every command answers with at least one event: both streams did run.
    assert sorted(here) == ["deep", "mixed", "shallow"]
    assert here["deep"].events >= OPS
    assert here["shallow"].events >= OPS
    assert here["mixed"].events >= MIXED_OPS


@pytest.mark.skipif(
    bool(os.environ.get("EXCHANGE_PURE_PYTHON")),
    reason="EXCHANGE_PURE_PYTHON is set: the core runs interpreted",
)
def test_the_tests_run_the_compiled_core_and_it_is_current() -> None:
    import exchange.domain.matching

    assert compiled_core.compiled_modules(), (
        "the core runs interpreted: `make test` compiles it (`make compiler build`); "
        "EXCHANGE_PURE_PYTHON=1 tests it interpreted"
    )
    assert not exchange.domain.matching.__file__.endswith(".py")
    assert compiled_core.stale_modules() == []
    recorded = json.loads(compiled_core.RECORD.read_text())
    assert sorted(recorded) == compiled_core.compiled_modules()
    assert compiled_core.describe().startswith("compiled (")


async def test_exchange_serve_says_which_core_runs(tmp_path: Path) -> None:
    port = free_port()
    args = ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    # The banner's core line comes after the line that says it listens.
    server = await start_role(args, port, tmp_path / "data", ready="core: ")
    try:
        assert f"core: {compiled_core.describe()}" in server.log().splitlines()
    finally:
        assert await stop(server) == 0, server.log()


async def test_a_sequencer_says_which_core_runs_in_its_ready_line(
    nats_server: natsserver.NatsNode, tmp_path: Path
) -> None:
    node = await start_sequencer(nats_server.url, tmp_path / "one", "sequencer-1")
    try:
        ready = next(line for line in node.log().splitlines() if " ready: " in line)
        assert ready.endswith(f"; core {compiled_core.describe()}")
    finally:
        assert await stop(node) == 0, node.log()


def test_the_engine_benchmark_reports_the_core_it_timed(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--ops", "100", "--json"])
    line = msgspec.json.decode(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["core"] == compiled_core.describe()
