"""Configured with examples/json-sim.toml, the generic adapter normalizes the synthetic market
exactly as the built-in SimAdapter does: frames recorded from a running market, any frame the
market's model emits (and malformed variants of them), and the book repaired through the source
pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import open_websocket_url

from relay.adapters.base import Adapter
from relay.adapters.generic import MISSING, GenericJsonAdapter, JsonPointer
from relay.core.book import OrderBook
from relay.core.model import Ack, Heartbeat, Update, UpstreamEvent, UpstreamFormatError
from relay.core.source import FetchSnapshot, Repair, SourcePipeline, SourceStep
from relay.sim.market import MarketModel
from relay.sim.server import SimServer
from tests.exchanges.generic.specs import load_spec, sim_pair, sim_table

SYMBOLS = ["BTC-USD", "ETH-USD"]
REST = "http://127.0.0.1:8766"
T0 = 1763712000000000


def outcome(adapter: Adapter, frame: str | bytes) -> object:
    """What an adapter makes of a frame, as far as both adapters must agree: updates exactly,
    acks by verdict and channels (their log text may differ), heartbeats, or malformed."""
    try:
        events = list(adapter.parse(frame))
    except UpstreamFormatError:
        return "malformed"
    return [_summary(event) for event in events]


def _summary(event: UpstreamEvent) -> object:
    if isinstance(event, Ack):
        return ("ack", event.ok, event.channels)
    if isinstance(event, Heartbeat):
        return "heartbeat"
    assert isinstance(event, Update)
    return event


# Recorded from a running market ------------------------------------------------------------------


async def test_frames_recorded_from_the_market_normalize_alike(nursery: trio.Nursery) -> None:
    server = SimServer(SYMBOLS, rate=100.0, seed=5, heartbeat_interval=0.05, handshake_timeout=0.5)
    port = await nursery.start(server.serve)
    base = f"http://127.0.0.1:{port}"
    recorder, _ = sim_pair(SYMBOLS, base)
    frames: list[str] = []
    async with (
        open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws,
        httpx.AsyncClient(base_url=base, timeout=5.0) as http,
    ):

        async def record(count: int) -> None:
            with trio.fail_after(5):
                for _ in range(count):
                    message = await ws.get_message()
                    frames.append(message if isinstance(message, str) else message.decode())

        for frame in recorder.subscribe_frames(sorted(recorder.channels())):
            await ws.send_message(frame)
        await record(100)
        await http.post("/control/skip", params={"n": 2, "stream": "depth.BTC-USD"})
        await http.post("/control/burst", params={"n": 20, "topic": "trade.ETH-USD"})
        await http.post("/control/garbage")
        for request in (
            '{"op":"subscribe","args":["trade.DOGE-USD","trade.BTC-USD"],"req":"x"}',
            '{"op":"subscribe","args":"trade.BTC-USD","req":11}',
            '{"op":"ping","req":12}',
            '{"op":"dance","req":13}',
            "nonsense",
        ):
            await ws.send_message(request)
        await record(150)
        for frame in recorder.unsubscribe_frames(["sim:trades:BTC-USD", "sim:book:ETH-USD"]):
            await ws.send_message(frame)
        # Subscribing again sends the topics' snapshots again: a resync over the stream.
        for frame in recorder.subscribe_frames(["sim:book:BTC-USD", "sim:ticker:ETH-USD"]):
            await ws.send_message(frame)
        await record(100)
        snapshots = {
            topic: (await http.get("/api/snapshot", params={"topic": topic})).content
            for topic in ("depth.BTC-USD", "depth.ETH-USD")
        }

    sim, generic = sim_pair(SYMBOLS, base)
    seen: set[str] = set()
    for frame in frames:
        expected = outcome(sim, frame)
        assert outcome(generic, frame) == expected, frame
        seen.update(_kinds(expected))
    # The recording holds every kind of message the market sends.
    assert seen >= {
        "malformed",
        "heartbeat",
        "ack ok",
        "ack refused",
        "trades",
        "ticker snapshot",
        "book snapshot",
        "book delta",
    }
    for symbol in ("BTC-USD", "ETH-USD"):
        repair = FetchSnapshot(f"sim:book:{symbol}")
        ours, theirs = generic.http_repair(repair), sim.http_repair(repair)
        assert ours is not None and theirs is not None
        assert ours.request == theirs.request
        body = snapshots[f"depth.{symbol}"]
        assert ours.parse(body) == theirs.parse(body)


def _kinds(result: object) -> Iterator[str]:
    if not isinstance(result, list):
        yield str(result)
        return
    for item in result:
        if isinstance(item, Update):
            stream = item.channel.split(":")[1]
            yield (
                stream
                if stream == "trades"
                else f"{stream} {'snapshot' if item.snapshot else 'delta'}"
            )
        elif isinstance(item, tuple):
            yield f"ack {'ok' if item[1] else 'refused'}"
        else:
            yield str(item)


# Any frame of the market's model -----------------------------------------------------------------

TOPICS = [f"{stream}.{symbol}" for symbol in SYMBOLS for stream in ("trade", "ticker", "depth")]
WRONG_VALUES = [MISSING, None, True, False, [], {}, -1, "x"]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("trade"), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("skip"), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("snapshot"), st.sampled_from([t for t in TOPICS if "trade" not in t])),
        st.tuples(st.just("heartbeat"), st.just("")),
        st.tuples(st.just("ack"), st.sampled_from(["subscribe", "unsubscribe"])),
        st.tuples(st.just("error"), st.sampled_from(["bad_json", "unknown_op", "bad_request"])),
    ),
    max_size=25,
)


def pointers(value: Any, prefix: str = "") -> Iterator[str]:
    """Every pointer into a JSON value (but the root)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        path = f"{prefix}/{str(key).replace('~', '~0').replace('/', '~1')}"
        yield path
        yield from pointers(child, path)


