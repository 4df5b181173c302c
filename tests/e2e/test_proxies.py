"""The client address behind a reverse proxy, over real loopback sockets: the relay believes
``X-Forwarded-For`` (or ``Forwarded``) only from a configured proxy, and then counts the
per-address limits and names every log line by the forwarded address."""

from __future__ import annotations

import logging

import orjson
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.e2e.conftest import HOST, client, running_stack

pytestmark = pytest.mark.e2e


def forwarding(value: str, header: str = "x-forwarded-for") -> dict[str, list[tuple[bytes, bytes]]]:
    return {"extra_headers": [(header.encode(), value.encode())]}


async def refused(url: str, value: str, header: str = "x-forwarded-for") -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket_url(url, **forwarding(value, header)):
            pass
    return caught.value


async def test_a_trusted_proxys_forwarded_address_is_the_client(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    server = {"trusted_proxies": ["127.0.0.0/8"], "max_connections_per_address": 1}
    async with running_stack(nursery, server=server) as stack:
        relay = stack.relay
        # The client's own claim (left) is ignored; the address the proxy appended is used.
        async with client(stack.url, **forwarding("10.9.9.9, 203.0.113.7")):
            assert relay.addresses.open_connections("203.0.113.7") == 1
            assert relay.addresses.open_connections(HOST) == 0
            # The same client again: over its own limit, though the proxy's address is not.
            rejected = await refused(stack.url, "198.51.100.1, 203.0.113.7")
            assert rejected.status_code == 429
            assert rejected.body is not None
            assert orjson.loads(rejected.body)["error"] == "too_many_connections"
            # Another client through the same proxy has its own limit.
            async with client(stack.url, **forwarding("203.0.113.8")):
                assert relay.addresses.open_connections("203.0.113.8") == 1
            # A garbled header from the proxy: the proxy's own address is the client.
            async with client(stack.url, **forwarding("203.0.113.7, not-an-address")):
                assert relay.addresses.open_connections(HOST) == 1
        await stack.wait_for(lambda: relay.addresses.open_connections("203.0.113.7") == 0)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("connected from 203.0.113.7") for m in messages)
    assert any(m.endswith("connected from 203.0.113.8") for m in messages)
    assert any(m.startswith("refused 203.0.113.7: 429 too_many_connections") for m in messages)
    assert any(" from 203.0.113.7 closed: " in m for m in messages)


async def test_rfc7239_forwarded_when_configured(nursery: trio.Nursery) -> None:
    server = {"trusted_proxies": [HOST], "forwarded_header": "forwarded"}
    async with running_stack(nursery, server=server) as stack:
        value = 'for=198.51.100.1, for="[2001:db8::7]:4711";proto=https'
        async with client(stack.url, **forwarding(value, "forwarded")):
            assert stack.relay.addresses.open_connections("2001:db8::7") == 1
        # X-Forwarded-For is not the configured header: the client wrote it, not the proxy.
        async with client(stack.url, **forwarding("203.0.113.7")):
            assert stack.relay.addresses.open_connections(HOST) == 1


async def test_the_header_is_ignored_from_a_peer_that_is_not_a_trusted_proxy(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    server = {"trusted_proxies": ["10.0.0.0/8"], "max_connections_per_address": 1}
    async with (
        running_stack(nursery, server=server) as stack,
        client(stack.url, **forwarding("203.0.113.7")),
    ):
        assert stack.relay.addresses.open_connections(HOST) == 1
        # Claiming another address does not buy another place.
        rejected = await refused(stack.url, "203.0.113.8")
        assert rejected.status_code == 429
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith(f"connected from {HOST}") for m in messages)
    assert not any("203.0.113" in m for m in messages)
