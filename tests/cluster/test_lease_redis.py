"""RedisLeaseStore against a real redis-server: the scripts do what the core assumes."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable

import coredis
import pytest
import trio

from relay.cluster.lease import LeaseStoreUnavailable, RedisLeaseStore, hold_lease
from relay.core.lease import Lease


@pytest.fixture
async def client(redis_server_url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    redis: coredis.Redis[bytes] = coredis.Redis.from_url(redis_server_url, decode_responses=False)
    async with redis:
        yield redis


async def test_acquire_sets_the_key_with_the_token_and_ttl(client: coredis.Redis[bytes]) -> None:
    store = RedisLeaseStore(client, "relay-test")
    assert store.key("sim") == "relay-test:lease:sim"
    assert await store.acquire("sim", "node-a", 3000) is True
    assert await client.get("relay-test:lease:sim") == b"node-a"
    assert 2900 <= await client.pttl("relay-test:lease:sim") <= 3000


async def test_a_second_token_is_refused_and_the_holder_may_take_it_again(
    client: coredis.Redis[bytes],
) -> None:
    store = RedisLeaseStore(client, "relay-test")
    assert await store.acquire("sim", "node-a", 3000) is True
    assert await store.acquire("sim", "node-b", 3000) is False
    assert await store.renew("sim", "node-b", 3000) is False
    assert await client.get("relay-test:lease:sim") == b"node-a"
    await client.pexpire("relay-test:lease:sim", 100)
    assert await store.acquire("sim", "node-a", 5000) is True
    assert await client.pttl("relay-test:lease:sim") > 4900
    assert await store.acquire("binance", "node-b", 3000) is True  # another source's key


async def test_renew_resets_the_ttl_of_ones_own_key_only(client: coredis.Redis[bytes]) -> None:
    store = RedisLeaseStore(client, "relay-test")
    assert await store.renew("sim", "node-a", 3000) is False  # no key: nothing to renew
    assert await client.exists(["relay-test:lease:sim"]) == 0
    assert await store.acquire("sim", "node-a", 3000) is True
    await client.pexpire("relay-test:lease:sim", 100)
    assert await store.renew("sim", "node-a", 3000) is True
    assert await client.pttl("relay-test:lease:sim") > 2900


async def test_release_deletes_ones_own_key_only(client: coredis.Redis[bytes]) -> None:
    store = RedisLeaseStore(client, "relay-test")
    assert await store.acquire("sim", "node-a", 3000) is True
    await store.release("sim", "node-b")
    assert await client.get("relay-test:lease:sim") == b"node-a"
    await store.release("sim", "node-a")
    assert await client.exists(["relay-test:lease:sim"]) == 0
    assert await store.acquire("sim", "node-b", 3000) is True


async def test_the_key_expires_after_the_ttl(client: coredis.Redis[bytes]) -> None:
    store = RedisLeaseStore(client, "relay-test")
    assert await store.acquire("sim", "node-a", 100) is True
    assert await store.acquire("sim", "node-b", 3000) is False
    await trio.sleep(0.15)
    assert await store.renew("sim", "node-a", 3000) is False
    assert await store.acquire("sim", "node-b", 3000) is True


async def test_an_unreachable_server_is_unavailable(redis_server_url: str) -> None:
    port = int(redis_server_url.rsplit(":", 1)[1])
    with trio.socket.socket() as probe:  # a port nothing listens on
        await probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    assert closed_port != port
    redis: coredis.Redis[bytes] = coredis.Redis(
        host="127.0.0.1", port=closed_port, decode_responses=False
    )
    async with redis:
        with pytest.raises(LeaseStoreUnavailable, match=r"^Unable to establish a connection"):
            await RedisLeaseStore(redis, "relay-test").acquire("sim", "node-a", 3000)


async def test_two_nodes_hand_the_lease_over_through_redis(client: coredis.Redis[bytes]) -> None:
    """hold_lease on the real store: one node holds, the other takes over on its release."""
    store = RedisLeaseStore(client, "relay-test")
    beliefs: dict[str, list[bool]] = {"a": [], "b": []}
    held = {name: trio.Event() for name in beliefs}

    def on_change(name: str) -> Callable[[bool], None]:
        def changed(holds: bool) -> None:
            beliefs[name].append(holds)
            if holds:
                held[name].set()

        return changed

    def lease() -> Lease:
        return Lease(ttl=2.0, renew_every=0.5, retry_every=0.1, margin=0.2)

    async with trio.open_nursery() as nursery:
        a_scope = trio.CancelScope()

        async def node_a() -> None:
            with a_scope:
                await hold_lease(lease(), store, "sim", "a", on_change("a"), request_timeout=1.0)

        nursery.start_soon(node_a)
        with trio.fail_after(5):
            await held["a"].wait()
        nursery.start_soon(
            functools.partial(
                hold_lease, lease(), store, "sim", "b", on_change("b"), request_timeout=1.0
            )
        )
        await trio.sleep(0.3)  # b's attempts are refused meanwhile
        assert beliefs == {"a": [True], "b": []}
        a_scope.cancel()
        with trio.fail_after(5):
            await held["b"].wait()
        assert beliefs == {"a": [True, False], "b": [True]}
        assert await client.get("relay-test:lease:sim") == b"b"
        nursery.cancel_scope.cancel()
    assert await client.exists(["relay-test:lease:sim"]) == 0
