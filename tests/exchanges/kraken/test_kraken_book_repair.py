"""Property test of a Kraken book through the adapter and the source pipeline, against a model
of Kraken: whatever is lost, corrupted, repeated or reconnected, once the last repair is
answered the relay's book is Kraken's, and a client applying what the relay published holds it.

The model keeps a book deeper than the subscription and sends what Kraken documents for the
subscribed depth: the levels of the top ``depth`` that changed, a zero quantity for a level
removed from it, nothing for a level pushed out of it by an insert (the client truncates), and
the level that enters it when one leaves; each message with the CRC32 of the top ten levels after
it. A ``book`` subscribe is answered with a snapshot of the top ``depth``. The depth is 10, the
levels the checksum covers: below them, Kraken's checksum cannot reveal a lost message.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.adapters.kraken import KrakenAdapter
from relay.core.model import Ack, Update
from relay.core.source import Resubscribe, SourcePipeline
from tests.exchanges.kraken.exchange import Raw, crc, dumps

BOOK = "kr:book:BTC-USD"
PAIR = "BTC/USD"
DEPTH = 10
GRID = 24
TIMES = {"time_in": "2023-10-04T07:48:25.000000Z", "time_out": "2023-10-04T07:48:25.000000Z"}

Side = Literal["bids", "asks"]
Fate = Literal["deliver", "drop", "corrupt", "duplicate"]


def grid(scale: str) -> dict[Side, list[str]]:
    """Price strings per side, as Kraken writes them for one instrument."""
    if scale == "large":
        bids = [format(Decimal("90.0") + Decimal("0.5") * i, "f") for i in range(GRID)]
        asks = [format(Decimal("102.0") + Decimal("0.5") * i, "f") for i in range(GRID)]
    else:
        step, places = Decimal("0.00025"), Decimal("0.00001")
        bids = [format((Decimal("0.04") + step * i).quantize(places), "f") for i in range(GRID)]
        asks = [format((Decimal("0.05") + step * i).quantize(places), "f") for i in range(GRID)]
    return {"bids": bids, "asks": asks}


def qty(units: int) -> str:
    """A quantity in Kraken's eight places, e.g. ``0.00000001``."""
    return format(Decimal(units).scaleb(-8), "f")


class KrakenModel:
    """Kraken's side: the whole book, and what one subscriber at ``DEPTH`` is told."""

    def __init__(self, prices: dict[Side, list[str]]) -> None:
        self.prices = prices
        self.book: dict[Side, dict[Decimal, tuple[str, str]]] = {"bids": {}, "asks": {}}
        self.clock = 0

    def view(self, side: Side) -> list[tuple[str, str]]:
        levels = self.book[side]
        keys = sorted(levels, reverse=side == "bids")[:DEPTH]
        return [levels[k] for k in keys]

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        return [list(x) for x in self.view("bids")], [list(x) for x in self.view("asks")]

    def checksum(self) -> int:
        return crc(self.view("bids"), self.view("asks"))

    def set(self, side: Side, index: int, units: int | None) -> None:
        price = self.prices[side][index]
        if units is None:
            self.book[side].pop(Decimal(price), None)
        else:
            self.book[side][Decimal(price)] = (price, qty(units))

    def change(self, changes: list[tuple[Side, int, int | None]], zero: str) -> str | None:
        """Apply the changes; the update message a subscriber gets, or None when its top
        ``DEPTH`` did not change (Kraken then sends nothing)."""
        before = {side: dict(self.view(side)) for side in ("bids", "asks")}
        for side, index, units in changes:
            self.set(side, index, units)
        item: dict[str, Any] = {"symbol": PAIR}
        for side in ("bids", "asks"):
            after = dict(self.view(side))
            # A level removed gets a zero; one an insert pushed out of the depth gets nothing.
            levels = [
                {"price": Raw(price), "qty": Raw(zero)}
                for price in before[side]
                if price not in after and Decimal(price) not in self.book[side]
            ]
            for price, size in after.items():
                if before[side].get(price) != size:
                    levels.append({"price": Raw(price), "qty": Raw(size)})
            item[side] = levels
        if not item["bids"] and not item["asks"]:
            return None
        self.clock += 1
        item["checksum"] = self.checksum()
        item["timestamp"] = f"2023-10-04T08:00:{self.clock % 60:02d}.{self.clock:06d}Z"
        return dumps({"channel": "book", "type": "update", "data": [item]})

    def snapshot(self) -> str:
        """Kraken's snapshot: the top ``DEPTH``, with no time of its own."""
        item = {
            "symbol": PAIR,
            "bids": [{"price": Raw(p), "qty": Raw(q)} for p, q in self.view("bids")],
            "asks": [{"price": Raw(p), "qty": Raw(q)} for p, q in self.view("asks")],
            "checksum": self.checksum(),
        }
        return dumps({"channel": "book", "type": "snapshot", "data": [item]})


def answer(request: str, method: str) -> str:
    req = json.loads(request)
    assert req["method"] == method and req["params"]["symbol"] == [PAIR]
    result = {"channel": "book", "symbol": PAIR, "depth": DEPTH}
    if method == "subscribe":
        result["snapshot"] = True
    return json.dumps(
        {"method": method, "result": result, "success": True, "req_id": req["req_id"], **TIMES}
    )


