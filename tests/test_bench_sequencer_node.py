"""The serial core's benchmark runs end to end: real nats-server, real sequencer process."""

import pytest

from loadtest import bench_sequencer_node

COMMANDS = 6_000


@pytest.mark.asyncio
async def test_the_benchmark_drives_the_sequencer_and_reports_its_cpu() -> None:
    # Enough commands for the sequencer's CPU to span several of /proc's 10 ms ticks.
    report = await bench_sequencer_node.main(commands=COMMANDS, window=50)
    assert report["commands"] >= COMMANDS
    # Each pair's two orders, and a third resting order (then its cancel) every other pair.
    assert report["orders"] == pytest.approx(report["commands"] * 5 / 6, abs=3)
    assert report["sequencer_us_per_command"] > 0
    assert report["sequencer_us_per_order"] > report["sequencer_us_per_command"]
    assert 1 <= report["records_per_stream_message"] <= 50
