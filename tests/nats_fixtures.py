"""Pytest fixtures that run real nats-server nodes (Debian's) on free loopback ports in tmp dirs.

Use them from a test module with `pytest_plugins = ("tests.nats_fixtures",)`. Each fixture
stops its nodes when the test ends (SIGTERM, then SIGKILL past a bound).
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from exchange import natsserver


@pytest_asyncio.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[natsserver.NatsNode]:
    """One JetStream node, not clustered."""
    cluster = await natsserver.start(tmp_path / "nats", nodes=1)
    try:
        yield cluster.nodes[0]
    finally:
        await cluster.stop()


@pytest_asyncio.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[natsserver.NatsCluster]:
    """Three JetStream nodes routed as one cluster (R3 streams need all three)."""
    cluster = await natsserver.start(tmp_path / "nats", nodes=3)
    try:
        yield cluster
    finally:
        await cluster.stop()
