"""The relay in front of a real Ethereum node (ganache on loopback), with real WebSocket clients.

Blocks are mined on demand (``evm_mine``), so every test decides exactly which blocks exist; the
clients check what they were told against the node's own chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from relay.config import parse_config
from relay.server.relay import Relay
from relay.server.upstream import UpstreamState
from tests.e2e.conftest import HOST, client, receive, send, subscribe
from tests.ethereum.ganache import EMITTER_TOPIC, Ganache, from_hex
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e

BLOCKS = "eth:blocks"


def eth_config(ws_url: str, rpc_url: str) -> dict[str, Any]:
    return {
        "server": {"host": HOST, "port": 0},
        "auth": {"required": False},
        "tiers": {"default": {"max_connections": 1000, "rate_limit": 1000.0, "rate_burst": 1000}},
        "sources": {
            "eth": {
                "kind": "ethereum",
                "url": ws_url,
                "rpc_url": rpc_url,
                "heartbeat_interval": 1.0,
                # trio-websocket notices a connection reset during the handshake only at this
                # deadline, and the cut proxy resets every connection it accepts.
                "connect_timeout": 1.0,
                "linger": 0.3,
                "backoff_initial": 0.05,
                "backoff_cap": 0.2,
            }
        },
    }


@asynccontextmanager
async def running_relay(
    nursery: trio.Nursery, ws_url: str, rpc_url: str
) -> AsyncIterator[tuple[Relay, str]]:
    relay = Relay(parse_config(eth_config(ws_url, rpc_url)))
    port = await nursery.start(relay.serve)
    await wait_for(lambda: relay.ready)
    yield relay, f"ws://{HOST}:{port}/ws"


async def wait_for(predicate: Any, within: float = 10.0) -> None:
    """Poll until ``predicate()`` holds: for effects in other tasks and processes."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - effects of other tasks and processes
            await trio.sleep(0.01)


def subscribed_upstream(relay: Relay, channel: str) -> bool:
    """The node has confirmed the relay's subscription: from now on nothing is missed."""
    plan = relay.upstreams["eth"].plan
    return channel in plan.active and channel not in plan.unanswered


class ChainView:
    """A client's copy of the chain, applied the way protocol.md tells clients to."""

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}
        self.seqs: list[int] = []
        self.messages: list[dict[str, Any]] = []

    @property
    def tip(self) -> int | None:
        return max(self.blocks, default=None)

    def apply(self, message: dict[str, Any]) -> None:
        assert message["channel"] == BLOCKS
        self.messages.append(message)
        if self.seqs:
            assert message["seq"] == self.seqs[-1] + 1, "relay seq must have no gap"
        self.seqs.append(message["seq"])
        block = message["data"]
        number = block["number"]
        if message.get("snapshot"):
            self.blocks = {number: block}
            return
        if message.get("reorg"):
            for held in [n for n in self.blocks if n >= number]:
                del self.blocks[held]
        else:
            assert number == self.tip + 1 if self.tip is not None else True, (number, self.tip)
        parent = self.blocks.get(number - 1)
        assert parent is None or parent["hash"] == block["parent_hash"], "must link to its parent"
        assert number not in self.blocks, f"block {number} twice"
        self.blocks[number] = block

    async def follow(self, ws: WebSocketConnection, until: int, within: float = 10.0) -> None:
        """Apply messages until the view's tip is ``until``."""
        with trio.fail_after(within):
            while self.tip != until:
                message = await receive(ws)
                if "event" not in message:
                    self.apply(message)

    async def complete(self, first: int, last: int, node: Ganache) -> None:
        """Every block from ``first`` to ``last`` came once, in order, and is the node's."""
        assert [m["data"]["number"] for m in self.messages] == list(range(first, last + 1))
        await self.matches(node)

    async def matches(self, node: Ganache) -> None:
        """Every block held is the node's canonical block at that number."""
        for number, block in self.blocks.items():
            canonical = await node.block(number)
            assert canonical is not None and canonical["hash"] == block["hash"], number


async def watch_blocks(relay: Relay, ws: WebSocketConnection) -> ChainView:
    """Subscribe to the blocks, and wait until the node confirmed the relay's subscription."""
    view = ChainView()
    for message in await subscribe(ws, BLOCKS):
        view.apply(message)
    await wait_for(lambda: subscribed_upstream(relay, BLOCKS))
    return view


async def test_fifty_clients_each_receive_every_mined_block_in_order_once(
    ganache: Ganache, nursery: trio.Nursery
) -> None:
    async with running_relay(nursery, ganache.ws_url, ganache.rpc_url) as (relay, url):
        start = await ganache.block_number()
        views = [ChainView() for _ in range(50)]

        async def run_client(view: ChainView, ready: trio.Event, done: trio.Event) -> None:
            async with client(url) as ws:
                for message in await subscribe(ws, BLOCKS):
                    view.apply(message)
                ready.set()
                await view.follow(ws, start + 10, within=30)
            done.set()

        dones = []
        async with trio.open_nursery() as clients:
            for view in views:
                ready, done = trio.Event(), trio.Event()
                clients.start_soon(run_client, view, ready, done)
                await ready.wait()
                dones.append(done)
            await wait_for(lambda: subscribed_upstream(relay, BLOCKS))
            mined = [await ganache.mine() for _ in range(10)]
        expected = [from_hex(b["number"]) for b in mined]
        for view in views:
            numbers = [m["data"]["number"] for m in view.messages]
            assert numbers == expected  # every block, in order, once
            assert [m["data"]["hash"] for m in view.messages] == [b["hash"] for b in mined]
            assert not any(m.get("reorg") for m in view.messages)
        # One upstream connection served all fifty clients.
        assert relay.upstreams["eth"].stats.connects == 1


