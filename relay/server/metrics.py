"""Prometheus metrics, collected at scrape time.

The data path only bumps plain integer attributes (or nothing at all: the hub counts offers per
outcome in one list); this collector turns them into metric families when ``/metrics`` is read.
A prometheus-client Counter per message would put a lock and a float add on the fan-out path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from relay.server.relay import Relay


class RelayCollector(Collector):
    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def collect(self) -> Iterator[Metric]:
        stats = self._relay.stats()
        yield GaugeMetricFamily(
            "relay_connections", "Open client WebSocket connections", value=stats.connections
        )
        yield CounterMetricFamily(
            "relay_connections_accepted", "Client connections accepted", value=stats.accepted
        )
        yield _labelled(
            "relay_connections_rejected",
            "Handshakes refused, by HTTP status",
            "status",
            stats.rejected,
        )
        yield GaugeMetricFamily(
            "relay_subscriptions", "Client subscriptions", value=stats.subscriptions
        )
        yield GaugeMetricFamily(
            "relay_channels_active",
            "Channels with at least one subscriber",
            value=stats.channels_active,
        )
        yield CounterMetricFamily(
            "relay_messages_published",
            "Channel messages sequenced and fanned out",
            value=stats.messages_published,
        )
        yield _labelled(
            "relay_deliveries",
            "Messages offered to client outboxes, by outcome",
            "outcome",
            stats.deliveries,
        )
        yield CounterMetricFamily(
            "relay_bytes_out",
            "Bytes written to clients (closed and open sessions)",
            value=stats.bytes_out,
        )
        yield CounterMetricFamily(
            "relay_writes",
            "Socket writes to clients; deliveries / writes is the batching factor",
            value=stats.writes,
        )
        yield CounterMetricFamily(
            "relay_write_rounds",
            "Write rounds: times the waiting client writers were released together",
            value=stats.write_rounds,
        )
        yield CounterMetricFamily(
            "relay_tcp_accepts", "TCP connections accepted", value=stats.tcp_accepts
        )
        yield CounterMetricFamily(
            "relay_accept_wakeups",
            "Accept loop wake-ups; tcp_accepts / accept_wakeups is connections taken per wake-up",
            value=stats.accept_wakeups,
        )
        yield CounterMetricFamily(
            "relay_write_rest_seconds",
            "Time the write rounds rested after rounds that carried a backlog",
            value=stats.rested_seconds,
        )
        yield HistogramMetricFamily(
            "relay_fanout_latency_seconds",
            "Upstream receipt to socket write, for the oldest message of each write",
            buckets=[
                ("+Inf" if ms == float("inf") else f"{ms / 1000:g}", count)
                for ms, count in stats.fanout_latency
            ],
            sum_value=stats.fanout_latency_sum_ms / 1000,
        )
        yield GaugeMetricFamily(
            "relay_tcp_connections",
            "TCP connections open: client sessions and connections still in the front door",
            value=stats.tcp_connections,
        )
        yield _labelled(
            "relay_handshakes",
            "WebSocket upgrade requests by outcome: completed (101 written), refused, "
            "abandoned (101 not written by the handshake deadline)",
            "outcome",
            stats.handshakes,
        )
        yield CounterMetricFamily(
            "relay_connections_deflate",
            "Client connections accepted with permessage-deflate",
            value=stats.deflate_sessions,
        )
        yield CounterMetricFamily(
            "relay_compressions",
            "Messages compressed for permessage-deflate clients (once per message, not per client)",
            value=stats.compressions,
        )
        yield CounterMetricFamily(
            "relay_deliveries_compressed",
            "Compressed frames offered to client outboxes",
            value=stats.compressed_deliveries,
        )
        yield _labelled(
            "relay_disconnects",
            "Client connections closed, by close code",
            "code",
            stats.disconnects,
        )

        up = GaugeMetricFamily(
            "relay_upstream_connected", "1 when the upstream connection is up", labels=["source"]
        )
        families = {
            key: CounterMetricFamily(name, doc, labels=["source"])
            for key, (name, doc) in _UPSTREAM_METRICS.items()
        }
        for name, upstream in stats.upstreams.items():
            up.add_metric([name], 1.0 if upstream.state == "connected" else 0.0)
            for key, family in families.items():
                family.add_metric([name], upstream.counters[key])
        yield up
        yield from families.values()


def _labelled(
    name: str, documentation: str, label: str, counts: Mapping[Any, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in counts.items():
        family.add_metric([str(value)], count)
    return family


_UPSTREAM_METRICS = {
    "messages": ("relay_upstream_messages", "Frames received from the upstream"),
    "malformed": ("relay_upstream_malformed", "Upstream frames that could not be parsed"),
    "connects": ("relay_upstream_connects", "Upstream connections established"),
    "disconnects": ("relay_upstream_disconnects", "Upstream connections lost"),
    "gaps": ("relay_upstream_gaps", "Sequence gaps detected"),
    "resyncs": ("relay_upstream_resyncs", "Books resynchronized from a snapshot"),
    "snapshot_fetches": ("relay_upstream_snapshot_fetches", "REST snapshot requests"),
    "snapshot_failures": (
        "relay_upstream_snapshot_failures",
        "REST snapshot requests that failed (retried)",
    ),
    "backfill_failures": (
        "relay_upstream_backfill_failures",
        "Item (block) fetches that failed (retried)",
    ),
    "backfill_fetches": (
        "relay_upstream_backfill_fetches",
        "Items (blocks) fetched over HTTP to fill a gap or follow a reorg",
    ),
    "refusals": ("relay_upstream_refusals", "Requests the upstream refused"),
    "resubscribes": (
        "relay_upstream_resubscribes",
        "Channels subscribed again to repair them from the upstream's own snapshot",
    ),
}


def make_registry(relay: Relay) -> CollectorRegistry:
    """A registry per relay, so several relays in one process (tests, embedding) stay apart."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(relay))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
