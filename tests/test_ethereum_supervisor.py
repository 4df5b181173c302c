"""An Ethereum source's supervisor on MockClock against scripted nodes that misbehave in ways
ganache cannot be made to: answering only errors, never answering a subscribe, sending garbage.
Each must go through the same watchdog, backoff and status events as any dead upstream."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from relay.adapters.ethereum import EthereumAdapter
from relay.config import SourceConfig
from relay.core.hub import Hub, Limits
from relay.core.outbox import Outbox
from relay.server.transports import UpstreamClosed, UpstreamConnection
from relay.server.upstream import UpstreamState, UpstreamSupervisor

LIMITS = Limits(max_subscriptions=10)
HEAD = {
    "number": "0x5",
    "hash": "0x" + "22" * 32,
    "parentHash": "0x" + "11" * 32,
    "timestamp": "0x1",
    "gasUsed": "0x0",
    "gasLimit": "0x1",
}

#: How a scripted node answers one JSON-RPC request: the frames it sends back.
Behaviour = Callable[[dict[str, Any]], list[str]]


def healthy(request: dict[str, Any]) -> list[str]:
    if request["method"] == "eth_blockNumber":
        return [answer(request, "0x5")]
    if request["method"] == "eth_subscribe":
        return [answer(request, f"0x{request['id']}")]
    return [answer(request, True)]


def errors_only(request: dict[str, Any]) -> list[str]:
    error = {"code": -32000, "message": "node is syncing"}
    return [orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}).decode()]


def ignores_subscribes(request: dict[str, Any]) -> list[str]:
    return [] if request["method"] == "eth_subscribe" else healthy(request)


def garbage(request: dict[str, Any]) -> list[str]:
    return ["<html>502 Bad Gateway</html>"]


def answer(request: dict[str, Any], result: object) -> str:
    return orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).decode()


class ScriptedNode:
    """One connection to a node that answers each request as its behaviour says."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests: list[dict[str, Any]] = []
        self._send, self._receive = trio.open_memory_channel[str](math.inf)
        self.closed = False

    async def send(self, text: str) -> None:
        if self.closed:
            raise UpstreamClosed(1006, "dropped")
        request = orjson.loads(text)
        self.requests.append(request)
        for reply in self.behaviour(request):
            self._send.send_nowait(reply)

    async def receive(self) -> str | bytes:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise UpstreamClosed(1006, "dropped") from None

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()

    def push(self, text: str) -> None:
        self._send.send_nowait(text)

    def close(self) -> None:
        self.closed = True
        self._send.close()


class ScriptedTransport:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.nodes: list[ScriptedNode] = []
        self.attempts: list[float] = []

    @asynccontextmanager
    async def connect(self, url: str, connect_timeout: float) -> AsyncIterator[UpstreamConnection]:
        self.attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        node = ScriptedNode(self.behaviour)
        self.nodes.append(node)
        try:
            yield node
        finally:
            node.close()


class Client:
    """A subscriber that keeps what the hub sends it, decoded."""

    def __init__(self) -> None:
        self.outbox = Outbox(10_000, 1 << 24)
        self.framing = 0
        self._ws = Connection(ConnectionType.CLIENT)

    def wake(self) -> None:
        pass

    def overflow(self) -> None:
        raise AssertionError("no overflow expected")

    def messages(self) -> list[dict[str, Any]]:
        self._ws.receive_data(b"".join(self.outbox.drain().frames))
        return [orjson.loads(e.data) for e in self._ws.events() if isinstance(e, TextMessage)]


async def start(
    nursery: trio.Nursery, behaviour: Behaviour, *channels: str
) -> tuple[UpstreamSupervisor, ScriptedTransport, Client]:
    adapter = EthereumAdapter("eth", "http://node.invalid:8545", heartbeat_interval=2.0)
    config = SourceConfig(
        kind="ethereum",
        url="ws://node.invalid:8546",
        rpc_url="http://node.invalid:8545",
        answer_timeout=10.0,
        backoff_initial=1.0,
    )
    hub = Hub(adapter.kind)
    transport = ScriptedTransport(behaviour)
    supervisor = UpstreamSupervisor(adapter, config, hub, transport=transport, rng=lambda: 1.0)
    hub.add_source("eth", supervisor)
    client = Client()
    hub.subscribe(client, channels, None, LIMITS)
    await nursery.start(supervisor.run)
    return supervisor, transport, client


