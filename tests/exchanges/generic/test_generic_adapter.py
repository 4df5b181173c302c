"""The generic JSON adapter without sockets: the synthetic market's spec
(examples/json-sim.toml) normalizes the market's documented messages exactly, anything malformed
is an UpstreamFormatError whose text names where and what, and the spec's other options
(id-correlated acks, one frame per topic, arrays of trades, levels as objects, exact numbers,
books the relay numbers itself, every unit of time, REST snapshots). The configuration table's
own checks are in test_generic_spec.py."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest

from relay.adapters.base import Adapter, HttpRequest
from relay.adapters.generic import (
    MISSING,
    GenericJsonAdapter,
    JsonPointer,
    as_text,
)
from relay.core.chain import FetchByNumber
from relay.core.model import Ack, Heartbeat, RepairKind, StreamKind, Update, UpstreamFormatError
from relay.core.source import BookRules, FetchItem, FetchSnapshot
from tests.exchanges.generic.specs import load_spec, sim_pair, sim_table

SYMBOLS = ["BTC-USD", "ETH-USD"]
REST = "http://127.0.0.1:8766"

# The message shapes of docs/simulator.md, with values of our own.
TRADE = {
    "topic": "trade.BTC-USD",
    "seq": 41,
    "kind": "update",
    "body": {"px": "43000.50", "qty": "0.0123", "taker": "S", "id": 981, "time": 1763712000123456},
}
TICKER = {
    "topic": "ticker.ETH-USD",
    "seq": 12,
    "kind": "snapshot",
    "body": {
        "bid": {"px": "2300.00", "qty": "1.5000"},
        "ask": {"px": "2300.05", "qty": "0.8000"},
        "last": "2300.05",
        "time": 1763712000999999,
    },
}
DEPTH_SNAPSHOT = {
    "topic": "depth.BTC-USD",
    "seq": 7,
    "kind": "snapshot",
    "body": {
        "bids": [["43000.00", "1.5000"], ["42999.50", "0.1000"]],
        "asks": [["43000.50", "0.8000"]],
        "time": 1763712000000001,
    },
}
DEPTH_UPDATE = {
    "topic": "depth.BTC-USD",
    "seq": 8,
    "kind": "update",
    "body": {
        "bids": [["42999.50", "0"]],
        "asks": [["43001.00", "2.2500"]],
        "time": 1763712001000000,
    },
}


@pytest.fixture
def adapter() -> GenericJsonAdapter:
    return GenericJsonAdapter("sim", load_spec(sim_table()), SYMBOLS, 0.5, REST)


def parse(adapter: GenericJsonAdapter, message: object) -> list[Any]:
    return list(adapter.parse(orjson.dumps(message)))


def with_value(message: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy with the value at a JSON pointer replaced (or removed, for MISSING)."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(message))
    *parents, last = JsonPointer(path).tokens
    target: Any = copy
    for token in parents:
        target = target[int(token)] if isinstance(target, list) else target[token]
    if value is MISSING:
        del target[int(last) if isinstance(target, list) else last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return copy


# Catalogue and requests -----------------------------------------------------------------------


def test_satisfies_the_adapter_protocol(adapter: GenericJsonAdapter) -> None:
    as_protocol: Adapter = adapter
    assert as_protocol.source == "sim"
    assert as_protocol.heartbeat_interval == 0.5
    assert as_protocol.probe_frame() is None


def test_channels_kinds_and_repairs(adapter: GenericJsonAdapter) -> None:
    assert adapter.channels() == {
        f"sim:{stream}:{symbol}" for stream in ("trades", "ticker", "book") for symbol in SYMBOLS
    }
    assert adapter.kind("sim:trades:BTC-USD") is StreamKind.EVENT
    assert adapter.kind("sim:ticker:ETH-USD") is StreamKind.STATE
    assert adapter.kind("sim:book:ETH-USD") is StreamKind.BOOK
    assert adapter.kind("sim:book:DOGE-USD") is None
    assert adapter.kind("other:book:BTC-USD") is None
    assert adapter.repair("sim:book:BTC-USD") is RepairKind.REST_SNAPSHOT
    assert adapter.repair("sim:trades:BTC-USD") is RepairKind.NONE
    assert adapter.repair("sim:ticker:BTC-USD") is RepairKind.NONE
    assert adapter.book_rules("sim:book:BTC-USD") == BookRules()
    assert adapter.topic("sim:book:ETH-USD") == "depth.ETH-USD"
    with pytest.raises(KeyError):
        adapter.topic("sim:book:DOGE-USD")


def test_requests_are_the_sim_adapters_byte_for_byte() -> None:
    sim, generic = sim_pair(SYMBOLS)
    channels = ["sim:trades:BTC-USD", "sim:book:ETH-USD", "sim:ticker:BTC-USD"]
    for _ in range(2):
        assert generic.subscribe_frames(channels) == sim.subscribe_frames(channels)
        assert generic.unsubscribe_frames(channels[:1]) == sim.unsubscribe_frames(channels[:1])
    assert generic.subscribe_frames([]) == []
    assert orjson.loads(generic.subscribe_frames(channels[:1])[0]) == {
        "op": "subscribe",
        "args": ["trade.BTC-USD"],
        "req": 5,
    }
    with pytest.raises(KeyError):
        generic.subscribe_frames(["sim:trades:DOGE-USD"])


# Acks and heartbeats ---------------------------------------------------------------------------


def test_acks_name_the_channels_they_answer(adapter: GenericJsonAdapter) -> None:
    adapter.subscribe_frames(["sim:trades:BTC-USD", "sim:book:ETH-USD"])
    [ack] = parse(
        adapter,
        {"op": "subscribe", "req": 1, "ok": True, "args": ["trade.BTC-USD", "depth.ETH-USD"]},
    )
    assert ack == Ack(
        True, "ok: ['trade.BTC-USD', 'depth.ETH-USD']", ("sim:trades:BTC-USD", "sim:book:ETH-USD")
    )
    refused = {
        "op": "subscribe",
        "req": 2,
        "ok": False,
        "args": ["trade.BTC-USD", "trade.DOGE-USD"],
        "error": "unknown_topic",
        "unknown": ["trade.DOGE-USD"],
    }
    assert parse(adapter, refused) == [
        Ack(False, "refused: 'unknown_topic'", ("sim:trades:BTC-USD",))
    ]
    # An unsubscribe's answer names no channel: it must not count for a new subscribe of it.
    unsubscribed = {"op": "unsubscribe", "req": 3, "ok": True, "args": ["ticker.ETH-USD"]}
    assert parse(adapter, unsubscribed)[0].channels == ()


def test_an_ack_without_topics_is_correlated_by_its_request_id(
    adapter: GenericJsonAdapter,
) -> None:
    adapter.subscribe_frames(["sim:trades:BTC-USD"])
    adapter.subscribe_frames(["sim:ticker:ETH-USD", "sim:book:ETH-USD"])
    # The market echoes "req"; without "args" the request id names the channels.
    [ack] = parse(adapter, {"op": "subscribe", "req": 2, "ok": False, "error": "bad_args"})
    assert ack == Ack(False, "refused: 'bad_args'", ("sim:ticker:ETH-USD", "sim:book:ETH-USD"))
    [error] = parse(adapter, {"op": "error", "error": "unknown_op", "req": 1})
    assert error == Ack(False, "refused: 'unknown_op'", ("sim:trades:BTC-USD",))
    # Answered once: a second answer to the same request names nothing.
    assert parse(adapter, {"op": "error", "error": "unknown_op", "req": 1})[0].channels == ()
    assert parse(adapter, {"op": "error", "error": "bad_json"}) == [
        Ack(False, "refused: 'bad_json'", ())
    ]
    adapter.subscribe_frames(["sim:trades:ETH-USD"])
    adapter.reset()  # a new connection: the old requests will never be answered
    assert parse(adapter, {"op": "subscribe", "req": 3, "ok": True})[0].channels == ()


def test_heartbeats_and_pongs(adapter: GenericJsonAdapter) -> None:
    assert parse(adapter, {"op": "heartbeat", "time": 1763712000123456}) == [Heartbeat()]
    assert parse(adapter, {"op": "pong", "req": 9}) == [Heartbeat()]


# Data --------------------------------------------------------------------------------------------


def test_trade_is_normalized_exactly(adapter: GenericJsonAdapter) -> None:
    assert parse(adapter, TRADE) == [
        Update(
            "sim:trades:BTC-USD",
            {
                "symbol": "BTC-USD",
                "price": "43000.50",
                "size": "0.0123",
                "side": "sell",
                "trade_id": "981",
                "ts": 1763712000123,
            },
            41,
            snapshot=False,
        )
    ]
    [buy] = parse(adapter, with_value(TRADE, "/body/taker", "B"))
    assert buy.data["side"] == "buy"


def test_ticker_is_normalized_exactly_and_is_whole_state(adapter: GenericJsonAdapter) -> None:
    assert parse(adapter, TICKER) == [
        Update(
            "sim:ticker:ETH-USD",
            {
                "symbol": "ETH-USD",
                "bid": "2300.00",
                "bid_size": "1.5000",
                "ask": "2300.05",
                "ask_size": "0.8000",
                "last": "2300.05",
                "ts": 1763712000999,
            },
            12,
            snapshot=True,
        )
    ]


def test_book_snapshot_and_delta_are_normalized_exactly(adapter: GenericJsonAdapter) -> None:
    assert parse(adapter, DEPTH_SNAPSHOT) == [
        Update(
            "sim:book:BTC-USD",
            {
                "symbol": "BTC-USD",
                "bids": [["43000.00", "1.5000"], ["42999.50", "0.1000"]],
                "asks": [["43000.50", "0.8000"]],
                "ts": 1763712000000,
            },
            7,
            snapshot=True,
        )
    ]
    assert parse(adapter, DEPTH_UPDATE) == [
        Update(
            "sim:book:BTC-USD",
            {
                "symbol": "BTC-USD",
                "bids": [["42999.50", "0"]],
                "asks": [["43001.00", "2.2500"]],
                "ts": 1763712001000,
            },
            8,
            snapshot=False,
        )
    ]


@pytest.mark.parametrize(
    ("message", "path", "value", "error"),
    [
        (TRADE, "/topic", "trade.DOGE-USD", "unknown topic 'trade.DOGE-USD'"),
        (
            TRADE,
            "/topic",
            5,
            "neither data, an ack nor a heartbeat: "
            "{'topic': 5, 'seq': 41, 'kind': 'update', 'body': {'px': '43000.50', 'qty': '...",
        ),
        (
            TRADE,
            "/topic",
            MISSING,
            "neither data, an ack nor a heartbeat: "
            "{'seq': 41, 'kind': 'update', 'body': {'px': '43000.50', 'qty': '0.0123', 'ta...",
        ),
        (TRADE, "/kind", "snapshot", "trade.BTC-USD: /kind is 'snapshot', not one expected"),
        (TRADE, "/seq", -1, "trade.BTC-USD: seq must be a non-negative integer, got -1"),
        (TRADE, "/seq", True, "trade.BTC-USD: seq must be a non-negative integer, got True"),
        (TRADE, "/seq", "41", "trade.BTC-USD: seq must be a non-negative integer, got '41'"),
        (
            TRADE,
            "/seq",
            MISSING,
            "trade.BTC-USD: seq must be a non-negative integer, got <missing>",
        ),
        (TRADE, "/body", [1], "trade.BTC-USD: payload is not an object"),
        (
            TRADE,
            "/body/px",
            43000.5,
            "trade.BTC-USD: price must be a decimal string (a JSON number: see exact_numbers), "
            "got 43000.5",
        ),
        (TRADE, "/body/px", "4.3e4", "trade.BTC-USD: price must be a decimal string, got '4.3e4'"),
        (TRADE, "/body/px", "-1", "trade.BTC-USD: price must be a decimal string, got '-1'"),
        (
            TRADE,
            "/body/qty",
            MISSING,
            "trade.BTC-USD: size must be a decimal string, got <missing>",
        ),
        (TRADE, "/body/taker", "X", "trade.BTC-USD: side 'X' is not a known side"),
        (TRADE, "/body/taker", None, "trade.BTC-USD: side None is not a known side"),
        (TRADE, "/body/taker", MISSING, "trade.BTC-USD: side <missing> is not a known side"),
        (
            TRADE,
            "/body/id",
            True,
            "trade.BTC-USD: trade_id must be a string or an integer, got True",
        ),
        (TRADE, "/body/id", -3, "trade.BTC-USD: trade_id must be a string or an integer, got -3"),
        (TRADE, "/body/id", "", "trade.BTC-USD: trade_id must be a string or an integer, got ''"),
        (
            TRADE,
            "/body/time",
            "soon",
            "trade.BTC-USD: time must be a non-negative number of us, got 'soon'",
        ),
        (
            TRADE,
            "/body/time",
            -5,
            "trade.BTC-USD: time must be a non-negative number of us, got -5",
        ),
        (
            TRADE,
            "/body/time",
            MISSING,
            "trade.BTC-USD: time must be a non-negative number of us, got <missing>",
        ),
        (TICKER, "/kind", "update", "ticker.ETH-USD: /kind is 'update', not one expected"),
        (TICKER, "/body", "bid", "ticker.ETH-USD: payload is not an object"),
        (
            TICKER,
            "/body/time",
            MISSING,
            "ticker.ETH-USD: time must be a non-negative number of us, got <missing>",
        ),
        (
            TICKER,
            "/body/bid",
            "2300.00",
            "ticker.ETH-USD: bid must be a decimal string, got <missing>",
        ),
        (
            TICKER,
            "/body/last",
            MISSING,
            "ticker.ETH-USD: last must be a decimal string, got <missing>",
        ),
        (DEPTH_UPDATE, "/kind", "partial", "depth.BTC-USD: /kind is 'partial', not one expected"),
        (DEPTH_UPDATE, "/body", [], "depth.BTC-USD: payload is not an object"),
        (
            DEPTH_UPDATE,
            "/body/bids",
            {"42999.50": "0"},
            "depth.BTC-USD: bids must be a list of levels",
        ),
        (
            DEPTH_UPDATE,
            "/body/bids/0",
            ["42999.50"],
            "depth.BTC-USD: bids size must be a decimal string, got <missing>",
        ),
        (
            DEPTH_UPDATE,
            "/body/bids/0",
            "42999.50",
            "depth.BTC-USD: bids price must be a decimal string, got <missing>",
        ),
        (
            DEPTH_UPDATE,
            "/body/asks/0/1",
            None,
            "depth.BTC-USD: asks size must be a decimal string, got None",
        ),
        (DEPTH_UPDATE, "/body/asks", MISSING, "depth.BTC-USD: asks must be a list of levels"),
        (
            DEPTH_SNAPSHOT,
            "/body/bids/1/0",
            "NaN",
            "depth.BTC-USD: bids price must be a decimal string, got 'NaN'",
        ),
    ],
)
def test_malformed_data_is_an_upstream_format_error(
    adapter: GenericJsonAdapter, message: dict[str, Any], path: str, value: Any, error: str
) -> None:
    """The error's text is all the log says of a bad frame: it names where and what."""
    with pytest.raises(UpstreamFormatError) as caught:
        parse(adapter, with_value(message, path, value))
    assert str(caught.value) == error


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"", "not JSON: "),
        (b"not json", "not JSON: "),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"{}", "neither data, an ack nor a heartbeat: {}"),
        (b'{"op": "bogus"}', "neither data, an ack nor a heartbeat: {'op': 'bogus'}"),
        (b'{"topic": "trade.BTC', "not JSON: "),
    ],
)
def test_frames_that_are_nothing_known_are_upstream_format_errors(
    adapter: GenericJsonAdapter, frame: bytes, error: str
) -> None:
    with pytest.raises(UpstreamFormatError) as caught:
        adapter.parse(frame)
    if error == "not JSON: ":  # the rest is the JSON parser's own words
        assert str(caught.value).startswith(error)
    else:
        assert str(caught.value) == error


