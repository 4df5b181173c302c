"""Defects of the client protocol, each pinned by a test: replies to refused commands echo the
id, replies go out before a 4029 close, an oversized frame is refused at its header, invalid
UTF-8 closes with a fixed reason, and binary frames are refused rather than executed.

Sessions run over trio's memory streams on a MockClock (autojump): one ``send_all`` of the
client is one read of the relay, and no time passes unless the test waits.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

from relay.config import parse_config
from relay.core import protocol
from relay.core.handshake import accept
from relay.core.protocol import ErrorCode
from relay.core.websocket import MESSAGE_TOO_BIG, Closed, Received, ServerWebSocket
from relay.server.relay import Relay

CAP = 1024
UPGRADE = {
    "host": "relay",
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "MDEyMzQ1Njc4OWFiY2RlZg==",
}


# Helpers -------------------------------------------------------------------------------------


def make_relay(*, rate: float = 1.0, burst: int = 2, max_message_size: int = 65536) -> Relay:
    return Relay(
        parse_config(
            {
                "server": {"host": "127.0.0.1", "port": 0, "max_message_size": max_message_size},
                "auth": {"required": False},
                "tiers": {"default": {"rate_limit": rate, "rate_burst": burst}},
                "sources": {"sim": {"kind": "sim", "url": "ws://127.0.0.1:9/ws"}},
            }
        )
    )


class Client:
    """A hand-driven client: every ``send`` is one write, so one read of the relay."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.messages: list[dict[str, Any]] = []
        self.closed: CloseConnection | None = None
        self.closed_at: float | None = None

    async def send(self, *frames: bytes) -> None:
        await self.stream.send_all(b"".join(frames))

    def text(self, command: dict[str, Any]) -> bytes:
        return self.ws.send(TextMessage(data=orjson.dumps(command).decode()))

    def binary(self, payload: bytes) -> bytes:
        return self.ws.send(BytesMessage(data=payload))

    async def next_message(self) -> dict[str, Any]:
        """The next text message (the relay's pings are answered on the way)."""
        while True:
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    message: dict[str, Any] = orjson.loads(event.data)
                    return message
                if isinstance(event, Ping):
                    await self.stream.send_all(self.ws.send(event.response()))
                if isinstance(event, CloseConnection):
                    raise AssertionError(f"closed: {event.code} {event.reason}")
            data = await self.stream.receive_some()
            assert data, "the relay hung up"
            self.ws.receive_data(data)

    async def until_closed(self) -> list[dict[str, Any]]:
        """Every text message until the relay's close frame (recorded, with its time)."""
        messages: list[dict[str, Any]] = []
        while self.closed is None:
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    messages.append(orjson.loads(event.data))
                elif isinstance(event, CloseConnection):
                    self.closed = event
                    self.closed_at = trio.current_time()
                    return messages
            data = await self.stream.receive_some()
            assert data, "the relay hung up without a close frame"
            self.ws.receive_data(data)
        return messages


async def connect(relay: Relay, nursery: trio.Nursery) -> Client:
    """A client through the relay's front door, past its welcome; the relay's timer task and
    write rounds run as ``Relay.serve`` would run them."""
    nursery.start_soon(relay.run_timers)
    nursery.start_soon(relay.rounds.run)
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server_end)
    client = Client(client_end)
    await client.stream.send_all(client.ws.send(Request(host="relay", target="/ws")))
    accepted = False
    while not accepted:
        client.ws.receive_data(await client.stream.receive_some())
        events = list(client.ws.events())
        accepted = any(isinstance(e, AcceptConnection) for e in events)
        texts = [orjson.loads(e.data) for e in events if isinstance(e, TextMessage)]
        assert all(t["event"] == "welcome" for t in texts)
    if not texts:
        assert (await client.next_message())["event"] == "welcome"
    return client


def ping(request_id: int | str) -> dict[str, Any]:
    return {"action": "ping", "id": request_id}


