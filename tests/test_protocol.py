"""The client protocol's parser: every malformed input maps to its documented error code."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core import protocol
from relay.core.protocol import (
    BINARY_REFUSED,
    MAX_CHANNEL_NAME,
    MAX_CHANNELS_PER_COMMAND,
    Auth,
    ErrorCode,
    Lagged,
    Ping,
    ProtocolError,
    Refusal,
    Since,
    Status,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
    command_id,
    encode_envelope,
    encode_error,
    encode_event,
    parse_command,
    refuse_binary,
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


def subscribe_text(**fields: object) -> bytes:
    return orjson.dumps({"action": "subscribe", "id": 9, **fields})


def test_exactly_the_channel_limit_is_one_command_and_one_more_is_refused() -> None:
    channels = [f"c{i}" for i in range(40)]
    symbols = [f"s{i}" for i in range(25)]  # 40 x 25 = 1,000 channels: the limit
    command = parse_command(subscribe_text(channels=channels, symbols=symbols))
    assert isinstance(command, Subscribe) and len(command.channels) == MAX_CHANNELS_PER_COMMAND
    over = parse_command(subscribe_text(channels=[f"c{i}" for i in range(1001)]))
    assert over == ProtocolError(ErrorCode.BAD_REQUEST, "at most 1000 channels per command", 9)


def test_a_name_of_exactly_the_limit_is_accepted_and_a_longer_one_is_bad_request() -> None:
    longest = "sim:trades:" + "X" * (MAX_CHANNEL_NAME - len("sim:trades:"))
    assert len(longest) == 200
    assert parse_command(subscribe_text(channel=longest)) == Subscribe((longest,), 9)
    for fields in ({"channel": longest + "X"}, {"channels": ["sim:trades", longest + "Y"]}):
        assert parse_command(subscribe_text(**fields)) == ProtocolError(
            ErrorCode.BAD_REQUEST, "channel names are at most 200 characters", 9
        )


def test_a_too_long_name_is_answered_bad_request_on_the_wire() -> None:
    error = parse_command(subscribe_text(channel="x" * 201))
    assert isinstance(error, ProtocolError)
    assert orjson.loads(encode_error(error)) == {
        "event": "error",
        "data": {"code": "bad_request", "message": "channel names are at most 200 characters"},
        "id": 9,
    }


def test_a_refusal_carries_its_status_code_and_message() -> None:
    refusal = Refusal(429, "connection_rate", "slow down")
    assert (refusal.status, refusal.code, refusal.message) == (429, "connection_rate", "slow down")
    assert str(refusal) == "slow down"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"action":"subscribe","id":7}', 7),
        (b'{"action":"ping","id":"x"}', "x"),
        ('{"id":1.5}', None),
        ('{"id":[1]}', None),
        ('{"action":"ping"}', None),
        ("[1,2]", None),
        ('"id"', None),
        ("{not json", None),
        (b"\xff\xfe", None),
    ],
)
def test_command_id_is_the_usable_id_of_a_json_object(
    message: str | bytes, expected: int | str | None
) -> None:
    assert command_id(message) == expected


def test_a_binary_frame_is_refused_as_bad_request_with_its_commands_id() -> None:
    assert refuse_binary(b'{"action":"ping","id":4}') == ProtocolError(
        ErrorCode.BAD_REQUEST, "commands are JSON text frames: send this as text", 4
    )
    assert refuse_binary(b"\x00\x01") == ProtocolError(ErrorCode.BAD_REQUEST, BINARY_REFUSED)


def test_snapshot_and_reorg_envelopes_carry_their_flag_and_nothing_else() -> None:
    data = {"k": "v"}
    assert orjson.loads(encode_envelope("a:b", 7, 1000, data, True)) == {
        "channel": "a:b",
        "seq": 7,
        "ts": 1000,
        "snapshot": True,
        "data": data,
    }
    assert orjson.loads(encode_envelope("a:b", 8, 1001, data, False, reorg=True)) == {
        "channel": "a:b",
        "seq": 8,
        "ts": 1001,
        "reorg": True,
        "data": data,
    }
    # A snapshot is never also flagged reorg: the snapshot replaces everything before it.
    assert "reorg" not in orjson.loads(encode_envelope("a:b", 9, 1002, data, True, reorg=True))


@pytest.mark.parametrize("fresh", [False, True])
def test_the_converter_takes_only_exact_types(fresh: bool) -> None:
    """Checked on the module's converter and on one built in the test: the module's is built
    at import, and a converter's rules are the factory's."""
    converter = protocol._make_converter() if fresh else protocol.converter
    assert converter.structure("a", str) == "a"
    assert converter.structure(5, int) == 5
    assert converter.structure(["a", "b"], list[str]) == ["a", "b"]
    assert converter.structure(None, int | str | None) is None
    assert converter.structure(3, int | str | None) == 3
    for value, kind, message in [
        (5, str, "expected str, got int"),
        ("5", int, "expected int, got str"),
        (True, int, "expected int, got bool"),
        ("abc", list[str], "expected a list, got str"),
        (("a",), list[str], "expected a list, got tuple"),
        (["a", 1], list[str], "expected str, got int"),
    ]:
        with pytest.raises(TypeError, match=f"^{message}$"):
            converter.structure(value, kind)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1,2]", ProtocolError(ErrorCode.BAD_REQUEST, "a command is a JSON object")),
        (
            '{"action":5,"id":2}',
            ProtocolError(ErrorCode.BAD_REQUEST, "missing or non-string 'action'", 2),
        ),
        (
            '{"action":"subscribe","id":3}',
            ProtocolError(ErrorCode.BAD_REQUEST, "missing 'channel' or 'channels'", 3),
        ),
        (
            '{"action":"unsubscribe","channels":[],"id":4}',
            ProtocolError(ErrorCode.BAD_REQUEST, "no channels given", 4),
        ),
        (
            '{"action":"subscribe","channel":"a","symbols":["b"],"id":"5"}',
            ProtocolError(
                ErrorCode.BAD_REQUEST,
                "give either 'channel' or 'channels' (with optional 'symbols'), not both",
                "5",
            ),
        ),
        (
            '{"action":"subscribe","channel":5,"id":6}',
            ProtocolError(
                ErrorCode.BAD_REQUEST, "invalid value for type, expected str | None @ $.channel", 6
            ),
        ),
        (
            '{"action":"subscribe","channels":"ab","symbols":[1],"id":9}',
            ProtocolError(
                ErrorCode.BAD_REQUEST,
                "invalid value for type, expected list[str] | None @ $.channels; "
                "invalid value for type, expected list[str] | None @ $.symbols",
                9,
            ),
        ),
    ],
)
def test_each_malformed_command_gets_its_exact_message_and_its_id(
    text: str, expected: ProtocolError
) -> None:
    assert parse_command(text) == expected


def test_unsubscribe_keeps_its_id() -> None:
    assert parse_command('{"action":"unsubscribe","channel":"a","id":8}') == Unsubscribe(("a",), 8)


# Auth and the subscribed event ------------------------------------------------------------------


def test_an_auth_command_carries_its_token_and_id() -> None:
    assert parse_command('{"action":"auth","token":"a.b.c","id":4}') == Auth("a.b.c", 4)
    assert parse_command('{"action":"auth","token":"a.b.c"}') == Auth("a.b.c", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"action":"auth","token":"","id":4}', "'token' is empty"),
        ('{"action":"auth","id":4}', "required field missing"),
        ('{"action":"auth","token":7,"id":4}', "expected str"),
    ],
)
def test_an_auth_command_without_a_token_is_a_bad_request(text: str, message: str) -> None:
    error = parse_command(text)
    assert isinstance(error, ProtocolError)
    assert (error.code, error.id) == (ErrorCode.BAD_REQUEST, 4)
    assert message in error.message


def test_a_resume_from_seq_zero_is_accepted() -> None:
    command = parse_command('{"action":"subscribe","channel":"a:b","since":{"seq":0,"epoch":"e"}}')
    assert command == Subscribe(("a:b",), None, Since(0, "e"))


def test_subscribed_says_recovered_only_in_answer_to_a_resume() -> None:
    plain = orjson.loads(encode_event("subscribed", Subscribed("a:b", 3, "e")))
    assert plain == {"event": "subscribed", "data": {"channel": "a:b", "seq": 3, "epoch": "e"}}
    for recovered in (True, False):
        resumed = orjson.loads(encode_event("subscribed", Subscribed("a:b", 3, "e", recovered)))
        assert resumed["data"]["recovered"] is recovered


def test_the_cluster_adds_one_error_code() -> None:
    # A contract with clients (docs/protocol.md): a subscribe Redis could not serve in time.
    assert ErrorCode.UNAVAILABLE == "unavailable"