@pytest.mark.parametrize(
    ("unit", "time", "ms"),
    [
        ("s", 1700000000, 1700000000000),
        ("s", 1700000000.25, 1700000000250),
        ("s", "1700000000.25", 1700000000250),
        ("s", "0.5", 500),
        ("ms", 0, 0),
        ("ms", 0.0, 0),
        ("ms", "0", 0),
        ("ms", 1763712000123, 1763712000123),
        # Rounded down, never to the nearest millisecond.
        ("us", "1763712000123999", 1763712000123),
        ("us", 1763712000123999, 1763712000123),
        ("ns", 1763712000123999999, 1763712000123),
        ("ns", "1763712000123999999.5", 1763712000123),
        ("iso", "1970-01-01T00:00:00Z", 0),
        ("iso", "2024-01-02T03:04:05.678+01:00", 1704161045678),
        ("iso", "2024-01-02T02:04:05.6789", 1704161045678),  # no zone: UTC
    ],
)
def test_every_unit_of_time_is_read_as_milliseconds(unit: str, time: Any, ms: int) -> None:
    adapter = GenericJsonAdapter(
        "sim", load_spec({**sim_table(), "time_unit": unit}), SYMBOLS, 1.0, REST
    )
    [trade] = parse(adapter, with_value(TRADE, "/body/time", time))
    assert trade.data["ts"] == ms


