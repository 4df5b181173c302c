"""The relay in front of a Binance stand-in (``exchange.py``) over loopback, with real clients.

The script (``replay.json``) is written from Binance's documented message shapes: the test plays
it phase by phase, so what each client must see is exact, then loses a depth event in transit
and checks that the book is repaired from the REST snapshot the way Binance documents.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
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
from tests.exchanges.binance.exchange import (
    BinanceExchange,
)

pytestmark = pytest.mark.e2e

TRADES = "binance:trades:BTC-USDT"
TICKER = "binance:ticker:BTC-USDT"
BOOK = "binance:book:BTC-USDT"
STREAMS = {"btcusdt@trade", "btcusdt@ticker", "btcusdt@depth@100ms"}


def config(ws_url: str, rest_url: str, heartbeat_interval: float) -> dict[str, Any]:
    return {
        "server": {"host": HOST, "port": 0},
        "auth": {"required": False},
        "tiers": {"default": {"max_connections": 100, "rate_limit": 1000.0, "rate_burst": 1000}},
        "sources": {
            "binance": {
                "kind": "binance",
                "url": ws_url,
                "rest_url": rest_url,
                "symbols": ["BTC-USDT"],
                "heartbeat_interval": heartbeat_interval,
                "linger": 0.3,
                "answer_timeout": 2.0,
                "backoff_initial": 0.05,
                "backoff_cap": 0.2,
            }
        },
    }


@asynccontextmanager
async def running(
    nursery: trio.Nursery, heartbeat_interval: float = 1.0
) -> AsyncIterator[tuple[BinanceExchange, Relay, str]]:
    exchange = BinanceExchange()
    await nursery.start(exchange.fixture.run)
    relay = Relay(parse_config(config(exchange.ws_url, exchange.rest_url, heartbeat_interval)))
    port = await nursery.start(relay.serve)
    await wait_for(lambda: relay.ready)
    yield exchange, relay, f"ws://{HOST}:{port}"


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll until ``predicate()`` holds: for effects in other tasks."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - effects of other tasks
            await trio.sleep(0.005)


class ClientView:
    """What one client received: data per channel (seq checked), status events, and its book
    applied the way protocol.md tells clients to."""

    def __init__(self) -> None:
        self.data: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.statuses: list[str] = []
        self.bids: dict[Decimal, list[str]] = {}
        self.asks: dict[Decimal, list[str]] = {}

    def take(self, message: dict[str, Any]) -> None:
        if message.get("event") == "status":
            self.statuses.append(message["data"]["state"])
            return
        assert "event" not in message, message
        channel = message["channel"]
        seen = self.data[channel]
        if seen:
            assert message["seq"] == seen[-1]["seq"] + 1, "relay seq must have no gap"
        seen.append(message)
        if channel == BOOK:
            data = message["data"]
            if message.get("snapshot"):
                self.bids, self.asks = {}, {}
            for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
                for price, size in levels:
                    if Decimal(size) == 0:
                        side.pop(Decimal(price), None)
                    else:
                        side[Decimal(price)] = [price, size]

    def replay(self, channel: str) -> list[dict[str, Any]]:
        """The channel's messages as the script's ``expected`` writes them."""
        return [
            {"snapshot": bool(m.get("snapshot")), "data": m["data"]} for m in self.data[channel]
        ]

    def book(self) -> dict[str, list[list[str]]]:
        return {
            "bids": [self.bids[p] for p in sorted(self.bids, reverse=True)],
            "asks": [self.asks[p] for p in sorted(self.asks)],
        }

    async def until(
        self, ws: WebSocketConnection, done: Callable[[], bool], within: float = 5.0
    ) -> None:
        with trio.fail_after(within):
            while not done():
                self.take(await receive(ws))

    def counts(self) -> tuple[int, int, int]:
        return len(self.data[TRADES]), len(self.data[TICKER]), len(self.data[BOOK])


async def test_replay_is_normalized_exactly_and_a_lost_depth_event_is_repaired(
    nursery: trio.Nursery,
) -> None:
    async with running(nursery) as (exchange, relay, url):
        supervisor = relay.upstreams["binance"]
        expected = exchange.script["expected"]
        async with client(f"{url}/ws") as ws:
            view = ClientView()
            assert await subscribe(ws, TRADES, TICKER, BOOK) == []
            await exchange.wait_streams(STREAMS)

            # Binance sends no book snapshot: the first depth event is buffered and the REST
            # snapshot fetched. The first one served is older than that event ("strictly less
            # than U": fetch again); the relay keeps buffering meanwhile.
            await exchange.play("first")
            await wait_for(lambda: supervisor.stats.messages == exchange.frames_sent)
            await wait_for(lambda: exchange.depth_requests >= 1)
            assert relay.hub.snapshot(BOOK) is None  # nothing consistent to show yet
            exchange.depth_mode = "initial"
            # The snapshot (lastUpdateId 1027025) plus the buffered events newer than it: the
            # two older ones dropped, the one whose U..u holds 1027025 applied, then the rest.
            await view.until(ws, lambda: view.counts() == (2, 1, 1))
            assert exchange.depth_requests >= 2  # the stale snapshot was fetched again
            assert exchange.fixture.rest_requests[0] == "/api/v3/depth?symbol=BTCUSDT&limit=1000"
            await exchange.play("second")
            await view.until(ws, lambda: view.counts() == (3, 2, 3))
            for channel in (TRADES, TICKER, BOOK):
                assert view.replay(channel) == expected[channel], channel
            assert supervisor.stats.gaps == 0
            assert supervisor.stats.malformed == 0

            # An event lost in transit: its successor's U is past the book's id + 1. The book
            # stops, buffers, and is repaired from the exchange's current REST snapshot.
            exchange.depth_mode = "live"
            resyncs, statuses = supervisor.stats.resyncs, len(view.statuses)
            await exchange.play("gap")
            final = exchange.script["final_book"]
            assert exchange.book.levels() == final
            await view.until(
                ws, lambda: view.book() == final and "resynced" in view.statuses[statuses:]
            )
            assert supervisor.stats.gaps == 1
            assert supervisor.stats.resyncs == resyncs + 1

            async with httpx.AsyncClient() as http:
                answer = await http.get(f"http://{HOST}:{relay.port}/v1/snapshot/{BOOK}")
            assert answer.status_code == 200
            book = answer.json()["data"]
            assert {"bids": book["bids"], "asks": book["asks"]} == final
            assert book["symbol"] == "BTC-USDT"
            assert isinstance(book["ts"], int)
        assert supervisor.stats.connects == 1


async def test_the_probe_keeps_a_quiet_connection_alive_and_its_silence_ends_it(
    nursery: trio.Nursery,
) -> None:
    async with running(nursery, heartbeat_interval=0.2) as (exchange, relay, _):
        supervisor = relay.upstreams["binance"]
        # Nothing subscribed, nothing sent but the answers to LIST_SUBSCRIPTIONS: six of them
        # span twice the 0.3 s the watchdog allows without a sign of life.
        await wait_for(lambda: exchange.probes() >= 6)
        assert supervisor.stats.connects == 1
        exchange.answer_probes = False
        await wait_for(lambda: supervisor.stats.connects == 2)
        assert supervisor.stats.disconnects == 1
