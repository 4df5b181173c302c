"""The client WebSocket at its edges, over real sockets: handshakes, closes, violations."""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.frame_protocol import CloseReason

from tests.e2e.conftest import HOST, Stack, client, receive, running_stack, send, subscribe

pytestmark = pytest.mark.e2e


async def raw_exchange(stack: Stack, data: bytes) -> bytes:
    """Send ``data`` and read until the relay closes the connection."""
    stream = await trio.open_tcp_stream(HOST, stack.relay_port)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                received += chunk
    return received


def upgrade(version: str = "13", key: bool = True) -> bytes:
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {HOST}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Version: {version}",
    ]
    if key:
        lines.append(f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (upgrade(key=False), 400, "bad_request"),
        (upgrade(version="8"), 426, "upgrade_required"),
    ],
)
async def test_an_invalid_handshake_gets_a_status_and_a_json_body(
    stack: Stack, request_bytes: bytes, status: int, error: str
) -> None:
    answer = await raw_exchange(stack, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert orjson.loads(body)["error"] == error
    assert stack.relay.rejected[status] == 1
    assert not stack.relay.sessions


async def test_a_subscribe_sent_with_the_request_is_served(stack: Stack) -> None:
    """A client may send frames without waiting for the 101; none of them may be lost."""
    ws = WSConnection(ConnectionType.CLIENT)
    command = {"action": "subscribe", "channel": "sim:trades:BTC-USD", "id": 7}
    data = ws.send(Request(host=HOST, target="/ws"))
    stream = await trio.open_tcp_stream(HOST, stack.relay_port)
    async with stream:
        # One write: the request and the frame behind it reach the front door together.
        frame = Connection(ConnectionType.CLIENT).send(
            TextMessage(data=orjson.dumps(command).decode())
        )
        await stream.send_all(data + frame)
        events: list[Any] = []
        with trio.fail_after(5):
            while len([e for e in events if isinstance(e, TextMessage)]) < 2:
                ws.receive_data(await stream.receive_some())
                events += list(ws.events())
    assert isinstance(events[0], AcceptConnection)
    texts = [orjson.loads(e.data) for e in events if isinstance(e, TextMessage)]
    assert texts[0]["event"] == "welcome"
    assert texts[1]["event"] == "subscribed" and texts[1]["id"] == 7
    assert texts[1]["data"]["channel"] == "sim:trades:BTC-USD"


async def test_a_client_close_is_answered_and_cleans_up(stack: Stack) -> None:
    relay = stack.relay
    async with client(stack.url) as ws:
        await subscribe(ws, "sim:trades:BTC-USD")
        await ws.aclose(code=1000, reason="done")
        assert ws.closed is not None
        # trio-websocket reports the close the relay echoed back.
        assert ws.closed.code == 1000
    await stack.wait_for(lambda: not relay.sessions)
    assert len(relay.hub.registry) == 0
    assert relay.close_codes[1000] == 1


async def test_a_message_over_the_cap_closes_with_1009(nursery: trio.Nursery) -> None:
    """With the `websockets` library as the client (sync API, in a worker thread)."""

    def run(url: str) -> int | None:
        with connect(url) as ws:
            assert orjson.loads(ws.recv(timeout=5))["event"] == "welcome"
            ws.send(orjson.dumps({"action": "ping", "pad": "x" * 2000}).decode())
            try:
                ws.recv(timeout=5)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd is not None else None
        return None

    async with running_stack(nursery, server={"max_message_size": 1024}) as stack:
        assert await trio.to_thread.run_sync(run, stack.url) == 1009
        await stack.wait_for(lambda: not stack.relay.sessions)
        assert stack.relay.close_codes[1009] == 1


async def test_a_protocol_violation_closes_with_1002_and_others_carry_on(stack: Stack) -> None:
    async with client(stack.url) as bystander:
        await subscribe(bystander, "sim:trades:BTC-USD")
        ws = WSConnection(ConnectionType.CLIENT)
        stream = await trio.open_tcp_stream(HOST, stack.relay_port)
        async with stream:
            await stream.send_all(ws.send(Request(host=HOST, target="/ws")))
            await stream.send_all(b"\x81\x05hello")  # unmasked: clients must mask
            events: list[Any] = []
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    ws.receive_data(chunk)
                    events += list(ws.events())
        closes = [e for e in events if isinstance(e, CloseConnection)]
        assert closes and closes[0].code == CloseReason.PROTOCOL_ERROR
        await send(bystander, {"action": "ping", "id": 2})
        while (message := await receive(bystander)).get("event") != "pong":
            assert "channel" in message  # trades still flowing meanwhile
        assert message["id"] == 2
