"""Engine.IO v4's sans-IO core: the query, the packets the relay sends (checked against
python-engineio's own encoder), the decoding of what clients send, and a state machine of one
socket's transports (polls, posts, the probe, the upgrade, the close) against a model."""

from __future__ import annotations

import json

import orjson
import pytest
from engineio.packet import Packet
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from relay.core import engineio
from relay.core.engineio import (
    BAD_METHOD,
    BAD_REQUEST,
    BAD_VERSION,
    UNKNOWN_SID,
    UNKNOWN_TRANSPORT,
    EngineError,
    EngineRequest,
    EngineState,
    Phase,
    Received,
    decode,
    decode_payload,
    open_packet,
    read_query,
)


def fields_of(error: EngineError) -> tuple[int, str]:
    """attrs makes exceptions compare by identity: compare what they say."""
    return error.code, error.message


# -- the query ---------------------------------------------------------------------------------


def test_a_polling_handshake_has_no_sid() -> None:
    assert read_query({"EIO": ["4"], "transport": ["polling"]}) == EngineRequest("polling", None)


def test_a_websocket_with_a_sid_is_an_upgrade() -> None:
    query = {"EIO": ["4"], "transport": ["websocket"], "sid": ["abc"]}
    assert read_query(query) == EngineRequest("websocket", "abc")


def test_an_empty_sid_is_no_sid() -> None:
    query = {"EIO": ["4"], "transport": ["polling"], "sid": [""]}
    assert read_query(query) == EngineRequest("polling", None)


def test_the_first_value_of_a_repeated_parameter_counts() -> None:
    query = {"EIO": ["4", "3"], "transport": ["websocket", "x"], "sid": ["a", "b"]}
    assert read_query(query) == EngineRequest("websocket", "a")
    with pytest.raises(EngineError) as refused:
        read_query({"EIO": ["3", "4"], "transport": ["polling"]})
    assert fields_of(refused.value) == (5, "Unsupported protocol version")


@pytest.mark.parametrize(
    "query",
    [
        {"transport": ["polling"]},
        {"EIO": ["3"], "transport": ["polling"]},
        {"EIO": ["3"]},  # the version is checked first: a v3 client learns that it is one
        {"EIO": ["3"], "transport": ["flashsocket"]},
        {"EIO": [""], "transport": ["polling"]},
        {"EIO": ["4 "], "transport": ["polling"]},
        {"EIO": ["04"], "transport": ["polling"]},
    ],
)
def test_any_version_but_4_is_refused_before_anything_else(query: dict[str, list[str]]) -> None:
    with pytest.raises(EngineError) as refused:
        read_query(query)
    assert fields_of(refused.value) == (5, "Unsupported protocol version")
    assert refused.value is BAD_VERSION


@pytest.mark.parametrize("transport", [None, "", "flashsocket", "Polling", "websockets", "ws"])
def test_an_unknown_transport_is_refused(transport: str | None) -> None:
    query = {"EIO": ["4"]}
    if transport is not None:
        query["transport"] = [transport]
    with pytest.raises(EngineError) as refused:
        read_query(query)
    assert fields_of(refused.value) == (0, "Transport unknown")


def test_engine_errors_are_the_protocols_http_400_bodies() -> None:
    """The codes and messages of the reference server (engine.io's ``Server.errorMessages``)."""
    assert [
        orjson.loads(e.body())
        for e in (UNKNOWN_TRANSPORT, UNKNOWN_SID, BAD_METHOD, BAD_REQUEST, BAD_VERSION)
    ] == [
        {"code": 0, "message": "Transport unknown"},
        {"code": 1, "message": "Session ID unknown"},
        {"code": 2, "message": "Bad handshake method"},
        {"code": 3, "message": "Bad request"},
        {"code": 5, "message": "Unsupported protocol version"},
    ]
    assert BAD_VERSION.body() == b'{"code":5,"message":"Unsupported protocol version"}'


@given(st.integers(-(2**63), 2**63 - 1), st.text())
def test_an_engine_error_body_is_json_of_its_code_and_message(code: int, message: str) -> None:
    error = EngineError(code, message)
    assert json.loads(error.body()) == {"code": code, "message": message}
    assert isinstance(error, Exception)


# -- what the relay sends ----------------------------------------------------------------------


def reference(packet_type: int, data: object = None) -> bytes:
    """python-engineio's encoding of a packet."""
    return Packet(packet_type, data).encode().encode()