@pytest.mark.parametrize(
    ("unit", "time", "error"),
    [
        ("s", -0.5, "time must be a non-negative number of s, got -0.5"),
        ("ms", True, "time must be a non-negative number of ms, got True"),
        ("ms", "1e3", "time must be a non-negative number of ms, got '1e3'"),
        ("ns", [1], "time must be a non-negative number of ns, got [1]"),
        ("iso", "yesterday", "time must be ISO 8601 text, got 'yesterday'"),
        ("iso", 1704164645678, "time must be ISO 8601 text, got 1704164645678"),
        (
            "iso",
            "1969-12-31T23:59:59.999Z",
            "time must be ISO 8601 text, got '1969-12-31T23:59:59.999Z'",
        ),
    ],
)
def test_a_time_that_is_not_one_of_its_unit_is_malformed(unit: str, time: Any, error: str) -> None:
    adapter = GenericJsonAdapter(
        "sim", load_spec({**sim_table(), "time_unit": unit}), SYMBOLS, 1.0, REST
    )
    with pytest.raises(UpstreamFormatError) as caught:
        parse(adapter, with_value(TRADE, "/body/time", time))
    assert str(caught.value) == f"trade.BTC-USD: {error}"


def test_a_stream_may_have_its_own_seq_payload_and_time(adapter: GenericJsonAdapter) -> None:
    table = sim_table()
    table["streams"]["trades"] |= {"seq": "/n", "payload": "/trade", "time": "/trade/time"}
    own = GenericJsonAdapter("sim", load_spec(table), SYMBOLS, 1.0, REST)
    message = {"topic": "trade.BTC-USD", "n": 77, "kind": "update", "trade": TRADE["body"]}
    assert parse(own, message) == parse(adapter, {**TRADE, "seq": 77})


