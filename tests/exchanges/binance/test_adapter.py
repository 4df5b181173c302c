"""The Binance adapter without sockets: channels, requests and their answers, normalization,
malformed input, and the REST depth snapshot.

The messages are written from the shapes and examples of Binance's spot documentation
(web-socket-streams.md, rest-api.md), with the symbols the relay is configured for.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from relay.adapters.base import HttpRequest
from relay.adapters.binance import DEFAULT_REST_URL, BinanceAdapter
from relay.core.chain import FetchByNumber
from relay.core.model import Ack, RepairKind, StreamKind, Update, UpstreamFormatError
from relay.core.source import NO_RULES, FetchItem, FetchSnapshot

TRADES = "binance:trades:BNB-BTC"
TICKER = "binance:ticker:BNB-BTC"
BOOK = "binance:book:BNB-BTC"
REST = "http://127.0.0.1:9000"

TRADE = {
    "e": "trade",
    "E": 1672515782136,
    "s": "BNBBTC",
    "t": 12345,
    "p": "0.001",
    "q": "100",
    "T": 1672515782134,
    "m": True,
    "M": True,
}
TICKER_EVENT = {
    "e": "24hrTicker",
    "E": 1672515782136,
    "s": "BNBBTC",
    "p": "0.0015",
    "P": "250.00",
    "w": "0.0018",
    "x": "0.0009",
    "c": "0.0025",
    "Q": "10",
    "b": "0.0024",
    "B": "10",
    "a": "0.0026",
    "A": "100",
    "o": "0.0010",
    "h": "0.0025",
    "l": "0.0010",
    "v": "10000",
    "q": "18",
    "O": 0,
    "C": 86400000,
    "F": 0,
    "L": 18150,
    "n": 18151,
}
DEPTH = {
    "e": "depthUpdate",
    "E": 1672515782136,
    "s": "BNBBTC",
    "U": 157,
    "u": 160,
    "b": [["0.0024", "10"]],
    "a": [["0.0026", "100"], ["0.0027", "0.00000000"]],
}
DEPTH_SNAPSHOT = {
    "lastUpdateId": 1027024,
    "bids": [["4.00000000", "431.00000000"]],
    "asks": [["4.00000200", "12.00000000"]],
}


@pytest.fixture
def adapter() -> BinanceAdapter:
    return BinanceAdapter("binance", ["BNB-BTC", "BTC-USDT"], REST)


def frame(message: object) -> str:
    return orjson.dumps(message).decode()


def request(text: str) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(text)
    return message


# Channels ------------------------------------------------------------------------------------


def test_channels_are_three_streams_per_symbol(adapter: BinanceAdapter) -> None:
    assert adapter.source == "binance"
    assert adapter.heartbeat_interval == 10.0
    assert adapter.channels() == {
        f"binance:{stream}:{symbol}"
        for stream in ("trades", "ticker", "book")
        for symbol in ("BNB-BTC", "BTC-USDT")
    }
    assert adapter.kind(TRADES) is StreamKind.EVENT
    assert adapter.kind(TICKER) is StreamKind.STATE
    assert adapter.kind(BOOK) is StreamKind.BOOK
    for unknown in ("binance:book:ETH-USDT", "binance:klines:BNB-BTC", "sim:book:BNB-BTC"):
        assert adapter.kind(unknown) is None
    assert adapter.repair(BOOK) is RepairKind.REST_SNAPSHOT
    assert adapter.repair(TRADES) is RepairKind.NONE
    assert adapter.repair(TICKER) is RepairKind.NONE
    assert adapter.book_rules(BOOK) == NO_RULES


def test_streams_are_binance_names_in_lower_case(adapter: BinanceAdapter) -> None:
    assert adapter.stream("binance:trades:BTC-USDT") == "btcusdt@trade"
    assert adapter.stream("binance:ticker:BTC-USDT") == "btcusdt@ticker"
    assert adapter.stream("binance:book:BTC-USDT") == "btcusdt@depth@100ms"
    with pytest.raises(KeyError):
        adapter.stream("binance:book:ETH-USDT")


@pytest.mark.parametrize("symbol", ["BTCUSDT", "btc-usdt", "BTC-", "BTC-USDT-X", "BTC/USDT"])
def test_a_symbol_must_be_base_dash_quote(symbol: str) -> None:
    with pytest.raises(ValueError, match="BASE-QUOTE"):
        BinanceAdapter("binance", [symbol], None)


def test_two_symbols_that_are_one_market_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        BinanceAdapter("binance", ["BTC-USDT", "BTCU-SDT"], None)
    with pytest.raises(ValueError, match="':'"):
        BinanceAdapter("bin:ance", ["BTC-USDT"], None)


# Requests and answers ----------------------------------------------------------------------


def test_subscribe_is_one_request_for_all_channels_and_its_answer_acks_them(
    adapter: BinanceAdapter,
) -> None:
    (text,) = adapter.subscribe_frames([TRADES, TICKER, BOOK])
    assert request(text) == {
        "method": "SUBSCRIBE",
        "params": ["bnbbtc@trade", "bnbbtc@ticker", "bnbbtc@depth@100ms"],
        "id": 1,
    }
    assert adapter.parse(frame({"result": None, "id": 1})) == [
        Ack(True, f"subscribed {TRADES}, {TICKER}, {BOOK}", (TRADES, TICKER, BOOK))
    ]
    assert adapter.subscribe_frames([]) == []
    with pytest.raises(KeyError):
        adapter.subscribe_frames(["binance:book:ETH-USDT"])


def test_unsubscribe_answer_names_no_channel(adapter: BinanceAdapter) -> None:
    (text,) = adapter.unsubscribe_frames([BOOK])
    assert request(text) == {"method": "UNSUBSCRIBE", "params": ["bnbbtc@depth@100ms"], "id": 1}
    # The relay waits only for subscribes, and a refused unsubscribe is no refusal of the
    # channel to its clients.
    assert adapter.parse(frame({"result": None, "id": 1})) == [Ack(True, f"unsubscribed {BOOK}")]
    (text,) = adapter.unsubscribe_frames([BOOK])
    error = {"code": 2, "msg": "Invalid request: invalid stream"}
    (ack,) = adapter.parse(frame({"error": error, "id": request(text)["id"]}))
    assert isinstance(ack, Ack) and not ack.ok and ack.channels == ()
    assert adapter.unsubscribe_frames([]) == []


def test_a_refused_subscribe_is_a_negative_ack_for_its_channels(adapter: BinanceAdapter) -> None:
    (text,) = adapter.subscribe_frames([BOOK])
    error = {"code": 2, "msg": "Invalid request: invalid stream"}
    (ack,) = adapter.parse(frame({"error": error, "id": request(text)["id"]}))
    assert isinstance(ack, Ack)
    assert ack == Ack(False, ack.detail, (BOOK,))
    assert "invalid stream" in ack.detail
    # The documented bare form, with and without the request's id.
    (text,) = adapter.subscribe_frames([TRADES])
    bare = {"code": 2, "msg": "Invalid request: too many parameters", "id": request(text)["id"]}
    (ack,) = adapter.parse(frame(bare))
    assert isinstance(ack, Ack)
    assert ack == Ack(False, ack.detail, (TRADES,))
    (ack,) = adapter.parse(frame({"code": 3, "msg": "Invalid JSON: expected value"}))
    assert isinstance(ack, Ack)
    assert ack == Ack(False, ack.detail, ())


def test_requests_are_correlated_by_id_on_their_own_connection(adapter: BinanceAdapter) -> None:
    (first,) = adapter.subscribe_frames([TRADES])
    (second,) = adapter.subscribe_frames([BOOK])
    # Answered out of order: each answer acks its own request's channels.
    assert adapter.parse(frame({"result": None, "id": request(second)["id"]})) == [
        Ack(True, f"subscribed {BOOK}", (BOOK,))
    ]
    assert adapter.parse(frame({"result": None, "id": request(first)["id"]})) == [
        Ack(True, f"subscribed {TRADES}", (TRADES,))
    ]
    with pytest.raises(UpstreamFormatError, match="no request"):
        adapter.parse(frame({"result": None, "id": request(first)["id"]}))  # answered already
    (third,) = adapter.subscribe_frames([TICKER])
    adapter.reset()  # a new connection: the old one's requests are gone
    with pytest.raises(UpstreamFormatError, match="no request"):
        adapter.parse(frame({"result": None, "id": request(third)["id"]}))


def test_the_probe_lists_subscriptions_and_its_answer_is_a_sign_of_life(
    adapter: BinanceAdapter,
) -> None:
    assert request(adapter.probe_frame()) == {"method": "LIST_SUBSCRIPTIONS", "id": 1}
    answer = frame({"result": ["bnbbtc@trade", "bnbbtc@depth@100ms"], "id": 1})
    assert adapter.parse(answer) == [Ack(True, "2 streams subscribed")]
    assert request(adapter.probe_frame()) == {"method": "LIST_SUBSCRIPTIONS", "id": 2}
    with pytest.raises(UpstreamFormatError, match="list of streams"):
        adapter.parse(frame({"result": None, "id": 2}))


@pytest.mark.parametrize(
    "answer",
    [
        {"result": None, "id": "1"},
        {"result": None, "id": True},
        {"id": 1},
        {"result": [], "id": 1},  # a subscribe is answered with null
        {"result": None},
        {"foo": "bar"},
        [1, 2],
        "null",
    ],
)
def test_malformed_answers_are_format_errors(adapter: BinanceAdapter, answer: object) -> None:
    adapter.subscribe_frames([TRADES])
    with pytest.raises(UpstreamFormatError):
        adapter.parse(frame(answer))


# Events --------------------------------------------------------------------------------------


def test_a_trade_is_normalized_with_the_takers_side(adapter: BinanceAdapter) -> None:
    assert adapter.parse(frame(TRADE)) == [
        Update(
            TRADES,
            {
                "symbol": "BNB-BTC",
                "price": "0.001",
                "size": "100",
                "side": "sell",  # the buyer was the maker: the taker sold
                "trade_id": "12345",
                "ts": 1672515782134,
            },
            12345,
            snapshot=False,
        )
    ]
    (update,) = adapter.parse(frame({**TRADE, "m": False, "t": 12346}))
    assert isinstance(update, Update)
    assert update.data["side"] == "buy"
    assert update.seq == 12346


def test_the_24h_ticker_is_the_whole_ticker_state(adapter: BinanceAdapter) -> None:
    assert adapter.parse(frame(TICKER_EVENT)) == [
        Update(
            TICKER,
            {
                "symbol": "BNB-BTC",
                "bid": "0.0024",
                "bid_size": "10",
                "ask": "0.0026",
                "ask_size": "100",
                "last": "0.0025",
                "ts": 1672515782136,
            },
            None,
            snapshot=True,
        )
    ]


def test_a_depth_event_is_a_delta_covering_its_update_ids(adapter: BinanceAdapter) -> None:
    assert adapter.parse(frame(DEPTH)) == [
        Update(
            BOOK,
            {
                "symbol": "BNB-BTC",
                "bids": [["0.0024", "10"]],
                # A removal keeps the zero Binance wrote.
                "asks": [["0.0026", "100"], ["0.0027", "0.00000000"]],
                "ts": 1672515782136,
            },
            160,
            snapshot=False,
            first_seq=157,
        )
    ]
    (update,) = adapter.parse(frame({**DEPTH, "U": 161, "u": 161, "b": [], "a": []}))
    assert update == Update(
        BOOK,
        {"symbol": "BNB-BTC", "bids": [], "asks": [], "ts": 1672515782136},
        161,
        snapshot=False,
        first_seq=161,
    )


def test_events_of_a_combined_stream_are_unwrapped(adapter: BinanceAdapter) -> None:
    wrapped = {"stream": "bnbbtc@depth@100ms", "data": DEPTH}
    assert adapter.parse(frame(wrapped)) == adapter.parse(frame(DEPTH))
    with pytest.raises(UpstreamFormatError):
        adapter.parse(frame({"stream": "bnbbtc@trade", "data": [TRADE]}))


def test_symbols_are_routed_to_their_own_channels(adapter: BinanceAdapter) -> None:
    (update,) = adapter.parse(frame({**TRADE, "s": "BTCUSDT"}))
    assert isinstance(update, Update)
    assert update.channel == "binance:trades:BTC-USDT"
    assert update.data["symbol"] == "BTC-USDT"


def test_server_shutdown_publishes_nothing(adapter: BinanceAdapter) -> None:
    assert adapter.parse(frame({"e": "serverShutdown", "E": 1770123456789})) == []


def _mutations() -> list[tuple[dict[str, Any], str, object]]:
    """(event, field, bad value): every field the adapter reads, broken one at a time."""
    cases: list[tuple[dict[str, Any], str, object]] = []
    for event, fields in (
        (TRADE, ("E", "s", "t", "p", "q", "T", "m")),
        (TICKER_EVENT, ("E", "s", "b", "B", "a", "A", "c")),
        (DEPTH, ("E", "s", "U", "u", "b", "a")),
    ):
        for key in fields:
            bads: tuple[object, ...] = (None, "12x", -1, 1.5, True, [], {})
            for bad in bads:
                if (key == "m" and isinstance(bad, bool)) or (event is DEPTH and bad == []):
                    continue  # valid: a boolean flag, an empty list of levels
                cases.append((event, key, bad))
    return cases


@pytest.mark.parametrize(("event", "key", "bad"), _mutations())
def test_a_malformed_field_is_a_format_error(
    adapter: BinanceAdapter, event: dict[str, Any], key: str, bad: object
) -> None:
    broken = copy.deepcopy(event)
    broken[key] = bad
    with pytest.raises(UpstreamFormatError):
        adapter.parse(frame(broken))
    del broken[key]
    with pytest.raises(UpstreamFormatError):
        adapter.parse(frame(broken))


@pytest.mark.parametrize(
    "change",
    [
        {"U": 161, "u": 160},  # a range that ends before it starts
        {"b": [["0.0024"]]},
        {"b": [["0.0024", "10", "1"]]},
        {"b": [["0.0024", 10]]},
        {"a": [[0.0026, "100"]]},
        {"a": [["-0.0026", "100"]]},
        {"a": [["0.0026", "1e3"]]},
        {"a": ["0.0026"]},
        {"e": "depth"},
        {"s": "ETHBTC"},  # a market this source was not configured for
    ],
)
def test_a_malformed_depth_event_is_a_format_error(
    adapter: BinanceAdapter, change: dict[str, Any]
) -> None:
    with pytest.raises(UpstreamFormatError):
        adapter.parse(frame({**DEPTH, **change}))


@pytest.mark.parametrize("text", ["", "not json", "[]", "42", '{"e": null}', "{}"])
def test_garbage_is_a_format_error(adapter: BinanceAdapter, text: str) -> None:
    with pytest.raises(UpstreamFormatError):
        adapter.parse(text)


# The REST snapshot ---------------------------------------------------------------------------


def test_a_book_is_repaired_from_the_rest_depth_snapshot(adapter: BinanceAdapter) -> None:
    how = adapter.http_repair(FetchSnapshot(BOOK))
    assert how is not None
    assert how.request == HttpRequest("GET", f"{REST}/api/v3/depth?symbol=BNBBTC&limit=1000")
    body = orjson.dumps(DEPTH_SNAPSHOT)
    data = {
        "symbol": "BNB-BTC",
        "bids": [["4.00000000", "431.00000000"]],
        "asks": [["4.00000200", "12.00000000"]],
    }
    # No event seen for the symbol yet: the snapshot has no time but 0.
    assert how.parse(body) == Update(BOOK, {**data, "ts": 0}, 1027024, snapshot=True)
    # Then the latest event time seen on any of the symbol's streams.
    adapter.parse(frame({**TRADE, "E": 1672515782999}))
    adapter.parse(frame(DEPTH))  # older: the latest stays
    adapter.parse(frame({**TRADE, "s": "BTCUSDT", "E": 1772515782999}))  # another symbol
    with pytest.raises(UpstreamFormatError):  # a malformed event moves nothing
        adapter.parse(frame({**TRADE, "E": 1772515782999, "p": "x"}))
    assert how.parse(body) == Update(BOOK, {**data, "ts": 1672515782999}, 1027024, True)


@pytest.mark.parametrize(
    "body",
    [
        {"code": -1121, "msg": "Invalid symbol."},
        {"bids": [], "asks": []},
        {"lastUpdateId": "1027024", "bids": [], "asks": []},
        {"lastUpdateId": 1027024, "bids": [["4.0"]], "asks": []},
        {"lastUpdateId": 1027024, "bids": []},
        [],
    ],
)
def test_a_malformed_depth_snapshot_is_a_format_error(
    adapter: BinanceAdapter, body: object
) -> None:
    how = adapter.http_repair(FetchSnapshot(BOOK))
    assert how is not None
    with pytest.raises(UpstreamFormatError):
        how.parse(orjson.dumps(body))


def test_only_books_have_something_to_fetch() -> None:
    adapter = BinanceAdapter("binance", ["BNB-BTC"], DEFAULT_REST_URL + "/")
    how = adapter.http_repair(FetchSnapshot(BOOK))
    assert how is not None
    assert how.request.url == "https://api.binance.com/api/v3/depth?symbol=BNBBTC&limit=1000"
    assert adapter.http_repair(FetchSnapshot(TRADES)) is None
    assert adapter.http_repair(FetchSnapshot(TICKER)) is None
    assert adapter.http_repair(FetchItem(BOOK, FetchByNumber(1))) is None
    assert BinanceAdapter("binance", ["BNB-BTC"], None).http_repair(FetchSnapshot(BOOK)) is None


# What the log says -------------------------------------------------------------------------------
# A refused request's Ack detail and a format error's text are all an operator sees of them.


def _error(adapter: BinanceAdapter, message: object) -> str:
    with pytest.raises(UpstreamFormatError) as caught:
        adapter.parse(frame(message))
    return str(caught.value)


def test_answers_name_what_is_wrong_with_them(adapter: BinanceAdapter) -> None:
    assert _error(adapter, {"result": None, "id": "1"}) == "answer id must be an integer, got '1'"
    assert _error(adapter, {"result": None, "id": 7}) == "answer to no request of ours (id 7)"
    adapter.subscribe_frames([TRADES])
    assert _error(adapter, {"id": 1}) == "answer 1 without result or error"
    adapter.subscribe_frames([TRADES])
    assert _error(adapter, {"result": [], "id": 2}) == "subscribe answered [], not null"
    adapter.probe_frame()
    assert _error(adapter, {"result": "x", "id": 3}) == (
        "LIST_SUBSCRIPTIONS result must be a list of streams, got 'x'"
    )
    assert _error(adapter, {"foo": "bar"}) == "neither an event nor an answer: {'foo': 'bar'}"
    assert _error(adapter, {"stream": "bnbbtc@trade", "data": [1]}) == (
        "combined stream event without an object 'data'"
    )


def test_refusals_carry_binances_error_in_both_forms(adapter: BinanceAdapter) -> None:
    error = {"code": 2, "msg": "Invalid request: invalid stream"}
    adapter.subscribe_frames([BOOK])
    assert adapter.parse(frame({"error": error, "id": 1})) == [
        Ack(False, f"subscribe refused: {error!r}", (BOOK,))
    ]
    adapter.unsubscribe_frames([BOOK])
    assert adapter.parse(frame({**error, "id": 2})) == [
        Ack(False, f"unsubscribe refused: {error!r}")
    ]
    assert adapter.parse(frame(error)) == [Ack(False, f"request rejected: {error!r}")]


def test_events_name_the_field_that_is_wrong(adapter: BinanceAdapter) -> None:
    assert _error(adapter, {**DEPTH, "U": 161, "u": 160}) == "depthUpdate with U 161 after u 160"
    assert _error(adapter, {**DEPTH, "s": "ETHBTC"}) == "event 'depthUpdate' for unknown 'ETHBTC'"
    assert _error(adapter, {**TRADE, "m": "yes"}) == "'m' must be a boolean, got 'yes'"


def test_the_first_event_time_is_kept_even_when_it_is_small(adapter: BinanceAdapter) -> None:
    adapter.parse(frame({**TRADE, "E": 1}))
    how = adapter.http_repair(FetchSnapshot(BOOK))
    assert how is not None
    snapshot = how.parse(orjson.dumps(DEPTH_SNAPSHOT))
    assert snapshot.data["ts"] == 1


def test_a_depth_snapshot_is_refused_only_for_a_code_without_an_update_id(
    adapter: BinanceAdapter,
) -> None:
    how = adapter.http_repair(FetchSnapshot(BOOK))
    assert how is not None
    refusal = {"code": -1121, "msg": "Invalid symbol."}
    with pytest.raises(UpstreamFormatError) as caught:
        how.parse(orjson.dumps(refusal))
    assert str(caught.value) == f"depth snapshot refused: {refusal!r}"
    with pytest.raises(UpstreamFormatError) as caught:
        how.parse(orjson.dumps({"bids": [], "asks": []}))
    assert str(caught.value) == "'lastUpdateId' must be a non-negative integer, got None"
    # A body with an update id is a snapshot, whatever else it carries.
    body = orjson.dumps({**DEPTH_SNAPSHOT, "code": 0})
    assert how.parse(body) == how.parse(orjson.dumps(DEPTH_SNAPSHOT))


def test_an_unknown_channel_is_named(adapter: BinanceAdapter) -> None:
    with pytest.raises(KeyError) as caught:
        adapter.stream("binance:book:ETH-USDT")
    assert caught.value.args == ("unknown channel 'binance:book:ETH-USDT'",)


def test_what_makes_a_message_an_event_an_answer_or_a_bare_error(adapter: BinanceAdapter) -> None:
    # "e" makes an event, whatever else is missing.
    assert adapter.parse(frame({"e": "serverShutdown"})) == []
    # A combined stream needs both its keys, a bare error both of its own.
    assert _error(adapter, {"stream": "bnbbtc@trade"}) == (
        "neither an event nor an answer: {'stream': 'bnbbtc@trade'}"
    )
    assert _error(adapter, {"msg": "Invalid JSON"}) == (
        "neither an event nor an answer: {'msg': 'Invalid JSON'}"
    )
