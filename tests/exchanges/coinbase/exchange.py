"""A Coinbase Advanced Trade market data stand-in on loopback, scripted from ``replay.json``.

It speaks what the relay uses of the public feed: ``subscribe``/``unsubscribe`` requests (one
channel each), answered with a ``subscriptions`` message listing everything the connection is
subscribed to; a ``level2`` snapshot of its own book, a ``ticker`` snapshot and a
``market_trades`` snapshot (recent trades) after a subscribe; ``heartbeats`` every second once
subscribed; and the script's messages for what is subscribed, when the test plays them. Every
message it sends carries ``sequence_num``, counted per connection across all channels. A
script message marked ``"drop": true`` is lost in transit: its number is used and its book
change made, but it is never sent, so the client sees the jump.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed

from tests.exchanges.fixture_server import ExchangeFixture, FixtureConnection

SCRIPT = Path(__file__).with_name("replay.json")
EXPECTED = Path(__file__).with_name("expected.json")

#: The placeholder Coinbase's documented level2 snapshot gives its levels' ``event_time``.
SNAPSHOT_EVENT_TIME = "1970-01-01T00:00:00Z"


def load_script() -> dict[str, Any]:
    script: dict[str, Any] = json.loads(SCRIPT.read_text())
    return script


def load_expected() -> dict[str, list[dict[str, Any]]]:
    expected: dict[str, list[dict[str, Any]]] = json.loads(EXPECTED.read_text())
    return expected


class ModelBook:
    """The exchange's book of one product: price -> quantity per side, as Coinbase wrote them."""

    def __init__(self, levels: Mapping[str, list[list[str]]]) -> None:
        self.sides: dict[str, dict[str, str]] = {
            side: dict(levels.get(side, [])) for side in ("bid", "offer")
        }

    def apply(self, updates: list[dict[str, str]]) -> None:
        for update in updates:
            side = self.sides[update["side"]]
            if Decimal(update["new_quantity"]) == 0:
                side.pop(update["price_level"], None)
            else:
                side[update["price_level"]] = update["new_quantity"]

    def levels(self) -> dict[str, list[list[str]]]:
        """Bids best first, asks lowest first: the protocol's order."""
        bids, asks = self.sides["bid"], self.sides["offer"]
        return {
            "bids": [[p, bids[p]] for p in sorted(bids, key=Decimal, reverse=True)],
            "asks": [[p, asks[p]] for p in sorted(asks, key=Decimal)],
        }

    def snapshot_updates(self) -> list[dict[str, str]]:
        return [
            {"side": side, "event_time": SNAPSHOT_EVENT_TIME, "price_level": p, "new_quantity": q}
            for side in ("bid", "offer")
            for p, q in self.sides[side].items()
        ]


@attrs.define(eq=False)
class _Connection:
    """What the exchange keeps per client connection."""

    conn: FixtureConnection
    next_seq: int = 0
    subscribed: set[tuple[str, str]] = attrs.Factory(set)
    """(channel, product id) pairs, ``heartbeats`` under its own name."""
    lock: trio.Lock = attrs.Factory(trio.Lock)
    """Numbers are given in the order messages go out, whichever task sends them."""


