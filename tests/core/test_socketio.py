"""Socket.IO v5 in namespace /ws: the packets the relay builds by hand are what python-socketio's
own encoder makes of the same packet (byte for byte where JSON has one spelling, the same packet
once decoded where it has several), every shape of client packet reads as the relay means it to,
and the acknowledgements say which channels a request got."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from socketio.packet import (
    ACK,
    BINARY_EVENT,
    CONNECT,
    CONNECT_ERROR,
    DISCONNECT,
    EVENT,
    Packet,
)

from relay.core import socketio
from relay.core.protocol import (
    ChannelAck,
    ChannelRevoked,
    ErrorCode,
    ErrorData,
    EventData,
    Lagged,
    Ping,
    ProtocolError,
    Since,
    Status,
    Subscribe,
    Subscribed,
    Unsubscribe,
)
from relay.core.socketio import (
    Connect,
    Disconnect,
    Refused,
    Request,
    ack_packet,
    ack_result,
    connect_error_packet,
    connected_packet,
    data_packet,
    error_packet,
    event_packet,
    read,
)

NS = "/ws"


def reference(packet: Packet) -> bytes:
    """python-socketio's encoding of a packet, in an Engine.IO message (type 4)."""
    encoded = packet.encode()
    assert isinstance(encoded, str)  # no binary attachments
    return b"4" + encoded.encode()


def decoded(sent: bytes) -> Packet:
    """python-socketio's decoding of what the relay sends (an Engine.IO message)."""
    assert sent[:1] == b"4"
    packet = Packet(encoded_packet=sent[1:].decode())
    assert packet.attachment_count == 0
    return packet


def as_sent(packet: Packet) -> tuple[int, str | None, int | None, Any]:
    return packet.packet_type, packet.namespace, packet.id, packet.data


# JSON values. ASCII text (but DEL, which the json module escapes) and integers have one JSON
# spelling in both encoders (orjson, and the json module python-socketio uses), so the bytes
# must be equal; with any text and floats the spellings differ ("é" or "\u00e9", 1e16 or
# 1e+16) and the decoded packets must be equal.
ascii_text = st.text(st.characters(max_codepoint=126), max_size=12)
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
int64 = st.integers(-(2**63), 2**63 - 1)


def json_values(text: st.SearchStrategy[str], floats: bool) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | int64 | text
    if floats:
        scalars |= st.floats(allow_nan=False, allow_infinity=False)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )


def envelopes(text: st.SearchStrategy[str], floats: bool) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda channel, seq, ts, data, snapshot: {
            "channel": channel,
            "seq": seq,
            "ts": ts,
            **({"snapshot": True} if snapshot else {}),
            "data": data,
        },
        text,
        st.integers(0, 2**63 - 1),
        st.integers(0, 2**63 - 1),
        st.dictionaries(text, json_values(text, floats), max_size=4),
        st.booleans(),
    )


# -- the packets the relay sends ---------------------------------------------------------------


@given(envelopes(ascii_text, floats=False))
def test_a_data_packet_is_python_socketios_data_event_byte_for_byte(
    envelope: dict[str, Any],
) -> None:
    expected = reference(Packet(EVENT, data=["data", envelope], namespace=NS))
    assert data_packet(orjson.dumps(envelope)) == expected


@given(envelopes(any_text, floats=True))
def test_a_data_packet_decodes_to_the_data_event_of_its_envelope(envelope: dict[str, Any]) -> None:
    packet = decoded(data_packet(orjson.dumps(envelope)))
    assert as_sent(packet) == (EVENT, NS, None, ["data", envelope])


def test_a_data_packet_wraps_the_payload_bytes_as_they_are() -> None:
    payload = b'{"channel":"sim:trades:A","seq":1,"ts":2,"data":{"p":"1"}}'
    assert data_packet(payload) == b'42/ws,["data",' + payload + b"]"
    assert socketio.DATA_PREFIX == b'42/ws,["data",'