def test_the_fixed_packets_are_what_python_engineio_encodes() -> None:
    assert reference(engineio.PING) == engineio.PING_PACKET
    assert reference(engineio.NOOP) == engineio.NOOP_PACKET
    assert reference(engineio.PONG, engineio.PROBE) == engineio.PROBE_ANSWER
    assert reference(engineio.CLOSE) == engineio.CLOSE_PACKET
    assert [engineio.OPEN, engineio.CLOSE, engineio.PING, engineio.PONG] == [0, 1, 2, 3]
    assert [engineio.MESSAGE, engineio.UPGRADE, engineio.NOOP] == [4, 5, 6]
    assert (engineio.PROTOCOL, engineio.PATH) == ("4", "/socket.io/")
    assert engineio.SEPARATOR == b"\x1e"
    assert (engineio.POLLING, engineio.WEBSOCKET) == ("polling", "websocket")


def decoded_open(packet: bytes) -> dict[str, object]:
    parsed = Packet(encoded_packet=packet.decode())
    assert parsed.packet_type == engineio.OPEN
    assert isinstance(parsed.data, dict)
    return parsed.data


def test_the_open_packet_of_a_polling_handshake_offers_the_upgrade() -> None:
    packet = open_packet("s1d", True, 25.0, 20.0, 1_000_000)
    assert packet.startswith(b"0{")
    assert decoded_open(packet) == {
        "sid": "s1d",
        "upgrades": ["websocket"],
        "pingInterval": 25000,
        "pingTimeout": 20000,
        "maxPayload": 1_000_000,
    }


def test_the_open_packet_of_a_websocket_offers_no_upgrade() -> None:
    fields = decoded_open(open_packet("x", False, 1.0, 2.0, 64))
    assert fields["upgrades"] == []
    assert (fields["sid"], fields["maxPayload"]) == ("x", 64)


@pytest.mark.parametrize(
    ("seconds", "ms"),
    [(0.25, 250), (2.5, 2500), (0.1, 100), (1.9996, 2000), (0.0294, 29), (0.0296, 30), (0, 0)],
)
def test_intervals_are_sent_in_whole_milliseconds_rounded(seconds: float, ms: int) -> None:
    fields = decoded_open(open_packet("x", True, seconds, seconds, 10))
    assert fields["pingInterval"] == fields["pingTimeout"] == ms
    assert type(fields["pingInterval"]) is type(fields["pingTimeout"]) is int


def test_the_interval_and_the_timeout_are_not_swapped() -> None:
    fields = decoded_open(open_packet("x", True, 3.0, 7.0, 10))
    assert (fields["pingInterval"], fields["pingTimeout"]) == (3000, 7000)


# -- decoding what clients send ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", Received(1, "")),
        ("2", Received(2, "")),
        ("2probe", Received(2, "probe")),
        ("3", Received(3, "")),
        ("3probe", Received(3, "probe")),
        ("4", Received(4, "")),
        ("4hello", Received(4, "hello")),
        ("40/ws,", Received(4, "0/ws,")),
        ('42/ws,["subscribe",{"channel":"a"}]', Received(4, '2/ws,["subscribe",{"channel":"a"}]')),
        ("42/ws,7[]", Received(4, "2/ws,7[]")),
        # JSON is kept as the client wrote it, not decoded and re-encoded.
        ('4{"a": 1}', Received(4, '{"a": 1}')),
        ("4[1, 2]", Received(4, "[1, 2]")),
        ("4true", Received(4, "true")),
        ("4null", Received(4, "null")),
        ("4 7", Received(4, " 7")),
        ("4é", Received(4, "é")),
        ("5", Received(5, "")),
        ("6", Received(6, "")),
    ],
)
def test_each_packet_a_client_may_send(text: str, expected: Received) -> None:
    assert decode(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty
        "b",  # base64 binary, even empty
        "bAQID",
        "b4hello",
        "0",  # open: the server's packet
        '0{"sid":"x"}',
        "7",
        "8x",
        "9",
        "x",
        "-1",
        " 4",
        "\x1e",
        "probe",
    ],
)
def test_packets_the_relay_cannot_take_are_bad_requests(text: str) -> None:
    with pytest.raises(EngineError) as refused:
        decode(text)
    assert fields_of(refused.value) == (3, "Bad request")


def test_a_post_of_several_packets_decodes_each_in_order() -> None:
    body = b'40/ws,{"token":"k"}\x1e42/ws,["subscribe",{"channel":"a"}]\x1e3\x1e1'
    assert decode_payload(body) == [
        Received(4, '0/ws,{"token":"k"}'),
        Received(4, '2/ws,["subscribe",{"channel":"a"}]'),
        Received(3, ""),
        Received(1, ""),
    ]
    assert decode_payload(b"2probe") == [Received(2, "probe")]
    assert decode_payload("4é".encode()) == [Received(4, "é")]


