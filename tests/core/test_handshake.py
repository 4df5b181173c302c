"""The opening handshake answered from already-parsed headers: the checks and refusals wsproto
gave, the 101 it built, and the permessage-deflate answer (checked with wsproto's client)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, Ping, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from relay.core.handshake import accept
from relay.core.protocol import Refusal
from relay.core.websocket import Answer

KEY = base64.b64encode(b"0123456789abcdef").decode()
CAP = 1024
UPGRADE = {
    "host": "relay",
    "upgrade": "websocket",
    "connection": "keep-alive, Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": KEY,
}
"""A valid upgrade request's headers, as the front door hands them over."""


def headers(**changes: str | None) -> dict[str, str]:
    """UPGRADE with headers replaced (``None`` removes one); ``_`` in names stands for ``-``."""
    out = dict(UPGRADE)
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def response_headers(response: bytes) -> tuple[bytes, dict[str, str]]:
    status, *lines = response.decode("ascii").removesuffix("\r\n\r\n").split("\r\n")
    parsed = {}
    for line in lines:
        name, _, value = line.partition(": ")
        parsed[name.lower()] = value
    return status.encode(), parsed


def test_the_101_carries_the_rfc_6455_accept_token() -> None:
    response, websocket = accept("GET", UPGRADE, b"", CAP, compression=True)
    status, answer = response_headers(response)
    expected = base64.b64encode(
        hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    )
    assert status == b"HTTP/1.1 101 Switching Protocols"
    assert answer == {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-accept": expected.decode(),
    }
    assert websocket.open and websocket.deflate == 0 and websocket.max_message_size == CAP


def client_handshake(
    extensions: list[Any], compression: bool = True
) -> tuple[list[object], Connection]:
    """wsproto's client makes the request; the relay's answer goes back to it."""
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(Request(host="relay", target="/ws", extensions=extensions))
    head, _, _ = data.partition(b"\r\n\r\n")
    method = head.split(b" ", 1)[0].decode()
    parsed = {}
    for line in head.decode().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    response, server = accept(method, parsed, b"", CAP, compression)
    client.receive_data(response)
    events = list(client.events())
    assert isinstance(events[0], AcceptConnection)
    assert server.deflate == (15 if events[0].extensions else 0)
    assert client.connection is not None
    return events[0].extensions, client.connection


def test_wsproto_accepts_the_101_and_its_frames() -> None:
    extensions, client = client_handshake([])
    assert extensions == []
    frame = client.send(TextMessage(data="hello"))
    _, server = accept("GET", UPGRADE, frame, CAP, compression=True)
    assert server.early == ["hello"]


def test_a_deflate_offer_is_answered_with_no_context_takeover_both_ways() -> None:
    (agreed,), _ = client_handshake([PerMessageDeflate()])
    assert isinstance(agreed, PerMessageDeflate)
    assert agreed.server_no_context_takeover and agreed.client_no_context_takeover


def test_with_compression_off_an_offer_is_answered_without_the_extension() -> None:
    extensions, _ = client_handshake([PerMessageDeflate()], compression=False)
    assert extensions == []


def test_frames_sent_right_behind_the_request_are_not_lost() -> None:
    client = Connection(ConnectionType.CLIENT)
    pipelined = client.send(TextMessage(data='{"action":"ping"}')) + client.send(Ping(b"p"))
    _, server = accept("GET", UPGRADE, pipelined, CAP, compression=True)
    assert server.early[0] == '{"action":"ping"}'
    assert isinstance(server.early[1], Answer)


@pytest.mark.parametrize(
    ("method", "changes", "status", "message"),
    [
        ("POST", {}, 400, "Request method must be GET"),
        ("GET", {"connection": "keep-alive"}, 400, "Missing header, 'Connection: Upgrade'"),
        ("GET", {"connection": None}, 400, "Missing header, 'Connection: Upgrade'"),
        ("GET", {"sec_websocket_version": None}, 400, "Missing header, 'Sec-WebSocket-Version'"),
        ("GET", {"sec_websocket_version": "8"}, 426, "Missing header, 'Sec-WebSocket-Version'"),
        ("GET", {"sec_websocket_key": None}, 400, "Missing header, 'Sec-WebSocket-Key'"),
        ("GET", {"upgrade": "h2c"}, 400, "Missing header, 'Upgrade: websocket'"),
        ("GET", {"host": None}, 400, "Missing header, 'Host'"),
        ("GET", {"sec_websocket_key": "c2hvcnQ="}, 400, "Sec-WebSocket-Key must be 16 bytes"),
        ("GET", {"sec_websocket_key": "not base64!"}, 400, "Sec-WebSocket-Key must be 16 bytes"),
    ],
)
def test_a_bad_handshake_is_refused_with_wsprotos_status_and_message(
    method: str, changes: dict[str, str | None], status: int, message: str
) -> None:
    with pytest.raises(Refusal) as refused:
        accept(method, headers(**changes), b"", CAP, compression=True)
    assert refused.value.status == status
    assert refused.value.code == ("upgrade_required" if status == 426 else "bad_request")
    assert refused.value.message.startswith(message)


def test_a_wrong_version_is_told_the_version_the_relay_speaks() -> None:
    with pytest.raises(Refusal) as refused:
        accept("GET", headers(sec_websocket_version="8"), b"", CAP, compression=True)
    assert refused.value.headers == (("sec-websocket-version", "13"),)


@settings(max_examples=200, deadline=None)
@given(nonce=st.binary(min_size=0, max_size=24))
def test_only_a_16_byte_nonce_is_a_key(nonce: bytes) -> None:
    key = base64.b64encode(nonce).decode()
    if len(nonce) == 16:
        response, _ = accept("GET", headers(sec_websocket_key=key), b"", CAP, compression=True)
        assert response.startswith(b"HTTP/1.1 101 ")
    else:
        with pytest.raises(Refusal):
            accept("GET", headers(sec_websocket_key=key), b"", CAP, compression=True)


header_text = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "HEAD"]),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "host",
                "upgrade",
                "connection",
                "sec-websocket-version",
                "sec-websocket-key",
                "sec-websocket-extensions",
            ]
        ),
        st.one_of(header_text, st.sampled_from(list(UPGRADE.values()))),
    ),
)
def test_any_request_is_answered_with_a_101_or_a_refusal_never_an_exception(
    method: str, fields: dict[str, str]
) -> None:
    try:
        response, websocket = accept(method, fields, b"", CAP, compression=True)
    except Refusal as refused:
        assert refused.status in (400, 426) and refused.message
        return
    assert response.startswith(b"HTTP/1.1 101 ") and response.endswith(b"\r\n\r\n")
    assert method == "GET" and websocket.open
