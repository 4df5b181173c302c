"""Coinbase books through the adapter and the source pipeline against a model exchange.

The model keeps one connection's ``sequence_num`` across all channels and answers requests in
order when told to (so deltas keep flowing between a request and its answer). Messages are
lost in transit, delivered twice, delivered unreadable, heartbeats interleave and lost, and the
connection starts over; every repair the pipeline asks for is answered as Coinbase would
(unsubscribe, then subscribe and a fresh snapshot). Once everything asked has been answered and
each book has had one more message, the book the pipeline holds, and the one a client built
from what was published, are the exchange's.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.adapters.coinbase import CoinbaseAdapter
from relay.core.model import Update, UpstreamFormatError
from relay.core.source import Resubscribe, SourcePipeline, SourceStep

PRODUCTS = ["BTC-USD", "ETH-USD"]
CHANNELS = [f"cb:book:{p}" for p in PRODUCTS]
PRICES = {"bid": ["99", "98.5", "98", "97.25"], "offer": ["100", "100.5", "101", "102.75"]}
SIZES = ["0", "0.00", "1", "2.5", "0.001"]
T = "2024-01-24T19:38:49.143806763Z"


def _levels(side: dict[str, str], best_first: bool) -> list[list[str]]:
    return [[p, side[p]] for p in sorted(side, key=Decimal, reverse=best_first)]


class ModelExchange:
    """Coinbase as far as books go: its books, and one connection's numbering and requests."""

    def __init__(self) -> None:
        self.books = {p: {"bid": {"99": "1"}, "offer": {"100": "1"}} for p in PRODUCTS}
        self.connect()

    def connect(self) -> None:
        self.seq = 0
        self.subscribed: set[str] = set()
        self.inbox: deque[dict[str, Any]] = deque()
        self.last_sent: str | None = None

    def levels(self, product: str) -> dict[str, list[list[str]]]:
        book = self.books[product]
        return {"bids": _levels(book["bid"], True), "asks": _levels(book["offer"], False)}

    def _frame(self, channel: str, events: list[Any]) -> str:
        body = {"channel": channel, "timestamp": T, "sequence_num": self.seq, "events": events}
        self.seq += 1
        return orjson.dumps(body).decode()

    def change(self, product: str, changes: list[tuple[str, int, str]]) -> str | None:
        """Apply changes to a book; the update frame when the product is subscribed."""
        updates = []
        for side, index, size in changes:
            price = PRICES[side][index]
            if Decimal(size) == 0:
                self.books[product][side].pop(price, None)
            else:
                self.books[product][side][price] = size
            updates.append(
                {"side": side, "event_time": T, "price_level": price, "new_quantity": size}
            )
        if product not in self.subscribed:
            return None  # the book moves on; the snapshot at the next subscribe includes it
        event = {"type": "update", "product_id": product, "updates": updates}
        return self._frame("l2_data", [event])

    def heartbeat(self) -> str:
        return self._frame("heartbeats", [{"current_time": T, "heartbeat_counter": self.seq}])

    def serve(self) -> list[str]:
        """Answer the oldest request: the subscription list, then a subscribe's snapshots."""
        if not self.inbox:
            return []
        request = self.inbox.popleft()
        products = request["product_ids"] if request["channel"] == "level2" else []
        if request["type"] == "subscribe":
            self.subscribed.update(products)
        else:
            self.subscribed.difference_update(products)
        listed = {"level2": sorted(self.subscribed), "heartbeats": ["heartbeats"]}
        frames = [self._frame("subscriptions", [{"subscriptions": listed}])]
        if request["type"] == "subscribe":
            for product in products:
                updates = [
                    {
                        "side": side,
                        "event_time": "1970-01-01T00:00:00Z",
                        "price_level": p,
                        "new_quantity": q,
                    }
                    for side in ("bid", "offer")
                    for p, q in self.books[product][side].items()
                ]
                event = {"type": "snapshot", "product_id": product, "updates": updates}
                frames.append(self._frame("l2_data", [event]))
        return frames