def statuses(client: Client) -> list[str]:
    return [m["data"]["state"] for m in client.messages() if m.get("event") == "status"]


async def test_an_idle_healthy_node_is_probed_and_kept(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    supervisor, transport, _ = await start(nursery, healthy, "eth:blocks")
    await trio.sleep(99)  # no block for 99 s: only the probes' answers
    assert supervisor.stats.disconnects == 0 and len(transport.attempts) == 1
    methods = [r["method"] for r in transport.nodes[0].requests]
    assert sorted(methods[:2]) == ["eth_blockNumber", "eth_subscribe"]  # a probe at once
    assert methods.count("eth_blockNumber") == 50  # then every heartbeat interval (2 s)


async def test_a_node_that_only_answers_errors_is_dead(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    supervisor, transport, client = await start(nursery, errors_only, "eth:blocks")
    await trio.sleep(2.99)
    assert supervisor.stats.disconnects == 0
    await trio.sleep(0.02)  # 1.5 heartbeat intervals without an answer that is not an error
    assert supervisor.stats.disconnects == 1
    assert supervisor.state is UpstreamState.RECONNECTING
    messages = client.messages()
    refused = [m for m in messages if m.get("event") == "error"]
    assert refused and refused[0]["data"]["code"] == "upstream_refused"
    assert refused[0]["data"]["channel"] == "eth:blocks"
    assert [m["data"]["state"] for m in messages if m.get("event") == "status"] == [
        "connected",
        "reconnecting",
    ]
    await trio.sleep(1.0)  # the backoff's first delay (jitter drawn at its ceiling)
    assert len(transport.attempts) == 2


async def test_a_node_that_never_answers_a_subscribe_is_dead(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    supervisor, _transport, client = await start(nursery, ignores_subscribes, "eth:blocks")
    await trio.sleep(9.99)
    assert supervisor.stats.disconnects == 0  # alive: its probes are answered
    await trio.sleep(0.02)
    assert supervisor.stats.disconnects == 1
    assert statuses(client) == ["connected", "reconnecting"]


async def test_an_answered_subscribe_is_not_overdue(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    supervisor, _transport, client = await start(nursery, healthy, "eth:blocks")
    await trio.sleep(30)
    assert supervisor.stats.disconnects == 0 and statuses(client) == ["connected"]


async def test_a_node_that_sends_garbage_is_dead(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    supervisor, transport, client = await start(nursery, garbage, "eth:blocks")

    async def spew() -> None:
        while True:
            await trio.sleep(0.5)
            if transport.nodes and not transport.nodes[-1].closed:
                transport.nodes[-1].push("\x00garbage")

    nursery.start_soon(spew)
    await trio.sleep(3.01)
    assert supervisor.stats.disconnects == 1
    assert supervisor.stats.malformed >= 6
    assert statuses(client) == ["connected", "reconnecting"]


async def test_blocks_flow_once_subscribed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _supervisor, transport, client = await start(nursery, healthy, "eth:blocks")
    await trio.testing.wait_all_tasks_blocked()
    node = transport.nodes[0]
    (subscribe,) = [r for r in node.requests if r["method"] == "eth_subscribe"]
    params = {"subscription": f"0x{subscribe['id']}", "result": HEAD}
    node.push(orjson.dumps({"jsonrpc": "2.0", "method": "eth_subscription", "params": params}))
    await trio.testing.wait_all_tasks_blocked()
    (block,) = [m for m in client.messages() if "channel" in m]
    assert block["snapshot"] is True  # the first block the relay publishes: start from it
    assert block["data"]["number"] == 5 and block["seq"] == 1


@pytest.mark.parametrize("behaviour", [errors_only, garbage])
async def test_misbehaving_nodes_back_off_exponentially(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, behaviour: Behaviour
) -> None:
    _supervisor, transport, _ = await start(nursery, behaviour, "eth:blocks")
    await trio.sleep(40)
    gaps = [b - a for a, b in zip(transport.attempts, transport.attempts[1:], strict=False)]
    assert gaps[:4] == pytest.approx([3.0 + 1.0, 3.0 + 2.0, 3.0 + 4.0, 3.0 + 8.0])
