"""The generic adapter's configuration table, checked when it is built: every problem is a
ConfigError line naming the key (``streams.trades.fields.price: ...``) in the words the user
reads, whether the table comes from TOML or the spec is built in Python; and what the table
allows is accepted."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from relay.adapters.generic import MISSING, JsonSpec, Match, StreamSpec
from relay.config import parse_config
from relay.issues import ConfigError
from tests.exchanges.generic.specs import issue_lines, load_spec, sim_document, sim_table

TICKER_FIELDS = ("bid", "bid_size", "ask", "ask_size", "last")
POINTER_ERROR = "must be a JSON pointer (RFC 6901): must be empty or start with '/', got"


def set_in(table: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """The table with one key set (or removed, for MISSING); ``a.b.0.c`` indexes lists."""
    *parents, last = dotted.split(".")
    target: Any = table
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is MISSING:
        del target[last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return table


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        (
            "streams.trades.fields.price",
            MISSING,
            "streams.trades.fields.price: required for event streams",
        ),
        (
            "streams.trades.fields.prize",
            "/px",
            "streams.trades.fields.prize: not a field of event streams "
            "(price, size, side, trade_id, ts)",
        ),
        (
            "topic",
            "topic",
            "topic: must be a JSON pointer (RFC 6901): must be empty or start with '/', "
            "got 'topic'",
        ),
        (
            "streams.ticker.fields.last",
            "/last~2",
            "streams.ticker.fields.last: must be a JSON pointer (RFC 6901): '~' must be "
            "followed by '0' or '1', got '/last~2'",
        ),
        (
            "subscribe",
            '{"op":"subscribe","args":{topics},"req":{req}}',
            "subscribe: unknown placeholder {req} (known: {topics}, {topic}, {id})",
        ),
        (
            "unsubscribe",
            '{"op":"unsubscribe","req":{id}}',
            "unsubscribe: must name the topics: {topics} (a JSON list) or {topic} (one per frame)",
        ),
        (
            "streams.book.snapshot",
            MISSING,
            "streams.book.snapshot: required for book streams: what marks a snapshot",
        ),
        (
            "streams.trades.kind",
            "events",
            "streams.trades.kind: expected one of 'event', 'state', 'book', got 'events'",
        ),
        (
            "streams.book",
            {
                "kind": "state",
                "topic": "top.{symbol}",
                "fields": dict.fromkeys(TICKER_FIELDS, "/x"),
            },
            "streams.book.kind: must be 'book' for book",
        ),
        (
            "time_unit",
            "sec",
            "time_unit: expected one of 's', 'ms', 'us', 'ns', 'iso', got 'sec'",
        ),
        ("topics", "/topic", "unknown key 'topics'"),
        ("streams.trades.fields.price", 5, "streams.trades.fields.price: expected a string, got 5"),
        ("max_topics", "5", "max_topics: expected an integer, got '5'"),
        ("max_topics", -1, "max_topics: must be 0 (no limit) or more, got -1"),
        (
            "streams.trades.sides.S",
            "short",
            "streams.trades.sides.S: must be buy or sell, got 'short'",
        ),
        (
            "streams.ticker.sides",
            {"b": "buy", "s": "sell"},
            "streams.ticker.sides: only event streams have sides",
        ),
        ("streams.trades.depth", 10, "streams.trades.depth: only book streams have it"),
        ("streams.book.batch", True, "streams.book.batch: only event streams have it"),
        ("rest.seq", MISSING, "rest.seq: required key missing"),
        ("rest.time", MISSING, "rest.time: required: streams.book has no fields.ts"),
        ("rest.url", "ftp://host/x", "rest.url: must start with {rest_url} or http:// or https://"),
        (
            "streams.ticker.topic",
            "trade.{symbol}",
            "streams.ticker.topic: routes like streams.trades: 'trade.{symbol}'",
        ),
        (
            "streams.trades.topic",
            "trade.all",
            "streams.trades.topic: must contain {symbol} (or {base} and {quote})",
        ),
        ("acks.0.when", [], "acks[0].when: must have at least one condition"),
        (
            "acks.2.ok",
            {"pointer": "/ok", "values": ["true"]},
            "acks[2].refusal: contradicts ok: a refusal has no ok flag to read",
        ),
        (
            "heartbeat.0.pointer",
            "op",
            "heartbeat[0].pointer: must be a JSON pointer (RFC 6901): must be empty or start "
            "with '/', got 'op'",
        ),
        ("streams", {}, "streams: must define at least one stream"),
        (
            "time",
            MISSING,
            "streams.trades: has no event time: set fields.ts, time, or the table's time",
        ),
    ],
)
def test_a_bad_spec_is_a_config_error_naming_the_key(key: str, value: Any, line: str) -> None:
    assert line in issue_lines(set_in(sim_table(), key, value))


def test_a_subscribe_template_must_be_json_once_filled_in() -> None:
    lines = issue_lines(set_in(sim_table(), "subscribe", '{"op":"subscribe","args":[{topics}]'))
    assert len(lines) == 1 and lines[0].startswith("subscribe: is not JSON once filled in (")


def test_every_problem_is_reported_at_once() -> None:
    table = sim_table()
    del table["streams"]["trades"]["fields"]["price"]
    table["heartbeat"][0]["pointer"] = "op"
    table["bogus"] = 1
    assert issue_lines(table) == [
        "streams.trades.fields.price: required for event streams",
        "heartbeat[0].pointer: must be a JSON pointer (RFC 6901): must be empty or start with "
        "'/', got 'op'",
        "unknown key 'bogus'",
    ]


def test_a_spec_built_in_python_is_checked_too() -> None:
    with pytest.raises(ConfigError) as caught:
        StreamSpec(kind="book", topic="depth.{symbol}", fields={"bids": "/b"})
    assert str(caught.value).splitlines() == [
        "fields.asks: required for book streams",
        "snapshot: required for book streams: what marks a snapshot",
    ]
    with pytest.raises(ConfigError, match="pointer: must be a JSON pointer"):
        Match("kind")


def test_acks_that_name_nothing_are_refused_unless_the_upstream_confirms_nothing() -> None:
    table = sim_table()
    for rule in table["acks"]:
        rule.pop("topics", None)
        rule.pop("id", None)
    assert issue_lines(table) == [
        "acks: a rule must name what it answers (topics or id), "
        "or set data_acks = true for an upstream that confirms nothing"
    ]
    table["data_acks"] = True
    load_spec(table)


def test_sim_toml_is_a_whole_configuration() -> None:
    """examples/json-sim.toml parses as it is, and its problems are reported under
    ``sources.sim.json``."""
    config = parse_config(sim_document())
    assert config.sources["sim"].json == load_spec(sim_table())
    document = sim_document()
    del document["sources"]["sim"]["json"]["streams"]["book"]["snapshot"]
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert (
        "sources.sim.json.streams.book.snapshot: required for book streams: what marks a snapshot"
        in str(caught.value).splitlines()
    )


# Every check, one problem at a time: the whole of what the table is refused with.


def without(table: dict[str, Any], dotted: str) -> dict[str, Any]:
    return set_in(table, dotted, MISSING)


def ts_in_payload(table: dict[str, Any], *streams: str) -> dict[str, Any]:
    """The table with the given streams' event time read from their payload (``fields.ts``)
    rather than from the message's root."""
    for name in streams:
        table["streams"][name]["fields"]["ts"] = "/time"
    return table