def event_datas(
    text: st.SearchStrategy[str],
) -> st.SearchStrategy[tuple[EventData, dict[str, Any]]]:
    """Each kind of event data, with the JSON object a client must get for it (written out
    here, not made by the relay's own encoder)."""
    count = st.integers(0, 2**53)
    optional = st.none() | text
    return st.one_of(
        st.builds(
            lambda c, s, e, r: (
                Subscribed(c, s, e, r),
                {"channel": c, "seq": s, "epoch": e, **({} if r is None else {"recovered": r})},
            ),
            text,
            count,
            text,
            st.none() | st.booleans(),
        ),
        st.builds(lambda c: (ChannelAck(c), {"channel": c}), text),
        st.builds(
            lambda c, r, m: (ChannelRevoked(c, r, m), {"channel": c, "reason": r, "message": m}),
            text,
            text,
            text,
        ),
        st.builds(
            lambda code, m, c: (
                ErrorData(code, m, c),
                {"code": code, "message": m, **({} if c is None else {"channel": c})},
            ),
            text,
            text,
            optional,
        ),
        st.builds(lambda c, d: (Lagged(c, d), {"channel": c, "dropped": d}), text, count),
        st.builds(lambda s, t: (Status(s, t), {"source": s, "state": t}), text, text),
    )


EVENT_NAMES = st.sampled_from(["subscribed", "unsubscribed", "error", "lagged", "status", "data"])


@given(EVENT_NAMES, event_datas(ascii_text))
def test_an_event_packet_is_python_socketios_event_byte_for_byte(
    name: str, data: tuple[EventData, dict[str, Any]]
) -> None:
    event, expected = data
    assert event_packet(name, event) == reference(
        Packet(EVENT, data=[name, expected], namespace=NS)
    )


@given(EVENT_NAMES, event_datas(any_text))
def test_an_event_packet_decodes_to_its_one_argument(
    name: str, data: tuple[EventData, dict[str, Any]]
) -> None:
    event, expected = data
    assert as_sent(decoded(event_packet(name, event))) == (EVENT, NS, None, [name, expected])


@pytest.mark.parametrize("name", ["subscribed", "status", "ping"])
def test_an_event_without_data_has_no_argument(name: str) -> None:
    assert event_packet(name, None) == reference(Packet(EVENT, data=[name], namespace=NS))
    assert event_packet(name, None) == b'42/ws,["' + name.encode() + b'"]'


@given(ascii_text, ascii_text, st.none() | ascii_text, st.none() | st.integers() | ascii_text)
def test_an_error_packet_is_the_error_event_without_the_request_id(
    code: str, message: str, channel: str | None, request_id: int | str | None
) -> None:
    error = ProtocolError(code, message, request_id, channel)
    body = {"code": code, "message": message, **({} if channel is None else {"channel": channel})}
    assert error_packet(error) == reference(Packet(EVENT, data=["error", body], namespace=NS))


json_objects = st.dictionaries(ascii_text, json_values(ascii_text, floats=False), max_size=4)


@given(st.integers(0, 2**63), json_objects)
def test_an_ack_packet_is_python_socketios_ack_byte_for_byte(
    ack: int, result: dict[str, Any]
) -> None:
    assert ack_packet(ack, result) == reference(Packet(ACK, data=[result], namespace=NS, id=ack))


@given(st.integers(0, 2**63), st.dictionaries(any_text, json_values(any_text, floats=True)))
def test_an_ack_packet_decodes_to_its_id_and_result(ack: int, result: dict[str, Any]) -> None:
    assert as_sent(decoded(ack_packet(ack, result))) == (ACK, NS, ack, [result])


def test_ack_zero_is_an_id() -> None:
    assert ack_packet(0, {}) == b"43/ws,0[{}]"


@given(ascii_text)
def test_the_connected_packet_is_python_socketios_connect(sid: str) -> None:
    expected = reference(Packet(CONNECT, data={"sid": sid}, namespace=NS))
    assert connected_packet(sid) == expected


@given(any_text)
def test_the_connected_packet_decodes_to_its_sid(sid: str) -> None:
    assert as_sent(decoded(connected_packet(sid))) == (CONNECT, NS, None, {"sid": sid})


@given(ascii_text, ascii_text, st.sampled_from([NS, "/", "/other", "/a/b"]))
def test_a_connect_error_is_python_socketios_connect_error(
    code: str, message: str, namespace: str
) -> None:
    body = {"message": code, "data": {"code": code, "message": message}}
    expected = reference(Packet(CONNECT_ERROR, data=body, namespace=namespace))
    assert connect_error_packet(code, message, namespace) == expected


