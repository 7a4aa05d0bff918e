"""`exchange cluster` as a real subprocess: it starts nats-server, the sequencer and two
gateways on loopback, seeds the demo market once, trades through both gateways, answers
GET /v1/cluster the same on both, stops everything on SIGINT (exit 0, no child left), and
stops everything with a non-zero exit when a role is killed or cannot start. `make
cluster`'s command (the README's) starts 3 NATS nodes (stream and lease R3), 2 sequencers
(a leader and a standby) and 2 gateways."""

import asyncio
import contextlib
import os
import re
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from exchange import lease, natswire
from gateway.client import Admin, Client
from tests.server import ROOT, RunningServer, start_role

pytestmark = pytest.mark.slow

# The launcher's own stop bounds (20 s a role group, then SIGKILL) plus NATS's, with room.
EXIT_TIMEOUT_S = 90.0
# A gateway hears the sequencer's heartbeat within a second or two of starting.
CLUSTER_VIEW_TIMEOUT_S = 20.0
POLL_S = 0.1
PORT_TRIES = 50


def free_port_pair() -> int:
    """A port p with p and p+1 both free just now (gateway i listens on port+i)."""
    for _ in range(PORT_TRIES):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


@dataclass
class Launched:
    server: RunningServer  # the launcher; its port is gateway-1's

    @property
    def process(self) -> asyncio.subprocess.Process:
        return self.server.process

    @property
    def lines(self) -> list[str]:
        return list(self.server.output)

    @property
    def pids(self) -> dict[str, int]:
        """Every child the banner named, by role."""
        found: dict[str, int] = {}
        for line in self.lines:
            match = re.match(r"^\s+(nats \w+|sequencer-\d+|gateway-\d+)\s.*\bpid (\d+)", line)
            if match:
                found[match[1]] = int(match[2])
        return found

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.server.port + index}"

    def ws(self, index: int) -> str:
        return f"ws://127.0.0.1:{self.server.port + index}/v1/ws"

    def output(self) -> str:
        return self.server.log()

    async def exit_status(self) -> int:
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            status = await self.process.wait()
        if self.server.drain is not None:
            await self.server.drain
        return status


async def launch(data_dir: Path, *extra: str) -> Launched:
    port = free_port_pair()
    # One NATS node and one sequencer unless a test asks for more: quicker, and what
    # most of these tests are about (the defaults are three and two).
    args = ["cluster", "--data-dir", str(data_dir), "--port", str(port), "--gateways", "2",
            "--nats-nodes", "1", "--sequencers", "1"]  # fmt: skip
    ready = "exchange cluster ready"
    return Launched(await start_role([*args, *extra], port, data_dir, ready, admin_token=None))


@contextlib.asynccontextmanager
async def cluster(data_dir: Path, *extra: str) -> AsyncIterator[Launched]:
    launched = await launch(data_dir, *extra)
    try:
        yield launched
    finally:
        if launched.process.returncode is None:  # a failed assertion: do not leave it running
            launched.process.send_signal(signal.SIGINT)
            await launched.exit_status()


def gone(pid: int) -> bool:
    """The process is not running (reaped, or at most a zombie nobody waits for)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rsplit(")", 1)[1].split()[0] == "Z"


def owner_only(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


async def cluster_view(url: str, token: str) -> dict[str, Any]:
    """GET /v1/cluster once the gateway has heard a leader's heartbeat."""
    async with Admin(url, token) as admin, asyncio.timeout(CLUSTER_VIEW_TIMEOUT_S):
        while True:  # bounded by the timeout: a heartbeat a second
            view = await admin.ok("GET", "/v1/cluster")
            if view["leader"] is not None:
                return view
            await asyncio.sleep(POLL_S)


