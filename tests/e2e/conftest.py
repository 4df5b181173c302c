"""A synthetic market and a relay in front of it, over real loopback sockets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from relay.config import parse_config
from relay.server.relay import Relay
from relay.sim.server import SimServer
from tests.ci import fold_skip
from tests.e2e.node_sio import node_sio_missing, require_node_sio
from tests.e2e.node_ws import node_ws_missing, require_node_ws

HOST = "127.0.0.1"


def relay_config(sim_port: int, **overrides: Any) -> dict[str, Any]:
    source = {
        "kind": "sim",
        "url": f"ws://{HOST}:{sim_port}/ws",
        "rest_url": f"http://{HOST}:{sim_port}",
        "linger": 0.3,
        "heartbeat_interval": 1.0,
        "backoff_initial": 0.05,
        "backoff_cap": 0.2,
    }
    source.update(overrides.pop("source", {}))
    config: dict[str, Any] = {
        "server": {"host": HOST, "port": 0},
        "auth": {"required": False},
        "tiers": {"default": {"max_connections": 1000, "rate_limit": 1000.0, "rate_burst": 1000}},
        "sources": {"sim": source},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@attrs.define
class Stack:
    relay: Relay
    relay_port: int
    sim: SimServer
    sim_port: int
    http: httpx.AsyncClient

    @property
    def tls(self) -> bool:
        return self.relay.config.server.tls is not None

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{HOST}:{self.relay_port}/ws"

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.relay_port}"

    async def stats(self) -> dict[str, Any]:
        response = await self.http.get(f"http://{HOST}:{self.sim_port}/control/stats")
        result: dict[str, Any] = response.json()
        return result

    async def control(self, path: str) -> dict[str, Any]:
        response = await self.http.post(f"http://{HOST}:{self.sim_port}/control/{path}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def wait_for(self, predicate: Any, within: float = 5.0) -> None:
        """Poll until ``predicate()`` holds: for effects that have no event to wait on."""
        with trio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 - effects of other tasks and processes
                await trio.sleep(0.01)

    async def wait_for_stats(self, predicate: Any, within: float = 5.0) -> dict[str, Any]:
        with trio.fail_after(within):
            while True:
                stats = await self.stats()
                if predicate(stats):
                    return stats
                await trio.sleep(0.02)


@asynccontextmanager
async def running_stack(
    nursery: trio.Nursery, *, rate: float = 20.0, **overrides: Any
) -> AsyncIterator[Stack]:
    sim = SimServer(rate=rate)
    sim_port = await nursery.start(sim.serve, HOST, 0)
    relay = Relay(parse_config(relay_config(sim_port, **overrides)))
    relay_port = await nursery.start(relay.serve)
    async with httpx.AsyncClient(timeout=5.0) as http:
        stack = Stack(relay, relay_port, sim, sim_port, http)
        await stack.wait_for(lambda: relay.ready)
        yield stack


@pytest.fixture
async def stack(nursery: trio.Nursery) -> AsyncIterator[Stack]:
    async with running_stack(nursery) as s:
        yield s


async def receive(ws: WebSocketConnection, within: float = 5.0) -> dict[str, Any]:
    with trio.fail_after(within):
        message: dict[str, Any] = orjson.loads(await ws.get_message())
        return message


async def send(ws: WebSocketConnection, command: dict[str, Any]) -> None:
    await ws.send_message(orjson.dumps(command).decode())


@asynccontextmanager
async def client(url: str, **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(url, **kwargs) as ws:
        welcome = await receive(ws)
        assert welcome["event"] == "welcome"
        yield ws


async def seqs_until(ws: WebSocketConnection, channel: str, moment: float) -> list[int]:
    """The seq of each message received until trio's clock reaches ``moment``; every one must
    be on ``channel``."""
    seqs: list[int] = []
    while trio.current_time() < moment:
        message = await receive(ws)
        assert message["channel"] == channel, message
        seqs.append(message["seq"])
    return seqs


async def subscribe(ws: WebSocketConnection, *channels: str, id: int = 1) -> list[dict[str, Any]]:
    """Subscribe and check the acks, in order; answers the data that arrived between them
    (a channel's snapshot follows its own ack at once)."""
    await send(ws, {"action": "subscribe", "channels": list(channels), "id": id})
    data: list[dict[str, Any]] = []
    for channel in channels:
        while "event" not in (message := await receive(ws)):
            data.append(message)
        assert message["event"] == "subscribed" and message["id"] == id, message
        assert message["data"]["channel"] == channel, message
    return data


@pytest.fixture
def node_ws_installed() -> None:
    """Node's ws client can run; skips (fails in CI) without it. A synchronous fixture: a skip
    raised inside a Trio test reaches pytest wrapped in an exception group."""
    require_node_ws()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    fold_skip(report, node_ws_missing(), require_node_ws)
    fold_skip(report, node_sio_missing(), require_node_sio)
    return report


@asynccontextmanager
async def relay_command(*argv: str) -> AsyncIterator[trio.Process]:
    """``python -m relay ARGV`` as a child process with its stderr piped (read it with
    :func:`read_stderr_until`); killed if it is still running at the end."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "relay", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_stderr_until(process: trio.Process, marker: bytes, within: float = 20.0) -> str:
    """What the process wrote to stderr until ``marker`` appeared (it must, within the time)."""
    assert process.stderr is not None
    output = b""
    with trio.fail_after(within):
        while marker not in output:
            chunk = await process.stderr.receive_some()
            assert chunk, output.decode()
            output += chunk
    return output.decode()
