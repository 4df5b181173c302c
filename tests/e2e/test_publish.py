"""Publishing over HTTP and private channels, on real sockets: who may publish, what a
published message looks like to subscribers, and whose channels a key may read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio

from tests.e2e.conftest import Stack, client, receive, running_stack, send, subscribe

pytestmark = pytest.mark.e2e

ALICE, BOB, READER = "alice-key-0001", "bob-key-0002", "reader-key-0003"
OVERRIDES: dict[str, Any] = {
    "auth": {"required": True},
    "tiers": {
        "member": {
            "channels": ["sim:*", "app:*", "user:{key}:*"],
            "publish": ["app:alerts:*", "app:status:feed", "user:{key}:*"],
        },
        "reader": {"channels": ["sim:*", "app:*", "user:{key}:*"]},
    },
    "keys": [
        {"key": ALICE, "tier": "member", "name": "alice"},
        {"key": BOB, "tier": "member", "name": "bob"},
        {"key": READER, "tier": "reader", "name": "reader"},
    ],
    "published": {"app": {"state": ["app:status:*"]}, "user": {}},
}


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


async def post(stack: Stack, body: Any, key: str | None = ALICE) -> tuple[int, dict[str, Any]]:
    response = await stack.http.post(
        f"{stack.base}/v1/publish",
        content=body if isinstance(body, bytes) else orjson.dumps(body),
        headers=auth(key) if key else {},
    )
    result: dict[str, Any] = response.json()
    return response.status_code, result


async def test_a_published_message_reaches_every_subscriber_in_order(
    nursery: trio.Nursery,
) -> None:
    async with running_stack(nursery, **OVERRIDES) as stack:
        channel = "app:alerts:disk"
        async with (
            client(stack.url, extra_headers=bearer(BOB)) as one,
            client(stack.url, extra_headers=bearer(READER)) as two,
        ):
            for ws in (one, two):
                await subscribe(ws, channel)
            status, body = await post(
                stack,
                [{"channel": channel, "data": {"used": i}} for i in range(5)],
            )
            assert status == 200
            assert body == {"published": [{"channel": channel, "seq": i} for i in range(1, 6)]}
            status, body = await post(stack, {"channel": channel, "data": {"used": 5}})
            assert body == {"published": [{"channel": channel, "seq": 6}]}
            for ws in (one, two):
                got = [await receive(ws) for _ in range(6)]
                assert [m["seq"] for m in got] == [1, 2, 3, 4, 5, 6]
                assert [m["data"] for m in got] == [{"used": i} for i in range(6)]
                assert {m["channel"] for m in got} == {channel}
                assert all(isinstance(m["ts"], int) and "snapshot" not in m for m in got)


async def test_who_may_publish(nursery: trio.Nursery) -> None:
    async with running_stack(nursery, **OVERRIDES) as stack:
        one = {"channel": "app:alerts:x", "data": {}}
        assert (await post(stack, one, key=None))[0] == 401
        assert (await post(stack, one, key="not-a-key"))[0] == 401
        status, body = await post(stack, one, key=READER)
        assert (status, body["error"]) == (403, "forbidden")
        # Not in the tier's publish patterns, an upstream's channel, another key's channel.
        for channel in ("app:status:x", "sim:trades:BTC-USD", "user:bob:inbox"):
            status, body = await post(stack, {"channel": channel, "data": {}})
            assert (status, body["error"]) == (403, "forbidden"), channel
        # One bad item refuses the whole batch: nothing of it was published.
        status, _ = await post(stack, [one, {"channel": "user:bob:inbox", "data": {}}])
        assert status == 403
        assert stack.relay.hub.snapshot("app:alerts:x") is None
        assert stack.relay.stats().messages_published == stack.relay.hub.messages_in
        for bad in (b"{", b"[]", b'{"channel":"app:alerts:x","data":5}', b'{"data":{}}'):
            status, body = await post(stack, bad)
            assert (status, body["error"]) == (400, "bad_request"), bad
        huge = orjson.dumps({"channel": "app:alerts:x", "data": {"x": "y" * 2_000_000}})
        status, body = await post(stack, huge)
        assert (status, body["error"]) == (413, "too_large")
        assert (await post(stack, {"channel": "user:alice:inbox", "data": {}}))[0] == 200


async def test_a_state_channel_keeps_its_latest_message_as_the_snapshot(
    nursery: trio.Nursery,
) -> None:
    async with running_stack(nursery, **OVERRIDES) as stack:
        channel = "app:status:feed"
        for i in range(3):
            assert (await post(stack, {"channel": channel, "data": {"n": i}}))[0] == 200
        async with client(stack.url, extra_headers=bearer(READER)) as ws:
            assert await subscribe(ws, channel) == []
            snapshot = await receive(ws)
            assert (snapshot["seq"], snapshot["snapshot"], snapshot["data"]) == (3, True, {"n": 2})
        response = await stack.http.get(f"{stack.base}/v1/snapshot/{channel}", headers=auth(BOB))
        assert response.json()["data"] == {"n": 2}


async def test_a_key_reads_its_own_private_channels_and_not_anothers(
    nursery: trio.Nursery,
) -> None:
    async with running_stack(nursery, **OVERRIDES) as stack:
        async with client(stack.url, extra_headers=bearer(ALICE)) as ws:
            await subscribe(ws, "user:alice:inbox")
            await send(ws, {"action": "subscribe", "channel": "user:bob:inbox", "id": 2})
            error = await receive(ws)
            assert error["event"] == "error" and error["id"] == 2
            assert error["data"]["code"] == "forbidden"
            assert error["data"]["channel"] == "user:bob:inbox"
            await post(stack, {"channel": "user:alice:inbox", "data": {"hi": 1}})
            message = await receive(ws)
            assert (message["channel"], message["seq"], message["data"]) == (
                "user:alice:inbox",
                1,
                {"hi": 1},
            )
        # Bob's snapshot requests are held to his own channels too.
        response = await stack.http.get(
            f"{stack.base}/v1/snapshot/user:alice:inbox", headers=auth(BOB)
        )
        assert response.status_code == 403