async def test_blocks_mined_while_the_relay_is_cut_off_are_backfilled(
    ganache: Ganache, nursery: trio.Nursery
) -> None:
    proxy = TcpProxy(HOST, ganache.port)
    proxy_port = await nursery.start(proxy.run)
    async with running_relay(nursery, f"ws://{HOST}:{proxy_port}", ganache.rpc_url) as (
        relay,
        url,
    ):
        supervisor = relay.upstreams["eth"]
        async with client(url) as ws:
            view = await watch_blocks(relay, ws)
            first = from_hex((await ganache.mine())["number"])
            await ganache.mine()
            await view.follow(ws, first + 1)

            proxy.cut()
            await wait_for(lambda: supervisor.state is UpstreamState.RECONNECTING)
            for _ in range(3):
                await ganache.mine()  # announced to nobody: the relay is not connected
            assert supervisor.stats.backfill_fetches == 0
            proxy.restore()
            # The probe at reconnect tells the relay the node's height: the three blocks come
            # from the HTTP backfill, before anything new is mined.
            await view.follow(ws, first + 4)
            assert supervisor.stats.backfill_fetches >= 3
            last = from_hex((await ganache.mine())["number"])
            await view.follow(ws, last)
        await view.complete(first, last, ganache)


async def test_blocks_mined_while_the_node_restarts_are_backfilled(
    ganache: Ganache, nursery: trio.Nursery
) -> None:
    async with running_relay(nursery, ganache.ws_url, ganache.rpc_url) as (relay, url):
        supervisor = relay.upstreams["eth"]
        async with client(url) as ws:
            view = await watch_blocks(relay, ws)
            first = from_hex((await ganache.mine())["number"])
            await view.follow(ws, first)
            await ganache.stop()
            await wait_for(lambda: supervisor.state is UpstreamState.RECONNECTING)
            await ganache.restart()
            for _ in range(3):
                await ganache.mine()
            last = from_hex((await ganache.mine())["number"])
            await view.follow(ws, last, within=20)
        await view.complete(first, last, ganache)


async def test_a_reorg_reaches_clients_marked_from_the_common_ancestor(
    ganache: Ganache, nursery: trio.Nursery
) -> None:
    async with running_relay(nursery, ganache.ws_url, ganache.rpc_url) as (relay, url):
        async with client(url) as ws:
            view = await watch_blocks(relay, ws)
            ancestor = await ganache.mine()
            base = from_hex(ancestor["number"])
            snapshot = await ganache.snapshot()
            orphaned = [await ganache.mine(), await ganache.mine()]
            await view.follow(ws, base + 2)
            assert await ganache.revert(snapshot)
            later = from_hex(orphaned[-1]["timestamp"]) + 100
            replacement = await ganache.mine(timestamp=later)
            assert from_hex(replacement["number"]) == base + 1
            assert replacement["hash"] != orphaned[0]["hash"]
            # The new head is at a number already published: a reorg from the ancestor on.
            with trio.fail_after(10):
                while not (message := await receive(ws)).get("reorg"):
                    assert "event" in message, message  # no block before the reorg's
            view.apply(message)
            assert message["data"]["number"] == base + 1
            assert message["data"]["hash"] == replacement["hash"]
            assert message["data"]["parent_hash"] == ancestor["hash"]
            assert view.tip == base + 1  # the orphaned block above it is gone
            following = await ganache.mine()
            await view.follow(ws, base + 2)
        assert view.blocks[base + 2]["hash"] == following["hash"]
        assert not view.messages[-1].get("reorg")
        await view.matches(ganache)


async def test_contract_logs_reach_their_channel_normalized(
    ganache: Ganache, nursery: trio.Nursery
) -> None:
    address = await ganache.deploy_emitter()
    channel = f"eth:logs:{address}"
    async with (
        running_relay(nursery, ganache.ws_url, ganache.rpc_url) as (relay, url),
        client(url) as ws,
    ):
        await subscribe(ws, channel)
        await wait_for(lambda: subscribed_upstream(relay, channel))
        receipt = await ganache.emit(address, b"hello")
        message = await receive(ws)
    assert message["channel"] == channel and message["seq"] == 1
    assert message["data"] == {
        "address": address,
        "topics": [EMITTER_TOPIC],
        "data": "0x" + b"hello".hex(),
        "block_number": from_hex(receipt["blockNumber"]),
        "block_hash": receipt["blockHash"],
        "tx_hash": receipt["transactionHash"],
        "log_index": 0,
        "removed": False,
    }


async def test_pending_transactions_and_bad_channels(
    ganache: Ganache, nursery: trio.Nursery
) -> None:
    async with (
        running_relay(nursery, ganache.ws_url, ganache.rpc_url) as (relay, url),
        client(url) as ws,
    ):
        await subscribe(ws, "eth:pending")
        await wait_for(lambda: subscribed_upstream(relay, "eth:pending"))
        accounts = await ganache.accounts()
        receipt = await ganache.send_transaction({"to": accounts[1], "value": "0x1"})
        message = await receive(ws)
        assert message["channel"] == "eth:pending"
        assert message["data"] == {"tx_hash": receipt["transactionHash"]}
        # An address that is not lower-case 0x hex is no channel of this source.
        await send(ws, {"action": "subscribe", "channel": "eth:logs:0xABC", "id": 9})
        error = await receive(ws)
        assert error["event"] == "error" and error["data"]["code"] == "unknown_channel"
