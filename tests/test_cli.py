"""The `exchange` command line, run as a real subprocess: demo, journal verify and inspect."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.recovery import JOURNAL_DIR, recover
from exchange.sequencer import Sequencer
from tests.streams import mixed_stream

ROOT = Path(__file__).resolve().parent.parent
RECORDS = 400


def exchange(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


async def write_journal(data_dir: Path, count: int) -> str:
    recovered = recover(data_dir)
    sequencer = Sequencer(recovered.engine, recovered.journal, recovered.snapshots)
    task = asyncio.create_task(sequencer.run())
    await asyncio.gather(*(sequencer.submit(c) for c in mixed_stream(5, count)))
    state_hash = sequencer.engine.state_hash()
    await sequencer.stop()
    await task
    return state_hash


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def the_segment(data_dir: Path) -> Path:
    (segment,) = (data_dir / JOURNAL_DIR).glob("*.seg")
    return segment


def fields(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


async def test_verify_reports_records_last_seq_and_state_hash(data_dir: Path) -> None:
    state_hash = await write_journal(data_dir, RECORDS)
    done = exchange("journal", "verify", str(data_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    report = fields(done.stdout)
    last_seq = int(report["last seq"])
    assert last_seq > RECORDS  # the stream's set-up adds its own commands
    assert report["records"] == str(last_seq)
    assert report["state hash"] == state_hash


async def test_verify_after_a_torn_tail_exits_0_before_and_after_recovery(data_dir: Path) -> None:
    await write_journal(data_dir, RECORDS)
    segment = the_segment(data_dir)
    with segment.open("ab") as f:  # the start of a write a crash interrupted
        f.write(bytes(range(7)))
    size = segment.stat().st_size
    done = exchange("journal", "verify", str(data_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "torn tail" in done.stdout
    assert segment.stat().st_size == size  # verify changes nothing
    recover(data_dir).journal.close()
    done = exchange("journal", "verify", str(data_dir))
    assert done.returncode == 0
    assert "torn tail" not in done.stdout


async def test_verify_refuses_damage_naming_the_offset(data_dir: Path) -> None:
    await write_journal(data_dir, RECORDS)
    segment = the_segment(data_dir)
    damaged = bytearray(segment.read_bytes())
    damaged[len(damaged) // 2] ^= 0x40
    segment.write_bytes(bytes(damaged))
    done = exchange("journal", "verify", str(data_dir))
    assert done.returncode == 1
    assert f"{segment.name} at offset" in done.stdout


async def test_inspect_prints_one_json_object_a_line(data_dir: Path) -> None:
    await write_journal(data_dir, RECORDS)
    done = exchange("journal", "inspect", str(data_dir), "--from", "10", "--limit", "5")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["seq"] for line in lines] == [10, 11, 12, 13, 14]
    assert all({"seq", "command", "events"} == set(line) for line in lines)


def test_demo_plays_an_offering_and_trades() -> None:
    done = exchange("demo")
    assert done.returncode == 0, done.stderr
    assert "TRADE" in done.stdout
    assert "OfferingClosed" in done.stdout


def test_verify_and_inspect_refuse_a_dir_without_a_journal_and_create_nothing(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "not-a-data-dir"
    empty.mkdir()
    assert exchange("journal", "verify", str(empty)).returncode == 1
    assert exchange("journal", "inspect", str(empty)).returncode == 1
    assert list(empty.iterdir()) == []


async def test_a_record_that_does_not_decode_is_named_not_a_traceback(data_dir: Path) -> None:
    from exchange.journal.journal import Journal
    from exchange.journal.storage import FileSegmentStore

    await write_journal(data_dir, 10)
    journal = Journal.open(FileSegmentStore(data_dir / JOURNAL_DIR))
    journal.write_batch([b"\xc0"])  # a sound record whose payload is msgpack nil
    journal.close()
    done = exchange("journal", "verify", str(data_dir))
    assert done.returncode == 1
    assert "does not decode" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_serve_refuses_a_negative_or_endless_gather_window() -> None:
    for value in ("-1", "inf", "nan"):
        done = subprocess.run(
            [sys.executable, "-m", "exchange", "serve", "--gather-ms", value],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        assert "must be a finite number >= 0" in done.stderr
