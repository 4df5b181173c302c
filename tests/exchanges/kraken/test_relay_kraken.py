"""The relay in front of a loopback Kraken (``exchange.py``), with real WebSocket clients: the
fixture's frames reach clients exactly as the fixture says they must, and a book that lost an
update is caught by Kraken's checksum and resynchronized by subscribing again."""

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
from tests.e2e.conftest import HOST, client, receive, send, subscribe
from tests.exchanges.kraken.exchange import KrakenExchange, load_expected

pytestmark = pytest.mark.e2e

TRADES = "kraken:trades:BTC-USD"
TICKER = "kraken:ticker:BTC-USD"
BOOK = "kraken:book:BTC-USD"


def kraken_config(ws_url: str, heartbeat_interval: float) -> dict[str, Any]:
    return {
        "server": {"host": HOST, "port": 0},
        "auth": {"required": False},
        "tiers": {"default": {"max_connections": 100, "rate_limit": 1000.0, "rate_burst": 1000}},
        "sources": {
            "kraken": {
                "kind": "kraken",
                "url": ws_url,
                "symbols": ["BTC-USD", "DOGE-USD"],
                "heartbeat_interval": heartbeat_interval,
                "linger": 0.3,
                "backoff_initial": 0.05,
                "backoff_cap": 0.2,
            }
        },
    }


@asynccontextmanager
async def running_relay(
    nursery: trio.Nursery, exchange: KrakenExchange, heartbeat_interval: float = 0.5
) -> AsyncIterator[Relay]:
    await nursery.start(exchange.fixture.run)
    relay = Relay(parse_config(kraken_config(exchange.ws_url, heartbeat_interval)))
    await nursery.start(relay.serve)
    await wait_for(lambda: relay.ready)
    yield relay


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    """Poll until ``predicate()`` holds: for effects in other tasks."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - effects of other tasks
            await trio.sleep(0.01)


def url_of(relay: Relay) -> str:
    return f"ws://{HOST}:{relay.port}/ws"


class ClientBook:
    """A client's copy of a book, applied as protocol.md tells clients to."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, list[str]] = {}
        self.asks: dict[Decimal, list[str]] = {}

    def apply(self, message: dict[str, Any]) -> None:
        data = message["data"]
        if message.get("snapshot"):
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = [price, size]

    def levels(self) -> dict[str, list[list[str]]]:
        return {
            "bids": [self.bids[k] for k in sorted(self.bids, reverse=True)],
            "asks": [self.asks[k] for k in sorted(self.asks)],
        }


async def collect(
    ws: WebSocketConnection, counts: dict[str, int], within: float = 5.0
) -> dict[str, list[dict[str, Any]]]:
    """Data messages per channel until each channel has its count; events are skipped."""
    got: dict[str, list[dict[str, Any]]] = {channel: [] for channel in counts}
    with trio.fail_after(within):
        while any(len(got[c]) < n for c, n in counts.items()):
            message = await receive(ws)
            if "event" not in message:
                got[message["channel"]].append(message)
    return got


async def test_replay_reaches_clients_exactly_as_normalized(nursery: trio.Nursery) -> None:
    exchange = KrakenExchange(nursery)
    expected = load_expected()
    async with running_relay(nursery, exchange) as relay, client(url_of(relay)) as ws:
        early = await subscribe(ws, TRADES, TICKER, BOOK)
        assert early == []  # nothing before the relay subscribed upstream
        counts = {TRADES: 4, TICKER: 2, BOOK: 5}
        got = await collect(ws, counts)
        for channel, key in ((TRADES, "trades"), (TICKER, "ticker"), (BOOK, "book")):
            messages = got[channel]
            assert [m["data"] for m in messages] == expected[key], channel
            seqs = [m["seq"] for m in messages]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), channel
        assert all(m.get("snapshot") for m in got[TICKER])
        assert [bool(m.get("snapshot")) for m in got[BOOK]] == [True] + [False] * 4
        assert not any(m.get("snapshot") for m in got[TRADES])
        supervisor = relay.upstreams["kraken"]
        assert supervisor.stats.malformed == 0
        assert supervisor.stats.gaps == 0
        # One request per Kraken channel, as Kraken documents it.
        (book_request,) = exchange.requests_for("subscribe", "book")
        assert book_request["params"] == {
            "channel": "book",
            "symbol": ["BTC/USD"],
            "depth": 10,
            "snapshot": True,
        }
        (trade_request,) = exchange.requests_for("subscribe", "trade")
        assert trade_request["params"]["snapshot"] is False


async def test_lost_book_update_is_caught_by_checksum_and_resubscribed(
    nursery: trio.Nursery,
) -> None:
    # The second update (the best ask's removal) never reaches the relay: the third update's
    # checksum no longer matches the relay's book.
    exchange = KrakenExchange(nursery, drop={1})
    final = load_expected()["final_book"]
    async with running_relay(nursery, exchange) as relay, client(url_of(relay)) as ws:
        supervisor = relay.upstreams["kraken"]
        view = ClientBook()
        for message in await subscribe(ws, BOOK):
            view.apply(message)
        messages: list[dict[str, Any]] = []
        resynced = False
        with trio.fail_after(5):
            while not (resynced and view.levels() == final):
                message = await receive(ws)
                if message.get("event") == "status":
                    resynced = resynced or message["data"]["state"] == "resynced"
                    continue
                messages.append(message)
                view.apply(message)
        assert [bool(m.get("snapshot")) for m in messages] == [True, False, True, False, False]
        # The repair is Kraken's: unsubscribe, subscribe again, take the fresh snapshot.
        assert len(exchange.requests_for("unsubscribe", "book")) == 1
        assert len(exchange.requests_for("subscribe", "book")) == 2
        assert supervisor.stats.gaps == 1 and supervisor.stats.resyncs == 1
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://{HOST}:{relay.port}/v1/snapshot/{BOOK}")
        assert response.status_code == 200
        data = response.json()["data"]
        assert {"bids": data["bids"], "asks": data["asks"]} == final
        assert exchange.book.levels() == (final["bids"], final["asks"])
        assert supervisor.stats.malformed == 0


async def test_a_pair_kraken_does_not_list_is_refused_to_its_subscribers(
    nursery: trio.Nursery,
) -> None:
    exchange = KrakenExchange(nursery)
    async with running_relay(nursery, exchange) as relay, client(url_of(relay)) as ws:
        await send(ws, {"action": "subscribe", "channel": "kraken:trades:DOGE-USD", "id": 7})
        ack = await receive(ws)
        assert (ack["event"], ack["data"]["channel"], ack["id"]) == (
            "subscribed",
            "kraken:trades:DOGE-USD",
            7,
        )
        error = await receive(ws)
        assert error["event"] == "error"
        assert error["data"]["code"] == "upstream_refused"
        assert error["data"]["channel"] == "kraken:trades:DOGE-USD"
        assert "Currency pair not supported DOGE/USD" in error["data"]["message"]
        assert relay.upstreams["kraken"].stats.refusals == 1
        assert relay.upstreams["kraken"].plan.unanswered == {}


async def test_idle_connection_is_kept_alive_by_ping(nursery: trio.Nursery) -> None:
    # Nothing subscribed: Kraken sends no heartbeat, the relay's pings are answered.
    exchange = KrakenExchange(nursery)
    async with running_relay(nursery, exchange, heartbeat_interval=0.2) as relay:
        await wait_for(lambda: sum(r["method"] == "ping" for r in exchange.requests) >= 3)
        assert relay.upstreams["kraken"].stats.connects == 1
