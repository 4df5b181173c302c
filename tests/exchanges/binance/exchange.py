"""A Binance spot stand-in on loopback, scripted from ``replay.json``.

It speaks what the relay uses of Binance's public market data: the raw WebSocket endpoint's
live-subscription requests (``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``, answered by
``id``), the raw events of the subscribed streams, and ``GET /api/v3/depth``. The test decides
when each phase of the script is sent and which depth snapshot the REST endpoint serves; the
exchange keeps its own book (every depth event it emits moves it, delivered or lost in transit),
which is what it serves once ``depth_mode`` is ``"live"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import trio

from tests.exchanges.fixture_server import ExchangeFixture, FixtureConnection

SCRIPT = Path(__file__).with_name("replay.json")

_STREAM_SUFFIX = {"trade": "@trade", "24hrTicker": "@ticker", "depthUpdate": "@depth@100ms"}


def load_script() -> dict[str, Any]:
    script: dict[str, Any] = json.loads(SCRIPT.read_text())
    return script


def stream_of(event: Mapping[str, Any]) -> str:
    """The raw stream an event belongs to, as Binance names it."""
    return f"{event['s'].lower()}{_STREAM_SUFFIX[event['e']]}"


class ModelBook:
    """An exchange's book: price -> quantity strings per side, and the last update id in it."""

    def __init__(self, snapshot: Mapping[str, Any]) -> None:
        self.last_update_id: int = snapshot["lastUpdateId"]
        self.bids = {p: q for p, q in snapshot["bids"]}
        self.asks = {p: q for p, q in snapshot["asks"]}

    def apply(self, event: Mapping[str, Any]) -> None:
        """A depth event, if it is newer than the book (older ones are history it includes)."""
        if event["u"] <= self.last_update_id:
            return
        for side, changes in ((self.bids, event["b"]), (self.asks, event["a"])):
            for price, quantity in changes:
                if Decimal(quantity) == 0:
                    side.pop(price, None)
                else:
                    side[price] = quantity
        self.last_update_id = event["u"]

    def levels(self) -> dict[str, list[list[str]]]:
        """Bids best first, asks lowest first: the protocol's order."""
        return {
            "bids": [[p, self.bids[p]] for p in sorted(self.bids, key=Decimal, reverse=True)],
            "asks": [[p, self.asks[p]] for p in sorted(self.asks, key=Decimal)],
        }

    def rest_body(self) -> dict[str, Any]:
        return {"lastUpdateId": self.last_update_id, **self.levels()}


class BinanceExchange:
    """Run with ``await nursery.start(exchange.fixture.run)``."""

    def __init__(self, script: dict[str, Any] | None = None) -> None:
        self.script = load_script() if script is None else script
        self.fixture = ExchangeFixture(self._on_message, self._rest)
        self.book = ModelBook(self.script["depth_snapshots"]["initial"])
        self.depth_mode = "stale"
        """Which snapshot ``GET /api/v3/depth`` serves: a script's (``stale``, ``initial``) or
        the exchange's current book (``live``)."""
        self.answer_probes = True
        self.frames_sent = 0
        """Every frame sent on any connection: the relay has read all of them when its count
        of received messages is the same."""
        self.depth_requests = 0
        self._streams: dict[FixtureConnection, set[str]] = {}
        self._changed = trio.lowlevel.ParkingLot()

    @property
    def ws_url(self) -> str:
        return f"{self.fixture.ws_url}/ws"

    @property
    def rest_url(self) -> str:
        return self.fixture.rest_url

    def streams(self) -> set[str]:
        """What the newest open connection is subscribed to."""
        conn = self.fixture.current
        return set() if conn is None else self._streams.get(conn, set())

    def probes(self) -> int:
        """LIST_SUBSCRIPTIONS requests received, on every connection."""
        return sum(
            orjson.loads(text).get("method") == "LIST_SUBSCRIPTIONS"
            for conn in self.fixture.connections
            for text in conn.received
        )

    async def wait_streams(self, streams: set[str], within: float = 5.0) -> None:
        with trio.fail_after(within):
            while not streams <= self.streams():
                await self._changed.park()

    async def _send(self, conn: FixtureConnection, message: object) -> None:
        self.frames_sent += 1
        await conn.send(orjson.dumps(message).decode())

    async def _on_message(self, conn: FixtureConnection, text: str) -> None:
        request = orjson.loads(text)
        method, request_id = request.get("method"), request.get("id")
        streams = self._streams.setdefault(conn, set())
        if method == "SUBSCRIBE":
            streams.update(request["params"])
            self._changed.unpark_all()
            await self._send(conn, {"result": None, "id": request_id})
        elif method == "UNSUBSCRIBE":
            streams.difference_update(request["params"])
            self._changed.unpark_all()
            await self._send(conn, {"result": None, "id": request_id})
        elif method == "LIST_SUBSCRIPTIONS":
            if self.answer_probes:
                await self._send(conn, {"result": sorted(streams), "id": request_id})
        else:
            error = {"code": 2, "msg": f"Invalid request: unknown variant {method}"}
            await self._send(conn, {"error": error, "id": request_id})

    async def play(self, phase: str) -> None:
        """Emit a phase of the script: each event moves the exchange's book; those of the
        streams the connection subscribed to are sent, except the ones lost in transit."""
        conn = self.fixture.current
        assert conn is not None, "no connection to play to"
        lost = set(self.script["lost_in_transit"])
        for event in self.script["phases"][phase]:
            if event["e"] == "depthUpdate":
                self.book.apply(event)
                if event["u"] in lost:
                    continue
            if stream_of(event) in self._streams.get(conn, set()):
                await self._send(conn, event)

    def _rest(self, path: str, query: Mapping[str, str]) -> tuple[int, bytes]:
        if path != "/api/v3/depth":
            raise KeyError(path)
        symbol = self.script["symbol"].replace("-", "")
        if query.get("symbol") != symbol:
            return 400, orjson.dumps({"code": -1121, "msg": "Invalid symbol."})
        if query.get("limit") != "1000":  # the relay asks for what the brief says, no more
            return 400, orjson.dumps({"code": -1100, "msg": "Illegal characters in limit."})
        self.depth_requests += 1
        if self.depth_mode == "live":
            return 200, orjson.dumps(self.book.rest_body())
        return 200, orjson.dumps(self.script["depth_snapshots"][self.depth_mode])
