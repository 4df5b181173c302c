"""Two real relays in front of one seeded synthetic market, over loopback: one reads it with the
built-in SimAdapter, the other with the generic adapter configured by examples/json-sim.toml.
Their clients get the same messages, through a book gap repaired from the market's REST snapshot.

The market is driven by hand (one tick at a time, on a fixed clock) so that both relays see the
same frames and fetch the same snapshot: the test compares, it does not race.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection

from relay.adapters.base import Adapter
from relay.config import parse_config
from relay.core.book import OrderBook
from relay.core.source import FetchSnapshot
from relay.server.relay import Relay
from relay.sim.server import SimServer
from tests.e2e.conftest import HOST, client, receive, relay_config, subscribe
from tests.exchanges.generic.specs import sim_pair

pytestmark = pytest.mark.e2e

SYMBOLS = ["BTC-USD", "ETH-USD"]
CHANNELS = [f"sim:{stream}:{s}" for s in SYMBOLS for stream in ("trades", "ticker", "book")]
BOOK = "sim:book:BTC-USD"


@attrs.define
class Clock:
    """The market's clock (microseconds), advanced by the test."""

    now: int = 1763712000000000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock()
    # Snapshots are stamped with the time they are taken: fixed, so both relays' are the same.
    monkeypatch.setattr("relay.sim.server._now_us", lambda: fixed.now)
    return fixed


def tick(server: SimServer, clock: Clock) -> None:
    """One market event per symbol, published as the market's own loop does."""
    clock.now += 50_000
    for symbol in server.model.symbols:
        for message in server.model.step(symbol, clock.now):
            server._publish(message)


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - effects of other tasks
            await trio.sleep(0.01)


@attrs.define
class Side:
    """One relay, its one client, and everything the client received."""

    relay: Relay
    base: str
    ws: WebSocketConnection
    got: list[dict[str, Any]] = attrs.Factory(list)

    async def read(self, until: Callable[[], bool]) -> None:
        with trio.fail_after(5):
            while not until():
                self.got.append(await receive(self.ws))

    async def read_data(self, count: int) -> None:
        """Until ``count`` data messages arrived in all."""
        await self.read(lambda: self.count() >= count)

    async def read_status(self, state: str) -> None:
        await self.read(lambda: {"source": "sim", "state": state} in self.statuses())

    def data(self, channel: str) -> list[dict[str, Any]]:
        """The channel's messages without the relay's receive time (the one field that is the
        relay's clock, not the market's)."""
        return [
            {k: v for k, v in m.items() if k != "ts"}
            for m in self.got
            if m.get("channel") == channel
        ]

    def statuses(self) -> list[dict[str, Any]]:
        return [m["data"] for m in self.got if m.get("event") == "status"]

    def count(self) -> int:
        return sum(1 for m in self.got if "channel" in m)

    def subscribed_upstream(self) -> bool:
        plan = self.relay.upstreams["sim"].plan
        return set(CHANNELS) <= plan.active and not plan.unanswered


@asynccontextmanager
async def relay_side(nursery: trio.Nursery, sim_port: int, adapter: Adapter) -> AsyncIterator[Side]:
    relay = Relay(parse_config(relay_config(sim_port)), adapters={"sim": adapter})
    port = await nursery.start(relay.serve)
    await wait_for(lambda: relay.ready)
    async with client(f"ws://{HOST}:{port}/ws") as ws:
        side = Side(relay, f"http://{HOST}:{port}", ws)
        side.got += await subscribe(ws, *CHANNELS)
        yield side


async def test_generic_and_sim_adapters_give_clients_the_same_messages(
    nursery: trio.Nursery, clock: Clock
) -> None:
    # A rate so low that the market's own loop never ticks: the test ticks it.
    server = SimServer(SYMBOLS, rate=0.001, seed=42)
    sim_port = await nursery.start(server.serve, HOST, 0)
    rest_url = f"http://{HOST}:{sim_port}"
    sim_adapter, generic_adapter = sim_pair(SYMBOLS, rest_url)
    async with (
        relay_side(nursery, sim_port, sim_adapter) as builtin,
        relay_side(nursery, sim_port, generic_adapter) as generic,
        httpx.AsyncClient(timeout=5.0) as http,
    ):
        sides = (builtin, generic)
        for side in sides:
            await wait_for(side.subscribed_upstream)
            # The ticker and book snapshots the market sends on subscribe.
            await side.read_data(4)

        for _ in range(5):
            tick(server, clock)
        for side in sides:
            await side.read_data(4 + 30)

        # Three book deltas are lost: the next one shows the gap, and each relay repairs the book
        # from the market's REST snapshot (the market stands still until both have).
        skipped = await http.post(f"{rest_url}/control/skip?n=3&stream=depth.BTC-USD")
        assert skipped.status_code == 200
        tick(server, clock)
        for side in sides:
            await side.read_status("resynced")
            await side.read_data(4 + 30 + 6)

        for _ in range(3):
            tick(server, clock)
        for side in sides:
            await side.read_data(4 + 30 + 6 + 18)

        for channel in CHANNELS:
            assert generic.data(channel) == builtin.data(channel), channel
        assert generic.statuses() == builtin.statuses() == [{"source": "sim", "state": "resynced"}]

        # The repair as a client sees it: the deltas, then one snapshot, then deltas again.
        book = builtin.data(BOOK)
        assert [m.get("snapshot", False) for m in book] == [True] + [False] * 5 + [True] + [
            False
        ] * 3
        assert [m["seq"] for m in book] == list(range(1, 11))
        for side in sides:
            assert side.relay.upstreams["sim"].stats.gaps == 1
            assert side.relay.upstreams["sim"].stats.resyncs == 1
        stats = (await http.get(f"{rest_url}/control/stats")).json()
        assert stats["snapshot_requests"] == 2  # one per relay

        # Every view of the book ends as the market's own.
        raw = (await http.get(f"{rest_url}/api/snapshot?topic=depth.BTC-USD")).content
        market = sim_adapter.parse_snapshot(FetchSnapshot(BOOK), raw).data
        for side in sides:
            view = OrderBook()
            for message in side.data(BOOK):
                levels = (message["data"]["bids"], message["data"]["asks"])
                if message.get("snapshot"):
                    view.apply_snapshot(*levels)
                else:
                    view.apply_delta(*levels)
            assert view.levels() == (market["bids"], market["asks"])
            held = (await http.get(f"{side.base}/v1/snapshot/{BOOK}")).json()
            assert held["seq"] == 10
            assert held["data"] == market
