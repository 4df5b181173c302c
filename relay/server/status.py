"""The live status: what ``GET /v1/status`` answers and ``/status`` shows, once a second.

Counters, not rates: the page computes rates from two answers (messages, deliveries and drops
per second from the totals, each channel's message rate from its ``seq``), so the relay keeps
nothing per poll and any number of pages may poll at once. A few lines of work per channel and
per connection, for an admin's page: never on the data path.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from relay.core.channels import source_of
from relay.core.outbox import Offer

if TYPE_CHECKING:
    from relay.server.relay import Relay

CHANNELS_SHOWN = 50
"""The busiest channels by subscribers; the count of all of them is given too."""
SLOWEST_SHOWN = 10
QUANTILES = (0.5, 0.9, 0.99)


def take_status(relay: Relay, now_ms: int) -> dict[str, Any]:
    hub = relay.hub
    last_message: dict[str, int] = {}
    channels: list[dict[str, Any]] = []
    for name, subscribers in hub.registry.channels():
        state = hub.channel(name)
        source = source_of(name)
        last_message[source] = max(last_message.get(source, 0), state.ts)
        channels.append(
            {"channel": name, "subscribers": subscribers, "seq": state.seq, "ts": state.ts}
        )
    channels.sort(key=lambda c: (-int(c["subscribers"]), str(c["channel"])))
    sources = {
        name: {
            "state": supervisor.state.value,
            "last_message_ts": last_message.get(name) or None,
            "frames": supervisor.stats.messages,
        }
        for name, supervisor in sorted(relay.upstreams.items())
    }
    by_tier = Counter(session.grant.tier if session.grant else "" for session in relay.sessions)
    slowest = sorted(
        (s for s in relay.sessions if s.outbox.queued_bytes),
        key=lambda s: s.outbox.queued_bytes,
        reverse=True,
    )[:SLOWEST_SHOWN]
    offers = hub.offers()
    latency = relay.fanout_latency
    return {
        "ts": now_ms,
        "node": None if relay.cluster is None else relay.cluster.id,
        "sources": sources,
        "connections": {"total": len(relay.sessions), "by_tier": dict(sorted(by_tier.items()))},
        "totals": {
            "messages": hub.messages_in,
            "deliveries": hub.deliveries,
            "dropped": offers[Offer.DROPPED] + offers[Offer.COALESCED],
            "disconnected_slow": offers[Offer.OVERFLOW],
            "bytes_out": relay.written()[1],
        },
        "channels": {"count": len(channels), "busiest": channels[:CHANNELS_SHOWN]},
        "fanout_latency_ms": {
            "writes": latency.count,
            **{
                f"p{round(q * 100)}": _finite(latency.quantile(q), latency.bounds_ms[-1])
                for q in QUANTILES
            },
        },
        "slowest": [
            {
                "session": s.id,
                "key": s.key_name,
                "queued_messages": len(s.outbox),
                "queued_bytes": s.outbox.queued_bytes,
            }
            for s in slowest
        ],
    }


def _finite(bound: float | None, last: float) -> float | str | None:
    """JSON has no infinity: a quantile above the last bucket is said as text."""
    if bound is not None and bound == float("inf"):
        return f"above {last:g}"
    return bound
