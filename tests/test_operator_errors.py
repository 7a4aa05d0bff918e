"""A person's mistake gets one line saying what is wrong and what to do, and a non-zero
exit: never a traceback. Real processes: `exchange serve` and `python -m loadtest`."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import ROOT, free_port, running
from tests.test_cli import exchange

# A command that must fail at once gets this long before the test gives up on it.
FAIL_TIMEOUT_S = 120.0


def no_traceback(done: subprocess.CompletedProcess[str]) -> str:
    """The last line of stderr, after checking there is no traceback anywhere."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=FAIL_TIMEOUT_S, check=False,
    )  # fmt: skip


def test_a_port_in_use_is_one_line_and_status_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = exchange("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    line = no_traceback(done)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "another --port" in line


BAD_FLAGS = {
    "a negative rate limit": ("--rate-limit", "-5"),
    "a NaN rate limit": ("--rate-limit", "nan"),
    "a rate limit of 0": ("--rate-limit", "0"),
    "a port past 65535": ("--port", "70000"),
    "a port that is not a number": ("--port", "http"),
    "a unicode digit port": ("--port", "\uff18\uff10\uff18\uff10"),  # fullwidth 8080
    "no connections allowed": ("--max-connections", "0"),
    "an infinite gather window": ("--gather-ms", "inf"),
    "a durability mode that does not exist": ("--durability", "sometimes"),
    "a negative account rate limit": ("--account-rate-limit", "-1"),
    "a header timeout of 0 (every connection closed at once)": ("--header-timeout", "0"),
    "no half-open connection allowed": ("--max-half-open", "0"),
}


@pytest.mark.parametrize("flag", BAD_FLAGS)
def test_a_bad_serve_flag_value_is_refused_naming_the_flag(tmp_path: Path, flag: str) -> None:
    name, value = BAD_FLAGS[flag]
    done = exchange("serve", "--data-dir", str(tmp_path / "data"), name, value)
    line = no_traceback(done)
    assert done.returncode == 2
    assert f"argument {name}" in line
    assert not (tmp_path / "data").exists(), "nothing is created for a refused command"


def test_the_load_test_without_a_server_says_so() -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/ws"
    line = no_traceback(loadtest("run", "--url", url, "--admin-token", "x", "--duration", "1"))
    assert line.startswith(f"loadtest: cannot reach the exchange at {url}")
    assert "is it running?" in line


async def test_the_load_test_with_a_wrong_admin_token_says_so(tmp_path: Path) -> None:
    async with running(tmp_path / "data") as server:
        done = loadtest("run", "--url", server.ws_url, "--admin-token", "wrong", "--duration", "1")
    line = no_traceback(done)
    assert line.startswith("loadtest: the exchange refused the admin token")
    assert "EXCHANGE_ADMIN_TOKEN" in line
