"""``GET /v1/status`` (the status page's data) and ``/status`` (the page) over real sockets."""

from __future__ import annotations

from typing import Any

import trio

from tests.e2e.conftest import client, receive, running_stack, send

TRADES = "sim:trades:BTC-USD"
BOOK = "sim:book:BTC-USD"
TIERS = {
    "tiers": {
        "default": {"max_connections": 1000},
        "ops": {"max_connections": 10, "admin": True},
    },
    "keys": [{"key": "ops-secret", "tier": "ops", "name": "ops"}],
}


async def test_the_status_is_for_admin_tiers_only(nursery: trio.Nursery) -> None:
    async with running_stack(nursery, **TIERS) as stack:
        url = f"{stack.base}/v1/status"
        anonymous = await stack.http.get(url)
        assert anonymous.status_code == 403
        assert anonymous.json() == {
            "error": "forbidden",
            "message": "your key may not read the status",
        }
        wrong = await stack.http.get(url, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        page = await stack.http.get(f"{stack.base}/status")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert b'fetch("/v1/status"' in page.content


async def test_the_status_shows_sources_connections_channels_and_queues(
    nursery: trio.Nursery,
) -> None:
    async with running_stack(nursery, **TIERS) as stack:
        async with client(stack.url) as a, client(stack.url) as b:
            await send(a, {"action": "subscribe", "channels": [TRADES, BOOK], "id": 1})
            await send(b, {"action": "subscribe", "channel": TRADES, "id": 1})
            for ws, acks in ((a, 2), (b, 1)):
                for _ in range(acks):
                    while (await receive(ws)).get("event") != "subscribed":
                        pass
            await trio.sleep(0.3)
            answer = await stack.http.get(f"{stack.base}/v1/status?api_key=ops-secret")
            assert answer.status_code == 200
            status: dict[str, Any] = answer.json()
        relay = stack.relay
        assert status["node"] is None
        assert status["connections"] == {"total": 2, "by_tier": {"default": 2}}
        (sim,) = status["sources"].items()
        assert sim[0] == "sim" and sim[1]["state"] == "connected"
        assert sim[1]["last_message_ts"] > 0 and sim[1]["frames"] > 0
        busiest = status["channels"]["busiest"]
        assert status["channels"]["count"] == 2
        assert [(c["channel"], c["subscribers"]) for c in busiest] == [(TRADES, 2), (BOOK, 1)]
        assert all(c["seq"] > 0 and c["ts"] > 0 for c in busiest)
        totals = status["totals"]
        assert 0 < totals["messages"] <= relay.hub.messages_in
        assert 0 < totals["deliveries"] <= relay.hub.deliveries
        assert totals["dropped"] == 0 and totals["disconnected_slow"] == 0
        latency = status["fanout_latency_ms"]
        assert latency["writes"] > 0
        assert latency["p50"] <= latency["p90"] <= latency["p99"]
        assert status["slowest"] == [] or all(s["queued_bytes"] > 0 for s in status["slowest"])
