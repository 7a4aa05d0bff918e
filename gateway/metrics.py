"""GET /metrics: Prometheus text, from one registry per app (tests run several apps).

Counters follow the durable event stream (what clients were told), the journal's timing
comes from the sequencer after each batch, and gauges and the gateway's own counts (its
refusals, the half-open guard's closes) are read at scrape time; prometheus_client's
process, GC and platform collectors add the process's CPU, memory, files and GC.
"""

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exchange.bus import Bus, Sequenced
from exchange.domain.events import OrderAccepted, OrderRejected, Rejected, TradeExecuted
from gateway.halfopen import HalfOpenGuard
from gateway.readmodel import ReadModel
from gateway.ws import Hub

SYNC_BUCKETS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 64, 256, 1024, 4096)
WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0)


class Metrics:
    def __init__(
        self, sequencer: Bus, read: ReadModel, hub: Hub, guard: HalfOpenGuard | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.sync = Histogram(
            "exchange_journal_write_seconds", "Journal write + fsync of one batch",
            buckets=SYNC_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch = Histogram(
            "exchange_batch_records", "Records per journal batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.wait = Histogram(
            "exchange_batch_wait_seconds",
            "From the sequencing of a batch's first command to the batch's release "
            "(the longest a command of it waited in the server for its durable answer)",
            buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        # Plain counts, turned into metrics at scrape time: a prometheus_client label
        # lookup and increment per record cost 7% of the server under load.
        self.counts = DurableCounts()
        r.register(_Live(sequencer, read, hub, self.counts, guard))
        read.listen(self.counts.add)
        sequencer.batch_observers.append(self._on_batch)

    def _on_batch(self, records: int, seconds: float, waited: float) -> None:
        self.sync.observe(seconds)
        self.batch.observe(records)
        self.wait.observe(waited)

    async def handler(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")


class DurableCounts:
    """What the durable stream held: commands by type, orders, rejects by code, trades."""

    def __init__(self) -> None:
        self.commands: dict[str, int] = {}
        self.rejects: dict[str, int] = {}
        self.orders = 0
        self.trades = 0

    def add(self, sequenced: Sequenced) -> None:
        kind = type(sequenced.command).__name__
        self.commands[kind] = self.commands.get(kind, 0) + 1
        for event in sequenced.events:
            event_type = type(event)  # exact types: a dispatch, not a chain of isinstance
            if event_type is TradeExecuted:
                self.trades += 1
            elif event_type is OrderAccepted:
                if not event.resent:  # type: ignore[union-attr]
                    self.orders += 1
            elif event_type is OrderRejected or event_type is Rejected:
                code = event.code  # type: ignore[union-attr]
                self.rejects[code] = self.rejects.get(code, 0) + 1


class _Live(Collector):
    """Figures read from the live objects at each scrape."""

    def __init__(
        self, sequencer: Bus, read: ReadModel, hub: Hub, counts: DurableCounts,
        guard: HalfOpenGuard | None,
    ) -> None:  # fmt: skip
        self.sequencer, self.read, self.hub, self.counts = sequencer, read, hub, counts
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        yield _by_label("exchange_commands", "Durable commands by type", "type", counts.commands)
        yield CounterMetricFamily("exchange_orders_accepted", "Orders accepted", counts.orders)
        yield _by_label("exchange_rejects", "Refused commands by code", "code", counts.rejects)
        yield CounterMetricFamily("exchange_trades", "Trades executed", counts.trades)
        yield GaugeMetricFamily(
            "exchange_queue_depth", "Commands waiting", self.sequencer.queue_depth
        )
        yield GaugeMetricFamily("exchange_durable_seq", "Last durable seq", self.read.durable_seq)
        yield GaugeMetricFamily(
            "exchange_connected_clients", "Open WebSockets", len(self.hub.sessions)
        )
        yield CounterMetricFamily(
            "exchange_evictions", "Slow consumers closed (4008)", self.hub.evictions
        )
        yield CounterMetricFamily(
            "exchange_book_snapshots_built",
            "Book snapshots encoded (each shared until its book changes)",
            self.hub.snapshots_built,
        )
        yield CounterMetricFamily(
            "exchange_rate_limited", "Requests refused RATE_LIMITED", self.hub.rate_limited
        )
        yield _by_label(
            "exchange_gateway_rejects",
            "Refusals the gateway answered itself, before the sequencer, by code",
            "code", self.hub.rejects,
        )  # fmt: skip
        guard = self.guard
        if guard is not None:
            yield GaugeMetricFamily(
                "exchange_half_open_connections",
                "Connections that have not sent their first request yet", len(guard.pending),
            )  # fmt: skip
            yield CounterMetricFamily(
                "exchange_half_open_refused",
                "Connections closed at once: too many half-open (--max-half-open)", guard.refused,
            )  # fmt: skip
            yield CounterMetricFamily(
                "exchange_half_open_timed_out",
                "Connections closed: no complete request within --header-timeout",
                guard.timed_out,
            )  # fmt: skip


def _by_label(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family
