"""The server end of a client WebSocket (sans-IO), against wsproto's client as the peer."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason

from relay.core.handshake import accept
from relay.core.websocket import (
    MESSAGE_TOO_BIG,
    Answer,
    Closed,
    PongReceived,
    Received,
    ServerWebSocket,
)
from tests.core.test_handshake import UPGRADE

CAP = 1024


def opened(trailing: bytes = b"", cap: int = CAP) -> ServerWebSocket:
    _, server = accept("GET", UPGRADE, trailing, cap, compression=False)
    return server


def pair(cap: int = CAP) -> tuple[ServerWebSocket, Connection]:
    return opened(cap=cap), Connection(ConnectionType.CLIENT)


def fragmented(client: Connection, message: str | bytes, parts: int) -> bytes:
    """``message`` sent by ``client`` as up to ``parts`` frames."""
    step = max(1, -(-len(message) // parts))
    chunks = [message[i : i + step] for i in range(0, len(message), step)] or [message]
    wire = b""
    for k, chunk in enumerate(chunks):
        finished = k == len(chunks) - 1
        wire += client.send(
            TextMessage(data=chunk, message_finished=finished)
            if isinstance(chunk, str)
            else BytesMessage(data=chunk, message_finished=finished)
        )
    return wire


def client_events(client: Connection, frame: bytes) -> list[object]:
    client.receive_data(frame)
    return list(client.events())


def feed(server: ServerWebSocket, data: bytes, cuts: list[int]) -> list[Received]:
    """Deliver ``data`` in pieces cut at ``cuts``, the way TCP may."""
    out: list[Received] = []
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        if cut > start:
            out += server.receive(data[start:cut])
            start = cut
    return out


messages = st.lists(
    st.one_of(st.text(max_size=300), st.binary(max_size=300)),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    messages=messages,
    fragments=st.lists(st.integers(1, 5), min_size=8, max_size=8),
    pings=st.lists(st.booleans(), min_size=8, max_size=8),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_messages_arrive_whole_and_in_order_however_framed_and_cut(
    messages: list[str | bytes],
    fragments: list[int],
    pings: list[bool],
    cuts: list[int],
) -> None:
    server, client = pair(cap=4 * 300)
    wire = b""
    for i, message in enumerate(messages):
        n = fragments[i]
        step = max(1, -(-len(message) // n))
        parts = [message[j : j + step] for j in range(0, len(message), step)] or [message]
        for k, part in enumerate(parts):
            last = k == len(parts) - 1
            event = (
                TextMessage(data=part, message_finished=last)
                if isinstance(part, str)
                else BytesMessage(data=part, message_finished=last)
            )
            wire += client.send(event)
            if pings[i] and k == 0:
                wire += client.send(Ping(payload=b"%d" % i))  # control frames may interleave
    received = feed(server, wire, cuts)
    assert [r for r in received if isinstance(r, str | bytes)] == messages
    answers = [r for r in received if isinstance(r, Answer)]
    assert len(answers) == sum(pings[: len(messages)])
    for answer, i in zip(answers, [i for i in range(len(messages)) if pings[i]], strict=True):
        (pong,) = client_events(client, answer.frame)
        assert pong == Pong(payload=b"%d" % i)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(CAP + 1, 3 * CAP), parts=st.integers(1, 4), text=st.booleans())
def test_a_message_over_the_cap_closes_with_1009_even_in_fragments(
    size: int, parts: int, text: bool
) -> None:
    server, client = pair()
    payload: str | bytes = "é" * (size // 2 + 1) if text else b"x" * size
    wire = fragmented(client, payload, parts) + client.send(TextMessage(data="after"))
    received = server.receive(wire)
    assert received == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]


def test_a_message_exactly_at_the_cap_is_delivered() -> None:
    server, client = pair()
    assert server.receive(client.send(TextMessage(data="é" * (CAP // 2)))) == ["é" * (CAP // 2)]


def test_the_clients_close_is_answered_once() -> None:
    server, client = pair()
    received = server.receive(client.send(CloseConnection(code=1000, reason="bye")))
    assert received == [Closed(1000, "bye", by_client=True)]
    reply = server.close(1000, "closed by client")
    assert reply is not None
    assert client_events(client, reply) == [CloseConnection(code=1000, reason="closed by client")]
    assert server.close(1000, "again") is None
    assert server.receive(b"anything") == []


def test_the_relay_closes_first_and_waits_for_the_answer() -> None:
    server, client = pair()
    frame = server.close(4000, "idle timeout")
    assert frame is not None and server.closing and not server.open
    assert server.ping(b"x") is None
    (close,) = client_events(client, frame)
    assert isinstance(close, CloseConnection) and close.code == 4000
    received = server.receive(client.send(close.response()))
    assert received == [Closed(4000, "idle timeout", by_client=True)]
    assert not server.closing


def test_pongs_are_reported() -> None:
    server, client = pair()
    ping = server.ping(b"relay")
    assert ping is not None
    (event,) = client_events(client, ping)
    assert event == Ping(payload=b"relay")
    assert server.receive(client.send(Pong(payload=b"relay"))) == [PongReceived()]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"\x81\x05hello", 1002),  # an unmasked frame from a client
        (b"\x81\x82abcd" + bytes([0xFF ^ ord("a"), 0xFE ^ ord("b")]), 1007),  # not UTF-8
        (b"\x83\x80abcd", 1002),  # reserved opcode
    ],
)
def test_protocol_violations_close_with_wsprotos_code(wire: bytes, code: int) -> None:
    server, _ = pair()
    (closed,) = server.receive(wire + b"\x81\x80abcd")
    assert isinstance(closed, Closed) and closed.code == code and not closed.by_client
    assert server.open  # the relay still sends its close frame with that code
    assert server.close(closed.code, closed.reason) is not None


def test_after_a_message_too_big_only_the_clients_close_is_reported() -> None:
    server, client = pair()
    first = client.send(TextMessage(data="x" * CAP, message_finished=False))
    rest = client.send(TextMessage(data="x" * CAP, message_finished=False))
    (closed,) = server.receive(first + rest)
    assert closed == Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)
    frame = server.close(closed.code, closed.reason)
    assert frame is not None and server.closing
    # The client goes on with its message for a while, then answers the close.
    more = client.send(TextMessage(data="x" * CAP, message_finished=True))
    assert server.receive(more) == []
    (close,) = client_events(client, frame)
    assert isinstance(close, CloseConnection)
    assert server.receive(client.send(close.response())) == [
        Closed(MESSAGE_TOO_BIG, "message too big", by_client=True)
    ]
    assert not server.closing


def test_after_a_violation_nothing_more_is_parsed() -> None:
    server, client = pair()
    (closed,) = server.receive(b"\x81\x05hello")
    assert not closed.by_client  # type: ignore[union-attr]
    assert server.close(1002, "unmasked frame") is not None
    # Whatever follows cannot be trusted to be framed, not even what looks like a close.
    assert server.receive(client.send(CloseConnection(code=1000))) == []
    assert server.closing


def test_a_close_without_a_code_is_answered_without_one() -> None:
    server, _ = pair()
    (closed,) = server.receive(b"\x88\x80abcd")  # a masked close frame with no payload
    assert closed == Closed(1005, "", by_client=True)
    reply = server.close(1005, "closed by client")
    assert reply == b"\x88\x00"  # an empty close frame: no code, so no reason either


def masked(first: int, payload: bytes, mask: bytes = b"abcd") -> bytes:
    """A client frame with a short payload (under 126 bytes), masked as RFC 6455 requires."""
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([first, 0x80 | len(payload)]) + mask + body


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (masked(0x81, b"ok\xff"), "invalid UTF-8 in a text frame"),
        (masked(0x88, b"\x03\xe8bye\xff"), "invalid UTF-8 in a close reason"),
    ],
)
def test_invalid_utf8_closes_with_1007_and_a_fixed_reason(frame: bytes, reason: str) -> None:
    server, _ = pair()
    assert server.receive(frame) == [Closed(1007, reason, by_client=False)]


def test_a_violation_before_an_oversized_frame_keeps_its_own_code() -> None:
    server, _ = pair()
    oversized_header = b"\x82\xfe" + (CAP + 1).to_bytes(2, "big") + b"abcd"
    (closed,) = server.receive(b"\x81\x05hello" + oversized_header)
    assert isinstance(closed, Closed) and closed.code == 1002


@pytest.mark.parametrize("cuts", [[], [2], [5], [9]])
def test_a_64_bit_length_is_read_from_all_eight_bytes(cuts: list[int]) -> None:
    """Lengths of 65,536 bytes and up take the 8-byte form, whatever the cap; cut anywhere in
    the header, it is read whole before the cap is applied."""
    big = 70_000
    server, client = pair(cap=big)
    wire = client.send(BytesMessage(data=b"x" * big))
    assert wire[1] & 0x7F == 127
    assert feed(server, wire, cuts) == [b"x" * big]
    over = b"\x82\xff" + (big + 1).to_bytes(8, "big") + b"abcd"
    assert feed(server, over, cuts) == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]


OVERSIZED_HEADER = b"\x82\xfe" + (CAP + 1).to_bytes(2, "big") + b"abcd"


def test_nothing_after_the_clients_close_is_reported_not_even_an_oversized_frame() -> None:
    """Found by mutation testing: an oversized frame's header after the client's close was
    reported as a second close (1009), though the client had closed already."""
    server, client = pair()
    assert server.receive(client.send(CloseConnection(code=1000))) == [
        Closed(1000, "", by_client=True)
    ]
    assert server.receive(OVERSIZED_HEADER) == []
    assert server.receive(masked(0x81, b"hi")) == []
    assert server.close(1000, "closed by client") is not None


def test_nothing_after_a_violation_is_reported_not_even_an_oversized_frame() -> None:
    server, _ = pair()
    (closed,) = server.receive(b"\x81\x05hello")
    assert isinstance(closed, Closed) and closed.code == 1002
    assert server.receive(OVERSIZED_HEADER) == []


def test_a_binary_message_is_handed_out_as_bytes() -> None:
    server, client = pair()
    whole = server.receive(client.send(BytesMessage(data=b"\x00\x01")))
    parts = server.receive(
        client.send(BytesMessage(data=b"a", message_finished=False))
        + client.send(BytesMessage(data=b"b", message_finished=True))
    )
    assert whole == [b"\x00\x01"] and parts == [b"ab"]
    assert type(whole[0]) is bytes and type(parts[0]) is bytes


def test_a_clients_own_1007_close_keeps_its_reason() -> None:
    server, client = pair()
    received = server.receive(client.send(CloseConnection(code=1007, reason="bad data")))
    assert received == [Closed(1007, "bad data", by_client=True)]


@pytest.mark.parametrize("chunk", [1, 3, 7, 13, 64, 100])
def test_payload_that_looks_like_headers_is_skipped_across_reads(chunk: int) -> None:
    """Each frame's payload is skipped, however the reads cut it: payload bytes that would
    read as the header of a huge frame (0x82 0x7f: binary, 64-bit length) are never taken for
    one."""
    server, client = pair()
    payload = b"\x82\x7f" * 200
    wire = b"".join(client.send(BytesMessage(data=payload)) for _ in range(3))
    received = feed(server, wire, list(range(chunk, len(wire), chunk)))
    assert received == [payload] * 3
    # And the header after them is still read: one over the cap is refused at once.
    over = client.send(BytesMessage(data=b"x" * (CAP + 1)))
    received = feed(server, over, list(range(chunk, len(over), chunk)))
    assert received == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]


def test_messages_are_capped_one_by_one_not_together() -> None:
    server, client = pair()
    half = "x" * (CAP // 2 + 100)  # two of them are over the cap, each is not
    ping = client.send(Ping(b"p" * 100))
    wire = client.send(TextMessage(data=half)) + ping + client.send(TextMessage(data=half))
    received = server.receive(wire)
    assert [r for r in received if isinstance(r, str)] == [half, half]


@pytest.mark.parametrize("cut", range(1, 8))
def test_an_oversized_header_cut_after_another_frame_is_still_read_whole(cut: int) -> None:
    """The header of the frame over the cap starts mid-read, behind a whole frame, and the
    read ends inside it (at each of its 8 bytes)."""
    server, client = pair()
    small = client.send(TextMessage(data="hi"))
    over = b"\x82\xfe" + (CAP + 1).to_bytes(2, "big") + b"abcd"
    assert server.receive(small + over[:cut]) == ["hi"]
    assert server.receive(over[cut:]) == [
        Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)
    ]


def test_a_64_bit_length_over_2_to_the_56_is_read_from_its_first_byte() -> None:
    server, _ = pair()
    header = b"\x82\xff" + (2**56).to_bytes(8, "big") + b"abcd"
    assert server.receive(header) == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]


def test_nothing_arrived_with_the_handshake_means_nothing_early() -> None:
    assert opened().early == []


def test_a_continuation_frame_first_is_a_protocol_violation() -> None:
    server, _ = pair()
    (closed,) = server.receive(masked(0x80, b"x" * 10))  # continuation of no message
    assert isinstance(closed, Closed) and closed.code == 1002 and not closed.by_client


def test_wsprotos_own_event_queue_is_a_small_list_that_still_works() -> None:
    """The deque wsproto keeps for its one queued event is swapped for a list (760 bytes less
    per idle connection): the abnormal closure it queues when the stream ends still comes out,
    first in first out."""
    server = opened()
    connection = server._conn
    assert sys.getsizeof(connection._events) < 100
    connection._events.append(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
    connection.receive_data(None)  # the peer went away without a close frame
    assert [e.code for e in connection.events() if isinstance(e, CloseConnection)] == [
        CloseReason.NORMAL_CLOSURE,
        CloseReason.ABNORMAL_CLOSURE,
    ]
    assert not connection._events