class Relay:
    """The relay's side, without sockets: the adapter, the pipeline, and a client that applies
    everything published."""

    def __init__(self, model: KrakenModel) -> None:
        self.model = model
        self.adapter = KrakenAdapter("kr", ["BTC-USD"], depth=DEPTH)
        self.pipeline = SourcePipeline(self.adapter)
        self.client: dict[Side, dict[Decimal, list[str]]] = {"bids": {}, "asks": {}}
        self.unanswered: list[tuple[str, str]] = []
        """Requests sent and not answered by Kraken yet: (method, frame)."""
        self.subscribed = False
        """Whether Kraken streams this book to the relay's current connection."""
        self.connect()

    def connect(self) -> None:
        self.adapter.reset()
        self.pipeline.track(BOOK)
        self.subscribed = False
        (frame,) = self.adapter.subscribe_frames([BOOK])
        self.unanswered = [("subscribe", frame)]

    def reconnect(self) -> None:
        self.pipeline.connection_lost()
        self.connect()

    def answer_all(self) -> None:
        """Kraken processes what the relay sent, in order. A relay that keeps asking again
        after a consistent snapshot is wrong: it gets a few rounds, not a loop forever."""
        for _ in range(6):
            if not self.unanswered:
                return
            method, frame = self.unanswered.pop(0)
            (ack,) = self.adapter.parse(answer(frame, method))
            assert isinstance(ack, Ack) and ack.ok
            if method == "unsubscribe":
                self.subscribed = False
            else:
                self.subscribed = True
                self.receive(self.model.snapshot())

    def receive(self, frame: str) -> None:
        for event in self.adapter.parse(frame):
            assert isinstance(event, Update)
            step = self.pipeline.on_update(event)
            for update in step.publish:
                self.apply(update)
            for repair in step.repairs:
                assert repair == Resubscribe(BOOK)
                (unsubscribe,) = self.adapter.unsubscribe_frames([BOOK])
                (subscribe,) = self.adapter.subscribe_frames([BOOK])
                self.unanswered += [("unsubscribe", unsubscribe), ("subscribe", subscribe)]
            self.check_client()

    def apply(self, update: Update) -> None:
        assert update.channel == BOOK
        if update.snapshot:
            self.client = {"bids": {}, "asks": {}}
        for side in ("bids", "asks"):
            for price, size in update.data.get(side, ()):
                if Decimal(size) == 0:
                    self.client[side].pop(Decimal(price), None)
                else:
                    self.client[side][Decimal(price)] = [price, size]

    def client_levels(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = [self.client["bids"][k] for k in sorted(self.client["bids"], reverse=True)]
        asks = [self.client["asks"][k] for k in sorted(self.client["asks"])]
        return bids, asks

    def check_client(self) -> None:
        """While the relay's book is live, a client holds exactly it."""
        state = self.pipeline.state(BOOK)
        if state is not None:
            assert self.client_levels() == (state["bids"], state["asks"])


SIZE = st.integers(min_value=1, max_value=10**9)
LEVEL = st.tuples(st.sampled_from(["bids", "asks"]), st.integers(0, GRID - 1), st.none() | SIZE)
CHANGE = st.tuples(
    st.just("change"),
    st.lists(LEVEL, min_size=1, max_size=3),
    st.sampled_from(["deliver", "deliver", "deliver", "drop", "corrupt", "duplicate"]),
    st.sampled_from(["0", "0.00000000", "0.0"]),
)
OPS = st.lists(st.one_of(CHANGE, st.just(("answer",)), st.just(("reconnect",))), max_size=40)
INITIAL = st.fixed_dictionaries(
    {
        # Each price of the grid present or not: usually more levels than the depth, so inserts
        # push levels out of it and removals bring deeper ones in.
        side: st.lists(st.none() | SIZE, min_size=GRID, max_size=GRID)
        for side in ("bids", "asks")
    }
)


@settings(max_examples=200, deadline=None)
@given(scale=st.sampled_from(["large", "small"]), initial=INITIAL, ops=OPS)
def test_book_equals_krakens_after_the_last_repair(
    scale: str, initial: dict[Side, list[int | None]], ops: list[tuple[Any, ...]]
) -> None:
    model = KrakenModel(grid(scale))
    for side, sizes in initial.items():
        for index, units in enumerate(sizes):
            model.set(side, index, units)
    relay = Relay(model)
    relay.answer_all()
    for op in ops:
        if op[0] == "answer":
            relay.answer_all()
        elif op[0] == "reconnect":
            relay.reconnect()
        else:
            _, changes, fate, zero = op
            run(relay, model, changes, fate, zero)
    # Kraken keeps streaming: every request is answered, and one more change of the top of the
    # book reaches the relay (a loss is only seen by the checksum of a later message).
    relay.answer_all()
    bids = model.view("bids")
    units = 1 if not bids else int(Decimal(bids[0][1]).scaleb(8)) + 1
    run(
        relay,
        model,
        [("bids", GRID - 1 if not bids else model.prices["bids"].index(bids[0][0]), units)],
        "deliver",
        "0",
    )
    relay.answer_all()
    state = relay.pipeline.state(BOOK)
    assert state is not None, "the book must be live once every repair is answered"
    assert (state["bids"], state["asks"]) == model.levels()
    assert relay.client_levels() == model.levels()


def run(
    relay: Relay,
    model: KrakenModel,
    changes: list[tuple[Side, int, int | None]],
    fate: Fate,
    zero: str,
) -> None:
    frame = model.change(changes, zero)
    if frame is None or not relay.subscribed or fate == "drop":
        return
    if fate == "corrupt":
        message = json.loads(frame, parse_float=Raw)
        message["data"][0]["checksum"] ^= 1
        frame = dumps(message)
    relay.receive(frame)
    if fate == "duplicate":
        relay.receive(frame)
