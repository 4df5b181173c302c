"""The client protocol's parser: every malformed input maps to its documented error code."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.protocol import (
    ErrorCode,
    Lagged,
    Ping,
    ProtocolError,
    Since,
    Status,
    Subscribe,
    Unsubscribe,
    Welcome,
    encode_envelope,
    encode_error,
    encode_event,
    parse_command,
)


def test_subscribe_one_channel() -> None:
    assert parse_command('{"action":"subscribe","channel":"sim:trades:BTC-USD","id":1}') == (
        Subscribe(("sim:trades:BTC-USD",), 1)
    )


def test_subscribe_channels_times_symbols() -> None:
    command = parse_command(
        '{"action":"subscribe","channels":["sim:trades","sim:ticker"],'
        '"symbols":["BTC-USD","ETH-USD"],"id":"a"}'
    )
    assert command == Subscribe(
        (
            "sim:trades:BTC-USD",
            "sim:trades:ETH-USD",
            "sim:ticker:BTC-USD",
            "sim:ticker:ETH-USD",
        ),
        "a",
    )


def test_channels_without_symbols_and_duplicates_collapse() -> None:
    command = parse_command('{"action":"unsubscribe","channels":["eth:blocks","eth:blocks"]}')
    assert command == Unsubscribe(("eth:blocks",), None)


def test_ping() -> None:
    assert parse_command(b'{"action":"ping","id":3}') == Ping(3)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", ErrorCode.BAD_JSON),
        ("", ErrorCode.BAD_JSON),
        ("[1,2]", ErrorCode.BAD_REQUEST),
        ('{"channel":"x"}', ErrorCode.BAD_REQUEST),
        ('{"action":5}', ErrorCode.BAD_REQUEST),
        ('{"action":"dance"}', ErrorCode.UNKNOWN_ACTION),
        ('{"action":"subscribe"}', ErrorCode.BAD_REQUEST),
        ('{"action":"subscribe","channel":5}', ErrorCode.BAD_REQUEST),
        ('{"action":"subscribe","channels":"sim:trades"}', ErrorCode.BAD_REQUEST),
        ('{"action":"subscribe","channels":["a",1]}', ErrorCode.BAD_REQUEST),
        ('{"action":"subscribe","channels":[]}', ErrorCode.BAD_REQUEST),
        ('{"action":"subscribe","channel":"a","channels":["b"]}', ErrorCode.BAD_REQUEST),
        ('{"action":"subscribe","channel":"a","id":1.5}', ErrorCode.BAD_REQUEST),
        ('{"action":"subscribe","channel":"a","id":true}', ErrorCode.BAD_REQUEST),
        ('{"action":"ping","id":[1]}', ErrorCode.BAD_REQUEST),
    ],
)
def test_errors(text: str, code: str) -> None:
    result = parse_command(text)
    assert isinstance(result, ProtocolError)
    assert result.code == code
    assert result.message


def test_error_echoes_a_usable_id() -> None:
    result = parse_command('{"action":"dance","id":"x7"}')
    assert isinstance(result, ProtocolError)
    assert result.id == "x7"
    event = orjson.loads(encode_error(result))
    assert event == {
        "event": "error",
        "data": {"code": "unknown_action", "message": "unknown action 'dance'"},
        "id": "x7",
    }


def test_too_many_channels() -> None:
    channels = [f"c{i}" for i in range(50)]
    symbols = [f"s{i}" for i in range(50)]
    text = orjson.dumps({"action": "subscribe", "channels": channels, "symbols": symbols})
    result = parse_command(text)
    assert isinstance(result, ProtocolError)
    assert result.code == ErrorCode.BAD_REQUEST


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(["action", "channel", "channels", "symbols", "id", "x"]),
        json_values | st.sampled_from(["subscribe", "unsubscribe", "ping"]),
    )
)
def test_any_object_parses_or_errors(raw: dict[str, object]) -> None:
    """Whatever a client sends, the parser answers; it never raises."""
    result = parse_command(json.dumps(raw))
    assert isinstance(result, Subscribe | Unsubscribe | Ping | ProtocolError)
    if isinstance(result, Subscribe | Unsubscribe):
        assert result.channels and all(isinstance(c, str) for c in result.channels)


@given(st.binary(max_size=64))
def test_any_bytes_parse_or_error(data: bytes) -> None:
    assert parse_command(data) is not None


def test_events_match_protocol_md() -> None:
    assert orjson.loads(encode_event("welcome", Welcome("s1", 15.0))) == {
        "event": "welcome",
        "data": {"session": "s1", "heartbeat": 15.0, "protocol": 1},
    }
    assert orjson.loads(encode_event("pong", None, 3)) == {"event": "pong", "id": 3}
    assert orjson.loads(encode_event("lagged", Lagged("c", 4))) == {
        "event": "lagged",
        "data": {"channel": "c", "dropped": 4},
    }
    assert orjson.loads(encode_event("status", Status("sim", "connected"))) == {
        "event": "status",
        "data": {"source": "sim", "state": "connected"},
    }
    error = ProtocolError(ErrorCode.UNKNOWN_CHANNEL, "no", 2, "x:y")
    assert orjson.loads(encode_error(error))["data"]["channel"] == "x:y"


def test_envelope() -> None:
    plain = orjson.loads(encode_envelope("a:b", 7, 1000, {"k": "v"}, False))
    assert plain == {"channel": "a:b", "seq": 7, "ts": 1000, "data": {"k": "v"}}
    snap = orjson.loads(encode_envelope("a:b", 7, 1000, {"k": "v"}, True))
    assert snap["snapshot"] is True


# Resume -------------------------------------------------------------------------------------


def test_subscribe_with_since_resumes_one_channel() -> None:
    command = parse_command(
        '{"action":"subscribe","channel":"sim:trades:BTC-USD","since":{"seq":41,"epoch":"ab"},"id":3}'
    )
    assert command == Subscribe(("sim:trades:BTC-USD",), 3, Since(41, "ab"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"action":"subscribe","channels":["a:b","a:c"],"since":{"seq":1,"epoch":"e"},"id":1}',
            "'since' resumes one channel: give a single 'channel'",
        ),
        (
            '{"action":"subscribe","channel":"a:b","since":{"seq":-1,"epoch":"e"},"id":1}',
            "'since.seq' must be 0 or more",
        ),
    ],
)
def test_a_since_that_cannot_be_served_is_a_bad_request(text: str, message: str) -> None:
    assert parse_command(text) == ProtocolError(ErrorCode.BAD_REQUEST, message, 1)


@pytest.mark.parametrize(
    "since",
    [
        '{"seq":"1","epoch":"e"}',
        '{"seq":1}',
        '{"seq":1.5,"epoch":"e"}',
        '{"seq":true,"epoch":"e"}',
        '{"seq":1,"epoch":7}',
        '[1,"e"]',
        '"1"',
    ],
)
def test_a_malformed_since_is_a_bad_request_with_the_id(since: str) -> None:
    error = parse_command(f'{{"action":"subscribe","channel":"a:b","since":{since},"id":"x"}}')
    assert isinstance(error, ProtocolError)
    assert (error.code, error.id) == (ErrorCode.BAD_REQUEST, "x")


def test_unsubscribe_ignores_since() -> None:
    command = parse_command(
        '{"action":"unsubscribe","channel":"a:b","since":{"seq":1,"epoch":"e"}}'
    )
    assert command == Unsubscribe(("a:b",))
