"""permessage-deflate: the answer to each kind of offer (RFC 7692), inflation bounded by the
message cap, and frames compressed once that every agreeing client decodes. wsproto's client,
with its own PerMessageDeflate, is the peer."""

from __future__ import annotations

import tracemalloc
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Opcode, RsvBits

from relay.core import deflate
from relay.core.deflate import CompressedFramer, CompressionPolicy, negotiate
from relay.core.handshake import accept
from relay.core.websocket import MESSAGE_TOO_BIG, PONG_RECEIVED, Answer, Closed, ServerWebSocket
from tests.core.test_handshake import UPGRADE
from tests.core.test_websocket import client_events, fragmented
from tests.deflate_client import agreed_deflate

CAP = 4096
BOTH = "client_no_context_takeover; server_no_context_takeover"


@pytest.mark.parametrize(
    ("offer", "answer", "server_bits", "client_bits"),
    [
        ("permessage-deflate", f"permessage-deflate; {BOTH}", 15, 15),
        (
            "permessage-deflate; client_max_window_bits",
            f"permessage-deflate; {BOTH}; client_max_window_bits=15",
            15,
            15,
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            f"permessage-deflate; {BOTH}; client_max_window_bits=10",
            15,
            10,
        ),
        (
            "permessage-deflate; server_max_window_bits=12",
            f"permessage-deflate; {BOTH}; server_max_window_bits=12",
            12,
            15,
        ),
        (
            'permessage-deflate; server_max_window_bits="11"; server_no_context_takeover',
            f"permessage-deflate; {BOTH}; server_max_window_bits=11",
            11,
            15,
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            f"permessage-deflate; {BOTH}",
            15,
            15,
        ),
        (
            'permessage-deflate; client_max_window_bits="9"',
            f"permessage-deflate; {BOTH}; client_max_window_bits=9",
            15,
            9,
        ),
        # Every parameter counts, whatever comes before it.
        (
            "permessage-deflate;client_no_context_takeover;server_max_window_bits=9",
            f"permessage-deflate; {BOTH}; server_max_window_bits=9",
            9,
            15,
        ),
        (
            "permessage-deflate; client_max_window_bits; server_max_window_bits=13",
            f"permessage-deflate; {BOTH}; client_max_window_bits=15; server_max_window_bits=13",
            13,
            15,
        ),
        # An 8-bit window declines its offer only: the next one is answered.
        (
            "permessage-deflate; client_max_window_bits=8, permessage-deflate; "
            "client_max_window_bits=14",
            f"permessage-deflate; {BOTH}; client_max_window_bits=14",
            15,
            14,
        ),
        # The first acceptable offer wins; others are not looked at.
        (
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=20, "
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
            f"permessage-deflate; {BOTH}; server_max_window_bits=10",
            10,
            15,
        ),
    ],
)
def test_an_acceptable_offer_is_answered_with_no_context_takeover_both_ways(
    offer: str, answer: str, server_bits: int, client_bits: int
) -> None:
    agreed = negotiate(offer, CAP)
    assert agreed is not None
    response, extension = agreed
    assert response == answer
    assert extension.server_max_window_bits == server_bits
    assert extension.client_max_window_bits == client_bits
    assert extension.enabled()


@pytest.mark.parametrize(
    "offer",
    [
        None,
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits",  # a value is required
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",  # no leading zeros
        "permessage-deflate; server_max_window_bits=8",  # zlib cannot deflate with 256 bytes
        'permessage-deflate; server_max_window_bits="8"',
        'permessage-deflate; server_max_window_bits="10',  # a quoted string is closed
        'permessage-deflate; server_max_window_bits=10"',
        'permessage-deflate; server_max_window_bits="',
        'permessage-deflate; server_max_window_bits=""',
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; client_max_window_bits=9 10",
        "permessage-deflate; client_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover=10",  # a value in range is still one
        'permessage-deflate; client_no_context_takeover="10"',
        "permessage-deflate; client_max_window_bits; mystery",
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=16",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; mystery",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
    ],
)
def test_an_offer_the_rfc_says_to_decline_is_answered_without_the_extension(
    offer: str | None,
) -> None:
    assert negotiate(offer, CAP) is None