async def test_cluster_trades_through_both_gateways_and_stops_clean_on_sigint(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "cluster"
    async with cluster(data_dir, "--demo", "--currency", "EUR") as launched:
        pids = launched.pids
        assert set(pids) == {"nats n1", "sequencer-1", "gateway-1", "gateway-2"}, launched.output()
        token_file, keys_file = data_dir / "admin-token", data_dir / "demo-keys.json"
        assert owner_only(token_file)
        assert owner_only(keys_file)
        token = token_file.read_text().strip()
        keys = msgspec.json.decode(keys_file.read_bytes())
        async with (
            await Client.connect(launched.ws(1), keys["bob"]["api_key"]) as bob,
            await Client.connect(launched.ws(0), keys["alice"]["api_key"]) as alice,
        ):
            # Between the market maker's best bid (99.45) and best ask (99.55).
            sell = await bob.place("BOND", "sell", 10, "99.51", client_order_id="s-1")
            assert (sell["type"], sell["status"]) == ("accepted", "open"), sell
            buy = await alice.place("BOND", "buy", 4, "99.51", client_order_id="b-1")
            assert (buy["type"], buy["status"], buy["filled"]) == ("accepted", "filled", 4), buy
            fill = await bob.next_event("fill")
            assert (fill["order_id"], fill["qty"], fill["remaining"]) == (sell["order_id"], 4, 6)
        async with Admin(launched.url(0), token) as admin:
            last_seq = (await admin.ok("GET", "/healthz"))["seq"]
        for i in (0, 1):  # --currency reaches every gateway: the Binance dialect's quote asset
            async with Admin(launched.url(i), token) as reader:
                info = await reader.ok("GET", "/api/v3/exchangeInfo?symbol=BONDEUR")
            symbols = [(s["symbol"], s["quoteAsset"]) for s in info["symbols"]]
            assert symbols == [("BONDEUR", "EUR")], info
        views = [await cluster_view(launched.url(i), token) for i in (0, 1)]
        for view in views:
            assert view["leader"] == "sequencer-1", view
            assert view["nodes"][0]["node_id"] == "sequencer-1", view
            assert view["nodes"][0]["role"] == "leader", view
            assert view["stream_seq"] >= last_seq, (view, last_seq)

        launched.process.send_signal(signal.SIGINT)
        assert await launched.exit_status() == 0, launched.output()
        left = [name for name, pid in pids.items() if not gone(pid)]
        assert not left, f"still running after the launcher exited: {left}\n{launched.output()}"
        assert "Traceback" not in launched.output()


async def test_demo_is_seeded_once_and_a_killed_role_stops_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    async with cluster(data_dir, "--demo") as first:
        token = (data_dir / "admin-token").read_text().strip()
        async with Admin(first.url(0), token) as admin:
            seeded_seq = (await admin.ok("GET", "/healthz"))["seq"]
        keys = (data_dir / "demo-keys.json").read_bytes()
        first.process.send_signal(signal.SIGTERM)
        assert await first.exit_status() == 0, first.output()

    async with cluster(data_dir, "--demo") as second:
        async with Admin(second.url(1), token) as admin:
            assert (await admin.ok("GET", "/healthz"))["seq"] == seeded_seq, "seeded twice"
        assert (data_dir / "demo-keys.json").read_bytes() == keys
        pids = second.pids
        os.kill(pids["sequencer-1"], signal.SIGKILL)
        assert await second.exit_status() == 1, second.output()
        last = second.lines[-1]
        assert last.startswith("exchange cluster: sequencer-1"), second.output()
        assert "stopped everything" in last
        left = [name for name, pid in pids.items() if not gone(pid)]
        assert not left, f"still running after the launcher exited: {left}\n{second.output()}"


def running_with(data_dir: Path) -> list[int]:
    """Pids of processes whose command line names `data_dir` (the launcher's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and not gone(int(entry.name)):
            with contextlib.suppress(OSError):
                if str(data_dir).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


async def test_a_role_that_cannot_start_stops_what_started_and_is_named(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    port = free_port_pair()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exchange", "cluster", "--data-dir", str(data_dir),
            "--port", str(port), "--gateways", "2", "--demo", "--nats-nodes", "1",
            "--sequencers", "1",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            output, _ = await process.communicate()
    lines = output.decode().splitlines()
    assert process.returncode == 1, output.decode()
    assert lines[-1].startswith("exchange cluster: gateway-2 exited while starting"), lines[-1]
    assert any("cannot listen on" in line for line in lines), output.decode()
    assert running_with(data_dir) == [], output.decode()


# A standby leads within the lease (2 s) and a heartbeat; the bound is for a loaded machine.
TAKEOVER_VIEW_TIMEOUT_S = 30.0


async def test_two_sequencers_start_as_leader_and_standby_and_the_standby_takes_over(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "cluster"
    async with cluster(data_dir, "--sequencers", "2") as launched:
        pids = launched.pids
        assert {"sequencer-1", "sequencer-2"} <= set(pids), launched.output()
        token = (data_dir / "admin-token").read_text().strip()
        async with Admin(launched.url(0), token) as admin, asyncio.timeout(
            TAKEOVER_VIEW_TIMEOUT_S
        ):
            while True:  # bounded: both heartbeats within a second or two
                view = await admin.ok("GET", "/v1/cluster")
                roles = {n["node_id"]: n["role"] for n in view["nodes"]}
                if roles == {"sequencer-1": "leader", "sequencer-2": "standby"}:
                    break
                await asyncio.sleep(POLL_S)
            os.kill(pids["sequencer-1"], signal.SIGKILL)
            while view["leader"] != "sequencer-2":  # bounded by the timeout
                await asyncio.sleep(POLL_S)
                view = await admin.ok("GET", "/v1/cluster")
            await admin.account("after-the-takeover")  # the new leader sequences it
        assert launched.process.returncode is None, "a standby went on: the cluster runs"
        assert any("sequencer-2 and any other standby go on" in line
                   for line in launched.lines), launched.output()  # fmt: skip
        launched.process.send_signal(signal.SIGINT)
        assert await launched.exit_status() == 1, "sequencer-1's death is reported at the end"
        left = [name for name, pid in pids.items() if not gone(pid)]
        assert not left, f"still running after the launcher exited: {left}\n{launched.output()}"


def make_cluster_args() -> list[str]:
    """The flags `make cluster` gives `exchange cluster` (after `--data-dir DIR`)."""
    makefile = (ROOT / "Makefile").read_text()
    command = re.search(r"^cluster:.*\n\t\$\(BIN\)/exchange cluster (.*)$", makefile, re.MULTILINE)
    assert command is not None, "no `exchange cluster` line under the Makefile's cluster target"
    args = command[1].split()
    assert args[:2] == ["--data-dir", "./cluster-data"], args
    return args[2:]


async def stream_replicas(nats_urls: list[str]) -> dict[str, int]:
    """Replicas of the stream and of the lease bucket's stream, as NATS has them."""
    nc = await nats.connect(servers=nats_urls)
    try:
        js = nc.jetstream()
        names = {"stream": natswire.STREAM, "lease": f"KV_{lease.BUCKET}"}
        return {k: (await js.stream_info(n)).config.num_replicas or 1 for k, n in names.items()}
    finally:
        await nc.close()


async def test_make_cluster_starts_three_nats_nodes_two_sequencers_and_two_gateways(
    tmp_path: Path,
) -> None:
    args = make_cluster_args()
    readme = (ROOT / "README.md").read_text()
    assert f"exchange cluster --data-dir ./cluster-data {' '.join(args)}" in readme
    data_dir = tmp_path / "cluster"
    async with cluster(data_dir, *args) as launched:
        pids = launched.pids
        assert set(pids) == {"nats n1", "nats n2", "nats n3", "sequencer-1", "sequencer-2",
                             "gateway-1", "gateway-2"}, launched.output()  # fmt: skip
        banner = launched.output()
        assert re.search(r"^\s+sequencer-1\s+leader\s", banner, re.MULTILINE), banner
        assert re.search(r"^\s+sequencer-2\s+standby\s", banner, re.MULTILINE), banner
        ready = [line for line in launched.lines if line.startswith("exchange cluster ready")]
        assert ready[0].startswith("exchange cluster ready: 3 NATS node(s)"), banner
        assert "(stream and lease R3), 2 sequencer(s), 2 gateway(s)" in ready[0], banner
        nats_urls = re.findall(r"^\s+nats n\d\s+(nats://\S+)", banner, re.MULTILINE)
        assert len(nats_urls) == 3, banner
        assert await stream_replicas(nats_urls) == {"stream": 3, "lease": 3}
        token = (data_dir / "admin-token").read_text().strip()
        async with Admin(launched.url(1), token) as admin, asyncio.timeout(TAKEOVER_VIEW_TIMEOUT_S):
            while True:  # bounded: both heartbeats within a second or two
                view = await admin.ok("GET", "/v1/cluster")
                roles = {n["node_id"]: n["role"] for n in view["nodes"]}
                if roles == {"sequencer-1": "leader", "sequencer-2": "standby"}:
                    break
                await asyncio.sleep(POLL_S)
        assert view["leader"] == "sequencer-1", view
        launched.process.send_signal(signal.SIGINT)
        assert await launched.exit_status() == 0, launched.output()
        left = [name for name, pid in pids.items() if not gone(pid)]
        assert not left, f"still running after the launcher exited: {left}\n{launched.output()}"
