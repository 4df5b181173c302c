"""The front door: handshake answers with real status codes, HTTP endpoints, `relay tail`."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import orjson
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from relay.tail import tail
from tests.e2e.conftest import Stack, client, receive, running_stack, subscribe

pytestmark = pytest.mark.e2e

AUTH = {
    "auth": {"required": True},
    "tiers": {
        "pro": {"max_connections": 1, "max_subscriptions": 2, "channels": ["sim:*"]},
        "ticker": {"max_connections": 5, "channels": ["sim:ticker:*"]},
    },
    "keys": [
        {"key": "pro-key", "tier": "pro", "name": "alice"},
        {"key": "ticker-key", "tier": "ticker"},
    ],
}


@pytest.fixture
async def secured(nursery: trio.Nursery) -> AsyncIterator[Stack]:
    async with running_stack(nursery, **AUTH) as stack:
        yield stack


async def rejected(url: str, **kwargs: object) -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, **kwargs):  # type: ignore[arg-type]
            pass
    return info.value


async def test_credentials_are_checked_before_the_upgrade(secured: Stack) -> None:
    missing = await rejected(secured.url)
    assert missing.status_code == 401
    assert orjson.loads(missing.body or b"")["error"] == "missing_credentials"
    wrong = await rejected(secured.url, extra_headers=[(b"authorization", b"Bearer nope")])
    assert wrong.status_code == 401
    assert orjson.loads(wrong.body or b"")["error"] == "invalid_credentials"
    async with client(secured.url, extra_headers=[(b"authorization", b"Bearer pro-key")]) as ws:
        await subscribe(ws, "sim:trades:BTC-USD")
        # The tier allows one connection per key: the second is refused, by status code.
        over = await rejected(secured.url + "?api_key=pro-key")
        assert over.status_code == 429
        assert orjson.loads(over.body or b"")["error"] == "too_many_connections"
    await secured.wait_for(lambda: not secured.relay.sessions)
    async with client(secured.url + "?api_key=pro-key"):
        pass


async def test_tier_limits_channels_and_subscriptions(secured: Stack) -> None:
    async with client(secured.url + "?api_key=ticker-key") as ws:
        await ws.send_message('{"action":"subscribe","channel":"sim:trades:BTC-USD","id":1}')
        reply = await receive(ws)
        assert reply["data"]["code"] == "forbidden"
        assert reply["data"]["channel"] == "sim:trades:BTC-USD"
    async with client(secured.url + "?api_key=pro-key") as ws:
        await subscribe(ws, "sim:trades:BTC-USD", "sim:trades:ETH-USD")
        await ws.send_message('{"action":"subscribe","channel":"sim:trades:SOL-USD","id":2}')
        while "event" not in (reply := await receive(ws)):
            pass
        assert reply["data"]["code"] == "too_many_subscriptions"


async def test_global_connection_limit(nursery: trio.Nursery) -> None:
    async with (
        running_stack(nursery, server={"max_connections": 1}) as stack,
        client(stack.url),
    ):
        over = await rejected(stack.url)
        assert over.status_code == 429
        assert orjson.loads(over.body or b"")["error"] == "server_full"


async def test_paths_and_methods(stack: Stack) -> None:
    other = await rejected(stack.url.replace("/ws", "/stream"))
    assert other.status_code == 404
    plain = await stack.http.get(stack.base + "/ws")
    assert plain.status_code == 426
    assert plain.json()["error"] == "upgrade_required"
    assert (await stack.http.get(stack.base + "/nothing")).status_code == 404
    assert (await stack.http.post(stack.base + "/healthz")).status_code == 405


async def test_health_readiness_metrics(stack: Stack) -> None:
    health = await stack.http.get(stack.base + "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await stack.http.get(stack.base + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["upstreams"] == {"sim": "connected"}
    async with client(stack.url) as ws:
        await subscribe(ws, "sim:trades:BTC-USD")
        await receive(ws)
        metrics = (await stack.http.get(stack.base + "/metrics")).text
    assert "relay_connections 1.0" in metrics
    assert 'relay_upstream_connected{source="sim"} 1.0' in metrics
    assert "relay_deliveries_total" in metrics
    for counter in ("relay_writes_total", "relay_write_rounds_total"):
        assert any(
            line.startswith(counter) and float(line.split()[-1]) >= 1
            for line in metrics.splitlines()
        ), counter
    counts = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("relay_fanout_latency_seconds_count")
    ]
    assert counts and counts[0] >= 1  # the data message above was timed
    # Not ready while the upstream is away.
    await stack.control("refuse?seconds=30")
    await stack.control("drop")
    await stack.wait_for(lambda: not stack.relay.ready)
    not_ready = await stack.http.get(stack.base + "/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["upstreams"]["sim"] != "connected"
    # Between attempts it says when the next one comes. (A delay drawn near 0 can be over
    # before the request is answered, so ask until an answer falls between two attempts.)
    with trio.fail_after(5):
        while True:
            waiting = (await stack.http.get(stack.base + "/readyz")).json()
            if "sim" in waiting["retry_in"]:
                break
            await trio.sleep(0.005)
    assert 0 <= waiting["retry_in"]["sim"] <= 0.2


async def test_snapshot_endpoint(stack: Stack) -> None:
    missing = await stack.http.get(stack.base + "/v1/snapshot/sim:ticker:BTC-USD")
    assert missing.status_code == 404  # no client wants it, so the relay holds no state
    unknown = await stack.http.get(stack.base + "/v1/snapshot/sim:ticker:NOPE")
    assert unknown.status_code == 404
    async with client(stack.url) as ws:
        await subscribe(ws, "sim:ticker:BTC-USD", "sim:book:BTC-USD")
        await receive(ws)
        await receive(ws)
        for channel in ("sim:ticker:BTC-USD", "sim:book:BTC-USD"):
            response = await stack.http.get(stack.base + f"/v1/snapshot/{channel}")
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) == {"channel", "seq", "ts", "data"}
            assert body["channel"] == channel and body["seq"] >= 1


async def test_snapshot_endpoint_needs_credentials(secured: Stack) -> None:
    response = await secured.http.get(secured.base + "/v1/snapshot/sim:ticker:BTC-USD")
    assert response.status_code == 401
    with_key = await secured.http.get(
        secured.base + "/v1/snapshot/sim:trades:BTC-USD",
        headers={"authorization": "Bearer ticker-key"},
    )
    assert with_key.status_code == 403


async def test_relay_tail(stack: Stack) -> None:
    out, err = io.StringIO(), io.StringIO()
    status = await tail(stack.url, ["sim:trades:BTC-USD"], count=3, out=out, err=err)
    assert status == 0
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [m["channel"] for m in lines] == ["sim:trades:BTC-USD"] * 3
    assert err.getvalue().splitlines()[:2] == [
        "connected",
        f"subscribed sim:trades:BTC-USD (seq {lines[0]['seq'] - 1})",
    ]


async def test_relay_tail_reports_refusal(secured: Stack) -> None:
    err = io.StringIO()
    status = await tail(secured.url, ["sim:trades:BTC-USD"], count=1, out=io.StringIO(), err=err)
    assert status == 2
    assert "401" in err.getvalue() or "could not connect" in err.getvalue()