def test_a_time_in_the_payload_comes_before_the_tables() -> None:
    table = sim_table()
    table["streams"]["book"]["fields"]["ts"] = "/at"
    del table["rest"]["time"]  # the snapshot's time is read the same way
    adapter = GenericJsonAdapter("sim", load_spec(table), SYMBOLS, 1.0, REST)
    delta = with_value(DEPTH_UPDATE, "/body/at", 1763712000555000)
    [update] = parse(adapter, delta)
    assert update.data["ts"] == 1763712000555
    how = adapter.http_repair(FetchSnapshot("sim:book:BTC-USD"))
    assert how is not None
    assert how.parse(orjson.dumps(delta | {"kind": "snapshot"})).data["ts"] == 1763712000555
    with pytest.raises(UpstreamFormatError) as caught:
        parse(adapter, DEPTH_UPDATE)
    assert str(caught.value) == (
        "depth.BTC-USD: time must be a non-negative number of us, got <missing>"
    )


def test_a_condition_on_the_whole_message_names_it_so() -> None:
    table = sim_table()
    table["streams"]["trades"]["expect"] = [{"pointer": "", "values": ["{}"]}]
    adapter = GenericJsonAdapter("sim", load_spec(table), SYMBOLS, 1.0, REST)
    with pytest.raises(UpstreamFormatError) as caught:
        parse(adapter, TRADE)
    text = str(caught.value)
    assert text.startswith("trade.BTC-USD: the message is {'topic': 'trade.BTC-USD', ")
    assert text.endswith(", not one expected")


def test_rule_values_compare_json_values_as_their_text() -> None:
    assert [as_text(v) for v in ("x", True, None, 42, 2.5, [1, "a"])] == [
        "x",
        "true",
        "null",
        "42",
        "2.5",
        '[1,"a"]',
    ]
    # Beyond 64 bits (kept by the exact-number parser): its decimal digits all the same.
    assert as_text(2**64) == "18446744073709551616"
    table = {**OTHER, "ignore": [{"pointer": "/code", "values": ["18446744073709551616"]}]}
    adapter = GenericJsonAdapter("x", load_spec(table), ["BTC-USDT"], 5.0, None)
    assert adapter.parse(b'{"code": 18446744073709551616}') == []


# REST snapshots ----------------------------------------------------------------------------------