def test_a_connect_error_names_the_code_as_its_message_in_ws_by_default() -> None:
    packet = connect_error_packet("invalid_credentials", "no such key")
    assert packet == (
        b'44/ws,{"message":"invalid_credentials",'
        b'"data":{"code":"invalid_credentials","message":"no such key"}}'
    )
    assert (
        connect_error_packet("x", "y", "/")
        == b'44{"message":"x","data":{"code":"x","message":"y"}}'
    )


def test_the_disconnect_packet_is_python_socketios() -> None:
    assert reference(Packet(DISCONNECT, namespace=NS)) == socketio.DISCONNECT_PACKET
    assert socketio.DISCONNECT_PACKET == b"41/ws,"
    assert socketio.NAMESPACE == NS
    assert socketio.ACTIONS == ("subscribe", "unsubscribe")


# -- reading client packets: connect and disconnect ---------------------------------------------


def client(packet_type: int, data: Any = None, namespace: str = NS, id: int | None = None) -> str:
    """What a client sends, as python-socketio's encoder makes it."""
    encoded = Packet(packet_type, data=data, namespace=namespace, id=id).encode()
    assert isinstance(encoded, str)
    return encoded


BAD_AUTH = "auth is an object: {token} or {key}"
BAD_TOKEN = "auth's token is a string"
BAD_KEY = "auth's key is a string"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (client(CONNECT, {"token": "k1"}), Connect("k1")),
        (client(CONNECT, {"key": "k2"}), Connect("k2")),
        (client(CONNECT, {"token": "t", "key": "k"}), Connect("t")),  # the token first
        (client(CONNECT, {"token": "k", "other": 1}), Connect("k")),
        (client(CONNECT, {"key": "k", "token": None}), Connect("k")),  # a null token is none
        (client(CONNECT, {"key": "k", "token": ""}), Connect("k")),
        (client(CONNECT, {}), Connect(None)),
        (client(CONNECT, {"token": None}), Connect(None)),
        (client(CONNECT, {"token": ""}), Connect(None)),  # an empty credential is none
        (client(CONNECT, {"user": "k"}), Connect(None)),
        (client(CONNECT), Connect(None)),  # "0/ws,": no auth payload
        ("0/ws", Connect(None)),
        ("0/ws,null", Connect(None)),
        ('0/ws?x=1,{"token":"q"}', Connect("q")),  # the decoder drops a query
        ("0/ws,5", Connect(None)),  # decoder: digits after the namespace are an id
        ('0/ws,5{"token":"k"}', Connect("k")),
        (client(CONNECT, {"token": 5}), Refused(NS, "bad_request", BAD_TOKEN)),
        (client(CONNECT, {"token": True}), Refused(NS, "bad_request", BAD_TOKEN)),
        (client(CONNECT, {"key": ["k"]}), Refused(NS, "bad_request", BAD_KEY)),
        (client(CONNECT, {"token": {"k": 1}}), Refused(NS, "bad_request", BAD_TOKEN)),
        (client(CONNECT, "k"), Refused(NS, "bad_request", BAD_AUTH)),
        (client(CONNECT, ["k"]), Refused(NS, "bad_request", BAD_AUTH)),
        ("0/ws,true", Refused(NS, "bad_request", BAD_AUTH)),
    ],
)
def test_connects_to_the_relays_namespace(text: str, expected: object) -> None:
    assert read(text) == expected


UNKNOWN_NAMESPACE = "the namespace is /ws"


@pytest.mark.parametrize(
    ("text", "namespace"),
    [
        ("0", "/"),  # io(url) without the namespace
        (client(CONNECT, {"token": "k"}, namespace="/"), "/"),
        (client(CONNECT, {"token": "k"}, namespace="/other"), "/other"),
        ("0/wss,", "/wss"),
        ("0/WS,", "/WS"),
        ("0/ws/,", "/ws/"),
        ('0/other,{"token":5}', "/other"),  # the namespace is refused before the auth is read
    ],
)
def test_a_connect_to_another_namespace_is_refused(text: str, namespace: str) -> None:
    assert read(text) == Refused(namespace, "unknown_namespace", UNKNOWN_NAMESPACE)