parameter = st.sampled_from(
    [
        "server_no_context_takeover",
        "client_no_context_takeover",
        "client_max_window_bits",
        *(f"client_max_window_bits={b}" for b in range(7, 17)),
        *(f"server_max_window_bits={b}" for b in range(7, 17)),
        "server_max_window_bits",
        "unknown=1",
        'client_max_window_bits="9"',
    ]
)


@settings(max_examples=300, deadline=None)
@given(offers=st.lists(st.lists(parameter, max_size=4), min_size=1, max_size=3))
def test_whatever_is_offered_wsprotos_client_can_take_the_answer(
    offers: list[list[str]],
) -> None:
    header = ", ".join("; ".join(["permessage-deflate", *params]) for params in offers)
    agreed = negotiate(header, CAP)
    if agreed is None:
        return
    response, extension = agreed
    client = PerMessageDeflate()
    client.finalize(response)
    assert client.server_no_context_takeover and client.client_no_context_takeover
    assert client.server_max_window_bits == extension.server_max_window_bits
    assert 9 <= extension.server_max_window_bits <= 15


class FlushingDeflate(PerMessageDeflate):
    """A client's permessage-deflate that flushes its compressor at the end of every frame,
    as RFC 7692 allows (wsproto's flushes at a message's end only): each frame of a message
    then inflates to its share as soon as it arrives."""

    def frame_outbound(
        self, proto: Any, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool
    ) -> tuple[RsvBits, bytes]:
        rsv, data = super().frame_outbound(proto, opcode, rsv, data, fin)
        if not fin and self._compressor is not None:
            data += self._compressor.flush(zlib.Z_SYNC_FLUSH)
        return rsv, data


def deflate_pair(cap: int = CAP, flushing: bool = False) -> tuple[ServerWebSocket, Connection]:
    """A server end that agreed to permessage-deflate, and a wsproto client that did too."""
    headers = {**UPGRADE, "sec-websocket-extensions": "permessage-deflate; client_max_window_bits"}
    response, server = accept("GET", headers, b"", cap, compression=True)
    answer = response.split(b"Sec-WebSocket-Extensions: ")[1].split(b"\r\n")[0].decode()
    extension = (FlushingDeflate if flushing else PerMessageDeflate)(client_max_window_bits=15)
    extension.finalize(answer)
    return server, Connection(ConnectionType.CLIENT, extensions=[extension])


@settings(max_examples=100, deadline=None)
@given(
    messages=st.lists(st.one_of(st.text(max_size=3000), st.binary(max_size=3000)), max_size=6),
    fragments=st.integers(1, 4),
)
def test_compressed_commands_arrive_whole_and_in_order(
    messages: list[str | bytes], fragments: int
) -> None:
    server, client = deflate_pair()
    wire = b"".join(fragmented(client, message, fragments) for message in messages)
    assert server.receive(wire) == messages


@settings(max_examples=100, deadline=None)
@given(size=st.integers(CAP - 3, CAP + 3), fragments=st.integers(1, 3), flushing=st.booleans())
def test_a_compressed_message_is_held_to_the_cap_once_inflated(
    size: int, fragments: int, flushing: bool
) -> None:
    server, client = deflate_pair(flushing=flushing)
    message = "a" * size  # compresses to a few bytes: only the inflated size can tell
    step = -(-size // fragments)
    wire = b"".join(
        client.send(TextMessage(data=message[i : i + step], message_finished=i + step >= size))
        for i in range(0, size, step)
    )
    received = server.receive(wire)
    if size <= CAP:
        assert received == [message]
    else:
        assert received == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]


def test_a_message_at_the_cap_leaves_the_next_one_the_whole_cap() -> None:
    server, client = deflate_pair(flushing=True)
    at_cap = "b" * CAP
    wire = b"".join(fragmented(client, at_cap, parts) for parts in (1, 3, 2))
    assert server.receive(wire) == [at_cap] * 3
    assert server.receive(fragmented(client, at_cap + "b", 2)) == [
        Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)
    ]