def test_http_repair_fetches_the_books_rest_snapshot(adapter: GenericJsonAdapter) -> None:
    repair = FetchSnapshot("sim:book:BTC-USD")
    how = adapter.http_repair(repair)
    assert how is not None
    assert how.request == HttpRequest("GET", f"{REST}/api/snapshot?topic=depth.BTC-USD")
    body = orjson.dumps({**DEPTH_SNAPSHOT, "seq": 19})
    assert how.parse(body) == Update(
        "sim:book:BTC-USD",
        {
            "symbol": "BTC-USD",
            "bids": [["43000.00", "1.5000"], ["42999.50", "0.1000"]],
            "asks": [["43000.50", "0.8000"]],
            "ts": 1763712000000,
        },
        19,
        snapshot=True,
    )
    assert adapter.http_repair(FetchSnapshot("sim:trades:BTC-USD")) is None
    assert adapter.http_repair(FetchItem("sim:book:BTC-USD", FetchByNumber(1))) is None
    no_rest = GenericJsonAdapter(
        "sim", attrs.evolve(load_spec(sim_table()), rest=None), SYMBOLS, 1.0, None
    )
    assert no_rest.http_repair(repair) is None
    assert no_rest.repair("sim:book:BTC-USD") is RepairKind.RESUBSCRIBE


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("/topic", "depth.ETH-USD", "snapshot of depth.BTC-USD: it is about 'depth.ETH-USD'"),
        ("/topic", MISSING, "snapshot of depth.BTC-USD: it is about <missing>"),
        ("/kind", "update", "snapshot of depth.BTC-USD: /kind is 'update', not one expected"),
        (
            "/seq",
            MISSING,
            "snapshot of depth.BTC-USD: seq must be a non-negative integer, got <missing>",
        ),
        ("/body", None, "snapshot of depth.BTC-USD: payload is not an object"),
        ("/body/asks", "none", "snapshot of depth.BTC-USD: asks must be a list of levels"),
        ("/body/bids", MISSING, "snapshot of depth.BTC-USD: bids must be a list of levels"),
        (
            "/body/time",
            MISSING,
            "snapshot of depth.BTC-USD: time must be a non-negative number of us, got <missing>",
        ),
    ],
)
def test_a_bad_rest_snapshot_is_an_upstream_format_error(
    adapter: GenericJsonAdapter, path: str, value: Any, error: str
) -> None:
    how = adapter.http_repair(FetchSnapshot("sim:book:BTC-USD"))
    assert how is not None
    with pytest.raises(UpstreamFormatError) as caught:
        how.parse(orjson.dumps(with_value(DEPTH_SNAPSHOT, path, value)))
    assert str(caught.value) == error
    with pytest.raises(UpstreamFormatError, match=r"^not JSON: "):
        how.parse(b"<html>busy</html>")


def test_rest_urls_are_built_from_every_placeholder_quoted_whole() -> None:
    table = sim_table()
    table["rest"]["url"] = "{rest_url}/book/{base}/{quote}?s={symbol}&t={topic}"
    table["symbol_overrides"] = {"A/B-C/D": "ab/cd"}
    # {rest_url} is the rest_url as configured, without its trailing "/" (if it has one).
    for rest_url in (f"{REST}/FX", f"{REST}/FX/"):
        adapter = GenericJsonAdapter("sim", load_spec(table), ["A/B-C/D"], 1.0, rest_url)
        how = adapter.http_repair(FetchSnapshot("sim:book:A/B-C/D"))
        assert how is not None
        assert how.request == HttpRequest(
            "GET", f"{REST}/FX/book/A%2FB/C%2FD?s=ab%2Fcd&t=depth.ab%2Fcd"
        )


def test_a_rest_snapshot_may_have_its_own_unit_of_time() -> None:
    table = sim_table()
    table["rest"]["time_unit"] = "ms"
    adapter = GenericJsonAdapter("sim", load_spec(table), SYMBOLS, 1.0, REST)
    how = adapter.http_repair(FetchSnapshot("sim:book:BTC-USD"))
    assert how is not None
    body = with_value(DEPTH_SNAPSHOT, "/body/time", 1763712000123)
    assert how.parse(orjson.dumps(body)).data["ts"] == 1763712000123


def test_only_a_configured_book_has_a_rest_snapshot(adapter: GenericJsonAdapter) -> None:
    no_rest = GenericJsonAdapter(
        "sim", attrs.evolve(load_spec(sim_table()), rest=None), SYMBOLS, 1.0, REST
    )
    assert no_rest.http_repair(FetchSnapshot("sim:book:BTC-USD")) is None
    assert adapter.http_repair(FetchSnapshot("sim:book:DOGE-USD")) is None
    assert adapter.book_rules("sim:book:DOGE-USD") == BookRules()
    body = orjson.dumps(DEPTH_SNAPSHOT)
    for source, channel in (
        (no_rest, "sim:book:BTC-USD"),
        (adapter, "sim:trades:BTC-USD"),
        (adapter, "sim:book:DOGE-USD"),
    ):
        with pytest.raises(UpstreamFormatError) as caught:
            source.parse_snapshot(FetchSnapshot(channel), body)
        assert str(caught.value) == f"no REST snapshot is configured for {channel}"


# JSON pointers -----------------------------------------------------------------------------------


def test_json_pointers_resolve_as_rfc_6901_says() -> None:
    # The example document and pointers of RFC 6901, section 5.
    document = {
        "foo": ["bar", "baz"],
        "": 0,
        "a/b": 1,
        "c%d": 2,
        "e^f": 3,
        "g|h": 4,
        "i\\j": 5,
        'k"l': 6,
        " ": 7,
        "m~n": 8,
    }
    expected = {
        "": document,
        "/foo": ["bar", "baz"],
        "/foo/0": "bar",
        "/": 0,
        "/a~1b": 1,
        "/c%d": 2,
        "/e^f": 3,
        "/g|h": 4,
        "/i\\j": 5,
        '/k"l': 6,
        "/ ": 7,
        "/m~0n": 8,
    }
    for text, value in expected.items():
        assert JsonPointer(text).resolve(document) == value, text
    # "~01" is "~1" (unescaped ~1 first), not "/".
    assert JsonPointer("/~01").resolve({"~1": "tilde-one", "/": "slash"}) == "tilde-one"
    for nothing in ("/foo/2", "/foo/-", "/foo/01", "/foo/+1", "/foo/0/x", "/nope", "/a~1b/c"):
        assert JsonPointer(nothing).resolve(document) is MISSING, nothing
    for bad in ("foo", "/a~2", "/a~", "~0"):
        with pytest.raises(ValueError):
            JsonPointer(bad)


