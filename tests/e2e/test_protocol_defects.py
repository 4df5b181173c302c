"""The client protocol's defects, over real loopback sockets: ids on rate_limited errors,
replies before a 4029 close, 1009 at an oversized header, the fixed 1007 reason, and binary
frames refused with bad_request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from tests.e2e.conftest import HOST, Stack, client, receive, running_stack, send

pytestmark = pytest.mark.e2e


class RawClient:
    """wsproto over a TCP stream, so a test controls exactly what goes into each write."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    def text(self, command: dict[str, Any]) -> bytes:
        return self.ws.send(TextMessage(data=orjson.dumps(command).decode()))

    async def send(self, *frames: bytes) -> None:
        await self.stream.send_all(b"".join(frames))

    async def until_closed(
        self, within: float = 5.0
    ) -> tuple[list[dict[str, Any]], CloseConnection]:
        """Every text message up to the relay's close frame, and that frame."""
        messages: list[dict[str, Any]] = []
        with trio.fail_after(within):
            while True:
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        messages.append(orjson.loads(event.data))
                    elif isinstance(event, CloseConnection):
                        return messages, event
                data = await self.stream.receive_some()
                assert data, "the relay hung up without a close frame"
                self.ws.receive_data(data)


@asynccontextmanager
async def raw_client(stack: Stack) -> AsyncIterator[RawClient]:
    """Connected and past the welcome."""
    stream = await trio.open_tcp_stream(HOST, stack.relay_port)
    async with stream:
        raw = RawClient(stream)
        await stream.send_all(raw.ws.send(Request(host=HOST, target="/ws")))
        events: list[Any] = []
        with trio.fail_after(5):
            while not any(isinstance(e, TextMessage) for e in events):
                raw.ws.receive_data(await stream.receive_some())
                events += list(raw.ws.events())
        assert isinstance(events[0], AcceptConnection)
        welcome = next(e for e in events if isinstance(e, TextMessage))
        assert orjson.loads(welcome.data)["event"] == "welcome"
        yield raw


def limited(rate: float, burst: int) -> dict[str, Any]:
    return {"default": {"max_connections": 10, "rate_limit": rate, "rate_burst": burst}}


async def test_rate_limited_errors_echo_ids_and_replies_precede_the_4029_close(
    nursery: trio.Nursery,
) -> None:
    async with (
        running_stack(nursery, tiers=limited(0.01, 3)) as stack,
        raw_client(stack) as raw,
    ):
        # One write: three accepted, two refused with their ids, the third refusal (strikes ==
        # burst) closes; the sixth command is never looked at.
        await raw.send(*(raw.text({"action": "ping", "id": f"c{i}"}) for i in range(1, 7)))
        messages, close = await raw.until_closed()
        assert [(m["event"], m["id"]) for m in messages] == [
            ("pong", "c1"),
            ("pong", "c2"),
            ("pong", "c3"),
            ("error", "c4"),
            ("error", "c5"),
        ]
        assert {m["data"]["code"] for m in messages[3:]} == {"rate_limited"}
        assert (close.code, close.reason) == (4029, "rate limited")
        await raw.send(raw.ws.send(close.response()))
        await stack.wait_for(lambda: not stack.relay.sessions)
        assert stack.relay.close_codes[4029] == 1


async def test_a_header_announcing_too_much_is_refused_with_1009_before_any_payload(
    nursery: trio.Nursery,
) -> None:
    async with (
        running_stack(nursery, server={"max_message_size": 1024, "close_timeout": 0.2}) as stack,
        raw_client(stack) as raw,
    ):
        # A masked text frame header announcing 1 GiB, and nothing of it: the relay must not
        # wait for the payload (nor for the idle or heartbeat deadlines).
        await raw.send(bytes([0x81, 0x80 | 127]) + (2**30).to_bytes(8, "big") + bytes(4))
        started = trio.current_time()
        messages, close = await raw.until_closed(within=2.0)
        assert messages == []
        assert (close.code, close.reason) == (1009, "message too big")
        assert trio.current_time() - started < 1.0
        await stack.wait_for(lambda: not stack.relay.sessions)
        assert stack.relay.close_codes[1009] == 1


async def test_invalid_utf8_closes_with_1007_and_a_fixed_reason(stack: Stack) -> None:
    async with raw_client(stack) as raw:
        await raw.send(bytes([0x81, 0x82]) + bytes(4) + b"\xff\xfe")  # masked, mask key 0
        _, close = await raw.until_closed()
        assert (close.code, close.reason) == (1007, "invalid UTF-8 in a text frame")


async def test_a_binary_frame_is_answered_with_bad_request_and_the_connection_goes_on(
    stack: Stack,
) -> None:
    async with client(stack.url) as ws:
        # trio-websocket sends bytes as a binary frame: the mistake this refusal is for.
        await ws.send_message(orjson.dumps({"action": "ping", "id": 5}))
        refused = await receive(ws)
        assert refused == {
            "event": "error",
            "data": {
                "code": "bad_request",
                "message": "commands are JSON text frames: send this as text",
            },
            "id": 5,
        }
        await send(ws, {"action": "ping", "id": 6})
        assert await receive(ws) == {"event": "pong", "id": 6}
    async with client(stack.url) as ws:
        await ws.send_message(b"\x00\x01\x02")  # not even JSON: no id to echo
        assert await receive(ws) == {
            "event": "error",
            "data": {
                "code": "bad_request",
                "message": "commands are JSON text frames: send this as text",
            },
        }