@pytest.mark.parametrize(
    ("key", "value", "lines"),
    [
        (
            "symbol",
            "{pair}",
            ["symbol: unknown placeholder {pair} (known: {base}, {quote}, {symbol})"],
        ),
        ("symbol_overrides", {"BTC-USD": ""}, ["symbol_overrides.BTC-USD: must not be empty"]),
        (
            "symbol_overrides",
            {"BTC USD": ""},
            ['symbol_overrides."BTC USD": must not be empty'],
        ),
        (
            "probe",
            '{"op":"ping","args":{topic}}',
            ["probe: unknown placeholder {topic} (known: {id})"],
        ),
        (
            "streams.trades.topic",
            "trade.{pair}",
            ["streams.trades.topic: unknown placeholder {pair} (known: {symbol}, {base}, {quote})"],
        ),
        (
            "streams.book.route",
            "depth",
            ["streams.book.route: must contain {symbol} (or {base} and {quote})"],
        ),
        (
            "streams.book.route",
            "depth.{pair}",
            ["streams.book.route: unknown placeholder {pair} (known: {symbol}, {base}, {quote})"],
        ),
        (
            "streams.book.depth",
            -1,
            ["streams.book.depth: must be 0 (whole book) or more, got -1"],
        ),
        ("streams.trades.sides", {"B": "buy"}, ["streams.trades.sides: no value maps to sell"]),
        ("streams.trades.sides", {"S": "sell"}, ["streams.trades.sides: no value maps to buy"]),
        ("streams.trades.sides", {}, ["streams.trades.sides: no value maps to buy or sell"]),
        (
            "streams.trades.sides",
            {"B": "buy", "S": "sell", "short sell": "short"},
            ["streams.trades.sides.\"short sell\": must be buy or sell, got 'short'"],
        ),
        (
            "streams.ticker.route",
            "trade.{symbol}",
            ["streams.ticker.topic: routes like streams.trades: 'trade.{symbol}'"],
        ),
        (
            "rest.url",
            "{rest_url}/book/{pair}",
            [
                "rest.url: unknown placeholder {pair} "
                "(known: {rest_url}, {topic}, {symbol}, {base}, {quote})"
            ],
        ),
        (
            # A placeholder is never part of the scheme: it is filled in with other text.
            "rest.url",
            "http{base}://127.0.0.1:8766/book",
            ["rest.url: must start with {rest_url} or http:// or https://"],
        ),
    ],
)
def test_each_problem_is_one_line_naming_its_key(key: str, value: Any, lines: list[str]) -> None:
    assert issue_lines(set_in(sim_table(), key, value)) == lines