def test_the_adapter_refuses_what_the_spec_alone_cannot_check() -> None:
    spec = load_spec(sim_table())
    with pytest.raises(ValueError, match="rest_url"):
        GenericJsonAdapter("sim", spec, SYMBOLS, 1.0, None)
    with pytest.raises(ValueError, match="':'"):
        GenericJsonAdapter("s:m", spec, SYMBOLS, 1.0, REST)
    with pytest.raises(ValueError, match="not BASE-QUOTE"):
        GenericJsonAdapter("sim", spec, ["BTCUSD"], 1.0, REST)
    lower = attrs.evolve(spec, symbol_case="lower")
    with pytest.raises(ValueError, match=r"share the upstream topic 'trade\.btc-usd'"):
        GenericJsonAdapter("sim", lower, ["BTC-USD", "btc-usd"], 1.0, REST)


def symbol_spec(**where: str) -> dict[str, Any]:
    """The sim table with the upstream symbol the relay's own (``{symbol}``) and the given
    dotted keys set, e.g. ``{"rest.url": ...}``."""
    table = sim_table()
    table["symbol"] = "{symbol}"
    for key, value in where.items():
        *parents, last = key.split(".")
        target = table
        for name in parents:
            target = target[name]
        target[last] = value
    return table


def test_symbol_parts_are_needed_only_where_a_template_uses_them() -> None:
    table = symbol_spec(symbol_case="lower")
    adapter = GenericJsonAdapter("sim", load_spec(table), ["BTC-USD", "BTCUSD"], 1.0, REST)
    assert adapter.topic("sim:trades:BTC-USD") == "trade.btc-usd"
    assert adapter.topic("sim:book:BTCUSD") == "depth.btcusd"


@pytest.mark.parametrize(
    "where",
    [
        {"symbol": "{base}-{quote}"},
        {"streams.book.route": "depth.{symbol}.{base}"},
        {"streams.book.route": "depth.{symbol}.{quote}"},
        {"rest.url": "{rest_url}/book/{base}?topic={topic}"},
        {"rest.url": "{rest_url}/book/{quote}?topic={topic}"},
    ],
)
@pytest.mark.parametrize("symbol", ["BTCUSD", "-USD", "BTC-"])
def test_a_symbol_that_is_not_base_quote_is_refused_where_a_template_needs_its_parts(
    where: dict[str, str], symbol: str
) -> None:
    spec = load_spec(symbol_spec(**where))
    with pytest.raises(ValueError) as caught:
        GenericJsonAdapter("sim", spec, [symbol], 1.0, REST)
    assert str(caught.value) == (
        f"source 'sim': symbol {symbol!r} is not BASE-QUOTE, which the json templates' "
        "{base} and {quote} need"
    )


def test_the_base_ends_at_the_first_dash() -> None:
    spec = load_spec(symbol_spec(symbol="{base}_{quote}"))
    adapter = GenericJsonAdapter("sim", spec, ["ETH-USD-PERP"], 1.0, REST)
    assert adapter.topic("sim:trades:ETH-USD-PERP") == "trade.ETH_USD-PERP"


# Other shapes of upstream ------------------------------------------------------------------------

# An upstream of another shape: one subscribe per topic acknowledged by request id only, lower-case
# symbols with an underscore, trades in arrays with ISO times and a boolean side, a ticker with a
# JSON number, books with levels as objects and no sequence numbers, informational messages, and a
# ping the relay sends to prove the upstream alive.
OTHER: dict[str, Any] = {
    "symbol": "{base}_{quote}",
    "symbol_case": "lower",
    "symbol_overrides": {"XBT-USD": "btc_usd"},
    "subscribe": '{"type":"sub","channel":{topic},"rid":{id}}',
    "unsubscribe": '{"type":"unsub","channels":{topics},"rid":{id}}',
    "max_topics": 2,
    "probe": '{"type":"ping","rid":{id}}',
    "topic": "/ch",
    "payload": "/data",
    "time": "/ts",
    "time_unit": "ms",
    "exact_numbers": True,
    "heartbeat": [{"pointer": "/type", "values": ["hb", "pong"]}],
    "ignore": [{"pointer": "/type", "values": ["info"]}],
    "acks": [
        {
            "when": [{"pointer": "/type", "values": ["ack", "error"]}, {"pointer": "/rid"}],
            "ok": {"pointer": "/type", "values": ["ack"]},
            "id": "/rid",
            "detail": "/message",
        }
    ],
    "streams": {
        "trades": {
            "kind": "event",
            "topic": "trades:{symbol}",
            "fields": {
                "price": "/p",
                "size": "/q",
                "side": "/m",
                "trade_id": "/tid",
                "ts": "/t",
            },
            "time_unit": "iso",
            "batch": True,
            # "m": the buyer was the maker, so the taker sold.
            "sides": {"true": "sell", "false": "buy"},
        },
        "ticker": {
            "kind": "state",
            "topic": "quote:{symbol}",
            "fields": {
                "bid": "/b/0",
                "bid_size": "/b/1",
                "ask": "/a/0",
                "ask_size": "/a/1",
                "last": "/l",
            },
        },
        "book": {
            "kind": "book",
            "topic": "depth:{base}{quote}",
            "route": "depth:{symbol}",
            "snapshot": {"pointer": "/action", "values": ["full"]},
            "expect": [{"pointer": "/action", "values": ["full", "diff"]}],
            "fields": {"bids": "/buy", "asks": "/sell"},
            "level_price": "/px",
            "level_size": "/qty",
            "time": "/data/at",
            "time_unit": "s",
            "depth": 25,
        },
    },
}


@pytest.fixture
def other() -> GenericJsonAdapter:
    return GenericJsonAdapter("x", load_spec(OTHER), ["BTC-USDT", "XBT-USD"], 5.0, None)