def test_a_post_holds_as_many_packets_as_its_bytes_allow() -> None:
    # socket.io-client posts its whole buffer at once (20 emits in a loop are one post).
    body = b"\x1e".join([b'42/ws,["subscribe",{"channel":"a"}]'] * 500)
    assert decode_payload(body) == [Received(4, '2/ws,["subscribe",{"channel":"a"}]')] * 500


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"4a\x1e",  # a trailing separator is an empty packet
        b"\x1e4a",
        b"4a\x1e\x1e4b",
        b"4a\x1ebAQID",  # one binary packet refuses the whole post
        b"4a\x1e0",
        b"4a\x1ex",
        b"4\xff",  # not UTF-8
        b"\xc3",
        b"4a\x1e4\xed\xa0\x80",  # a surrogate: not UTF-8 either
    ],
)
def test_a_post_with_any_bad_packet_is_refused_whole(body: bytes) -> None:
    with pytest.raises(EngineError) as refused:
        decode_payload(body)
    assert fields_of(refused.value) == (3, "Bad request")


def _is_json_string(text: str) -> bool:
    try:
        return isinstance(json.loads(text), str)
    except ValueError:
        return False


client_types = st.sampled_from(
    [engineio.CLOSE, engineio.PING, engineio.PONG, engineio.MESSAGE, engineio.UPGRADE]
)
# Any text without the separator, JSON strings included (their quotes are kept).
packet_data = st.text(st.characters(exclude_characters="\x1e", exclude_categories=("Cs",)))


@given(st.lists(st.tuples(client_types, packet_data), min_size=1, max_size=40))
def test_a_post_python_engineio_encodes_decodes_to_its_packets(
    packets: list[tuple[int, str]],
) -> None:
    body = "\x1e".join(Packet(kind, data).encode() for kind, data in packets).encode()
    assert decode_payload(body) == [Received(kind, data) for kind, data in packets]


@given(st.text(min_size=1))
def test_decode_answers_a_packet_or_a_bad_request(text: str) -> None:
    try:
        received = decode(text)
    except EngineError as refused:
        assert refused is BAD_REQUEST
    else:
        assert received.type in (1, 2, 3, 4, 5, 6)
        assert text[0] != "b"


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("text", ["4" + DEEP, "4" + '{"a":' * 5000 + "1" + "}" * 5000])
def test_deeply_nested_json_in_a_message_is_a_bad_request_or_kept_as_text(text: str) -> None:
    try:
        received = decode(text)
    except EngineError as refused:
        assert refused is BAD_REQUEST
    else:
        assert received == Received(4, text[1:])


def test_a_post_with_deeply_nested_json_keeps_it_as_text() -> None:
    # Engine.IO does not read a message's text; the Socket.IO layer refuses it.
    assert decode_payload(("4" + DEEP).encode()) == [Received(4, DEEP)]


def test_a_message_that_is_a_json_string_keeps_its_quotes() -> None:
    assert decode('4"abc"') == Received(4, '"abc"')


def test_a_packet_type_is_an_ascii_digit() -> None:
    with pytest.raises(EngineError):
        decode("\u0663probe")


# -- the socket's transports: examples ---------------------------------------------------------


def test_a_polling_socket_takes_one_poll_at_a_time_and_posts() -> None:
    state = EngineState(websocket=False)
    assert (state.phase, state.polling, state.closed) == (Phase.POLLING, False, False)
    assert state.post()
    assert state.poll()
    assert state.polling
    assert state.post()  # posts while a poll waits
    state.polled()
    assert not state.polling
    assert state.poll()
    assert not state.closed


def test_overlapping_polls_close_the_socket() -> None:
    state = EngineState(websocket=False)
    assert state.poll()
    assert not state.poll()
    assert state.closed
    assert (state.phase, state.polling) == (Phase.CLOSED, False)
    assert not state.post()
    assert not state.poll()


def test_the_upgrade_probe_then_upgrade_packet() -> None:
    state = EngineState(websocket=False)
    assert state.poll()
    assert state.probe()
    assert state.phase is Phase.UPGRADING
    assert not state.probe()  # one probe
    assert state.post()  # polls and posts go on until the upgrade
    state.polled()
    assert state.poll()
    state.polled()
    assert state.upgrade()
    assert state.phase is Phase.WEBSOCKET
    assert not state.upgrade()
    assert not state.poll()
    assert not state.post()
    assert not state.probe()
    assert not state.closed