@pytest.mark.parametrize("text", ["1/ws,", "1/ws", client(DISCONNECT)])
def test_a_disconnect_from_the_namespace(text: str) -> None:
    assert read(text) == Disconnect()


# -- reading client packets: events ------------------------------------------------------------


def bad(message: str, ack: int | None = None) -> Request:
    return Request(ProtocolError(ErrorCode.BAD_REQUEST, message), ack)


@pytest.mark.parametrize(
    ("data", "command"),
    [
        (["subscribe", {"channel": "sim:trades:A"}], Subscribe(("sim:trades:A",))),
        (["subscribe", {"channels": ["a", "b"]}], Subscribe(("a", "b"))),
        (["subscribe", {"channels": ["t"], "symbols": ["A", "B"]}], Subscribe(("t:A", "t:B"))),
        (
            ["subscribe", {"channel": "a", "since": {"seq": 3, "epoch": "e"}}],
            Subscribe(("a",), None, Since(3, "e")),
        ),
        (["unsubscribe", {"channel": "a"}], Unsubscribe(("a",))),
        (["unsubscribe", {"channels": ["t"], "symbols": ["A"]}], Unsubscribe(("t:A",))),
        # The command's own action and id are the event's: whatever the body says is ignored.
        (["subscribe", {"channel": "a", "action": "unsubscribe", "id": 7}], Subscribe(("a",))),
        (["unsubscribe", {"channel": "a", "action": "auth", "id": "x"}], Unsubscribe(("a",))),
        (["subscribe", {"channel": "a"}, "extra"], Subscribe(("a",))),
    ],
)
@pytest.mark.parametrize("ack", [None, 0, 12])
def test_subscribe_and_unsubscribe_events(
    data: list[Any], command: Subscribe | Unsubscribe, ack: int | None
) -> None:
    assert read(client(EVENT, data, id=ack)) == Request(command, ack)


def test_an_event_as_socket_io_client_writes_it() -> None:
    text = '2/ws,3["subscribe",{"channel":"sim:trades:A"}]'
    assert read(text) == Request(Subscribe(("sim:trades:A",)), 3)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "missing 'channel' or 'channels'"),
        ({"channel": "a", "channels": ["b"]}, "give either 'channel'"),
        ({"channel": 5}, "expected str | None @ $.channel"),
        ({"channels": []}, "no channels given"),
        ({"channels": ["a", "b"], "since": {"seq": 1, "epoch": "e"}}, "'since' resumes one"),
    ],
)
@pytest.mark.parametrize("ack", [None, 4])
def test_a_malformed_request_is_the_protocols_error_with_its_ack(
    body: dict[str, Any], message: str, ack: int | None
) -> None:
    got = read(client(EVENT, ["subscribe", body], id=ack))
    assert isinstance(got, Request) and isinstance(got.command, ProtocolError)
    assert got.command.code == ErrorCode.BAD_REQUEST
    assert message in got.command.message
    assert got.command.id is None  # never the body's id: the ack is the event's
    assert got.ack == ack


def test_a_malformed_request_never_echoes_the_bodys_id() -> None:
    got = read(client(EVENT, ["subscribe", {"id": 9}]))
    assert isinstance(got, Request) and isinstance(got.command, ProtocolError)
    assert got.command.id is None


@pytest.mark.parametrize("name", ["ping", "auth", "hello", "Subscribe", "data", ""])
@pytest.mark.parametrize("ack", [None, 5])
def test_any_other_event_name_is_a_bad_request(name: str, ack: int | None) -> None:
    got = read(client(EVENT, [name, {"channel": "a"}], id=ack))
    assert got == bad(f"unknown event {name!r}: emit subscribe or unsubscribe", ack)