def mutated(message: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = orjson.loads(orjson.dumps(message))
    *parents, last = JsonPointer(path).tokens
    target: Any = copy
    for token in parents:
        target = target[int(token)] if isinstance(target, list) else target[token]
    key: Any = int(last) if isinstance(target, list) else last
    if value is MISSING:
        del target[key]
    else:
        target[key] = value
    return copy


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), ops=operations, data=st.data())
def test_any_market_frame_normalizes_alike(
    seed: int, ops: list[tuple[str, str]], data: Any
) -> None:
    model = MarketModel(SYMBOLS, seed)
    sim, generic = sim_pair(SYMBOLS)
    now = T0
    req = 0
    for op, arg in ops:
        now += data.draw(st.integers(0, 10**9), label="elapsed us")
        req += 1
        messages: list[dict[str, Any]] = []
        if op == "step":
            messages = model.step(arg, now)
        elif op == "trade":
            messages = [model.trade(arg, now)]
        elif op == "skip":
            model.skip(f"depth.{arg}", 1, now)
        elif op == "snapshot":
            snapshot = model.snapshot(arg, now)
            assert snapshot is not None
            messages = [snapshot]
        elif op == "heartbeat":
            messages = [{"op": "heartbeat", "time": now}, {"op": "pong", "req": req}]
        elif op == "ack":
            args = data.draw(st.lists(st.sampled_from([*TOPICS, "trade.DOGE-USD"])), label="args")
            ok = data.draw(st.booleans(), label="ok")
            ack: dict[str, Any] = {"op": arg, "req": req, "ok": ok, "args": args}
            messages = [ack if ok else {**ack, "error": "unknown_topic"}]
        else:
            messages = [{"op": "error", "error": arg, "req": req}]
        for message in messages:
            frame = orjson.dumps(message)
            assert outcome(generic, frame) == outcome(sim, frame), message
            if "topic" in message and data.draw(st.booleans(), label="mutate"):
                # A data message gone wrong: both read it, or both refuse it, alike.
                path = data.draw(st.sampled_from(list(pointers(message))), label="path")
                value = data.draw(st.sampled_from(WRONG_VALUES), label="value")
                if path.endswith(("/id", "/time")) and value == "x":
                    continue  # the generic adapter also reads ids and times written as text
                bad = orjson.dumps(mutated(message, path, value))
                assert outcome(generic, bad) == outcome(sim, bad), (path, value)


# The book through the source pipeline ------------------------------------------------------------

CHANNEL = "sim:book:BTC-USD"
TOPIC = "depth.BTC-USD"

