"""The WebSocket opening handshake (RFC 6455 section 4.2), answered from the request head the
front door already parsed.

The front door parses the head once; feeding the same bytes to a wsproto handshake would parse
them a second time with wsproto's h11, per connection. So the upgrade is checked here from
the parsed headers, the 101 is built here (the accept token by wsproto), and the connection is
a plain wsproto :class:`~wsproto.connection.Connection`, opened directly. Every refusal keeps the
status and message wsproto gave it before.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import Extension
from wsproto.utilities import generate_accept_token

from relay.core.deflate import negotiate
from relay.core.protocol import Refusal
from relay.core.websocket import ServerWebSocket

VERSION: Final = "13"


def _tokens(value: str | None) -> set[str]:
    return {token.strip().lower() for token in (value or "").split(",")}


def _checked_key(headers: Mapping[str, str]) -> bytes:
    """The ``Sec-WebSocket-Key``, or a refusal when the request is not a version-13 upgrade.

    The checks, their order and their messages are wsproto's: clients and tests see the same
    answers as when wsproto did the handshake."""
    if "upgrade" not in _tokens(headers.get("connection")):
        raise Refusal(400, "bad_request", "Missing header, 'Connection: Upgrade'")
    version = headers.get("sec-websocket-version")
    if version != VERSION:
        raise Refusal(
            426 if version else 400,
            "upgrade_required" if version else "bad_request",
            "Missing header, 'Sec-WebSocket-Version'",
            headers=(("sec-websocket-version", VERSION),),
        )
    key = headers.get("sec-websocket-key")
    if key is None:
        raise Refusal(400, "bad_request", "Missing header, 'Sec-WebSocket-Key'")
    if headers.get("upgrade", "").lower() != "websocket":
        raise Refusal(400, "bad_request", "Missing header, 'Upgrade: websocket'")
    if "host" not in headers:
        raise Refusal(400, "bad_request", "Missing header, 'Host'")
    try:
        nonce = base64.b64decode(key.strip(), validate=True)
    except binascii.Error:
        nonce = b""
    if len(nonce) != 16:
        raise Refusal(400, "bad_request", "Sec-WebSocket-Key must be 16 bytes in base64")
    return key.strip().encode("ascii")


def accept(
    method: str,
    headers: Mapping[str, str],
    trailing: bytes,
    max_message_size: int,
    compression: bool,
) -> tuple[bytes, ServerWebSocket]:
    """Answer an upgrade request: the 101 response and the connection it opens.

    ``headers`` have lower-case names (repeated ones joined with ", "); ``trailing`` is what
    the client sent after the head (frames may follow the request without waiting for the
    response). With ``compression``, a permessage-deflate offer is answered (see
    :mod:`relay.core.deflate`); an offer the relay cannot take is answered without it.
    Raises :class:`Refusal` for a request that is not a valid handshake.
    """
    if method != "GET":
        raise Refusal(400, "bad_request", "Request method must be GET")
    key = _checked_key(headers)
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + generate_accept_token(key),
    ]
    extensions: list[Extension] = []
    agreed = None
    if compression:
        agreed = negotiate(headers.get("sec-websocket-extensions"), max_message_size)
    if agreed is not None:
        answer, extension = agreed
        lines.append(b"Sec-WebSocket-Extensions: " + answer.encode("ascii"))
        extensions.append(extension)
    connection = Connection(ConnectionType.SERVER, extensions=extensions)
    window_bits = 0 if agreed is None else agreed[1].server_max_window_bits
    websocket = ServerWebSocket(connection, max_message_size, window_bits)
    if trailing:
        websocket.early = websocket.receive(trailing)
    return b"\r\n".join(lines) + b"\r\n\r\n", websocket
