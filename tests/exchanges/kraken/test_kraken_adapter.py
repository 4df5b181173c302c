"""The Kraken v2 adapter without a socket: channels, requests and their acknowledgements,
heartbeats, every message normalized, exact decimals, the book checksum, malformed input."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.adapters.kraken import DEFAULT_URL, KrakenAdapter, book_checksum
from relay.core.model import (
    Ack,
    Heartbeat,
    RepairKind,
    StreamKind,
    Update,
    UpstreamFormatError,
)
from relay.core.source import NO_RULES, FetchSnapshot, Resubscribe, SourcePipeline
from tests.exchanges.kraken.exchange import dumps, load_expected, load_script

TRADES = "kr:trades:BTC-USD"
TICKER = "kr:ticker:BTC-USD"
BOOK = "kr:book:BTC-USD"
ETH_BOOK = "kr:book:ETH-USD"
TIMES = {"time_in": "2023-10-04T07:48:25.099000Z", "time_out": "2023-10-04T07:48:25.100000Z"}


@pytest.fixture
def adapter() -> KrakenAdapter:
    return KrakenAdapter("kr", ["BTC-USD", "ETH-USD"])


def request_of(frame: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(frame)
    return message


def ack(req_id: int, channel: str, pair: str, method: str = "subscribe", **extra: Any) -> str:
    result = {"channel": channel, "symbol": pair, **extra}
    return json.dumps(
        {"method": method, "result": result, "success": True, "req_id": req_id, **TIMES}
    )


def refusal(req_id: int | None, pair: str | None, method: str = "subscribe") -> str:
    message: dict[str, Any] = {"error": f"Currency pair not supported {pair}", "method": method}
    message["success"] = False
    if pair is not None:
        message["symbol"] = pair
    if req_id is not None:
        message["req_id"] = req_id
    return json.dumps({**message, **TIMES})


def error_of(adapter: KrakenAdapter, frame: str | bytes) -> str:
    """The text of the format error a frame raises: all the log says of a bad frame."""
    with pytest.raises(UpstreamFormatError) as caught:
        adapter.parse(frame)
    return str(caught.value)


def subscribed_book(adapter: KrakenAdapter, channel: str = BOOK) -> None:
    (frame,) = adapter.subscribe_frames([channel])
    request = request_of(frame)
    (pair,) = request["params"]["symbol"]
    assert adapter.parse(ack(request["req_id"], "book", pair, depth=10, snapshot=True)) == [
        Ack(True, f"subscribed {channel}", (channel,))
    ]


# The catalogue ---------------------------------------------------------------------------------


def test_channels_kinds_repairs_and_rules(adapter: KrakenAdapter) -> None:
    assert adapter.source == "kr"
    assert adapter.heartbeat_interval == 2.0
    assert adapter.channels() == {
        f"kr:{stream}:{symbol}"
        for stream in ("trades", "ticker", "book")
        for symbol in ("BTC-USD", "ETH-USD")
    }
    assert adapter.kind(TRADES) is StreamKind.EVENT
    assert adapter.kind(TICKER) is StreamKind.STATE
    assert adapter.kind(BOOK) is StreamKind.BOOK
    assert adapter.kind("kr:book:DOGE-USD") is None
    assert adapter.kind("other:book:BTC-USD") is None
    assert adapter.kind("kr:ohlc:BTC-USD") is None
    assert adapter.repair(BOOK) is RepairKind.RESUBSCRIBE
    assert adapter.repair(TRADES) is RepairKind.NONE
    assert adapter.repair(TICKER) is RepairKind.NONE
    rules = adapter.book_rules(BOOK)
    assert rules.depth == 10 and rules.checksum is book_checksum
    assert adapter.book_rules(TICKER) == NO_RULES
    assert adapter.http_repair(FetchSnapshot(BOOK)) is None
    assert DEFAULT_URL == "wss://ws.kraken.com/v2"


def test_depth_and_symbols_are_checked() -> None:
    assert KrakenAdapter("kr", ["BTC-USD"], depth=25).book_rules("kr:book:BTC-USD").depth == 25
    with pytest.raises(ValueError, match="depth"):
        KrakenAdapter("kr", ["BTC-USD"], depth=20)
    for bad in ("BTCUSD", "BTC-", "-USD", "BTC-USD-X", "BTC/USD"):
        with pytest.raises(ValueError, match="BASE-QUOTE"):
            KrakenAdapter("kr", [bad])
    with pytest.raises(ValueError, match="':'"):
        KrakenAdapter("k:r", ["BTC-USD"])


# Requests ----------------------------------------------------------------------------------------


def test_subscribe_is_one_request_per_kraken_channel(adapter: KrakenAdapter) -> None:
    frames = adapter.subscribe_frames([BOOK, TRADES, ETH_BOOK, TICKER])
    assert [request_of(f) for f in frames] == [
        {
            "method": "subscribe",
            "params": {
                "channel": "book",
                "symbol": ["BTC/USD", "ETH/USD"],
                "depth": 10,
                "snapshot": True,
            },
            "req_id": 1,
        },
        {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": False},
            "req_id": 2,
        },
        {
            "method": "subscribe",
            "params": {
                "channel": "ticker",
                "symbol": ["BTC/USD"],
                "event_trigger": "bbo",
                "snapshot": True,
            },
            "req_id": 3,
        },
    ]
    assert [request_of(f) for f in adapter.unsubscribe_frames([TRADES, ETH_BOOK])] == [
        {
            "method": "unsubscribe",
            "params": {"channel": "trade", "symbol": ["BTC/USD"]},
            "req_id": 4,
        },
        {
            "method": "unsubscribe",
            "params": {"channel": "book", "symbol": ["ETH/USD"], "depth": 10},
            "req_id": 5,
        },
    ]
    assert adapter.subscribe_frames([]) == []
    with pytest.raises(KeyError):
        adapter.subscribe_frames(["kr:book:DOGE-USD"])


def test_probe_is_kraken_ping_and_pong_is_life(adapter: KrakenAdapter) -> None:
    assert request_of(adapter.probe_frame()) == {"method": "ping", "req_id": 1}
    assert request_of(adapter.probe_frame()) == {"method": "ping", "req_id": 2}
    pong = {"method": "pong", "req_id": 2, **TIMES}
    assert adapter.parse(json.dumps(pong)) == [Heartbeat()]
    failed = {"method": "pong", "success": False, "error": "busy", "req_id": 2}
    assert adapter.parse(json.dumps(failed)) == [Ack(False, "ping refused: 'busy'")]


def test_heartbeat_and_status_are_signs_of_life(adapter: KrakenAdapter) -> None:
    assert adapter.parse('{"channel":"heartbeat"}') == [Heartbeat()]
    assert adapter.parse(dumps(load_script()["status"])) == [Heartbeat()]


def test_each_symbol_is_acknowledged_on_its_own(adapter: KrakenAdapter) -> None:
    (frame,) = adapter.subscribe_frames([BOOK, ETH_BOOK])
    req_id = request_of(frame)["req_id"]
    assert adapter.parse(ack(req_id, "book", "ETH/USD", depth=10)) == [
        Ack(True, f"subscribed {ETH_BOOK}", (ETH_BOOK,))
    ]
    assert adapter.parse(ack(req_id, "book", "BTC/USD", depth=10)) == [
        Ack(True, f"subscribed {BOOK}", (BOOK,))
    ]
    # An acknowledgement names its channel and symbol, so it is understood without a req_id.
    without_id = json.loads(ack(0, "trade", "BTC/USD"))
    del without_id["req_id"]
    assert adapter.parse(json.dumps(without_id)) == [Ack(True, f"subscribed {TRADES}", (TRADES,))]


def test_a_refusal_names_the_channel_its_request_asked_for(adapter: KrakenAdapter) -> None:
    (frame,) = adapter.subscribe_frames([TRADES, "kr:trades:ETH-USD"])
    req_id = request_of(frame)["req_id"]
    assert adapter.parse(refusal(req_id, "ETH/USD")) == [
        Ack(
            False,
            "subscribe kr:trades:ETH-USD refused: 'Currency pair not supported ETH/USD'",
            ("kr:trades:ETH-USD",),
        )
    ]
    # A request refused as a whole (no symbol named): every channel it still waits for.
    (frame,) = adapter.subscribe_frames([TICKER, "kr:ticker:ETH-USD"])
    req_id = request_of(frame)["req_id"]
    events = adapter.parse(refusal(req_id, None, method="error"))
    assert events == [
        Ack(
            False,
            "subscribe kr:ticker:BTC-USD, kr:ticker:ETH-USD refused: "
            "'Currency pair not supported None'",
            (TICKER, "kr:ticker:ETH-USD"),
        )
    ]
    # Answered: the request is forgotten, and an answer to nothing names no channel.
    assert adapter.parse(refusal(req_id, "BTC/USD")) == [
        Ack(False, "subscribe refused: 'Currency pair not supported BTC/USD'")
    ]


def test_unsubscribe_answers_name_no_channel(adapter: KrakenAdapter) -> None:
    (frame,) = adapter.unsubscribe_frames([BOOK])
    req_id = request_of(frame)["req_id"]
    assert adapter.parse(ack(req_id, "book", "BTC/USD", method="unsubscribe", depth=10)) == [
        Ack(True, f"unsubscribed {BOOK}")
    ]
    (frame,) = adapter.unsubscribe_frames([BOOK])
    req_id = request_of(frame)["req_id"]
    assert adapter.parse(refusal(req_id, "BTC/USD", method="unsubscribe")) == [
        Ack(False, f"unsubscribe {BOOK} refused: 'Currency pair not supported BTC/USD'")
    ]


def test_reset_forgets_the_old_connections_requests(adapter: KrakenAdapter) -> None:
    (frame,) = adapter.subscribe_frames([TRADES])
    req_id = request_of(frame)["req_id"]
    adapter.reset()
    assert adapter.parse(refusal(req_id, "BTC/USD")) == [
        Ack(False, "subscribe refused: 'Currency pair not supported BTC/USD'")
    ]


# Data --------------------------------------------------------------------------------------------


def test_trades_normalized_exactly(adapter: KrakenAdapter) -> None:
    script, expected = load_script(), load_expected()
    updates = [u for frame in script["trade"] for u in adapter.parse(dumps(frame))]
    assert updates == [
        Update(TRADES, data, int(data["trade_id"]), snapshot=False) for data in expected["trades"]
    ]


def test_trade_snapshot_is_history_not_events(adapter: KrakenAdapter) -> None:
    frame = json.loads(dumps(load_script()["trade"][0]))
    frame["type"] = "snapshot"
    assert adapter.parse(json.dumps(frame)) == [Heartbeat()]


def test_ticker_normalized_exactly_and_whole(adapter: KrakenAdapter) -> None:
    script, expected = load_script(), load_expected()
    updates = [u for frame in script["ticker"] for u in adapter.parse(dumps(frame))]
    assert updates == [Update(TICKER, data, None, snapshot=True) for data in expected["ticker"]]


def test_book_snapshot_and_updates_normalized_with_counter_and_checksum(
    adapter: KrakenAdapter,
) -> None:
    script, expected = load_script(), load_expected()
    subscribed_book(adapter)
    book = script["book"]
    frames = [book["snapshot"], *book["updates"]]
    updates = [u for frame in frames for u in adapter.parse(dumps(frame))]
    wanted = copy.deepcopy(expected["book"])
    # The level the new best bid pushes past the depth: Kraken does not announce it, the
    # relay's book does (below), so the adapter's update has only what Kraken sent.
    assert wanted[3]["bids"].pop() == ["45276.6", "0"]
    assert updates == [
        Update(BOOK, data, seq, snapshot=seq == 1, checksum=frame["data"][0]["checksum"])
        for seq, (data, frame) in enumerate(zip(wanted, frames, strict=True), start=1)
    ]


def test_book_through_the_pipeline_is_what_clients_get(adapter: KrakenAdapter) -> None:
    script, expected = load_script(), load_expected()
    pipeline = SourcePipeline(adapter)
    pipeline.track(BOOK)
    subscribed_book(adapter)
    book = script["book"]
    published = []
    for frame in [book["snapshot"], *book["updates"]]:
        for event in adapter.parse(dumps(frame)):
            assert isinstance(event, Update)
            step = pipeline.on_update(event)
            assert step.repairs == [] and step.gaps == []
            published += step.publish
    assert [u.data for u in published] == expected["book"]
    state = pipeline.state(BOOK)
    assert state is not None
    bids, asks = state["bids"], state["asks"]
    assert len(bids) == len(asks) == 10
    assert book_checksum(bids, asks) == book["updates"][-1]["data"][0]["checksum"]


def test_a_wrong_checksum_asks_for_a_resubscribe(adapter: KrakenAdapter) -> None:
    script = load_script()
    pipeline = SourcePipeline(adapter)
    pipeline.track(BOOK)
    subscribed_book(adapter)
    (snapshot,) = adapter.parse(dumps(script["book"]["snapshot"]))
    assert isinstance(snapshot, Update)
    assert len(pipeline.on_update(snapshot).publish) == 1
    corrupt = json.loads(dumps(script["book"]["updates"][0]))
    corrupt["data"][0]["checksum"] += 1
    (update,) = adapter.parse(json.dumps(corrupt))
    assert isinstance(update, Update)
    step = pipeline.on_update(update)
    assert step.publish == [] and step.repairs == [Resubscribe(BOOK)] and step.gaps == [BOOK]
    assert pipeline.state(BOOK) is None


def test_checksum_reproduces_the_example_of_krakens_guide() -> None:
    # The example book of Kraken's "Book checksum (WebSocket v2)" guide, checksum 3310070434.
    first = load_expected()["book"][0]
    assert book_checksum(first["bids"], first["asks"]) == 3310070434
    assert load_script()["book"]["snapshot"]["data"][0]["checksum"] == 3310070434


def test_checksum_covers_the_top_ten_levels_only() -> None:
    first = load_expected()["book"][0]
    deeper_bids = [*first["bids"], ["1.0", "5.00000000"]]
    deeper_asks = [*first["asks"], ["99999.9", "5.00000000"]]
    assert book_checksum(deeper_bids, deeper_asks) == 3310070434


def test_book_counter_is_per_channel_and_per_connection(adapter: KrakenAdapter) -> None:
    subscribed_book(adapter)
    subscribed_book(adapter, ETH_BOOK)
    snapshot = json.loads(dumps(load_script()["book"]["snapshot"]))
    update = json.loads(dumps(load_script()["book"]["updates"][0]))
    events = [*adapter.parse(json.dumps(snapshot)), *adapter.parse(json.dumps(update))]
    eth = json.loads(json.dumps(snapshot))
    eth["data"][0]["symbol"] = "ETH/USD"
    events += adapter.parse(json.dumps(eth))
    assert [(e.channel, e.seq) for e in events if isinstance(e, Update)] == [
        (BOOK, 1),
        (BOOK, 2),
        (ETH_BOOK, 1),
    ]
    adapter.reset()
    # A snapshot that carries its own time needs no acknowledgement's.
    snapshot["data"][0]["timestamp"] = "2023-10-04T07:49:00.000Z"
    (again,) = adapter.parse(json.dumps(snapshot))
    assert isinstance(again, Update) and again.seq == 1 and again.data["ts"] == 1696405740000


def test_book_snapshot_without_any_time_is_malformed(adapter: KrakenAdapter) -> None:
    with pytest.raises(UpstreamFormatError, match="without a timestamp"):
        adapter.parse(dumps(load_script()["book"]["snapshot"]))


# Numbers and times -------------------------------------------------------------------------------


def trade_with(**fields: Any) -> str:
    item = {
        "symbol": "BTC/USD",
        "side": "buy",
        "price": 1,
        "qty": 1,
        "ord_type": "limit",
        "trade_id": 1,
        "timestamp": "2023-10-04T07:48:26Z",
        **fields,
    }
    return json.dumps({"channel": "trade", "type": "update", "data": [item]})


def traded(adapter: KrakenAdapter, frame: str) -> dict[str, Any]:
    (update,) = adapter.parse(frame)
    assert isinstance(update, Update)
    return update.data


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        ("0.00000001", "0.00000001"),  # str(Decimal) would say 1E-8
        ("0.00000000", "0.00000000"),  # and 0E-8
        ("45281.0", "45281.0"),
        ("0.10000000", "0.10000000"),
        ("45281", "45281"),
        ("1e-7", "0.0000001"),
        ("1E+2", "100"),
        ('"0.05000"', "0.05000"),  # quoted, as v1 wrote them
    ],
)
def test_numbers_keep_their_digits_in_plain_notation(
    adapter: KrakenAdapter, wire: str, text: str
) -> None:
    frame = trade_with(qty=0).replace('"qty": 0', f'"qty": {wire}')
    assert traded(adapter, frame)["size"] == text


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        ("-1.5", "'qty' must be a non-negative number, got Decimal('-1.5')"),
        ("-0.0", "'qty' must be a non-negative number, got Decimal('-0.0')"),
        ("NaN", "not JSON: NaN is not a number"),
        ("Infinity", "not JSON: Infinity is not a number"),
        ("true", "'qty' must be a non-negative number, got True"),
        ("null", "'qty' must be a non-negative number, got None"),
        ('"1.5e3"', "'qty' must be a non-negative number, got '1.5e3'"),
        ('"abc"', "'qty' must be a non-negative number, got 'abc'"),
        ("[1]", "'qty' must be a non-negative number, got [1]"),
    ],
)
def test_bad_numbers_are_malformed(adapter: KrakenAdapter, wire: str, error: str) -> None:
    frame = trade_with(qty=0).replace('"qty": 0', f'"qty": {wire}')
    assert error_of(adapter, frame) == error


@pytest.mark.parametrize(
    ("stamp", "ms"),
    [
        ("2023-10-04T07:48:26Z", 1696405706000),
        ("2023-10-04T07:48:26.1Z", 1696405706100),
        ("2023-10-04T07:48:26.123999999Z", 1696405706123),
        ("2023-10-04t07:48:26.5z", 1696405706500),
        ("2023-10-04T09:48:26.250+02:00", 1696405706250),
        ("2023-10-04T02:48:26-05:00", 1696405706000),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_rfc3339_times_become_integer_milliseconds(
    adapter: KrakenAdapter, stamp: str, ms: int
) -> None:
    assert traded(adapter, trade_with(timestamp=stamp))["ts"] == ms


@pytest.mark.parametrize(
    ("stamp", "error"),
    [
        (
            "2023-10-04 07:48:26Z",
            "'timestamp' must be an RFC 3339 time, got '2023-10-04 07:48:26Z'",
        ),
        ("2023-10-04T07:48:26", "'timestamp' must be an RFC 3339 time, got '2023-10-04T07:48:26'"),
        ("2023-02-30T07:48:26Z", "'timestamp' is not a valid time: '2023-02-30T07:48:26Z'"),
        ("2023-10-04T24:00:00Z", "'timestamp' is not a valid time: '2023-10-04T24:00:00Z'"),
        ("2023-10-04T07:48:61Z", "'timestamp' is not a valid time: '2023-10-04T07:48:61Z'"),
        ("1696405706", "'timestamp' must be an RFC 3339 time, got '1696405706'"),
        (1696405706, "'timestamp' must be an RFC 3339 time, got 1696405706"),
        (None, "'timestamp' must be an RFC 3339 time, got None"),
    ],
)
def test_bad_times_are_malformed(adapter: KrakenAdapter, stamp: object, error: str) -> None:
    assert error_of(adapter, trade_with(timestamp=stamp)) == error


# Malformed input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("not json", "not JSON: "),
        (b"\xff\xfe", "not JSON: "),
        ("[1, 2]", "not a JSON object"),
        ('"heartbeat"', "not a JSON object"),
        ("{}", "neither data nor an answer: {}"),
        ('{"channel": "ohlc", "type": "update", "data": []}', "message on unknown channel 'ohlc'"),
        (
            '{"method": "add_order", "success": true}',
            "neither data nor an answer: {'method': 'add_order', 'success': True}",
        ),
        (
            '{"method": "subscribe", "result": {"channel": "trade", "symbol": "BTC/USD"}}',
            "subscribe answer without a boolean 'success'",
        ),
        (
            '{"method": "subscribe", "success": "yes"}',
            "subscribe answer without a boolean 'success'",
        ),
        ('{"method": "subscribe", "success": true}', "'result' must be an object, got None"),
        (
            '{"method": "subscribe", "success": true, "result": {"channel": "trade"}}',
            "'symbol' must be a string, got None",
        ),
        (
            '{"method": "subscribe", "success": true,'
            ' "result": {"channel": "trade", "symbol": "XBT/USD"}}',
            "trade for unknown symbol 'XBT/USD'",
        ),
        (
            '{"method": "error", "success": true,'
            ' "result": {"channel": "trade", "symbol": "BTC/USD"}}',
            "an error answer with success true",
        ),
        ('{"channel": "status", "type": "update"}', "'data' must be a list, got None"),
        (
            '{"channel": "trade", "type": "partial", "data": []}',
            "type must be 'snapshot' or 'update', got 'partial'",
        ),
        ('{"channel": "trade", "type": "update", "data": {}}', "'data' must be a list, got {}"),
        ('{"channel": "trade", "type": "update", "data": [7]}', "data item is not an object: 7"),
        (
            '{"channel": "ticker", "type": "update", "data": [{"symbol": "BTC/USD"}]}',
            "'bid' must be a non-negative number, got None",
        ),
        (
            '{"channel": "book", "type": "update",'
            ' "data": [{"symbol": "BTC/USD", "bids": [], "asks": []}]}',
            "book checksum must be a CRC32, got None",
        ),
        ("[" * 100_000, "not JSON: "),
    ],
)
def test_malformed_frames_raise_upstream_format_error(
    adapter: KrakenAdapter, frame: Any, error: str
) -> None:
    if error == "not JSON: ":  # the rest is the JSON parser's own words
        assert error_of(adapter, frame).startswith(error)
    else:
        assert error_of(adapter, frame) == error


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"side": "long"}, "trade side must be buy or sell, got 'long'"),
        ({"side": None}, "trade side must be buy or sell, got None"),
        ({"trade_id": True}, "trade_id must be an integer, got True"),
        ({"trade_id": -1}, "trade_id must be an integer, got -1"),
        ({"trade_id": "77001"}, "trade_id must be an integer, got '77001'"),
        ({"trade_id": 1.5}, "trade_id must be an integer, got Decimal('1.5')"),
        ({"symbol": "DOGE/USD"}, "trade for unknown symbol 'DOGE/USD'"),
        ({"symbol": 5}, "'symbol' must be a string, got 5"),
        ({"price": None}, "'price' must be a non-negative number, got None"),
    ],
)
def test_malformed_trades(adapter: KrakenAdapter, fields: dict[str, Any], error: str) -> None:
    assert error_of(adapter, trade_with(**fields)) == error


def book_update_with(**fields: Any) -> str:
    item = {
        "symbol": "BTC/USD",
        "bids": [{"price": 1.5, "qty": 2}],
        "asks": [],
        "checksum": 12345,
        "timestamp": "2023-10-04T07:48:26Z",
        **fields,
    }
    return json.dumps({"channel": "book", "type": "update", "data": [item]})


def test_book_update_shape(adapter: KrakenAdapter) -> None:
    assert adapter.parse(book_update_with()) == [
        Update(
            BOOK,
            {"symbol": "BTC-USD", "bids": [["1.5", "2"]], "asks": [], "ts": 1696405706000},
            1,
            snapshot=False,
            checksum=12345,
        )
    ]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"checksum": -1}, "book checksum must be a CRC32, got -1"),
        ({"checksum": 2**32}, "book checksum must be a CRC32, got 4294967296"),
        ({"checksum": "12345"}, "book checksum must be a CRC32, got '12345'"),
        ({"checksum": True}, "book checksum must be a CRC32, got True"),
        ({"checksum": None}, "book checksum must be a CRC32, got None"),
        ({"bids": None}, "'bids' must be a list, got None"),
        ({"bids": [[1.5, 2]]}, "'bids': a level must be an object, got [Decimal('1.5'), 2]"),
        ({"bids": [{"price": 1.5}]}, "'qty' must be a non-negative number, got None"),
        ({"asks": [{"price": "x", "qty": 1}]}, "'price' must be a non-negative number, got 'x'"),
        ({"timestamp": "yesterday"}, "'timestamp' must be an RFC 3339 time, got 'yesterday'"),
    ],
)
def test_malformed_book_updates(adapter: KrakenAdapter, fields: dict[str, Any], error: str) -> None:
    assert error_of(adapter, book_update_with(**fields)) == error


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["BTC/USD", "book", "trade", "ticker", "snapshot", "update", "buy"])
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "channel",
                    "type",
                    "data",
                    "symbol",
                    "method",
                    "success",
                    "result",
                    "req_id",
                    "bids",
                    "asks",
                    "price",
                    "qty",
                    "checksum",
                    "timestamp",
                    "side",
                    "trade_id",
                    "error",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@given(JSON)
def test_any_json_is_events_or_upstream_format_error(value: Any) -> None:
    adapter = KrakenAdapter("kr", ["BTC-USD"])
    adapter.subscribe_frames([BOOK, TRADES])
    try:
        events = adapter.parse(json.dumps(value))
    except UpstreamFormatError:
        return
    assert all(isinstance(e, Update | Heartbeat | Ack) for e in events)


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (
            '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":1e100000000,'
            '"bid_qty":1,"ask":2,"ask_qty":1,"last":1,"timestamp":"2023-10-06T17:35:55.440295Z"}]}',
            "'bid' must be a non-negative number, got Decimal('1E+100000000')",
        ),
        (
            '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":1,"bid_qty":1,'
            '"ask":2,"ask_qty":1,"last":1,"timestamp":"0001-01-01T00:00:00Z"}]}',
            "'timestamp' is before 1970: '0001-01-01T00:00:00Z'",
        ),
    ],
)
def test_absurd_numbers_and_times_are_malformed(frame: str, error: str) -> None:
    adapter = KrakenAdapter("kraken", ["BTC-USD"])
    assert error_of(adapter, frame) == error


def test_trade_id_zero_is_a_trade_id(adapter: KrakenAdapter) -> None:
    assert traded(adapter, trade_with(trade_id=0))["trade_id"] == "0"