def test_other_shape_topics_requests_and_probe(other: GenericJsonAdapter) -> None:
    assert other.topic("x:trades:BTC-USDT") == "trades:btc_usdt"
    assert other.topic("x:trades:XBT-USD") == "trades:btc_usd"  # the override
    assert other.topic("x:book:BTC-USDT") == "depth:btcusdt"
    assert other.repair("x:book:BTC-USDT") is RepairKind.RESUBSCRIBE
    assert other.book_rules("x:book:BTC-USDT") == BookRules(depth=25)
    assert other.http_repair(FetchSnapshot("x:book:BTC-USDT")) is None
    channels = ["x:trades:BTC-USDT", "x:ticker:BTC-USDT", "x:book:XBT-USD"]
    assert other.subscribe_frames(channels) == [
        '{"type":"sub","channel":"trades:btc_usdt","rid":1}',
        '{"type":"sub","channel":"quote:btc_usdt","rid":2}',
        '{"type":"sub","channel":"depth:xbtusd","rid":3}',
    ]
    assert other.unsubscribe_frames(channels) == [
        '{"type":"unsub","channels":["trades:btc_usdt","quote:btc_usdt"],"rid":4}',
        '{"type":"unsub","channels":["depth:xbtusd"],"rid":5}',
    ]
    assert other.probe_frame() == '{"type":"ping","rid":6}'
    assert other.parse(b'{"type":"ack","rid":3}') == [
        Ack(True, "ok: " + repr({"type": "ack", "rid": 3}), ("x:book:XBT-USD",))
    ]
    # Request 4 was an unsubscribe: its answer, even a refusal, names no channel.
    [refused] = other.parse(b'{"type":"error","rid":4,"message":"not subscribed"}')
    assert refused == Ack(False, "refused: 'not subscribed'", ())
    assert other.parse(b'{"type":"pong","rid":6}') == [Heartbeat()]
    assert other.parse(b'{"type":"hb"}') == [Heartbeat()]
    assert other.parse(b'{"type":"info","message":"maintenance at noon"}') == []
    with pytest.raises(UpstreamFormatError):
        other.parse(b'{"type":"error","message":"no rid: neither an ack nor data"}')


def test_other_shape_trades_come_in_arrays(other: GenericJsonAdapter) -> None:
    frame = {
        "ch": "trades:btc_usdt",
        "data": [
            {"p": "100.5", "q": "0.25", "m": True, "tid": "t-1", "t": "2024-01-02T03:04:05.678Z"},
            {"p": 100.75, "q": 2, "m": False, "tid": 7, "t": "2024-01-02T03:04:05.6789"},
        ],
    }
    assert parse(other, frame) == [
        Update(
            "x:trades:BTC-USDT",
            {
                "symbol": "BTC-USDT",
                "price": "100.5",
                "size": "0.25",
                "side": "sell",
                "trade_id": "t-1",
                "ts": 1704164645678,
            },
            None,
            snapshot=False,
        ),
        Update(
            "x:trades:BTC-USDT",
            {
                "symbol": "BTC-USDT",
                "price": "100.75",
                "size": "2",
                "side": "buy",
                "trade_id": "7",
                "ts": 1704164645678,
            },
            None,
            snapshot=False,
        ),
    ]
    assert parse(other, {"ch": "trades:btc_usdt", "data": []}) == []
    with pytest.raises(UpstreamFormatError) as caught:  # one trade, where lists are sent
        parse(other, {"ch": "trades:btc_usdt", "data": frame["data"][0]})
    assert str(caught.value) == "trades:btc_usdt: payload is not a list of events"
    for bad in ("yesterday", 1704164645678, "1969-12-31T23:59:59Z"):
        with pytest.raises(UpstreamFormatError) as caught:
            parse(other, with_value(frame, "/data/0/t", bad))
        assert str(caught.value) == f"trades:btc_usdt: time must be ISO 8601 text, got {bad!r}"


def test_other_shape_keeps_the_exact_text_of_json_numbers(other: GenericJsonAdapter) -> None:
    # orjson would read 100.10 as the float 100.1; exact_numbers keeps what was sent.
    frame = (
        b'{"ch":"quote:btc_usd","ts":"1700000000123",'
        b'"data":{"b":["100.10",2],"a":[100.20,"3.0"],"l":100.15}}'
    )
    assert other.parse(frame) == [
        Update(
            "x:ticker:XBT-USD",
            {
                "symbol": "XBT-USD",
                "bid": "100.10",
                "bid_size": "2",
                "ask": "100.20",
                "ask_size": "3.0",
                "last": "100.15",
                "ts": 1700000000123,
            },
            None,
            snapshot=True,
        )
    ]
    for bad in (b'{"ch":"quote:btc_usd","ts":1,"data":{"b":[NaN,2],"a":[1,1],"l":1}}', b"{,}"):
        with pytest.raises(UpstreamFormatError):
            other.parse(bad)


def test_other_shape_books_are_numbered_by_the_relay(other: GenericJsonAdapter) -> None:
    full = {
        "ch": "depth:btc_usdt",
        "action": "full",
        "data": {
            "buy": [{"px": "99.5", "qty": "1"}],
            "sell": [{"px": "100.5", "qty": "2"}],
            "at": 1700000000.25,
        },
    }
    diff = with_value(full, "/action", "diff")
    diff["data"] = {"buy": [{"px": "99.5", "qty": "0.000"}], "sell": [], "at": "1700000001"}
    assert parse(other, full) == [
        Update(
            "x:book:BTC-USDT",
            {
                "symbol": "BTC-USDT",
                "bids": [["99.5", "1"]],
                "asks": [["100.5", "2"]],
                "ts": 1700000000250,
            },
            1,
            snapshot=True,
        )
    ]
    assert parse(other, diff) == [
        Update(
            "x:book:BTC-USDT",
            {"symbol": "BTC-USDT", "bids": [["99.5", "0.000"]], "asks": [], "ts": 1700000001000},
            2,
            snapshot=False,
        )
    ]
    other.reset()  # a new connection numbers from 1 again
    assert parse(other, full)[0].seq == 1
    with pytest.raises(UpstreamFormatError):
        parse(other, with_value(full, "/action", "partial"))
    with pytest.raises(UpstreamFormatError):
        parse(other, with_value(full, "/data/buy/0", ["99.5", "1"]))


