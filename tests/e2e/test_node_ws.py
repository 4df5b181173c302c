"""Node's ``ws`` as the client, over wss:// with a trustme CA: another implementation's
handshake, TLS stack and framing against the relay, including its refusals (429 with
Retry-After, 403 for a foreign Origin) and a client address forwarded by a trusted proxy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from tests.certs import Certificates, issue
from tests.e2e.conftest import HOST, client, receive, running_stack, subscribe
from tests.e2e.node_ws import NodeWs, node_ws

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("node_ws_installed")]

CHANNEL = "sim:trades:BTC-USD"


def tls_server(certs: Certificates, **server: Any) -> dict[str, Any]:
    return {"tls": certs.tls, **server}


async def welcomed(client: NodeWs) -> None:
    assert await client.event() == {"event": "open"}
    welcome = await client.message()
    assert welcome["event"] == "welcome" and welcome["data"]["protocol"] == 1


async def test_node_ws_streams_over_wss(tmp_path: Path, nursery: trio.Nursery) -> None:
    certs = issue(tmp_path)
    async with (
        running_stack(nursery, server=tls_server(certs)) as stack,
        node_ws(stack.url, ca=certs.ca_file) as node,
    ):
        await welcomed(node)
        await node.send({"action": "subscribe", "channel": CHANNEL, "id": "n1"})
        ack = await node.message()
        assert (ack["event"], ack["data"]["channel"], ack["id"]) == ("subscribed", CHANNEL, "n1")
        data = [await node.message() for _ in range(10)]
        assert {m["channel"] for m in data} == {CHANNEL}
        seqs = [m["seq"] for m in data]
        assert seqs == list(range(seqs[0], seqs[0] + 10))
        await node.send({"action": "ping", "id": 7})
        while (message := await node.message()).get("event") != "pong":
            assert message["channel"] == CHANNEL
        assert message == {"event": "pong", "id": 7}


async def test_node_ws_without_the_ca_fails_while_the_relay_keeps_serving(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    certs = issue(tmp_path)
    async with (
        running_stack(nursery, server=tls_server(certs)) as stack,
        client(stack.url, ssl_context=certs.client_context()) as ws,
    ):
        seqs = [m["seq"] for m in await subscribe(ws, CHANNEL)]
        async with node_ws(stack.url) as untrusting:
            event = await untrusting.event()
        assert event["event"] == "error", event
        assert event["code"] in ("SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_VERIFY_LEAF_SIGNATURE")
        async with node_ws(stack.url, ca=certs.ca_file) as trusting:
            await welcomed(trusting)
        while len(seqs) < 15:
            seqs.append((await receive(ws))["seq"])
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_node_ws_sees_429_with_retry_after_and_403_for_a_foreign_origin(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    certs = issue(tmp_path)
    server = tls_server(
        certs,
        connection_rate_per_address=0.5,
        connection_burst_per_address=2,
        allowed_origins=["https://app.example.com"],
    )
    async with running_stack(nursery, server=server) as stack:
        async with node_ws(stack.url, ca=certs.ca_file, origin="https://evil.example") as node:
            refused = await node.event()
        assert refused["event"] == "refused" and refused["status"] == 403
        assert orjson.loads(refused["body"])["error"] == "forbidden_origin"
        # The origin is checked before the rate: two connections fit in the burst...
        async with (
            node_ws(stack.url, ca=certs.ca_file, origin="https://app.example.com") as first,
            node_ws(stack.url, ca=certs.ca_file) as second,
        ):
            await welcomed(first)
            await welcomed(second)
        # ...and the bucket is empty.
        async with node_ws(stack.url, ca=certs.ca_file) as node:
            refused = await node.event()
        assert refused["event"] == "refused" and refused["status"] == 429
        assert orjson.loads(refused["body"])["error"] == "connection_rate"
        assert refused["headers"]["retry-after"] in ("1", "2")


async def test_node_ws_through_a_trusted_proxy_is_counted_by_its_forwarded_address(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    certs = issue(tmp_path)
    server = tls_server(certs, trusted_proxies=[HOST], max_connections_per_address=1)
    forwarded = {"x-forwarded-for": "198.51.100.1, 203.0.113.9"}
    async with (
        running_stack(nursery, server=server) as stack,
        node_ws(stack.url, ca=certs.ca_file, headers=forwarded) as first,
    ):
        await welcomed(first)
        assert stack.relay.addresses.open_connections("203.0.113.9") == 1
        assert stack.relay.addresses.open_connections(HOST) == 0
        async with node_ws(stack.url, ca=certs.ca_file, headers=forwarded) as second:
            refused = await second.event()
        assert refused["event"] == "refused" and refused["status"] == 429
        assert orjson.loads(refused["body"])["error"] == "too_many_connections"
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("client ") and m.endswith("connected from 203.0.113.9") for m in messages
    )
    assert any(m.startswith("refused 203.0.113.9: 429 too_many_connections") for m in messages)
