"""permessage-deflate: the answer to each kind of offer (RFC 7692), inflation bounded by the
message cap, and frames compressed once that every agreeing client decodes. wsproto's client,
with its own PerMessageDeflate, is the peer."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate

from relay.core.deflate import CompressedFramer, CompressionPolicy, negotiate
from relay.core.handshake import accept
from relay.core.websocket import MESSAGE_TOO_BIG, Closed, ServerWebSocket
from tests.core.test_handshake import UPGRADE
from tests.core.test_websocket import fragmented

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
        "permessage-deflate; client_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
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


def deflate_pair(cap: int = CAP) -> tuple[ServerWebSocket, Connection]:
    """A server end that agreed to permessage-deflate, and a wsproto client that did too."""
    headers = {**UPGRADE, "sec-websocket-extensions": "permessage-deflate; client_max_window_bits"}
    response, server = accept("GET", headers, b"", cap, compression=True)
    answer = response.split(b"Sec-WebSocket-Extensions: ")[1].split(b"\r\n")[0].decode()
    extension = PerMessageDeflate(client_max_window_bits=15)
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
@given(size=st.integers(CAP - 3, CAP + 3), fragments=st.integers(1, 3))
def test_a_compressed_message_is_held_to_the_cap_once_inflated(size: int, fragments: int) -> None:
    server, client = deflate_pair()
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
    extension = PerMessageDeflate()
    extension.finalize(
        f"permessage-deflate; server_no_context_takeover; server_max_window_bits={bits}"
    )
    return Connection(ConnectionType.CLIENT, extensions=[extension])


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


def test_the_level_is_zlibs() -> None:
    payload = ('{"price":"100.5","size":"0.1"}' * 40).encode()
    stored = CompressedFramer(0).text(payload, 15)
    assert len(stored) > len(payload)  # level 0: stored blocks only
    best = CompressedFramer(9).text(payload, 15)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert best.endswith(body)


def test_the_policy_excludes_channels_by_pattern() -> None:
    policy = CompressionPolicy(exclude=("*:ticker:*", "fast:*"))
    assert policy.compresses("sim:trades:A")
    assert not policy.compresses("sim:ticker:A")
    assert not policy.compresses("fast:x")
