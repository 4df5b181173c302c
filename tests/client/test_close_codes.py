"""What the client does with each way a relay can end a connection (protocol.md's close
codes), against a small WebSocket server on loopback that plays the relay's part."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from relay.client import ClientRefused, Status, Subscribed, open_client
from relay.core.backoff import Backoff

HOST = "127.0.0.1"


class FakeRelay:
    """Welcomes, records the commands of each connection, then closes with ``code``."""

    def __init__(self, code: int, reject: int | None = None) -> None:
        self.code = code
        self.reject = reject
        self.commands: list[list[dict[str, Any]]] = []

    async def handler(self, request: WebSocketRequest) -> None:
        if self.reject is not None:
            await request.reject(self.reject, body=b'{"error":"invalid_credentials"}')
            return
        ws = await request.accept()
        commands: list[dict[str, Any]] = []
        self.commands.append(commands)
        await ws.send_message(
            '{"event":"welcome","data":{"session":"s","heartbeat":15,"protocol":1}}'
        )
        command = orjson.loads(await ws.get_message())
        commands.append(command)
        await ws.send_message(
            orjson.dumps(
                {
                    "event": "subscribed",
                    "data": {"channel": command["channel"], "seq": 7, "epoch": "e"},
                }
            ).decode()
        )
        await ws.send_message('{"channel":"x:y","seq":8,"ts":1,"data":{}}')
        await ws.aclose(self.code, "closing")

    async def start(self, nursery: trio.Nursery) -> str:
        server = await nursery.start(serve_websocket, self.handler, HOST, 0, None)
        return f"ws://{HOST}:{server.port}/ws"


async def events_until(client: Any, count: int) -> list[Any]:
    out: list[Any] = []
    async for event in client:
        out.append(event)
        if len(out) >= count:
            break
    return out


def client_options() -> dict[str, Any]:
    # random() == 0: a normal reconnect waits 0 s, so any wait seen is the close code's.
    return {"backoff": Backoff(initial=0.05, cap=0.4), "random_source": lambda: 0.0}


@pytest.mark.parametrize("code", [1001, 4008, 1011])
async def test_a_relay_that_goes_away_is_reconnected_at_once_and_resumed(
    nursery: trio.Nursery, code: int
) -> None:
    relay = FakeRelay(code)
    url = await relay.start(nursery)
    async with open_client(url, ["x:y"], **client_options()) as client:
        with trio.fail_after(5):
            # connected, subscribed, data, disconnected, reconnecting; then the same again.
            events = await events_until(client, 8)
    statuses = [e for e in events if isinstance(e, Status)]
    assert statuses[:3] == [
        Status("connected"),
        Status("disconnected", code=code, reason="closing"),
        Status("reconnecting", delay=0.0),
    ]
    # The second connection resumes from the last message the first one delivered.
    assert relay.commands[0] == [{"action": "subscribe", "channel": "x:y"}]
    assert relay.commands[1] == [
        {"action": "subscribe", "channel": "x:y", "since": {"seq": 8, "epoch": "e"}}
    ]


async def test_rate_limited_backs_off_as_long_as_the_schedule_allows(
    nursery: trio.Nursery,
) -> None:
    relay = FakeRelay(4029)
    url = await relay.start(nursery)
    async with open_client(url, ["x:y"], **client_options()) as client:
        with trio.fail_after(5):
            events = await events_until(client, 5)
    assert events[1] == Subscribed("x:y", 7, "e", None)
    assert events[3] == Status("disconnected", code=4029, reason="closing")
    assert events[4] == Status("reconnecting", delay=0.2)  # half the cap at random() == 0


async def test_revoked_credentials_end_the_client_without_a_reconnect(
    nursery: trio.Nursery,
) -> None:
    relay = FakeRelay(1008)
    url = await relay.start(nursery)
    seen: list[Any] = []
    async with open_client(url, ["x:y"], **client_options()) as client:
        with trio.fail_after(5), pytest.raises(ClientRefused) as refused:
            async for event in client:
                seen.append(event)  # noqa: PERF401 - what came before the exception counts
    assert refused.value.code == 1008
    assert seen[-1] == Status("disconnected", code=1008, reason="closing")
    assert len(relay.commands) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refused_handshake_ends_the_client(nursery: trio.Nursery, status: int) -> None:
    relay = FakeRelay(1000, reject=status)
    url = await relay.start(nursery)
    async with open_client(url, ["x:y"], key="wrong", **client_options()) as client:
        with trio.fail_after(5), pytest.raises(ClientRefused, match=f"HTTP {status}"):
            async for _ in client:
                pass