def test_an_upgrade_without_a_probe_is_refused_and_changes_nothing() -> None:
    state = EngineState(websocket=False)
    assert not state.upgrade()
    assert state.phase is Phase.POLLING


def test_a_failed_probe_goes_back_to_polling_and_may_probe_again() -> None:
    state = EngineState(websocket=False)
    assert state.probe()
    state.probe_failed()
    assert state.phase is Phase.POLLING
    assert not state.upgrade()
    assert state.probe()
    assert state.upgrade()
    state.probe_failed()  # too late: the socket is on its WebSocket
    assert state.phase is Phase.WEBSOCKET


def test_a_websocket_socket_never_polls_nor_probes() -> None:
    state = EngineState(websocket=True)
    assert (state.phase, state.polling, state.closed) == (Phase.WEBSOCKET, False, False)
    assert not state.poll()
    assert not state.closed  # refused, not closed: only overlapping polls close
    assert not state.post()
    assert not state.probe()
    assert not state.upgrade()
    state.probe_failed()
    assert state.phase is Phase.WEBSOCKET


def test_close_ends_everything_and_forgets_the_waiting_poll() -> None:
    state = EngineState(websocket=False)
    assert state.poll()
    state.close()
    assert state.closed and not state.polling
    assert not (state.poll() or state.post() or state.probe() or state.upgrade())
    state.probe_failed()
    assert state.closed


def test_a_poll_waiting_across_the_upgrade_is_still_answered() -> None:
    """The probe answers the waiting poll (the shell sees to that); until it is answered it
    is still waiting, and no new poll is taken."""
    state = EngineState(websocket=False)
    assert state.poll()
    assert state.probe()
    assert state.upgrade()
    assert state.polling
    assert not state.poll()
    assert not state.closed
    state.polled()
    assert not state.polling


# -- the socket's transports: a state machine against a model ----------------------------------

POLLS = (Phase.POLLING, Phase.UPGRADING)


class EngineMachine(RuleBasedStateMachine):
    """Requests arrive in any order; the state answers as a four-phase model does."""

    def __init__(self) -> None:
        super().__init__()
        self.state = EngineState(websocket=False)
        self.phase = Phase.POLLING
        self.waiting = 0
        """Polls accepted and not yet answered."""
        self.probed = False
        """A probe was accepted since the socket last polled without one."""

    @initialize(websocket=st.booleans())
    def start(self, websocket: bool) -> None:
        self.state = EngineState(websocket)
        self.phase = Phase.WEBSOCKET if websocket else Phase.POLLING

    @rule()
    def poll(self) -> None:
        allowed = self.state.poll()
        if self.phase not in POLLS:
            assert not allowed
        elif self.waiting:
            assert not allowed
            self.phase = Phase.CLOSED
            self.waiting = 0
        else:
            assert allowed
            self.waiting += 1

    @rule()
    def polled(self) -> None:
        self.state.polled()
        self.waiting = 0

    @rule()
    def post(self) -> None:
        assert self.state.post() == (self.phase in POLLS)

    @rule()
    def probe(self) -> None:
        allowed = self.state.probe()
        assert allowed == (self.phase is Phase.POLLING)
        if allowed:
            self.phase = Phase.UPGRADING
            self.probed = True

    @rule()
    def upgrade(self) -> None:
        allowed = self.state.upgrade()
        assert allowed == (self.phase is Phase.UPGRADING)
        if allowed:
            assert self.probed
            self.phase = Phase.WEBSOCKET

    @rule()
    def probe_failed(self) -> None:
        self.state.probe_failed()
        if self.phase is Phase.UPGRADING:
            self.phase = Phase.POLLING
            self.probed = False

    @rule()
    def close(self) -> None:
        self.state.close()
        self.phase = Phase.CLOSED
        self.waiting = 0

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.state.phase is self.phase
        assert self.waiting <= 1  # at most one poll waits
        assert self.state.polling == bool(self.waiting)
        assert self.state.closed == (self.phase is Phase.CLOSED)

    @invariant()
    def a_closed_socket_has_no_waiting_poll(self) -> None:
        if self.state.closed:
            assert not self.state.polling

    @invariant()
    def upgrading_only_after_a_probe(self) -> None:
        if self.state.phase is Phase.UPGRADING:
            assert self.probed


TestEngineMachine = EngineMachine.TestCase