@pytest.mark.parametrize("body", [[], ["subscribe"], ["subscribe", None], ["subscribe", "a"]])
@pytest.mark.parametrize("ack", [None, 1])
def test_an_argument_that_is_not_an_object_is_a_bad_request(
    body: list[Any], ack: int | None
) -> None:
    if not body:
        expected = bad("an event is a name and its argument", ack)
    else:
        expected = bad("subscribe's argument is an object such as {channel: ...}", ack)
    assert read(client(EVENT, body, id=ack)) == expected
    assert read(client(EVENT, ["unsubscribe", [1]], id=ack)) == bad(
        "unsubscribe's argument is an object such as {channel: ...}", ack
    )


@pytest.mark.parametrize(
    "text",
    [
        "2/ws,",  # no data at all
        "2/ws",
        '2/ws,{"channel":"a"}',
        '2/ws,"subscribe"',
        "2/ws,[]",
        '2/ws,[1,{"channel":"a"}]',
        '2/ws,[null,{"channel":"a"}]',
        '2/ws,[["subscribe"],{"channel":"a"}]',
    ],
)
def test_an_event_that_is_not_a_name_and_an_argument_is_a_bad_request(text: str) -> None:
    assert read(text) == bad("an event is a name and its argument")


NOT_AN_EVENT = "the relay takes events (subscribe, unsubscribe), not binary or acks"


@pytest.mark.parametrize(
    ("text", "ack"),
    [
        ('51-/ws,["subscribe",{"_placeholder":true,"num":0}]', None),
        ('51-/ws,8["subscribe",{"_placeholder":true,"num":0}]', 8),
        ("3/ws,2[{}]", 2),  # an ack of the client's: the relay asks for none
        ('61-/ws,2[{"_placeholder":true,"num":0}]', 2),
        ('4/ws,{"message":"x"}', None),
        ("9/ws,", None),
    ],
)
def test_binary_events_acks_and_unknown_types_are_bad_requests(text: str, ack: int | None) -> None:
    assert read(text) == bad(NOT_AN_EVENT, ack)


def test_python_socketios_binary_event_is_refused() -> None:
    encoded = Packet(EVENT, data=["subscribe", b"\x00"], namespace=NS).encode()
    assert isinstance(encoded, list) and encoded[0].startswith("51-/ws,")
    assert read(encoded[0]) == bad(NOT_AN_EVENT)


@pytest.mark.parametrize(
    "text",
    [
        '2["subscribe",{"channel":"a"}]',  # io(url): the main namespace
        '23["subscribe",{"channel":"a"}]',  # even with an ack id: no ack for another namespace
        '2/other,["subscribe",{"channel":"a"}]',
        "1",  # a disconnect from the main namespace
        "1/other,",
        "9",
    ],
)
def test_packets_outside_the_namespace_are_bad_requests_without_an_ack(text: str) -> None:
    assert read(text) == bad(UNKNOWN_NAMESPACE)


@pytest.mark.parametrize("text", ["", "\u0662/ws,[]", "x/ws,[]", " 2/ws,[]"])
def test_a_packet_starts_with_an_ascii_digit(text: str) -> None:
    assert read(text) == bad("not a Socket.IO packet")


@pytest.mark.parametrize(
    "text",
    [
        "x",
        "hello",
        "-1",
        " 2/ws,[]",
        "2/ws,[",
        "2/ws,{bad",
        '0/ws,{"token":',
        "2/ws,1e5",  # id 1, then "e5", not JSON
        "0/ws,1.5",  # id 1, then ".5"
        "2/ws," + "1" * 101 + "[]",  # an id of over 100 digits
        "512345678901-/ws,[]",  # an attachment count of over 10 digits
        "2/ws,[NaN",
    ],
)
def test_garbage_is_not_a_socket_io_packet(text: str) -> None:
    assert read(text) == bad("not a Socket.IO packet")


@given(st.text())
def test_reading_any_text_answers_a_client_packet(text: str) -> None:
    got = read(text)
    assert isinstance(got, Connect | Refused | Disconnect | Request)
    if isinstance(got, Refused):
        assert got.code in ("unknown_namespace", "bad_request")


