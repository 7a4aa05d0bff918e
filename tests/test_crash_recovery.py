"""Crash recovery in real processes: a writer (tests/crash_writer.py) sequences a
deterministic stream durably and is killed with SIGKILL at random moments, again and
again on one data directory. After every kill the directory must recover, hold every
acknowledged record, and give the state hash of a clean replay of the same commands."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

from exchange.domain.commands import Command
from exchange.domain.engine import Engine
from exchange.journal.records import decode_entry
from exchange.recovery import Recovered, recover
from tests.crash_writer import clean_replay, stamp, stream_clock
from tests.streams import mixed_stream

ROOT = Path(__file__).resolve().parent.parent
# CRASH_SEED=n picks another schedule of kills (and stream) for a soak run.
SEED = int(os.environ.get("CRASH_SEED", "11"))
# Enough stream that 36 kills never exhaust it: each lands after at most 400 new acks
# plus what the writer has in flight (at most crash_writer.MAX_OUTSTANDING); a run
# typically journals 9,000 to 11,000 records in all.
TOTAL = 30_000
KILLS = 36
# Chance that a round kills right after start (during start-up or recovery) or right
# after recovery (as submitting begins), before any new ack.
KILL_AT_START = 0.08
KILL_AT_READY = 0.08
NEW_ACKS = (20, 400)
# Bounds: per writer run, and on lines read from one run (acks plus a few others).
ROUND_TIMEOUT_S = 20.0
MAX_LINES = TOTAL + 100


def _writer(data_dir: Path, ack_file: Path, total: int, stderr_path: Path) -> subprocess.Popen[str]:
    with stderr_path.open("w") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tests.crash_writer", str(data_dir), str(ack_file),
             str(SEED), str(total)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip


def _fail(proc: subprocess.Popen[str], stderr_path: Path, why: str) -> NoReturn:
    proc.kill()
    proc.wait(timeout=ROUND_TIMEOUT_S)
    raise AssertionError(
        f"{why}; writer exit {proc.returncode}, stderr:\n{stderr_path.read_text()}"
    )


def _acked(ack_file: Path) -> list[int]:
    if not ack_file.exists():
        return []
    text = ack_file.read_text(encoding="ascii")
    return [int(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _check_recovered(
    recovered: Recovered, commands: list[Command], acked: list[int], prev_last: int
) -> int:
    last = recovered.journal.last_seq
    assert last >= prev_last, f"the journal shrank from {prev_last} to {last}"
    assert last <= len(commands)
    lost = [seq for seq in acked if seq > last]
    assert not lost, f"acknowledged records lost: {lost[:5]}... (journal ends at {last})"
    # The records added since the last round are the stream's commands, stamped as the
    # writer's clock stamps them, at consecutive seqs.
    expected = stream_clock(commands, prev_last)
    seq = prev_last
    for record in recovered.journal.read_from(prev_last + 1):  # bounded by the journal
        entry = decode_entry(record.payload)
        seq += 1
        assert entry.seq == record.seq == seq
        assert entry.command == stamp(commands[seq - 1], expected)
    assert seq == last
    return last


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data_dir, ack_file = tmp_path / "data", tmp_path / "acks"
    commands = mixed_stream(SEED, TOTAL)
    rng = random.Random(SEED)
    clean = Engine()  # the clean replay, advanced as the journal grows
    clean_seq = 0
    acked_before = 0
    snapshot_recoveries = replays = torn = 0
    started = time.monotonic()
    for kill in range(KILLS):
        stderr_path = tmp_path / f"stderr-{kill}.txt"
        proc = _writer(data_dir, ack_file, TOTAL, stderr_path)
        # A hung writer is killed by the watchdog; readline then sees the end of the pipe.
        watchdog = threading.Timer(ROUND_TIMEOUT_S, proc.kill)
        watchdog.start()
        try:
            roll = rng.random()
            target = rng.randint(*NEW_ACKS)
            new_acks = 0
            last_ack: int | None = None
            assert proc.stdout is not None
            if roll < KILL_AT_START:
                os.kill(proc.pid, signal.SIGKILL)
            else:
                for _ in range(MAX_LINES):
                    line = proc.stdout.readline()
                    if not line:
                        _fail(proc, stderr_path, f"round {kill}: the writer's output ended early")
                    word, _, value = line.strip().partition(" ")
                    if word == "ready":
                        last_ack = int(value)
                        if roll < KILL_AT_START + KILL_AT_READY:
                            break
                    elif word == "ack":
                        assert last_ack is not None, line
                        assert int(value) == last_ack + 1, line
                        last_ack = int(value)
                        new_acks += 1
                        if new_acks >= target:
                            break
                    else:
                        _fail(proc, stderr_path, f"round {kill}: unexpected output {line!r}")
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=ROUND_TIMEOUT_S)
        finally:
            watchdog.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, stderr_path.read_text()
        assert "Traceback" not in stderr_path.read_text(), stderr_path.read_text()

        acked = _acked(ack_file)
        assert len(acked) >= acked_before + new_acks
        acked_before = len(acked)
        recovered = recover(data_dir)
        try:
            last = _check_recovered(recovered, commands, acked, clean_seq)
            clean_replay(clean, commands, clean_seq, last)
            clean_seq = last
            assert recovered.engine.state_hash() == clean.state_hash(), f"round {kill}"
            snapshot_recoveries += recovered.snapshot_seq > 0
            replays += recovered.replayed > 0
            torn += recovered.journal.truncated_bytes > 0
        finally:
            recovered.journal.close()
    elapsed = time.monotonic() - started
    print(
        f"{KILLS} kills in {elapsed:.1f}s: journal at seq {clean_seq} of {len(commands)}, "
        f"{acked_before} acks; {snapshot_recoveries} recoveries from a snapshot, "
        f"{replays} with a replay, {torn} torn tails cut"
    )
    assert clean_seq < len(commands), "the stream ran out: raise TOTAL"
    assert acked_before > 0
    assert snapshot_recoveries > 0


def test_the_writer_runs_to_the_end_of_its_stream(tmp_path: Path) -> None:
    data_dir, ack_file = tmp_path / "data", tmp_path / "acks"
    total = 2_000
    commands = mixed_stream(SEED, total)
    stderr_path = tmp_path / "stderr.txt"
    proc = _writer(data_dir, ack_file, total, stderr_path)
    try:
        out, _ = proc.communicate(timeout=ROUND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _fail(proc, stderr_path, "the writer did not finish")
    assert proc.returncode == 0, stderr_path.read_text()
    lines = out.splitlines()
    assert lines[0] == "ready 0"
    assert lines[-1] == "done"
    assert _acked(ack_file) == list(range(1, len(commands) + 1))
    recovered = recover(data_dir)
    try:
        assert recovered.journal.last_seq == len(commands)
        # The sequencer snapshots on stop: nothing is left to replay.
        assert recovered.snapshot_seq == len(commands)
        clean = Engine()
        clean_replay(clean, commands, 0, len(commands))
        assert recovered.engine.state_hash() == clean.state_hash()
    finally:
        recovered.journal.close()
