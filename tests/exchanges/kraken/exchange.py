"""A loopback Kraken spot WebSocket v2 for the relay's tests, built on the shared fixture server.

It speaks the protocol as Kraken documents it: a ``status`` message on connect, one
acknowledgement per symbol of a ``subscribe``/``unsubscribe`` (``success``, ``result``, the
request's ``req_id``; an ``error`` naming the ``symbol`` for a pair it does not list), a ``pong``
for a ``ping``, ``{"channel": "heartbeat"}`` while something is subscribed, and the fixture
file's frames for each subscribed channel. A ``book`` subscribe gets a snapshot: the fixture's
own the first time, afterwards one built from the book the exchange holds then (the book its
frames describe, kept at the subscribed depth as Kraken keeps it), with its checksum.

Numbers are JSON numbers with Kraken's full precision: the fixture is read with every number
kept as its text (:class:`Raw`) and written back verbatim (:func:`dumps`), because a float would
lose the trailing zeros the checksum is computed over.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from tests.exchanges.fixture_server import ExchangeFixture, FixtureConnection

FIXTURE = Path(__file__).with_name("fixture.json")


class Raw(str):
    """A JSON number exactly as written in the fixture."""


def load_script(path: Path = FIXTURE) -> dict[str, Any]:
    """The fixture file, numbers with a fraction kept as their text."""
    script: dict[str, Any] = json.loads(path.read_text(), parse_float=Raw)
    return script


def load_expected(path: Path = FIXTURE) -> dict[str, Any]:
    """The normalized messages the relay must make of the fixture (plain JSON)."""
    expected: dict[str, Any] = json.loads(path.read_text())["expected"]
    return expected


def dumps(value: Any) -> str:
    """JSON text with :class:`Raw` numbers written verbatim."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def crc(bids: Iterable[tuple[str, str]], asks: Iterable[tuple[str, str]]) -> int:
    """Kraken's book checksum, written here independently of the adapter's: top ten asks from
    the lowest, then top ten bids from the highest, '.' removed and leading zeros stripped."""
    text = ""
    for levels in (list(asks)[:10], list(bids)[:10]):
        for price, qty in levels:
            text += price.replace(".", "").lstrip("0") + qty.replace(".", "").lstrip("0")
    return zlib.crc32(text.encode())


class ModelBook:
    """One symbol's book as a Kraken client keeps it: levels applied in message order, a zero
    quantity removes, then truncated to the subscribed depth."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def apply(self, item: dict[str, Any], snapshot: bool = False) -> None:
        if snapshot:
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, item["bids"]), (self.asks, item["asks"])):
            for level in levels:
                price, qty = str(level["price"]), str(level["qty"])
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, qty)
        for side, best_first in ((self.bids, True), (self.asks, False)):
            for key in sorted(side, reverse=best_first)[self.depth :]:
                del side[key]

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        """(bids, asks) best first, as ``[[price, qty], ...]``."""
        bids = [list(self.bids[k]) for k in sorted(self.bids, reverse=True)]
        asks = [list(self.asks[k]) for k in sorted(self.asks)]
        return bids, asks

    def checksum(self) -> int:
        bids, asks = self.levels()
        return crc(((p, q) for p, q in bids), ((p, q) for p, q in asks))

    def snapshot_frame(self, pair: str) -> dict[str, Any]:
        bids, asks = self.levels()
        item = {
            "symbol": pair,
            "bids": [{"price": Raw(p), "qty": Raw(q)} for p, q in bids],
            "asks": [{"price": Raw(p), "qty": Raw(q)} for p, q in asks],
            "checksum": self.checksum(),
        }
        return {"channel": "book", "type": "snapshot", "data": [item]}


class KrakenExchange:
    """Serve with ``await nursery.start(exchange.fixture.run)``; connect to ``ws_url``.

    ``drop`` names book updates (indexes into the fixture's ``updates``) the exchange applies
    to its book but never sends: lost messages, which the next update's checksum reveals."""

    def __init__(
        self,
        nursery: trio.Nursery,
        script: dict[str, Any] | None = None,
        *,
        drop: Collection[int] = (),
        heartbeat: float = 0.2,
    ) -> None:
        self.script = load_script() if script is None else script
        self.pair: str = self.script["symbol"]
        self.book = ModelBook(self.script["depth"])
        self.drop = frozenset(drop)
        self.heartbeat = heartbeat
        self.requests: list[dict[str, Any]] = []
        """Every request a client sent, parsed, in order."""
        self.book_subscribes = 0
        self._nursery = nursery
        self._subscribed: dict[int, set[str]] = {}
        self.fixture = ExchangeFixture(self._on_message, on_connect=self._on_connect)

    @property
    def ws_url(self) -> str:
        return self.fixture.ws_url

    def requests_for(self, method: str, channel: str) -> list[dict[str, Any]]:
        return [
            r for r in self.requests if r["method"] == method and r["params"]["channel"] == channel
        ]

    async def _on_connect(self, conn: FixtureConnection) -> None:
        self._subscribed[id(conn)] = set()
        await conn.send(dumps(self.script["status"]))
        self._nursery.start_soon(self._heartbeats, conn)

    async def _heartbeats(self, conn: FixtureConnection) -> None:
        """Kraken sends a heartbeat about once a second while anything is subscribed."""
        try:
            while not conn.ws.closed:
                await trio.sleep(self.heartbeat)
                if self._subscribed[id(conn)]:
                    await conn.send('{"channel":"heartbeat"}')
        except ConnectionClosed:
            pass

    async def _on_message(self, conn: FixtureConnection, text: str) -> None:
        request = json.loads(text)
        self.requests.append(request)
        method, req_id = request["method"], request.get("req_id")
        times = self.script["ack_time"]
        if method == "ping":
            await conn.send(dumps({"method": "pong", "req_id": req_id, **times}))
            return
        params = request["params"]
        channel = params["channel"]
        for pair in params["symbol"]:
            if pair != self.pair:
                refusal = {
                    "error": f"Currency pair not supported {pair}",
                    "method": method,
                    "success": False,
                    "symbol": pair,
                    "req_id": req_id,
                    **times,
                }
                await conn.send(dumps(refusal))
                continue
            result: dict[str, Any] = {"channel": channel, "symbol": pair}
            if channel == "book":
                result["depth"] = params["depth"]
            if method == "subscribe" and "snapshot" in params:
                result["snapshot"] = params["snapshot"]
            answer = {"method": method, "result": result, "success": True, **times}
            await conn.send(dumps({**answer, "req_id": req_id}))
            if method == "subscribe":
                self._subscribed[id(conn)].add(channel)
                await self._replay(conn, channel)
            else:
                self._subscribed[id(conn)].discard(channel)

    async def _replay(self, conn: FixtureConnection, channel: str) -> None:
        if channel != "book":
            for frame in self.script[channel]:
                await conn.send(dumps(frame))
            return
        book = self.script["book"]
        self.book_subscribes += 1
        if self.book_subscribes == 1:
            self.book.apply(book["snapshot"]["data"][0], snapshot=True)
            await conn.send(dumps(book["snapshot"]))
            updates = list(enumerate(book["updates"]))
        else:
            await conn.send(dumps(self.book.snapshot_frame(self.pair)))
            updates = list(
                enumerate(book["after_resubscribe"] if self.book_subscribes == 2 else [])
            )
        for index, frame in updates:
            self.book.apply(frame["data"][0])
            if self.book_subscribes == 1 and index in self.drop:
                continue
            await conn.send(dumps(frame))
