"""Property: whatever a Binance connection loses, repeats or reorders against REST, the relay's
book ends as the exchange's once the last repair is answered.

A model exchange keeps a book and its update id; each change of one to four levels is one depth
event covering that many ids (``U``..``u``), as Binance batches them. The events go through the
adapter's ``parse`` and the relay's ``SourcePipeline`` with losses (a gap), duplicates,
reconnects (the events in flight are gone, the next connection starts without a book), and REST
snapshots answered late, current, or older than the stream (Binance's "lastUpdateId strictly less
than U: get a snapshot again").
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.adapters.binance import BinanceAdapter
from relay.core.model import Update
from relay.core.source import FetchSnapshot, SourcePipeline
from tests.exchanges.binance.exchange import (
    ModelBook,
)

BOOK = "binance:book:BTC-USDT"
BID_PRICES = ["67249.00000000", "67249.50000000", "67250.00000000", "67250.10000000"]
ASK_PRICES = ["67250.50000000", "67250.80000000", "67251.00000000", "67252.25000000"]
SIZES = ["0.00000000", "0.00000000", "0.05000000", "1.10000000", "2.25000000", "3"]

change = st.tuples(
    st.sampled_from(["b", "a"]), st.integers(0, len(BID_PRICES) - 1), st.sampled_from(SIZES)
)
operation = st.one_of(
    st.tuples(st.just("change"), st.lists(change, min_size=1, max_size=4)),
    st.tuples(st.just("deliver"), st.integers(1, 3)),
    st.tuples(st.just("drop"), st.just(1)),
    st.tuples(st.just("duplicate"), st.just(1)),
    st.tuples(st.just("answer"), st.integers(0, 3)),
    st.tuples(st.just("reconnect"), st.just(0)),
)


class Exchange:
    """The model: a book, the events on the wire to the relay, the REST snapshots it served."""

    def __init__(self) -> None:
        self.book = ModelBook(
            {
                "lastUpdateId": 5000,
                "bids": [["67250.00000000", "1.00000000"]],
                "asks": [["67251.00000000", "2.00000000"]],
            }
        )
        self.wire: list[str] = []
        self.history: list[bytes] = [orjson.dumps(self.book.rest_body())]
        self.books = {self.book.last_update_id: self.book.levels()}
        """Update id -> the book as of it."""
        self.time = 1763712000000

    def change(self, changes: list[tuple[str, int, str]]) -> None:
        """Apply the changes as one batch: ids ``U``..``u``, one per change; the event lists
        each level changed once, with its final quantity."""
        first = self.book.last_update_id + 1
        sides: dict[str, dict[str, str]] = {"b": {}, "a": {}}
        for side, index, size in changes:
            price = (BID_PRICES if side == "b" else ASK_PRICES)[index]
            sides[side][price] = size
        self.time += 100
        event = {
            "e": "depthUpdate",
            "E": self.time,
            "s": "BTCUSDT",
            "U": first,
            "u": first + len(changes) - 1,
            "b": [list(level) for level in sides["b"].items()],
            "a": [list(level) for level in sides["a"].items()],
        }
        self.book.apply(event)
        self.wire.append(orjson.dumps(event).decode())
        self.history.append(orjson.dumps(self.book.rest_body()))
        self.books[self.book.last_update_id] = self.book.levels()


class Relay:
    """The adapter and the pipeline, and a client's book built from what they publish."""

    def __init__(self, books: dict[int, dict[str, list[list[str]]]]) -> None:
        self.books = books
        self.adapter = BinanceAdapter("binance", ["BTC-USDT"], "http://127.0.0.1:1")
        self.pipeline = SourcePipeline(self.adapter)
        self.pipeline.track(BOOK)
        self.bids: dict[Decimal, list[str]] = {}
        self.asks: dict[Decimal, list[str]] = {}
        self.last: str | None = None

    def receive(self, text: str) -> None:
        self.last = text
        for event in self.adapter.parse(text):
            assert isinstance(event, Update)
            self.publish(self.pipeline.on_update(event).publish)

    def answer(self, body: bytes) -> None:
        repair = FetchSnapshot(BOOK)
        if not self.pipeline.wants(repair):
            return
        how = self.adapter.http_repair(repair)
        assert how is not None
        self.publish(self.pipeline.on_repaired(repair, how.parse(body)).publish)

    def reconnect(self) -> None:
        self.pipeline.connection_lost()
        self.adapter.reset()
        self.pipeline.track(BOOK)
        self.last = None

    def publish(self, updates: list[Update]) -> None:
        for update in updates:
            assert update.channel == BOOK
            assert isinstance(update.data["ts"], int)
            if update.snapshot:
                self.bids, self.asks = {}, {}
            for side, levels in (
                (self.bids, update.data["bids"]),
                (self.asks, update.data["asks"]),
            ):
                for price, size in levels:
                    if Decimal(size) == 0:
                        side.pop(Decimal(price), None)
                    else:
                        side[Decimal(price)] = [price, size]
            # Every message leaves a client with the exchange's book as of its update id.
            assert update.seq is not None
            assert self.client_book() == self.books[update.seq], update.seq

    def client_book(self) -> dict[str, list[list[str]]]:
        return {
            "bids": [self.bids[p] for p in sorted(self.bids, reverse=True)],
            "asks": [self.asks[p] for p in sorted(self.asks)],
        }


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=50))
def test_the_book_ends_as_the_exchanges(operations: list[tuple[str, Any]]) -> None:
    exchange = Exchange()
    relay = Relay(exchange.books)
    for name, arg in operations:
        if name == "change":
            exchange.change(arg)
        elif name == "deliver":
            for _ in range(min(arg, len(exchange.wire))):
                relay.receive(exchange.wire.pop(0))
        elif name == "drop" and exchange.wire:
            exchange.wire.pop(0)
        elif name == "duplicate" and relay.last is not None:
            relay.receive(relay.last)
        elif name == "answer":
            # REST answers with its book as of now, or as of a while ago (it may lag).
            relay.answer(exchange.history[max(0, len(exchange.history) - 1 - arg)])
        elif name == "reconnect":
            relay.reconnect()
            exchange.wire.clear()  # lost with the connection
    # The connection goes on without losses: an event reaches the relay (a new connection's
    # first one starts its snapshot fetch), and every repair is answered with the current book.
    exchange.change([("b", 0, "0.05000000")])
    while exchange.wire:
        relay.receive(exchange.wire.pop(0))
    for _ in range(3):
        relay.answer(exchange.history[-1])
    assert not relay.pipeline.wants(FetchSnapshot(BOOK))
    state = relay.pipeline.state(BOOK)
    assert state is not None, "the book must be live"
    assert {"bids": state["bids"], "asks": state["asks"]} == exchange.book.levels()
    assert relay.client_book() == exchange.book.levels()