def header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """A masked client frame header announcing ``length`` payload bytes (mask key 0)."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes([first, 0x80 | length]) + bytes(4)
    if length < 1 << 16:
        return bytes([first, 0x80 | 126]) + length.to_bytes(2, "big") + bytes(4)
    return bytes([first, 0x80 | 127]) + length.to_bytes(8, "big") + bytes(4)


def server_socket(cap: int = CAP) -> ServerWebSocket:
    _, server = accept("GET", UPGRADE, b"", cap, compression=False)
    return server


# 1. A rate_limited error echoes the command's id ---------------------------------------------


@pytest.mark.parametrize("request_id", [3, "third"])
async def test_a_rate_limited_error_echoes_the_commands_id(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, request_id: int | str
) -> None:
    client = await connect(make_relay(rate=1.0, burst=2), nursery)
    await client.send(client.text(ping(1)), client.text(ping(2)), client.text(ping(request_id)))
    assert await client.next_message() == {"event": "pong", "id": 1}
    assert await client.next_message() == {"event": "pong", "id": 2}
    refused = await client.next_message()
    assert refused["event"] == "error"
    assert refused["data"]["code"] == ErrorCode.RATE_LIMITED
    assert refused["id"] == request_id
    # The refused command was not executed, and the bucket refills: one token a second.
    await trio.sleep(1.0)
    await client.send(client.text(ping(4)))
    assert await client.next_message() == {"event": "pong", "id": 4}


async def test_a_rate_limited_error_has_no_id_when_the_command_has_no_usable_one(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = await connect(make_relay(rate=1.0, burst=3), nursery)
    frames = [client.text(ping(1)), client.text(ping(2)), client.text(ping(3))]
    frames += [client.ws.send(TextMessage(data="not json")), client.text({"action": "ping"})]
    await client.send(*frames)
    replies = [await client.next_message() for _ in range(5)]
    assert [r.get("id") for r in replies] == [1, 2, 3, None, None]
    assert [r["event"] for r in replies[3:]] == ["error", "error"]
    assert {r["data"]["code"] for r in replies[3:]} == {ErrorCode.RATE_LIMITED}
    await trio.sleep(1.0)
    await client.send(client.text(ping(4)), client.text({"action": "ping", "id": 1.5}))
    assert await client.next_message() == {"event": "pong", "id": 4}
    refused = await client.next_message()
    assert refused["data"]["code"] == ErrorCode.RATE_LIMITED and "id" not in refused


# 2. Replies produced before the abuse threshold go out before the 4029 close -----------------


async def test_replies_in_the_read_that_crosses_the_abuse_threshold_precede_the_4029_close(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay(rate=1.0, burst=2)
    client = await connect(relay, nursery)
    start = trio.current_time()
    # Two accepted, one refused (a strike), the second refusal reaches burst strikes: 4029.
    await client.send(*(client.text(ping(i)) for i in range(1, 6)))
    messages = await client.until_closed()
    assert [(m["event"], m.get("data", {}).get("code"), m["id"]) for m in messages] == [
        ("pong", None, 1),
        ("pong", None, 2),
        ("error", ErrorCode.RATE_LIMITED, 3),
    ]
    assert client.closed is not None
    assert (client.closed.code, client.closed.reason) == (4029, "rate limited")
    assert client.closed_at == start
    await client.send(client.ws.send(client.closed.response()))
    await trio.testing.wait_all_tasks_blocked()
    assert not relay.sessions
    assert relay.close_codes[4029] == 1


# 3. A frame announcing more than max_message_size is refused at its header -------------------


@pytest.mark.parametrize("length", [CAP + 1, 1 << 16, 1 << 40])
@pytest.mark.parametrize("opcode", [0x1, 0x2])
def test_a_header_announcing_more_than_the_cap_closes_with_1009_before_its_payload(
    opcode: int, length: int
) -> None:
    server = server_socket()
    assert server.receive(header(opcode, length)) == [
        Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)
    ]


def test_the_header_is_read_however_it_is_cut() -> None:
    server = server_socket()
    wire = header(0x1, 1 << 20) + b"x" * 10
    received: list[Received] = []
    for i in range(len(wire)):
        received += server.receive(wire[i : i + 1])
    assert received == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]


def test_messages_before_the_oversized_header_in_the_same_read_are_delivered() -> None:
    server = server_socket()
    client = Connection(ConnectionType.CLIENT)
    wire = client.send(TextMessage(data="first")) + client.send(Ping(b"p"))
    wire += header(0x1, CAP + 1) + b"partial payload"
    received = server.receive(wire)
    assert received[0] == "first"
    assert received[2:] == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]


def test_a_continuation_header_taking_the_message_over_the_cap_closes_at_once() -> None:
    server = server_socket()
    client = Connection(ConnectionType.CLIENT)
    wire = client.send(TextMessage(data="x" * (CAP - 10), message_finished=False))
    wire += client.send(Ping(b"between fragments"))  # control frames do not count
    assert [type(r).__name__ for r in server.receive(wire)] == ["Answer"]
    # The continuation announces 11 more bytes: one too many, refused before any arrives.
    assert server.receive(header(0x0, 11)) == [
        Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)
    ]


def test_a_header_at_exactly_the_cap_waits_for_its_payload() -> None:
    server = server_socket()
    assert server.receive(header(0x2, CAP)) == []
    assert server.receive(b"y" * CAP) == [b"y" * CAP]


def test_frames_with_64_bit_lengths_are_followed_across_reads() -> None:
    server = server_socket(cap=100_000)
    client = Connection(ConnectionType.CLIENT)
    wire = client.send(BytesMessage(data=b"z" * 70_000)) + client.send(Ping(b"p"))
    wire += header(0x2, 100_001)
    received: list[Received] = []
    for start, stop in [(0, 3), (3, 11), (11, 50_000), (50_000, len(wire) - 5)]:
        received += server.receive(wire[start:stop])
    assert received[0] == b"z" * 70_000
    assert len(received) == 2  # and the ping's answer; the last header is not complete yet
    assert server.receive(wire[-5:]) == [
        Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)
    ]


def test_a_header_that_also_breaks_the_protocol_gets_wsprotos_code() -> None:
    server = server_socket()
    unmasked = bytes([0x81, 127]) + (1 << 40).to_bytes(8, "big")
    (closed,) = server.receive(unmasked)
    assert isinstance(closed, Closed) and closed.code == 1002


def test_a_close_answer_followed_by_an_oversized_header_in_the_same_read_is_the_end() -> None:
    server = server_socket()
    client = Connection(ConnectionType.CLIENT)
    frame = server.close(4000, "idle timeout")
    assert frame is not None
    client.receive_data(frame)
    (close,) = client.events()
    assert isinstance(close, CloseConnection)
    wire = client.send(close.response()) + header(0x1, CAP + 1)
    assert server.receive(wire) == [Closed(4000, "idle timeout", by_client=True)]
    assert server.receive(b"more") == []


async def test_a_session_is_closed_with_1009_as_soon_as_the_header_arrives(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay(burst=10, max_message_size=CAP)
    client = await connect(relay, nursery)
    start = trio.current_time()
    await client.send(header(0x1, 10 * 2**20))
    assert await client.until_closed() == []
    assert client.closed is not None
    assert (client.closed.code, client.closed.reason) == (1009, "message too big")
    assert client.closed_at == start
    # Its "close answer" is more of the announced payload: the relay hangs up at close_timeout.
    await trio.sleep(3.0)
    assert not relay.sessions
    assert relay.close_codes[1009] == 1


async def test_replies_read_before_an_oversized_header_precede_the_1009_close(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = await connect(make_relay(burst=10, max_message_size=CAP), nursery)
    await client.send(client.text(ping(1)), header(0x2, CAP + 1))
    assert await client.until_closed() == [{"event": "pong", "id": 1}]
    assert client.closed is not None and client.closed.code == 1009


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.lists(st.integers(0, 300), min_size=1, max_size=4), max_size=6),
    pings=st.lists(st.booleans(), min_size=6, max_size=6),
    cuts=st.lists(st.integers(0, 5000), max_size=25),
)
def test_a_message_is_refused_exactly_when_its_frames_announce_more_than_the_cap(
    sizes: list[list[int]], pings: list[bool], cuts: list[int]
) -> None:
    """Messages of fragments of the given sizes, a ping inside some of them, the wire cut
    anywhere: whole messages under the cap arrive in order, and the first frame that takes a
    message over it closes with 1009 without waiting for its payload."""
    cap = 400
    server = server_socket(cap)
    client = Connection(ConnectionType.CLIENT)
    wire = b""
    expected: list[Received] = []
    refused_at: int | None = None
    for m, fragments in enumerate(sizes):
        total = 0
        for k, size in enumerate(fragments):
            last = k == len(fragments) - 1
            total += size
            if total > cap and refused_at is None:
                refused_at = len(wire) + len(header(0x2, size))
            wire += client.send(BytesMessage(data=b"%d" % m * size, message_finished=last))
            if pings[m] and k == 0:
                wire += client.send(Ping(b"p"))
        if refused_at is None:
            expected.append(b"".join(b"%d" % m * size for size in fragments))
    received: list[Received] = []
    start = 0
    stop = len(wire) if refused_at is None else refused_at
    for cut in [*sorted({c % (stop + 1) for c in cuts}), stop]:
        if cut > start:
            received += server.receive(wire[start:cut])
            start = cut
    assert [r for r in received if isinstance(r, bytes)] == expected
    closes = [r for r in received if isinstance(r, Closed)]
    if refused_at is None:
        assert closes == []
    else:
        assert closes == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]
        assert received[-1] == closes[0]


# 4. Invalid UTF-8 closes with 1007 and a fixed reason -----------------------------------------


def masked(opcode: int, payload: bytes) -> bytes:
    """A masked frame with mask key 0 (the payload goes on the wire as it is)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + bytes(4) + payload


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (masked(0x1, b"\xff\xfe"), "invalid UTF-8 in a text frame"),
        (masked(0x1, b"caf\xc3"), "invalid UTF-8 in a text frame"),  # a sequence cut short
        (masked(0x8, (1000).to_bytes(2, "big") + b"\xff"), "invalid UTF-8 in a close reason"),
    ],
)
def test_invalid_utf8_closes_with_1007_and_a_fixed_reason(wire: bytes, reason: str) -> None:
    server = server_socket()
    assert server.receive(wire) == [Closed(1007, reason, by_client=False)]