class CoinbaseExchange:
    """Run with ``port = await nursery.start(exchange.run)``."""

    def __init__(self, script: dict[str, Any] | None = None, heartbeat_every: float = 1.0) -> None:
        self.script = load_script() if script is None else script
        self.heartbeat_every = heartbeat_every
        self.fixture = ExchangeFixture(self._on_message, on_connect=self._on_connect)
        self.books = {p: ModelBook(levels) for p, levels in self.script["books"].items()}
        self.requests: list[dict[str, Any]] = []
        """Every request received, in order, on any connection."""
        self.snapshots_sent: dict[str, int] = {p: 0 for p in self.books}
        self.heartbeats_sent = 0
        self.clock = self.script["snapshot_timestamp"]
        """The envelope time of what the exchange sends by itself: the last script message's."""
        self._connections: dict[FixtureConnection, _Connection] = {}
        self._changed = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None

    @property
    def ws_url(self) -> str:
        return self.fixture.ws_url

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            port = await nursery.start(self.fixture.run)
            task_status.started(port)

    async def wait_until(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Until ``predicate()`` holds; checked whenever the exchange receives or sends."""
        with trio.fail_after(within):
            while not predicate():
                await self._changed.park()

    def subscribed(self, channel: str, product: str) -> bool:
        """Whether the newest open connection is subscribed to this pair."""
        state = self._current()
        return state is not None and (channel, product) in state.subscribed

    def _current(self) -> _Connection | None:
        conn = self.fixture.current
        return None if conn is None else self._connections.get(conn)

    # Sending -------------------------------------------------------------------------------

    async def _send(
        self, state: _Connection, channel: str, events: list[Any], timestamp: str, drop: bool
    ) -> None:
        async with state.lock:
            seq = state.next_seq
            state.next_seq += 1
            if not drop:
                message = {
                    "channel": channel,
                    "client_id": "",
                    "timestamp": timestamp,
                    "sequence_num": seq,
                    "events": events,
                }
                await state.conn.send(orjson.dumps(message).decode())
        self._changed.unpark_all()

    async def play(self, messages: list[dict[str, Any]]) -> None:
        """Send script messages, in order, on the current connection; each moves the book
        whether it is delivered or lost. A message for a pair nobody subscribed is skipped."""
        state = self._current()
        assert state is not None, "no client connected"
        for message in messages:
            channel, events = message["channel"], message["events"]
            self.clock = message["timestamp"]
            wanted = {"l2_data": "level2"}.get(channel, channel)
            products = {_product_of(channel, e) for e in events}
            if not all((wanted, p) in state.subscribed for p in products):
                continue
            if channel == "l2_data":
                for event in events:
                    self.books[event["product_id"]].apply(event["updates"])
            await self._send(
                state, channel, events, message["timestamp"], message.get("drop", False)
            )

    # Receiving -----------------------------------------------------------------------------

    async def _on_connect(self, conn: FixtureConnection) -> None:
        state = _Connection(conn)
        self._connections[conn] = state
        assert self._nursery is not None
        self._nursery.start_soon(self._heartbeats, state)

    async def _heartbeats(self, state: _Connection) -> None:
        counter = 0
        try:
            while not state.conn.ws.closed:
                await trio.sleep(self.heartbeat_every)
                if ("heartbeats", "heartbeats") not in state.subscribed:
                    continue
                counter += 1
                now = datetime.now(UTC)
                event = {
                    "current_time": now.strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC"),
                    "heartbeat_counter": counter,
                }
                await self._send(state, "heartbeats", [event], _rfc3339(now), drop=False)
                self.heartbeats_sent += 1
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the connection went while sending: nothing more to beat for

    async def _on_message(self, conn: FixtureConnection, text: str) -> None:
        request = json.loads(text)
        self.requests.append(request)
        self._changed.unpark_all()
        state = self._connections[conn]
        op, channel = request.get("type"), request.get("channel")
        products = request.get("product_ids") or []
        if op not in ("subscribe", "unsubscribe") or not isinstance(channel, str):
            await self._send(state, "subscriptions", [], self.clock, drop=False)
            return
        if channel == "heartbeats":
            pairs = {("heartbeats", "heartbeats")}
        else:
            pairs = {(channel, p) for p in products}
        if op == "subscribe":
            state.subscribed |= pairs
        else:
            state.subscribed -= pairs
        await self._send(state, "subscriptions", [self._listing(state)], self.clock, drop=False)
        if op == "subscribe":
            await self._snapshots(state, channel, products)

    def _listing(self, state: _Connection) -> dict[str, Any]:
        listed: dict[str, list[str]] = {}
        for channel, product in sorted(state.subscribed):
            listed.setdefault(channel, []).append(product)
        return {"subscriptions": listed}

    async def _snapshots(self, state: _Connection, channel: str, products: list[str]) -> None:
        """What Coinbase sends right after a subscribe, per channel."""
        if channel == "level2":
            for product in products:
                event = {
                    "type": "snapshot",
                    "product_id": product,
                    "updates": self.books[product].snapshot_updates(),
                }
                await self._send(state, "l2_data", [event], self.clock, drop=False)
                self.snapshots_sent[product] += 1
                self._changed.unpark_all()
        elif channel == "ticker":
            tickers = [self.script["tickers"][p] for p in products]
            event = {"type": "snapshot", "tickers": tickers}
            await self._send(state, "ticker", [event], self.clock, drop=False)
        elif channel == "market_trades":
            trades = [t for t in self.script["recent_trades"] if t["product_id"] in products]
            event = {"type": "snapshot", "trades": trades}
            await self._send(state, "market_trades", [event], self.clock, drop=False)


def _product_of(channel: str, event: Mapping[str, Any]) -> str:
    if channel == "ticker":
        (product,) = {t["product_id"] for t in event["tickers"]}
    elif channel == "market_trades":
        (product,) = {t["product_id"] for t in event["trades"]}
    else:
        product = event["product_id"]
    assert isinstance(product, str)
    return product


def _rfc3339(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