class Harness:
    """What the supervisor does with the adapter and the pipeline, without sockets."""

    def __init__(self) -> None:
        self.exchange = ModelExchange()
        self.adapter = CoinbaseAdapter("cb", PRODUCTS)
        self.pipeline = SourcePipeline(self.adapter)
        self.client: dict[str, dict[str, dict[str, str]]] = {
            c: {"bids": {}, "asks": {}} for c in CHANNELS
        }
        self.connect()

    def connect(self) -> None:
        self.pipeline.connection_lost()
        self.adapter.reset()
        self.exchange.connect()
        for channel in CHANNELS:
            self.pipeline.track(channel)
        self.send(self.adapter.subscribe_frames(CHANNELS))

    def send(self, frames: list[str]) -> None:
        self.exchange.inbox.extend(orjson.loads(f) for f in frames)

    def deliver(self, frame: str | None) -> None:
        if frame is None:
            return
        self.exchange.last_sent = frame
        try:
            events = self.adapter.parse(frame)
        except UpstreamFormatError:
            return
        for event in events:
            if isinstance(event, Update):
                self.apply(self.pipeline.on_update(event))

    def apply(self, step: SourceStep) -> None:
        for update in step.publish:
            view = self.client[update.channel]
            if update.snapshot:
                view["bids"], view["asks"] = {}, {}
            for side in ("bids", "asks"):
                for price, size in update.data.get(side, []):
                    if Decimal(size) == 0:
                        view[side].pop(price, None)
                    else:
                        view[side][price] = size
        for repair in step.repairs:
            assert isinstance(repair, Resubscribe)  # Coinbase books are never fetched over HTTP
            channel = [repair.channel]
            self.send(
                self.adapter.unsubscribe_frames(channel) + self.adapter.subscribe_frames(channel)
            )

    def serve_all(self) -> None:
        """Answer every request, and those the answers lead to; a repair that keeps asking for
        itself (a snapshot that never satisfies its book) fails here instead of spinning."""
        for _ in range(100):
            if not self.exchange.inbox:
                return
            for frame in self.exchange.serve():
                self.deliver(frame)
        raise AssertionError("repairs never settle")


CHANGES = st.lists(
    st.tuples(st.sampled_from(["bid", "offer"]), st.integers(0, 3), st.sampled_from(SIZES)),
    max_size=3,
)
PRODUCT = st.sampled_from(PRODUCTS)
UPDATE = st.tuples(st.just("update"), PRODUCT, CHANGES)
OPS = st.lists(
    st.one_of(
        # Deliveries are the common case: a loss must be found among them, however late.
        UPDATE,
        UPDATE,
        UPDATE,
        st.tuples(st.sampled_from(["lost", "unreadable"]), PRODUCT, CHANGES),
        st.tuples(
            st.sampled_from(["heartbeat", "lost heartbeat", "duplicate", "serve", "reconnect"])
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_books_end_as_the_exchange_has_them(ops: list[tuple[Any, ...]]) -> None:
    harness = Harness()
    exchange = harness.exchange
    harness.serve_all()  # connected and in sync; "reconnect" covers the start of a connection
    for op in ops:
        match op:
            case ("update", product, changes):
                harness.deliver(exchange.change(product, changes))
            case ("lost", product, changes):
                exchange.change(product, changes)  # numbered and applied, never delivered
            case ("unreadable", product, changes):
                frame = exchange.change(product, changes)
                if frame is not None:
                    harness.deliver(
                        frame.replace('"side":"bid"', '"side":"ask"').replace(
                            '"side":"offer"', '"side":"ask"'
                        )
                    )
            case ("heartbeat",):
                harness.deliver(exchange.heartbeat())
            case ("lost heartbeat",):
                exchange.heartbeat()
            case ("duplicate",):
                if exchange.last_sent is not None:
                    harness.deliver(exchange.last_sent)
            case ("serve",):
                for frame in exchange.serve():
                    harness.deliver(frame)
            case ("reconnect",):
                harness.connect()
    # Everything asked is answered, and each book has one more message (Coinbase's books move
    # all the time): a loss shows at it, its repair is answered, until nothing is asked.
    for _ in range(10):
        harness.serve_all()
        for product in PRODUCTS:
            harness.deliver(exchange.change(product, []))
        if not exchange.inbox:
            break
    assert not exchange.inbox
    for product, channel in zip(PRODUCTS, CHANNELS, strict=True):
        state = harness.pipeline.state(channel)
        assert state is not None, f"{channel} is not live"
        expected = exchange.levels(product)
        assert {"bids": state["bids"], "asks": state["asks"]} == expected
        view = harness.client[channel]
        assert {
            "bids": _levels(view["bids"], True),
            "asks": _levels(view["asks"], False),
        } == expected
