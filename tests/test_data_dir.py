"""A data directory serves one server at a time, and only if it can be written.

Real `exchange serve` processes: a second one on a directory in use exits at once naming
the first one's pid; one on a directory it cannot write to exits before it listens, with
one line saying so.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.datadir import DataDirError, claim
from tests.server import ROOT, free_port, running

# As root, permission bits do not stop a write: the server then runs without the
# capabilities that override them, so a 0555 directory is as read-only to it as to anyone.
WITHOUT_OVERRIDES = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
# A server that must refuse at once gets this long before the test gives up on it.
REFUSAL_TIMEOUT_S = 60.0


def serve(data_dir: Path, *, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    """`exchange serve` on `data_dir`, expected to exit by itself."""
    args = [sys.executable, "-m", "exchange", "serve", "--port", str(free_port()),
            "--data-dir", str(data_dir), "--demo"]  # fmt: skip
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without util-linux's setpriv")
        args = WITHOUT_OVERRIDES + args
    env = {**os.environ, "EXCHANGE_ADMIN_TOKEN": "t"}
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_S,
        check=False,
    )  # fmt: skip


def refused_in_one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "listening" not in done.stdout, "it must refuse before it opens the port"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"one line, no traceback: {done.stderr}"
    return lines[0]


async def test_a_second_server_on_a_data_dir_in_use_exits_naming_the_holder(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "data") as first:
        line = refused_in_one_line(serve(tmp_path / "data"))
        assert f"in use by process {first.process.pid}" in line
        assert str(tmp_path / "data") in line


def test_the_lock_is_held_for_the_life_of_the_claim(tmp_path: Path) -> None:
    lock = claim(tmp_path)
    with pytest.raises(DataDirError, match=f"in use by process {os.getpid()}"):
        claim(tmp_path)
    lock.release()
    claim(tmp_path).release()


def test_a_read_only_data_dir_exits_before_listening(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o555)
    line = refused_in_one_line(serve(data_dir, unprivileged=True))
    assert f"data directory {data_dir} is not writable" in line


def test_an_unwritable_journal_dir_exits_before_listening(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "journal").mkdir(parents=True)
    (data_dir / "journal").chmod(0o555)  # the lock can be taken, the journal not written
    line = refused_in_one_line(serve(data_dir, unprivileged=True))
    assert f"data directory {data_dir / 'journal'} is not writable" in line


async def test_a_journal_that_lost_acknowledged_records_stops_the_server_in_one_line(
    tmp_path: Path,
) -> None:
    """Case (a) from the serve side: no fresh demo market is seeded over the loss."""
    data_dir = tmp_path / "data"
    async with running(data_dir, demo=True):
        pass
    for segment in (data_dir / "journal").glob("*.seg"):
        segment.unlink()
    line = refused_in_one_line(serve(data_dir))
    assert line.startswith(f"exchange: cannot recover {data_dir}: journal segment")
    assert "acknowledged records 1.." in line
    assert not list((data_dir / "journal").glob("*.seg")), "nothing was written"
