"""The synthetic market's adapter: exact normalization, and nothing but UpstreamFormatError on
anything malformed."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.adapters.base import Adapter, HttpRequest
from relay.adapters.sim import SimAdapter
from relay.core.chain import FetchByNumber
from relay.core.model import Ack, Heartbeat, RepairKind, StreamKind, Update, UpstreamFormatError
from relay.core.source import FetchItem, FetchSnapshot
from relay.sim.market import MarketModel

SYMBOLS = ["BTC-USD", "ETH-USD"]

TRADE = {
    "topic": "trade.BTC-USD",
    "seq": 41,
    "kind": "update",
    "body": {"px": "43000.50", "qty": "0.0123", "taker": "B", "id": 981, "time": 1763712000123456},
}
TICKER = {
    "topic": "ticker.BTC-USD",
    "seq": 12,
    "kind": "snapshot",
    "body": {
        "bid": {"px": "43000.00", "qty": "1.5"},
        "ask": {"px": "43000.50", "qty": "0.8"},
        "last": "43000.50",
        "time": 1763712000123456,
    },
}
DEPTH_SNAPSHOT = {
    "topic": "depth.ETH-USD",
    "seq": 7,
    "kind": "snapshot",
    "body": {
        "bids": [["2300.00", "1.5000"], ["2299.95", "0.1000"]],
        "asks": [["2300.05", "0.8000"]],
        "time": 1763712000999999,
    },
}
DEPTH_UPDATE = {
    "topic": "depth.ETH-USD",
    "seq": 8,
    "kind": "update",
    "body": {"bids": [["2299.95", "0"]], "asks": [["2300.10", "2.25"]], "time": 1763712001000000},
}


@pytest.fixture
def adapter() -> SimAdapter:
    return SimAdapter("sim", SYMBOLS, heartbeat_interval=0.5)


def parse_one(adapter: SimAdapter, message: object) -> object:
    events = list(adapter.parse(orjson.dumps(message)))
    assert len(events) == 1
    return events[0]


def test_satisfies_the_adapter_protocol(adapter: SimAdapter) -> None:
    as_protocol: Adapter = adapter
    assert as_protocol.source == "sim"
    assert as_protocol.heartbeat_interval == 0.5


def test_channels_and_kinds(adapter: SimAdapter) -> None:
    assert adapter.channels() == {
        f"sim:{stream}:{symbol}" for stream in ("trades", "ticker", "book") for symbol in SYMBOLS
    }
    assert adapter.kind("sim:trades:BTC-USD") is StreamKind.EVENT
    assert adapter.kind("sim:ticker:BTC-USD") is StreamKind.STATE
    assert adapter.kind("sim:book:ETH-USD") is StreamKind.BOOK
    assert adapter.kind("sim:book:DOGE-USD") is None
    assert adapter.kind("other:book:BTC-USD") is None
    assert adapter.repair("sim:book:ETH-USD") is RepairKind.REST_SNAPSHOT
    assert adapter.repair("sim:ticker:ETH-USD") is RepairKind.NONE


def test_trade(adapter: SimAdapter) -> None:
    assert parse_one(adapter, TRADE) == Update(
        channel="sim:trades:BTC-USD",
        data={
            "symbol": "BTC-USD",
            "price": "43000.50",
            "size": "0.0123",
            "side": "buy",
            "trade_id": "981",
            "ts": 1763712000123,
        },
        seq=41,
        snapshot=False,
    )
    sell = copy.deepcopy(TRADE)
    sell["body"]["taker"] = "S"  # type: ignore[index]
    update = parse_one(adapter, sell)
    assert isinstance(update, Update) and update.data["side"] == "sell"


def test_ticker(adapter: SimAdapter) -> None:
    assert parse_one(adapter, TICKER) == Update(
        channel="sim:ticker:BTC-USD",
        data={
            "symbol": "BTC-USD",
            "bid": "43000.00",
            "bid_size": "1.5",
            "ask": "43000.50",
            "ask_size": "0.8",
            "last": "43000.50",
            "ts": 1763712000123,
        },
        seq=12,
        snapshot=True,
    )


def test_depth_snapshot_and_update(adapter: SimAdapter) -> None:
    assert parse_one(adapter, DEPTH_SNAPSHOT) == Update(
        channel="sim:book:ETH-USD",
        data={
            "symbol": "ETH-USD",
            "bids": [["2300.00", "1.5000"], ["2299.95", "0.1000"]],
            "asks": [["2300.05", "0.8000"]],
            "ts": 1763712000999,
        },
        seq=7,
        snapshot=True,
    )
    assert parse_one(adapter, DEPTH_UPDATE) == Update(
        channel="sim:book:ETH-USD",
        data={
            "symbol": "ETH-USD",
            "bids": [["2299.95", "0"]],
            "asks": [["2300.10", "2.25"]],
            "ts": 1763712001000,
        },
        seq=8,
        snapshot=False,
    )


def test_control_messages(adapter: SimAdapter) -> None:
    assert parse_one(adapter, {"op": "heartbeat", "time": 1763712000123456}) == Heartbeat()
    assert list(adapter.parse('{"op": "pong", "req": 9}')) == [Heartbeat()]
    ack = parse_one(adapter, {"op": "subscribe", "req": 7, "ok": True, "args": ["trade.BTC-USD"]})
    assert isinstance(ack, Ack) and ack.ok and "trade.BTC-USD" in ack.detail
    refused = {"op": "subscribe", "req": 7, "ok": False, "args": ["x"], "error": "unknown_topic"}
    nack = parse_one(adapter, refused)
    assert isinstance(nack, Ack) and not nack.ok and "unknown_topic" in nack.detail
    assert parse_one(adapter, {"op": "unsubscribe", "ok": True, "args": []}) == Ack(
        True, "unsubscribe []"
    )
    error = parse_one(adapter, {"op": "error", "error": "bad_json"})
    assert isinstance(error, Ack) and not error.ok and "bad_json" in error.detail


def test_every_message_the_model_emits_parses(adapter: SimAdapter) -> None:
    model = MarketModel(SYMBOLS, seed=9)
    for i in range(100):
        for symbol in SYMBOLS:
            for message in model.step(symbol, 1_700_000_000_000_000 + i):
                update = parse_one(adapter, message)
                assert isinstance(update, Update)
                assert update.seq == message["seq"]
                assert update.data["ts"] == (1_700_000_000_000_000 + i) // 1000
    for topic in model.topics():
        snapshot = model.snapshot(topic, 5_000_000)
        if snapshot is not None:
            update = parse_one(adapter, snapshot)
            assert isinstance(update, Update) and update.snapshot


def _with(message: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    out = copy.deepcopy(message)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def _without(message: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = copy.deepcopy(message)
    target = out
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return out


MALFORMED: list[object] = [
    b"{not json",
    b"\xff\xfe",
    "",
    "[]",
    "42",
    '"text"',
    "null",
    {},
    {"op": "nonsense"},
    {"op": "heartbeat"},
    {"op": "heartbeat", "time": "now"},
    {"op": "subscribe", "args": []},
    {"op": "subscribe", "ok": "yes"},
    _with(TRADE, ("topic",), "trade.DOGE-USD"),
    _with(TRADE, ("topic",), 5),
    _with(TRADE, ("topic",), None),
    _with(TRADE, ("seq",), "41"),
    _with(TRADE, ("seq",), True),
    _with(TRADE, ("seq",), -1),
    _with(TRADE, ("seq",), 4.5),
    _without(TRADE, ("seq",)),
    _with(TRADE, ("kind",), "snapshot"),
    _with(TRADE, ("body",), []),
    _without(TRADE, ("body",)),
    _with(TRADE, ("body", "px"), 43000.5),
    _with(TRADE, ("body", "px"), "-1"),
    _with(TRADE, ("body", "px"), "1e5"),
    _with(TRADE, ("body", "px"), ""),
    _with(TRADE, ("body", "qty"), None),
    _with(TRADE, ("body", "taker"), "buy"),
    _with(TRADE, ("body", "id"), "981"),
    _with(TRADE, ("body", "time"), 1.5),
    _without(TRADE, ("body", "time")),
    _with(TICKER, ("kind",), "update"),
    _with(TICKER, ("body", "bid"), "43000.00"),
    _with(TICKER, ("body", "ask", "qty"), 0.8),
    _without(TICKER, ("body", "last")),
    _with(DEPTH_UPDATE, ("kind",), "delta"),
    _with(DEPTH_UPDATE, ("body", "bids"), {"2299.95": "0"}),
    _with(DEPTH_UPDATE, ("body", "bids"), [["2299.95"]]),
    _with(DEPTH_UPDATE, ("body", "bids"), [["2299.95", "0", "x"]]),
    _with(DEPTH_UPDATE, ("body", "bids"), [["2299.95", 0]]),
    _with(DEPTH_UPDATE, ("body", "asks"), [[2300.1, "2.25"]]),
    _with(DEPTH_UPDATE, ("body", "asks"), ["2300.10"]),
    _without(DEPTH_SNAPSHOT, ("body", "asks")),
]


@pytest.mark.parametrize("message", MALFORMED)
def test_malformed_raises_upstream_format_error(adapter: SimAdapter, message: object) -> None:
    frame = message if isinstance(message, str | bytes) else orjson.dumps(message)
    with pytest.raises(UpstreamFormatError):
        list(adapter.parse(frame))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.sampled_from(["trade.BTC-USD", "ticker.ETH-USD", "depth.BTC-USD", "update", "snapshot"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["op", "topic", "seq", "kind", "body", "ok", "time", "px", "bids"])
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def _parse_or_format_error(adapter: SimAdapter, frame: str | bytes) -> None:
    """Parse, tolerating only UpstreamFormatError; whatever parses must be well-typed."""
    try:
        events = list(adapter.parse(frame))
    except UpstreamFormatError:
        return
    for event in events:
        assert isinstance(event, Update | Heartbeat | Ack)
        if isinstance(event, Update):
            assert isinstance(event.data["ts"], int) and isinstance(event.seq, int)


@settings(max_examples=400, deadline=None)
@given(value=JSON)
def test_arbitrary_json_never_raises_anything_else(value: object) -> None:
    _parse_or_format_error(SimAdapter("sim", SYMBOLS), orjson.dumps(value))


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([TRADE, TICKER, DEPTH_SNAPSHOT, DEPTH_UPDATE]),
    path=st.sampled_from([("topic",), ("seq",), ("kind",), ("body",), ("body", "time")])
    | st.sampled_from([("body", k) for k in ("px", "qty", "taker", "id", "bid", "last", "bids")]),
    value=JSON,
)
def test_valid_messages_with_one_field_replaced_never_raise_anything_else(
    base: dict[str, Any], path: tuple[str, ...], value: object
) -> None:
    _parse_or_format_error(SimAdapter("sim", SYMBOLS), orjson.dumps(_with(base, path, value)))


@settings(max_examples=200, deadline=None)
@given(frame=st.binary(max_size=40) | st.text(max_size=40))
def test_arbitrary_frames_never_raise_anything_else(frame: str | bytes) -> None:
    _parse_or_format_error(SimAdapter("sim", SYMBOLS), frame)


_TEMPLATES = {"trade": TRADE, "ticker": TICKER, "depth": DEPTH_UPDATE}


def test_subscribe_frames_round_trip(adapter: SimAdapter) -> None:
    """The topics a subscribe frame names come back, in the sim's messages, as the very
    channels that were asked for."""
    channels = ["sim:trades:BTC-USD", "sim:book:ETH-USD", "sim:ticker:BTC-USD"]
    (frame,) = adapter.subscribe_frames(channels)
    request = orjson.loads(frame)
    assert request["op"] == "subscribe"
    assert request["args"] == ["trade.BTC-USD", "depth.ETH-USD", "ticker.BTC-USD"]
    back = []
    for topic in request["args"]:
        message = {**_TEMPLATES[topic.split(".")[0]], "topic": topic}
        update = parse_one(adapter, message)
        assert isinstance(update, Update)
        back.append(update.channel)
    assert back == channels
    (unframe,) = adapter.unsubscribe_frames(channels[:1])
    unrequest = orjson.loads(unframe)
    assert unrequest["op"] == "unsubscribe" and unrequest["args"] == ["trade.BTC-USD"]
    assert unrequest["req"] != request["req"]
    assert adapter.subscribe_frames([]) == []
    with pytest.raises(KeyError):
        adapter.subscribe_frames(["sim:book:DOGE-USD"])


def test_snapshot_requests_and_parse_snapshot(adapter: SimAdapter) -> None:
    rest = SimAdapter("sim", ["BTC-USD", "ETH-USD"], rest_url="http://127.0.0.1:9/")
    book = rest.http_repair(FetchSnapshot("sim:book:BTC-USD"))
    assert book is not None
    assert book.request == HttpRequest("GET", "http://127.0.0.1:9/api/snapshot?topic=depth.BTC-USD")
    ticker = rest.http_repair(FetchSnapshot("sim:ticker:ETH-USD"))
    assert ticker is not None
    assert ticker.request.url == "http://127.0.0.1:9/api/snapshot?topic=ticker.ETH-USD"
    assert rest.http_repair(FetchSnapshot("sim:trades:BTC-USD")) is None
    assert rest.http_repair(FetchItem("sim:book:BTC-USD", FetchByNumber(1))) is None
    assert adapter.http_repair(FetchSnapshot("sim:book:BTC-USD")) is None  # no rest_url
    eth_book = FetchSnapshot("sim:book:ETH-USD")
    eth = rest.http_repair(eth_book)
    assert eth is not None
    assert eth.parse(orjson.dumps(DEPTH_SNAPSHOT)) == rest.parse_snapshot(
        eth_book, orjson.dumps(DEPTH_SNAPSHOT)
    )
    update = adapter.parse_snapshot(eth_book, orjson.dumps(DEPTH_SNAPSHOT))
    assert update.snapshot and update.seq == 7 and update.channel == "sim:book:ETH-USD"
    assert update.data["bids"][0] == ["2300.00", "1.5000"]
    with pytest.raises(UpstreamFormatError):  # a snapshot of another topic
        adapter.parse_snapshot(FetchSnapshot("sim:book:BTC-USD"), orjson.dumps(DEPTH_SNAPSHOT))
    with pytest.raises(UpstreamFormatError):  # a delta is not a snapshot
        adapter.parse_snapshot(eth_book, orjson.dumps(DEPTH_UPDATE))
    with pytest.raises(UpstreamFormatError):
        adapter.parse_snapshot(eth_book, b'{"error": "no_snapshot"}')
    with pytest.raises(UpstreamFormatError):
        adapter.parse_snapshot(eth_book, b"<html>")


# What the log says -------------------------------------------------------------------------------
# A refusal's Ack detail and a format error's text are all an operator sees of them.


def _error(adapter: SimAdapter, message: object) -> str:
    with pytest.raises(UpstreamFormatError) as caught:
        adapter.parse(orjson.dumps(message))
    return str(caught.value)


def test_acks_say_what_was_asked_and_name_only_known_channels(adapter: SimAdapter) -> None:
    args = ["trade.BTC-USD", "trade.DOGE-USD"]
    assert parse_one(adapter, {"op": "subscribe", "ok": True, "args": args}) == Ack(
        True, f"subscribe {args!r}", ("sim:trades:BTC-USD",)
    )
    refused = {"op": "subscribe", "ok": False, "args": args, "error": "unknown_topic"}
    assert parse_one(adapter, refused) == Ack(
        False, "subscribe refused: 'unknown_topic'", ("sim:trades:BTC-USD",)
    )
    # Args that are not a list name no channel.
    assert parse_one(adapter, {"op": "subscribe", "ok": True, "args": "trade.BTC-USD"}) == Ack(
        True, "subscribe 'trade.BTC-USD'", ()
    )
    assert parse_one(adapter, {"op": "unsubscribe", "ok": True, "args": args[:1]}) == Ack(
        True, "unsubscribe ['trade.BTC-USD']", ()
    )
    assert parse_one(adapter, {"op": "error", "error": "bad_json"}) == Ack(
        False, "request rejected: 'bad_json'"
    )


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"op": "subscribe", "ok": "yes"}, "subscribe ack without a boolean 'ok'"),
        ({"op": "dance"}, "unknown message op 'dance'"),
        ({"op": "heartbeat"}, "'time' must be a non-negative integer, got None"),
        ({**TRADE, "topic": "trade.DOGE-USD"}, "unknown topic 'trade.DOGE-USD'"),
        ({**TRADE, "body": []}, "trade.BTC-USD: body is not an object"),
        ({**TRADE, "kind": "snapshot"}, "trade.BTC-USD: trade kind must be 'update'"),
        (_with(TRADE, ("body", "taker"), "X"), "trade.BTC-USD: taker must be 'B' or 'S'"),
        ({**TICKER, "kind": "update"}, "ticker.BTC-USD: ticker kind must be 'snapshot'"),
        (
            {**DEPTH_UPDATE, "kind": "delta"},
            "depth.ETH-USD: depth kind must be 'snapshot' or 'update'",
        ),
    ],
)
def test_format_errors_name_what_is_wrong(
    adapter: SimAdapter, message: dict[str, Any], text: str
) -> None:
    assert _error(adapter, message) == text


def test_a_snapshot_of_another_topic_or_kind_is_named(adapter: SimAdapter) -> None:
    book = FetchSnapshot("sim:book:BTC-USD")
    with pytest.raises(UpstreamFormatError) as caught:
        adapter.parse_snapshot(book, orjson.dumps(DEPTH_SNAPSHOT))
    assert str(caught.value) == "snapshot for 'depth.ETH-USD', not depth.BTC-USD"
    update = {**DEPTH_UPDATE, "topic": "depth.BTC-USD"}
    with pytest.raises(UpstreamFormatError) as caught:
        adapter.parse_snapshot(book, orjson.dumps(update))
    assert str(caught.value) == "REST snapshot without kind 'snapshot'"


def test_an_unknown_channel_is_named(adapter: SimAdapter) -> None:
    with pytest.raises(KeyError) as caught:
        adapter.topic("sim:book:DOGE-USD")
    assert caught.value.args == ("unknown channel 'sim:book:DOGE-USD'",)


def test_a_snapshot_url_quotes_every_character_of_the_topic() -> None:
    rest = SimAdapter("sim", ["BTC/USD"], rest_url="http://127.0.0.1:9")
    how = rest.http_repair(FetchSnapshot("sim:book:BTC/USD"))
    assert how is not None
    assert how.request.url == "http://127.0.0.1:9/api/snapshot?topic=depth.BTC%2FUSD"


def test_defaults_are_the_markets_heartbeat_and_no_rest() -> None:
    adapter = SimAdapter("sim", SYMBOLS)
    assert adapter.heartbeat_interval == 1.0
    assert adapter.http_repair(FetchSnapshot("sim:book:BTC-USD")) is None


def test_only_the_trailing_slash_of_the_rest_url_is_dropped() -> None:
    rest = SimAdapter("sim", SYMBOLS, rest_url="http://marketX/")
    how = rest.http_repair(FetchSnapshot("sim:book:BTC-USD"))
    assert how is not None
    assert how.request.url == "http://marketX/api/snapshot?topic=depth.BTC-USD"
