"""The relay's counters as one frozen snapshot: what ``/metrics`` exports and what an embedding
program reads (``Relay.stats()``), taken at once so the two never disagree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from relay.server.relay import Relay

__all__ = ["RelayStats", "UpstreamStatsSnapshot", "take_stats"]


@attrs.frozen
class UpstreamStatsSnapshot:
    state: str
    """``connecting``, ``connected``, ``reconnecting``..., as ``/readyz`` shows it."""
    counters: Mapping[str, int]
    """Every counter of the source's supervisor: frames, gaps, resyncs, repairs..."""


@attrs.frozen
class RelayStats:
    connections: int
    """Client WebSocket connections open."""
    accepted: int
    rejected: Mapping[int, int]
    """Handshakes refused, by HTTP status."""
    disconnects: Mapping[int, int]
    """Client connections closed, by close code."""
    subscriptions: int
    channels_active: int
    """Channels with at least one subscriber."""
    messages_published: int
    """Channel messages sequenced (upstream and published ones)."""
    deliveries: Mapping[str, int]
    """Messages offered to client queues, by outcome: queued, dropped, coalesced, overflow."""
    bytes_out: int
    writes: int
    write_rounds: int
    tcp_accepts: int
    """TCP connections accepted (before any handshake)."""
    accept_wakeups: int
    """Times the accept loop woke to a readable listening socket; tcp_accepts /
    accept_wakeups is how many connections each wake-up took from the backlog."""
    tcp_connections: int
    """TCP connections open: sessions and connections still in the front door."""
    handshakes: Mapping[str, int]
    """Upgrade requests by outcome: completed, refused, abandoned."""
    deflate_sessions: int
    """Sessions accepted with permessage-deflate (closed ones included)."""
    compressions: int
    """Messages compressed: once per message (and window size), however many clients."""
    compressed_deliveries: int
    """Compressed frames offered to client queues."""
    rested_seconds: float
    """Time the write rounds rested after loaded rounds (to let batches grow)."""
    fanout_latency: tuple[tuple[float, int], ...]
    """Upstream receipt to socket write, per write for its oldest message: (upper bound in
    ms, writes at or below it), cumulative, ending with infinity."""
    fanout_latency_sum_ms: int
    upstreams: Mapping[str, UpstreamStatsSnapshot]


def take_stats(relay: Relay) -> RelayStats:
    hub = relay.hub
    writes, bytes_out = relay.written()
    return RelayStats(
        connections=len(relay.sessions),
        accepted=relay.accepted,
        rejected=dict(sorted(relay.rejected.items())),
        disconnects=dict(sorted(relay.close_codes.items())),
        subscriptions=len(hub.registry),
        channels_active=hub.registry.channel_count,
        messages_published=hub.messages_in,
        deliveries={outcome.name.lower(): count for outcome, count in hub.offers().items()},
        bytes_out=bytes_out,
        writes=writes,
        write_rounds=relay.rounds.rounds,
        tcp_accepts=0 if relay.listener is None else relay.listener.accepted,
        accept_wakeups=0 if relay.listener is None else relay.listener.wakeups,
        tcp_connections=relay.tcp_connections,
        handshakes={
            outcome: relay.handshakes[outcome] for outcome in ("completed", "refused", "abandoned")
        },
        deflate_sessions=relay.deflate_sessions,
        compressions=hub.compressions,
        compressed_deliveries=hub.compressed_deliveries,
        rested_seconds=relay.rounds.rested,
        fanout_latency=tuple(relay.fanout_latency.cumulative()),
        fanout_latency_sum_ms=relay.fanout_latency.sum_ms,
        upstreams={
            name: UpstreamStatsSnapshot(
                supervisor.state.value,
                dict(vars(supervisor.stats)),
            )
            for name, supervisor in sorted(relay.upstreams.items())
        },
    )