def masked(first_byte: int, payload: bytes) -> bytes:
    """A client frame (RFC 6455 section 5.2) of under 126 bytes: for payloads no compressor
    produces, which wsproto's client cannot send."""
    mask = b"abcd"
    return (
        bytes([first_byte, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


@pytest.mark.parametrize("head", [CAP - 4, CAP - 3])
def test_what_the_appended_tail_inflates_to_counts_too(head: int) -> None:
    """RFC 7692 has the receiver append ``00 00 ff ff`` to a message before inflating its end.
    A client can end its data with the header of a 4-byte stored block, so that those four
    bytes inflate as content: they count toward the cap like any other."""
    server, _ = deflate_pair()
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(bytes(head)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    stored_4 = b"\x00\x04\x00\xfb\xff"  # not final, stored; length 4 and its complement
    received = server.receive(masked(0xC2, data + stored_4))  # FIN, RSV1, binary
    if head + 4 <= CAP:
        assert received == [bytes(head) + b"\x00\x00\xff\xff"]
    else:
        assert received == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]


def test_a_message_sent_uncompressed_arrives_untouched() -> None:
    server, _ = deflate_pair()
    plain = Connection(ConnectionType.CLIENT)  # frames without RSV1, as RFC 7692 allows
    text, binary = "é" * 700, bytes(range(256)) * 3
    wire = fragmented(plain, text, 3) + fragmented(plain, binary, 1) + fragmented(plain, text, 1)
    assert server.receive(wire) == [text, binary, text]


@pytest.mark.parametrize("flushing", [False, True])
def test_a_ping_amid_a_compressed_message_is_answered_and_the_message_still_inflates(
    flushing: bool,
) -> None:
    """RFC 6455 lets control frames come between a message's frames. wsproto alone took the
    ping for the message's end and passed the rest on compressed (python-hyper/wsproto#205)."""
    server, client = deflate_pair(flushing=flushing)
    message = "c" * 3000
    wire = client.send(TextMessage(data=message[:1000], message_finished=False))
    wire += client.send(Ping(b"still there?"))
    wire += client.send(TextMessage(data=message[1000:2000], message_finished=False))
    wire += client.send(Pong(b"here"))
    wire += client.send(TextMessage(data=message[2000:]))
    wire += client.send(Ping(b"and now?"))  # between messages
    wire += client.send(BytesMessage(data=b"d" * 500))
    first, pong, received, second, last = server.receive(wire)
    assert (received, pong, last) == (message, PONG_RECEIVED, b"d" * 500)
    assert isinstance(first, Answer) and isinstance(second, Answer)
    assert client_events(client, first.frame + second.frame) == [
        Pong(b"still there?"),
        Pong(b"and now?"),
    ]


def test_a_bomb_in_a_later_frame_is_inflated_only_to_the_room_the_earlier_ones_left() -> None:
    """The frames before it count: a bomb after half the cap inflates to half the cap more,
    not to a whole cap more."""
    cap = 1 << 20
    received, peaks = [], []
    for last in (1, 8 * cap):  # the same first half, then a byte or a bomb
        server, client = deflate_pair(cap, flushing=True)
        wire = client.send(BytesMessage(data=bytes(cap // 2), message_finished=False))
        wire += client.send(BytesMessage(data=bytes(last)))
        tracemalloc.start()
        try:
            received.append(server.receive(wire))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert received == [
        [bytes(cap // 2 + 1)],
        [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)],
    ]
    assert peaks[1] - peaks[0] < cap // 2  # measured: 0.14 cap; a whole cap more: 2.1 cap


def test_a_compression_bomb_is_refused_without_being_inflated() -> None:
    cap = 65536
    server, client = deflate_pair(cap)
    bomb = client.send(BytesMessage(data=bytes(50_000_000)))  # 50 MB of zeros, ~50 KB sent
    assert len(bomb) < cap
    tracemalloc.start()
    try:
        received = server.receive(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == [Closed(MESSAGE_TOO_BIG, "message too big", by_client=False)]
    assert peak < 1_000_000  # the cap and zlib's buffers, not the 50 MB
    assert server.receive(b"\x88\x80abcd") == []  # nothing is read after the violation


def test_no_zlib_object_outlives_a_message() -> None:
    server, client = deflate_pair()
    assert server.receive(client.send(TextMessage(data="x" * 500))) == ["x" * 500]
    (extension,) = server._conn._proto.extensions  # type: ignore[attr-defined]
    assert extension._decompressor is None and extension._compressor is None


def test_a_corrupt_compressed_frame_is_invalid_payload_data() -> None:
    server, _ = deflate_pair()
    payload = b"\xff\xff\xff\xff"
    mask = b"abcd"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    (closed,) = server.receive(bytes([0xC1, 0x80 | len(payload)]) + mask + masked)
    assert isinstance(closed, Closed) and closed.code == 1007 and not closed.by_client


def client_for(bits: int) -> Connection:
    return Connection(ConnectionType.CLIENT, extensions=agreed_deflate(bits))


def decoded(client: Connection, frame: bytes) -> list[str]:
    client.receive_data(frame)
    return [e.data for e in client.events() if isinstance(e, TextMessage)]


@settings(max_examples=100, deadline=None)
@given(
    payloads=st.lists(st.text(min_size=1, max_size=2000), min_size=1, max_size=5),
    bits=st.integers(9, 15),
    level=st.integers(0, 9),
)
def test_a_compressed_frame_is_one_message_any_agreeing_client_decodes(
    payloads: list[str], bits: int, level: int
) -> None:
    framer = CompressedFramer(level)
    early, late = client_for(bits), client_for(bits)
    for i, payload in enumerate(payloads):
        frame = framer.text(payload.encode(), bits)
        assert frame[0] == 0xC1  # FIN, RSV1 (compressed), text
        assert frame == framer.text(payload.encode(), bits)  # no context carried over
        assert decoded(early, frame) == [payload]
        if i == len(payloads) - 1:
            assert decoded(late, frame) == [payload]  # a client that saw nothing before


def far_repeats() -> bytes:
    """Order-book-like text (30 KB) whose repeats lie from a few bytes to 25 KB apart: what a
    window makes of it depends on the window's size."""
    rows = [f'{{"price":"{100 + i * 0.5}","size":"{i % 7}.{i % 3}"}}' for i in range(800)]
    head = ",".join(rows).encode()
    return head + head[:2000] + head[5000:9000]


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("bits", [9, 12, 15])
def test_a_frame_carries_zlibs_deflate_at_the_level_and_window(level: int, bits: int) -> None:
    payload = far_repeats().decode()
    compressor = zlib.compressobj(level, zlib.DEFLATED, -bits)
    body = (compressor.compress(payload.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    framer = CompressedFramer(level)
    frame = framer.text(payload.encode(), bits)
    assert frame.endswith(body) and len(frame) == len(body) + 4  # 0xC1, 126, 16-bit length
    assert decoded(client_for(bits), frame) == [payload]


def test_each_window_size_has_its_own_frames() -> None:
    payload = far_repeats()
    framer = CompressedFramer(6)
    frames = {bits: framer.text(payload, bits) for bits in range(9, 16)}
    assert len(set(frames.values())) == 7  # each window reaches repeats the smaller ones miss
    for bits in (15, 9, 12):  # in any order, each frame still fits its own window
        assert framer.text(payload, bits) == frames[bits]
        assert decoded(client_for(bits), frames[bits]) == [payload.decode()]


def test_one_wsproto_connection_frames_every_message_of_a_window_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[Connection] = []

    class Counted(Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(deflate, "Connection", Counted)
    framer = CompressedFramer(1)
    payload = far_repeats()
    frames = [framer.text(payload, bits) for bits in (15, 15, 9, 15, 9)]
    assert len(made) == 2  # one per window size, not one per message
    assert frames[0] == frames[1] == frames[3] != frames[2] == frames[4]


def test_the_policy_excludes_channels_by_pattern() -> None:
    policy = CompressionPolicy(exclude=("*:ticker:*", "fast:*"))
    assert policy.compresses("sim:trades:A")
    assert not policy.compresses("sim:ticker:A")
    assert not policy.compresses("fast:x")