@pytest.mark.parametrize(
    "path",
    [
        "streams.trades.payload",
        "streams.trades.seq",
        "streams.book.first_seq",
        "streams.ticker.time",
        "streams.book.level_price",
        "streams.book.level_size",
        "acks[0].topics",
        "acks[0].id",
        "acks[0].detail",
        "rest.seq",
        "rest.payload",
        "rest.time",
        "rest.topic",
    ],
)
def test_a_pointer_that_is_not_one_is_named(path: str) -> None:
    table = set_in(sim_table(), path.replace("[0]", ".0"), "x")
    assert issue_lines(table) == [f"{path}: {POINTER_ERROR} 'x'"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("streams.trades.snapshot", {"pointer": "/kind", "values": ["snapshot"]}),
        ("streams.trades.first_seq", "/first"),
        ("streams.trades.level_price", "/price"),
        ("streams.trades.level_size", "/size"),
        ("streams.ticker.snapshot", {"pointer": "/kind", "values": ["snapshot"]}),
        ("streams.ticker.depth", 10),
    ],
)
def test_book_keys_are_refused_on_other_streams(key: str, value: Any) -> None:
    assert issue_lines(set_in(sim_table(), key, value)) == [f"{key}: only book streams have it"]


@pytest.mark.parametrize(
    ("key", "template", "sample"),
    [
        ("subscribe", '{"op":"sub","args":[{topics}]', '{"op":"sub","args":[["t"]]'),
        ("unsubscribe", '{"op":"unsub","arg":{topic}', '{"op":"unsub","arg":"t"'),
        ("probe", '{"op":"ping","req":{id}', '{"op":"ping","req":1'),
        # An unknown placeholder is reported, and shown as it is written.
        ("subscribe", '{"args":{topics},"req":{req}}', '{"args":["t"],"req":{req}}'),
    ],
)
def test_a_request_that_is_not_json_is_shown_as_filled_in(
    key: str, template: str, sample: str
) -> None:
    """The line shows the template with sample values (``["t"]``, ``"t"``, ``1``), so the
    user sees what the upstream would have been sent."""
    [line] = [
        line for line in issue_lines(set_in(sim_table(), key, template)) if "is not JSON" in line
    ]
    assert line.startswith(f"{key}: is not JSON once filled in (")
    assert line.endswith(f"): {sample!r}")