@given(
    st.sampled_from(["subscribe", "unsubscribe", "ping", "other"]),
    json_values(any_text, floats=True),
    st.none() | st.integers(0, 10**12),
)
def test_every_event_keeps_its_ack_and_only_objects_to_the_two_actions_get_parsed(
    name: str, body: Any, ack: int | None
) -> None:
    got = read(client(EVENT, [name, body], id=ack))
    assert isinstance(got, Request)
    assert got.ack == ack
    if name not in socketio.ACTIONS or not isinstance(body, dict):
        assert isinstance(got.command, ProtocolError)
        assert got.command.code == ErrorCode.BAD_REQUEST
    elif isinstance(got.command, ProtocolError):
        assert got.command.id is None
    else:
        assert isinstance(got.command, Subscribe if name == "subscribe" else Unsubscribe)
        assert got.command.id is None


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("text", ["2/ws," + DEEP, "0/ws," + '{"token":' * 5000 + '""' + "}" * 5000])
def test_deeply_nested_json_is_not_a_socket_io_packet(text: str) -> None:
    assert read(text) == bad("not a Socket.IO packet")


# -- acknowledgements ---------------------------------------------------------------------------


def test_the_ack_of_a_refused_request_is_its_error() -> None:
    error = ProtocolError(ErrorCode.BAD_REQUEST, "no channels given", 3, "a")
    assert ack_result(error, lambda _: True, lambda _: True) == {
        "error": {"code": "bad_request", "message": "no channels given"}
    }


def test_the_ack_of_a_subscribe_lists_the_channels_held_and_refused_in_order() -> None:
    held = {"a", "c", "x"}
    result = ack_result(Subscribe(("c", "b", "a", "d")), held.__contains__, lambda _: True)
    assert result == {"subscribed": ["c", "a"], "failed": ["b", "d"]}
    assert list(result) == ["subscribed", "failed"]


def test_the_ack_of_an_unsubscribe_lists_the_channels_left_and_unknown() -> None:
    held = {"b"}
    known = {"a", "b", "c"}
    result = ack_result(Unsubscribe(("a", "b", "c", "z")), held.__contains__, known.__contains__)
    # a and c: not held (any more); b: still held; z: no such channel.
    assert result == {"unsubscribed": ["a", "c"], "failed": ["b", "z"]}
    assert list(result) == ["unsubscribed", "failed"]


def test_an_unsubscribe_of_an_unknown_channel_fails_even_when_not_held() -> None:
    assert ack_result(Unsubscribe(("z",)), lambda _: False, lambda _: False) == {
        "unsubscribed": [],
        "failed": ["z"],
    }


def test_other_commands_have_no_acknowledgement() -> None:
    with pytest.raises(TypeError, match=r"^no acknowledgement for Ping\(id=None\)$"):
        ack_result(Ping(), lambda _: True, lambda _: True)


channel_names = st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True)


@given(channel_names, st.sets(st.sampled_from("abcdefgh")), st.sets(st.sampled_from("abcdefgh")))
def test_an_ack_splits_the_requested_channels_in_their_order(
    channels: list[str], held: set[str], known: set[str]
) -> None:
    subscribed = ack_result(Subscribe(tuple(channels)), held.__contains__, known.__contains__)
    assert subscribed["subscribed"] == [c for c in channels if c in held]
    assert sorted(subscribed["subscribed"] + subscribed["failed"]) == sorted(channels)
    unsubscribed = ack_result(Unsubscribe(tuple(channels)), held.__contains__, known.__contains__)
    assert unsubscribed["unsubscribed"] == [c for c in channels if c in known and c not in held]
    assert sorted(unsubscribed["unsubscribed"] + unsubscribed["failed"]) == sorted(channels)
    # What a client gets is JSON the acknowledgement callback can read.
    assert json.loads(ack_packet(1, subscribed)[len("43/ws,1") :]) == [subscribed]
    assert BINARY_EVENT == 5  # the type python-socketio gives a binary event (refused above)


def test_an_id_in_the_body_is_ignored_whatever_its_type() -> None:
    # A Socket.IO request's id is its acknowledgement's: a WebSocket-style id is not read.
    text = '2/ws,["subscribe",{"channel":"a","id":[1]}]'
    assert read(text) == Request(Subscribe(("a",), None, None), None)
    text = '2/ws,4["unsubscribe",{"channel":"a","id":{"x":1},"action":"subscribe"}]'
    assert read(text) == Request(Unsubscribe(("a",), None), 4)