def test_invalid_utf8_split_across_fragments_closes_with_1007() -> None:
    server = server_socket()
    wire = bytes([0x01, 0x81]) + bytes(4) + b"\xe2" + bytes([0x80, 0x81]) + bytes(4) + b"a"
    assert server.receive(wire) == [Closed(1007, "invalid UTF-8 in a text frame", False)]


async def test_a_session_sends_the_fixed_1007_reason(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = await connect(make_relay(), nursery)
    await client.send(masked(0x1, b"\xff"))
    await client.until_closed()
    assert client.closed is not None
    assert (client.closed.code, client.closed.reason) == (1007, "invalid UTF-8 in a text frame")


# 5. Binary frames are refused with bad_request, and the connection stays ---------------------


async def test_a_binary_frame_is_refused_with_bad_request_and_the_connection_stays(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay(burst=10)
    client = await connect(relay, nursery)
    await client.send(client.binary(orjson.dumps({"action": "ping", "id": 9})))
    refused = await client.next_message()
    assert refused["event"] == "error"
    assert refused["data"]["code"] == ErrorCode.BAD_REQUEST
    assert "text" in refused["data"]["message"]
    assert refused["id"] == 9
    subscribe = {"action": "subscribe", "channel": "sim:trades:BTC-USD", "id": 10}
    await client.send(client.binary(orjson.dumps(subscribe)), client.text(ping(11)))
    assert (await client.next_message())["id"] == 10
    assert await client.next_message() == {"event": "pong", "id": 11}
    assert relay.hub.registry.count_of(next(iter(relay.sessions))) == 0  # not executed


async def test_binary_frames_count_against_the_rate_limit(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = await connect(make_relay(rate=1.0, burst=1), nursery)
    await client.send(client.binary(b"\x00\x01"), client.binary(b"{}"))
    messages = await client.until_closed()
    assert [m["data"]["code"] for m in messages] == [ErrorCode.BAD_REQUEST]
    assert client.closed is not None and client.closed.code == 4029


@pytest.mark.parametrize(
    ("payload", "request_id"),
    [
        (b'{"action":"subscribe","channel":"sim:trades:BTC-USD","id":"a"}', "a"),
        (b'{"action":"ping","id":1.5}', None),
        (b"[1, 2]", None),
        (b"\xff\x00 not json", None),
    ],
)
def test_the_binary_refusal_echoes_a_usable_id(payload: bytes, request_id: int | str) -> None:
    refusal = protocol.refuse_binary(payload)
    assert refusal.code == ErrorCode.BAD_REQUEST
    assert refusal.id == request_id
    event = orjson.loads(protocol.encode_error(refusal))
    assert event["data"]["message"] == "commands are JSON text frames: send this as text"