def test_a_stream_name_must_be_a_channel_name() -> None:
    table = sim_table()
    table["streams"]["Trades"] = {**table["streams"]["trades"], "topic": "t.{symbol}"}
    table["streams"]["big trades"] = {**table["streams"]["trades"], "topic": "big.{symbol}"}
    assert issue_lines(table) == [
        "streams.Trades: stream name must match [a-z0-9_-]+ (channel names)",
        'streams."big trades": stream name must match [a-z0-9_-]+ (channel names)',
    ]


def test_rest_needs_a_book_with_a_sequence_number_and_a_time() -> None:
    no_book = without(sim_table(), "streams.book")
    assert issue_lines(no_book) == ["rest: only books are repaired from REST; no book stream"]
    no_seq = without(sim_table(), "seq")
    assert issue_lines(no_seq) == [
        "streams.book.seq: required with rest: a REST snapshot is merged by sequence number"
    ]
    # The book's own seq, or its own time in the payload, is enough.
    load_spec(set_in(without(sim_table(), "seq"), "streams.book.seq", "/seq"))
    load_spec(ts_in_payload(without(sim_table(), "rest.time"), "book"))


def test_every_stream_needs_an_event_time_from_somewhere() -> None:
    table = without(sim_table(), "time")
    table["streams"]["ticker"]["time"] = "/body/time"
    assert issue_lines(table) == [
        "streams.trades: has no event time: set fields.ts, time, or the table's time",
        "streams.book: has no event time: set fields.ts, time, or the table's time",
    ]
    load_spec(ts_in_payload(table, "trades", "book"))


def test_what_the_table_allows_is_accepted() -> None:
    table = sim_table()
    table["symbol"] = "{symbol}"
    table["probe"] = '{"op":"ping","req":{id}}'
    table["streams"]["book"]["route"] = "depth.{base}.{quote}"
    table["rest"]["url"] = "https://example.com/book/{base}/{quote}?s={symbol}&t={topic}"
    table["rest"]["time_unit"] = "ms"
    spec = load_spec(table)
    assert spec.symbol == "{symbol}"
    assert spec.rest is not None and spec.rest.time_unit == "ms"


# What only a spec built in Python can get wrong: TOML values are checked by type first.


def test_a_spec_built_in_python_is_checked_like_a_table() -> None:
    spec = load_spec(sim_table())
    trades = spec.streams["trades"]
    assert spec.rest is not None
    cases: list[tuple[Any, dict[str, Any], list[str]]] = [
        (spec, {"symbol_case": "title"}, ["symbol_case: must be one of keep, lower, upper"]),
        (spec, {"time_unit": "sec"}, ["time_unit: must be one of s, ms, us, ns, iso"]),
        (trades, {"time_unit": "sec"}, ["time_unit: must be one of s, ms, us, ns, iso"]),
        (spec.rest, {"time_unit": "sec"}, ["time_unit: must be one of s, ms, us, ns, iso"]),
        # An unknown kind is the only problem told: the others depend on the kind.
        (trades, {"kind": "events"}, ["kind: must be one of event, state, book, got 'events'"]),
    ]
    for built, changes, lines in cases:
        with pytest.raises(ConfigError) as caught:
            attrs.evolve(built, **changes)
        assert str(caught.value).splitlines() == lines, changes
    assert isinstance(attrs.evolve(spec, symbol_case="upper"), JsonSpec)
