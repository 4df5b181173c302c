"""The relay in front of a Coinbase Advanced Trade stand-in, over real loopback sockets: the
script's messages reach clients exactly as expected, and a message lost on the connection is
repaired the Coinbase way (the books re-subscribe and take the fresh snapshot)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection

from relay.config import parse_config
from relay.server.relay import Relay
from tests.e2e.conftest import HOST, client, receive, subscribe
from tests.exchanges.coinbase.exchange import CoinbaseExchange, load_expected

pytestmark = pytest.mark.e2e

SOURCE = "cb"
PRODUCTS = ["BTC-USD", "ETH-USD"]


def config(ws_url: str) -> dict[str, Any]:
    return {
        "server": {"host": HOST, "port": 0},
        "auth": {"required": False},
        "tiers": {"default": {"max_connections": 100, "rate_limit": 1000.0, "rate_burst": 1000}},
        "sources": {
            SOURCE: {
                "kind": "coinbase",
                "url": ws_url,
                "heartbeat_interval": 2.0,
                "symbols": PRODUCTS,
                "linger": 0.3,
                "backoff_initial": 0.05,
                "backoff_cap": 0.2,
            }
        },
    }


@asynccontextmanager
async def running(nursery: trio.Nursery) -> AsyncIterator[tuple[CoinbaseExchange, Relay, int]]:
    exchange = CoinbaseExchange()
    await nursery.start(exchange.run)
    relay = Relay(parse_config(config(exchange.ws_url)))
    port = await nursery.start(relay.serve)
    with trio.fail_after(5):
        while not relay.ready:  # noqa: ASYNC110 - the relay's own tasks connect it
            await trio.sleep(0.01)
    yield exchange, relay, port


class BookView:
    """A client's copy of one book, applied the way protocol.md tells clients to."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.snapshots = 0

    def apply(self, message: dict[str, Any]) -> None:
        data = message["data"]
        if message.get("snapshot"):
            self.bids, self.asks = {}, {}
            self.snapshots += 1
        for side, levels in ((self.bids, data.get("bids", [])), (self.asks, data.get("asks", []))):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(price, None)
                else:
                    side[price] = size

    def levels(self) -> dict[str, list[list[str]]]:
        return {
            "bids": [[p, self.bids[p]] for p in sorted(self.bids, key=Decimal, reverse=True)],
            "asks": [[p, self.asks[p]] for p in sorted(self.asks, key=Decimal)],
        }


async def collect(
    ws: WebSocketConnection, got: dict[str, list[dict[str, Any]]], counts: dict[str, int]
) -> None:
    """Data messages per channel, until each channel has ``counts[channel]`` of them."""
    with trio.fail_after(5):
        while any(len(got[c]) < n for c, n in counts.items()):
            message = await receive(ws)
            if "channel" in message and "data" in message:
                got[message["channel"]].append(message)


def as_expected(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"snapshot": bool(m.get("snapshot")), "data": m["data"]} for m in messages]


async def test_the_script_reaches_clients_normalized_exactly(nursery: trio.Nursery) -> None:
    expected = load_expected()
    channels = sorted(expected)
    async with running(nursery) as (exchange, relay, port), client(f"ws://{HOST}:{port}/ws") as ws:
        got: dict[str, list[dict[str, Any]]] = {c: [] for c in channels}
        for message in await subscribe(ws, *channels):
            got[message["channel"]].append(message)
        pairs = [(c, p) for c in ("level2", "ticker") for p in PRODUCTS]
        pairs += [("market_trades", "BTC-USD"), ("heartbeats", "heartbeats")]
        await exchange.wait_until(lambda: all(exchange.subscribed(*pair) for pair in pairs))
        # The snapshots that follow each subscribe (trades have none the relay publishes).
        snapshots = {c: 1 for c in channels if ":trades:" not in c}
        await collect(ws, got, snapshots)
        await exchange.play(exchange.script["stream"])
        await collect(ws, got, {c: len(expected[c]) for c in channels})
        supervisor = relay.upstreams[SOURCE]
        assert not supervisor.plan.unanswered  # every subscribe was acknowledged
        assert supervisor.stats.malformed == 0 and supervisor.stats.gaps == 0
    for channel in channels:
        assert as_expected(got[channel]) == expected[channel], channel
        assert [m["seq"] for m in got[channel]] == list(range(1, len(got[channel]) + 1))
    # Heartbeats are asked for first, and no request carries credentials.
    first = exchange.requests[0]
    assert first["type"] == "subscribe" and first["channel"] == "heartbeats"
    assert all("jwt" not in r for r in exchange.requests)


async def test_a_lost_message_is_repaired_by_resubscribing(nursery: trio.Nursery) -> None:
    books = [f"{SOURCE}:book:{p}" for p in PRODUCTS]
    async with running(nursery) as (exchange, relay, port), client(f"ws://{HOST}:{port}/ws") as ws:
        views = {c: BookView() for c in books}

        async def follow(until: Any) -> None:
            with trio.fail_after(5):
                while not until():
                    message = await receive(ws)
                    if message.get("channel") in views and "data" in message:
                        views[message["channel"]].apply(message)

        for message in await subscribe(ws, *books):
            views[message["channel"]].apply(message)
        await follow(lambda: all(v.snapshots == 1 for v in views.values()))
        gap = exchange.script["gap"]
        await exchange.play(gap["before"])
        # The jump in sequence_num reaches every book at its next message: each re-subscribes,
        # and Coinbase answers a subscribe with a fresh snapshot of the book as it is now.
        await exchange.wait_until(lambda: all(n == 2 for n in exchange.snapshots_sent.values()))
        await follow(lambda: all(v.snapshots == 2 for v in views.values()))
        await exchange.play(gap["after"])
        finals = {f"{SOURCE}:book:{p}": book.levels() for p, book in exchange.books.items()}
        await follow(lambda: all(views[c].levels() == finals[c] for c in books))

        async with httpx.AsyncClient(timeout=5.0) as http:
            for channel in books:
                response = await http.get(f"http://{HOST}:{port}/v1/snapshot/{channel}")
                assert response.status_code == 200
                data = response.json()["data"]
                assert {"bids": data["bids"], "asks": data["asks"]} == finals[channel]
        stats = relay.upstreams[SOURCE].stats
        assert stats.gaps == 2 and stats.resyncs == 2 and stats.connects == 1
    level2 = [(r["type"], r["product_ids"]) for r in exchange.requests if r["channel"] == "level2"]
    for product in PRODUCTS:
        mine = [op for op, products in level2 if product in products]
        assert mine == ["subscribe", "unsubscribe", "subscribe"], (product, level2)


async def test_an_idle_source_stays_connected_on_heartbeats(nursery: trio.Nursery) -> None:
    """No client wants anything: the heartbeats subscription made at connect keeps it alive."""
    async with running(nursery) as (_exchange, relay, _port):
        supervisor = relay.upstreams[SOURCE]
        await trio.sleep(2 * 1.5 * supervisor.adapter.heartbeat_interval)  # two watchdog spans
        assert supervisor.stats.connects == 1 and supervisor.stats.disconnects == 0
