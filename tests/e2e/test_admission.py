"""Per-address limits and the Origin allow-list over real loopback sockets: every client here
comes from 127.0.0.1, which is not exempt."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.e2e.conftest import client, running_stack

pytestmark = pytest.mark.e2e


async def rejected(url: str) -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket_url(url):
            pass
    return caught.value


def header(exc: ConnectionRejected, name: str) -> str | None:
    for key, value in exc.headers:
        if key.decode().lower() == name:
            return value.decode()
    return None


async def test_connection_rate_429_with_retry_after(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    server = {"connection_rate_per_address": 0.5, "connection_burst_per_address": 2}
    async with running_stack(nursery, server=server) as stack:
        async with client(stack.url), client(stack.url):
            refused = await rejected(stack.url)
        assert refused.status_code == 429
        assert refused.body is not None
        body: dict[str, Any] = orjson.loads(refused.body)
        assert body["error"] == "connection_rate"
        assert body["message"]
        retry_after = header(refused, "retry-after")
        assert retry_after is not None and retry_after.isdigit()
        assert 1 <= int(retry_after) <= 2
        # Closing connections gives no tokens back: the rate is about new connections.
        assert (await rejected(stack.url)).status_code == 429
        await trio.sleep(int(retry_after) + 0.1)
        async with client(stack.url):
            pass
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert lines and lines[0].startswith("refused 127.0.0.1: 429 connection_rate")


async def test_concurrent_connections_per_address(nursery: trio.Nursery) -> None:
    async with running_stack(nursery, server={"max_connections_per_address": 3}) as stack:
        async with client(stack.url), client(stack.url), client(stack.url):
            refused = await rejected(stack.url)
            assert refused.status_code == 429
            assert refused.body is not None
            assert orjson.loads(refused.body)["error"] == "too_many_connections"
            assert header(refused, "retry-after") is None
            assert stack.relay.addresses.open_connections("127.0.0.1") == 3
        # The three closed: their places are free again once the relay has seen them go.
        await stack.wait_for(lambda: stack.relay.addresses.open_connections("127.0.0.1") == 0)
        async with client(stack.url):
            pass


async def test_origin_allow_list_with_the_websockets_library(nursery: trio.Nursery) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    allowed = "https://app.example.com"
    async with running_stack(nursery, server={"allowed_origins": [allowed]}) as stack:
        url = stack.url

        def try_origin(origin: str | None) -> tuple[int, bytes]:
            kwargs: dict[str, Any] = {"open_timeout": 5}
            if origin is not None:
                kwargs["origin"] = origin
            try:
                with connect(url, **kwargs) as ws:
                    welcome = orjson.loads(ws.recv(timeout=5))
                    assert welcome["event"] == "welcome"
                    return 101, b""
            except InvalidStatus as exc:
                return exc.response.status_code, exc.response.body or b""

        assert await trio.to_thread.run_sync(try_origin, allowed) == (101, b"")
        assert await trio.to_thread.run_sync(try_origin, None) == (101, b"")
        status, body = await trio.to_thread.run_sync(try_origin, "https://evil.example")
        assert status == 403
        assert orjson.loads(body)["error"] == "forbidden_origin"


async def test_connections_and_closes_are_logged_with_address_key_and_code(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    async with running_stack(nursery) as stack:
        async with client(stack.url) as ws:
            await ws.aclose(1000, "done")
        with trio.fail_after(5):
            while not any("closed" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                await trio.sleep(0.01)
    records = [r for r in caplog.records if r.getMessage().startswith("client ")]
    opened, closed = records[0], records[-1]
    assert "connected from 127.0.0.1" in opened.getMessage()
    assert opened.__dict__["address"] == "127.0.0.1" and opened.__dict__["key"]
    assert "from 127.0.0.1 closed: 1000" in closed.getMessage(), closed.getMessage()
    assert closed.__dict__["code"] == 1000