book_operations = st.lists(
    st.one_of(
        st.just(("step", 1)),  # a market event, its depth update delivered
        st.tuples(st.just("lose"), st.integers(1, 3)),  # market events whose update never came
        st.tuples(st.just("skip"), st.integers(1, 4)),  # the market skips sequence numbers
        st.just(("duplicate", 0)),  # the last depth update again
        st.just(("ws_snapshot", 0)),  # a snapshot over the stream (a subscribe again)
        st.just(("answer", 0)),  # repairs answered with the book as it is now
        st.just(("answer_stale", 0)),  # repairs answered with the book as it was when asked
        st.just(("answer_bad", 0)),  # repairs answered with a body that is not a snapshot
    ),
    max_size=60,
)


class BookRun:
    """One book channel: the market's model, the generic adapter, the pipeline, and the book a
    client builds from what the pipeline publishes."""

    def __init__(self, seed: int) -> None:
        self.model = MarketModel(["BTC-USD"], seed)
        self.adapter = GenericJsonAdapter("sim", load_spec(sim_table()), ["BTC-USD"], 1.0, REST)
        self.pipeline = SourcePipeline(self.adapter)
        self.pipeline.track(CHANNEL)
        self.client = OrderBook()
        self.now = T0
        self.pending: dict[Repair, bytes] = {}
        """Repairs in flight -> the snapshot body as it was when each was asked for."""
        self.last_depth: dict[str, Any] | None = None

    def snapshot_body(self) -> bytes:
        return orjson.dumps(self.model.snapshot(TOPIC, self.now))

    def deliver(self, message: dict[str, Any]) -> None:
        for event in self.adapter.parse(orjson.dumps(message)):
            assert isinstance(event, Update)
            self.handle(self.pipeline.on_update(event))

    def handle(self, step: SourceStep) -> None:
        for update in step.publish:
            assert update.channel == CHANNEL and update.seq is not None
            if update.snapshot:
                self.client.apply_snapshot(update.data["bids"], update.data["asks"])
            else:
                self.client.apply_delta(update.data["bids"], update.data["asks"])
        for repair in step.repairs:
            assert isinstance(repair, FetchSnapshot) and repair not in self.pending
            self.pending[repair] = self.snapshot_body()

    def step(self) -> None:
        self.now += 1000
        depth = self.model.step("BTC-USD", self.now)[2]
        self.last_depth = depth
        self.deliver(depth)

    def answer(self, body: bytes | None = None) -> None:
        for repair, asked in list(self.pending.items()):
            how = self.adapter.http_repair(repair)
            assert how is not None
            del self.pending[repair]
            self.handle(self.pipeline.on_repaired(repair, how.parse(body or asked)))

    def run(self, op: str, n: int) -> None:
        if op == "step":
            self.step()
        elif op == "lose":
            for _ in range(n):
                self.now += 1000
                self.model.step("BTC-USD", self.now)
        elif op == "skip":
            self.model.skip(TOPIC, n, self.now)
        elif op == "duplicate" and self.last_depth is not None:
            self.deliver(self.last_depth)
        elif op == "ws_snapshot":
            self.deliver(orjson.loads(self.snapshot_body()))
        elif op == "answer":
            self.answer(self.snapshot_body())
        elif op == "answer_stale":
            self.answer()
        elif op == "answer_bad":
            for repair in self.pending:
                how = self.adapter.http_repair(repair)
                assert how is not None
                with pytest.raises(UpstreamFormatError):
                    how.parse(b'{"error": "injected_fault"}')


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), ops=book_operations)
def test_the_book_is_repaired_to_the_markets(seed: int, ops: list[tuple[str, int]]) -> None:
    run = BookRun(seed)
    run.deliver(orjson.loads(run.snapshot_body()))  # the snapshot that follows a subscribe
    for op, n in ops:
        run.run(op, n)
    run.step()  # whatever was lost shows now
    for _ in range(3):
        run.answer(run.snapshot_body())
    assert not run.pending
    body = orjson.loads(run.snapshot_body())["body"]
    state = run.pipeline.state(CHANNEL)
    assert state is not None
    assert (state["bids"], state["asks"]) == (body["bids"], body["asks"])
    assert run.client.levels() == (body["bids"], body["asks"])