def test_a_delta_covering_a_range_carries_its_first_seq() -> None:
    table = sim_table()
    table["streams"]["book"]["first_seq"] = "/first"
    adapter = GenericJsonAdapter("sim", load_spec(table), SYMBOLS, 1.0, REST)
    [update] = parse(adapter, {**DEPTH_UPDATE, "seq": 12, "first": 9})
    assert (update.first_seq, update.seq) == (9, 12)
    with pytest.raises(UpstreamFormatError) as caught:
        parse(adapter, DEPTH_UPDATE)  # no "first"
    assert str(caught.value) == (
        "depth.BTC-USD: first_seq must be a non-negative integer, got <missing>"
    )


def test_an_upstream_that_confirms_nothing_is_confirmed_by_its_first_message() -> None:
    table = sim_table()
    table["acks"] = []
    table["data_acks"] = True
    adapter = GenericJsonAdapter("sim", load_spec(table), SYMBOLS, 1.0, REST)
    adapter.subscribe_frames(["sim:trades:BTC-USD", "sim:book:BTC-USD"])
    [ack, trade] = parse(adapter, TRADE)
    # The first sign of life confirms every subscribe before it: a quiet channel (the book
    # here) must not be taken for an unanswered request.
    confirmed = ("sim:book:BTC-USD", "sim:trades:BTC-USD")
    assert ack == Ack(True, "the upstream is sending after the subscribe", confirmed)
    assert isinstance(trade, Update)
    assert [type(e) for e in parse(adapter, TRADE)] == [Update]  # once
    adapter.unsubscribe_frames(["sim:book:BTC-USD"])  # given up before its first message
    assert [type(e) for e in parse(adapter, DEPTH_SNAPSHOT)] == [Update]
    adapter.subscribe_frames(["sim:book:BTC-USD"])
    adapter.reset()  # a new connection subscribes afresh
    assert [type(e) for e in parse(adapter, DEPTH_SNAPSHOT)] == [Update]
    # Malformed data confirms nothing.
    adapter.subscribe_frames(["sim:trades:ETH-USD"])
    with pytest.raises(UpstreamFormatError):
        parse(adapter, with_value(TRADE, "/topic", "trade.ETH-USD") | {"seq": -1})
    [ack, _] = parse(adapter, with_value(TRADE, "/topic", "trade.ETH-USD"))
    assert ack.channels == ("sim:trades:ETH-USD",)


def test_an_upstream_that_confirms_nothing_is_confirmed_by_a_heartbeat() -> None:
    table = sim_table()
    table["acks"] = []
    table["data_acks"] = True
    adapter = GenericJsonAdapter("sim", load_spec(table), SYMBOLS, 1.0, REST)
    adapter.subscribe_frames(["sim:trades:ETH-USD"])
    ack, heartbeat = adapter.parse(b'{"op": "heartbeat", "time": 1}')
    assert isinstance(ack, Ack) and ack.channels == ("sim:trades:ETH-USD",)
    assert heartbeat == Heartbeat()


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"[1]", "not a JSON object"),
        (b'{"ch": "quote:btc_usd", "data": {"l": NaN}}', "not JSON: NaN is not JSON"),
    ],
)
def test_exact_numbers_refuse_what_is_not_a_json_object_or_not_json(
    other: GenericJsonAdapter, frame: bytes, error: str
) -> None:
    with pytest.raises(UpstreamFormatError) as caught:
        other.parse(frame)
    assert str(caught.value) == error


def test_trade_id_zero_is_a_trade_id(adapter: GenericJsonAdapter) -> None:
    (update,) = parse(adapter, with_value(TRADE, "/body/id", 0))
    assert update.data["trade_id"] == "0"


def test_an_unknown_channel_is_named(adapter: GenericJsonAdapter) -> None:
    with pytest.raises(KeyError) as caught:
        adapter.topic("sim:book:DOGE-USD")
    assert caught.value.args == ("unknown channel 'sim:book:DOGE-USD'",)


# Acks, again --------------------------------------------------------------------------------------


def test_an_ack_may_name_its_one_topic_as_text(adapter: GenericJsonAdapter) -> None:
    adapter.subscribe_frames(["sim:trades:BTC-USD"])
    # No request id to correlate: the topic named is all there is.
    ack = {"op": "subscribe", "ok": True, "args": "trade.BTC-USD"}
    assert parse(adapter, ack) == [Ack(True, "ok: 'trade.BTC-USD'", ("sim:trades:BTC-USD",))]


def test_an_ack_may_name_the_subscribe_topic_or_the_routing_key() -> None:
    table = {
        **OTHER,
        "acks": [{"when": [{"pointer": "/type", "values": ["subscribed"]}], "topics": "/chs"}],
    }
    adapter = GenericJsonAdapter("x", load_spec(table), ["BTC-USDT"], 5.0, None)
    book = ("x:book:BTC-USDT",)
    # The book is subscribed as depth:btcusdt and its data is routed by depth:btc_usdt.
    for named in ("depth:btcusdt", "depth:btc_usdt"):
        [ack] = parse(adapter, {"type": "subscribed", "chs": [named]})
        assert ack == Ack(True, f"ok: {[named]!r}", book)
    # What the relay did not ask for is left out.
    [ack] = parse(adapter, {"type": "subscribed", "chs": ["trades:btc_usdt", 5, "depth:eth"]})
    assert ack.channels == ("x:trades:BTC-USDT",)
