"""The server end of a client's WebSocket: wsproto, plus what the relay needs on top.

The relay serves each client from its own sessions on wsproto directly rather than through
trio-websocket's server connection. trio-websocket adds, per connection, a reader task, a
memory channel, three events, a stream lock and the handshake's h11 state, kept for the life
of the connection: about 12 KiB of an idle client's memory (measured in docs/performance.md).
The relay already has a reader task and a writer discipline of its own, so all it needs is
what this module adds to wsproto: the handshake answered from the bytes the front door read,
whole messages under a size cap, and the frames to send for pings, pongs and closes.

Sans-IO: bytes in, results out; the session does every read and write.
"""

from __future__ import annotations

from typing import Final, cast

import attrs
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError

from relay.core.protocol import Refusal

MESSAGE_TOO_BIG: Final = 1009


@attrs.frozen
class Answer:
    """A frame to queue for the client (a pong)."""

    frame: bytes


@attrs.frozen
class PongReceived:
    """The client answered a ping (or sent an unsolicited pong: it is alive either way)."""


@attrs.frozen
class Closed:
    """The conversation is over: the client closed, or broke the protocol."""

    code: int
    reason: str
    by_client: bool
    """True for a close frame from the client, which the relay answers and then hangs up;
    False for a violation (bad framing, bad UTF-8, a message too big) the relay closes for."""


Received = str | bytes | Answer | PongReceived | Closed
"""Whole text and binary messages are plain ``str`` and ``bytes``."""

PONG_RECEIVED: Final = PongReceived()


def accept(head: bytes, trailing: bytes, max_message_size: int) -> tuple[bytes, ServerWebSocket]:
    """Answer an upgrade request: the 101 response and the connection it opens.

    ``head`` is the request head exactly as read; ``trailing`` whatever the client sent after
    it (frames may follow the request without waiting for the response). wsproto validates the
    request; its advice on the status to refuse with (426 for a wrong version) is kept.
    Raises :class:`Refusal` for a request that is not a valid handshake.
    """
    handshake = WSConnection(ConnectionType.SERVER)
    try:
        handshake.receive_data(head)
        requests = [event for event in handshake.events() if isinstance(event, Request)]
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        if isinstance(hint, RejectConnection) and hint.status_code == 426:
            raise Refusal(426, "upgrade_required", str(exc)) from None
        raise Refusal(400, "bad_request", str(exc)) from None
    if not requests:
        raise Refusal(400, "bad_request", "expected a WebSocket upgrade request")
    response = handshake.send(AcceptConnection())
    connection = handshake.connection
    assert connection is not None  # wsproto opens the connection when it accepts
    # Only the opened connection is kept: the handshake's h11 state dies with this function.
    websocket = ServerWebSocket(connection, max_message_size)
    if trailing:
        websocket.early = websocket.receive(trailing)
    return response, websocket


class ServerWebSocket:
    """One client's frames in, and the control frames the relay sends back."""

    __slots__ = ("_conn", "_failed", "_parts", "_size", "_too_big", "early", "max_message_size")

    def __init__(self, connection: Connection, max_message_size: int) -> None:
        self._conn = connection
        self.max_message_size = max_message_size
        self._parts: list[str | bytes] = []
        self._size = 0
        self._too_big = False
        """The rest of an oversized message is skipped; control frames are still read."""
        self._failed = False
        """The client broke the framing: nothing it sends can be parsed any more."""
        self.early: list[Received] = []
        """What arrived with the handshake, for the session to handle first."""

    @property
    def open(self) -> bool:
        return self._conn.state is ConnectionState.OPEN

    @property
    def closing(self) -> bool:
        """The relay sent its close frame and waits for the client's."""
        return self._conn.state is ConnectionState.LOCAL_CLOSING

    def receive(self, data: bytes | bytearray) -> list[Received]:
        """Everything ``data`` completes, in order. After a :class:`Closed` only the client's
        close frame is reported (an answer to the relay's), and nothing once it came."""
        conn = self._conn
        if conn.state is ConnectionState.CLOSED or self._failed:
            return []
        conn.receive_data(cast(bytes, data))  # wsproto's buffer takes any bytes-like
        out: list[Received] = []
        state = conn.state
        for event in conn.events():
            if isinstance(event, TextMessage | BytesMessage):
                if self._too_big:
                    continue
                payload = event.data
                message = self._assemble(
                    payload if isinstance(payload, str) else bytes(payload),
                    event.message_finished,
                )
                if message is not None:
                    out.append(message)
                elif self._too_big:
                    out.append(Closed(MESSAGE_TOO_BIG, "message too big", by_client=False))
                    return out
            elif isinstance(event, Ping):
                out.append(Answer(conn.send(event.response())))
            elif isinstance(event, Pong):
                out.append(PONG_RECEIVED)
            elif isinstance(event, CloseConnection):
                # wsproto reports a protocol violation as a close event that leaves the state
                # as it was; a real close frame moves it on (to REMOTE_CLOSING, or to CLOSED
                # if the relay closed first).
                by_client = conn.state is not state
                self._failed = not by_client
                out.append(Closed(event.code, event.reason or "", by_client))
                return out
        return out

    def _assemble(self, data: str | bytes, finished: bool) -> str | bytes | None:
        """A whole message, or None while fragments are still arriving or once it is too big
        (which sets ``_too_big``)."""
        # The cap is in bytes; an ASCII str (known in O(1)) is as long as its encoding.
        size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
        self._size += size
        if self._size > self.max_message_size:
            self._parts.clear()
            self._too_big = True
            return None
        if finished and not self._parts:
            self._size = 0
            return data
        self._parts.append(data)
        if not finished:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if isinstance(data, str):
            return "".join(cast(list[str], parts))
        return b"".join(cast(list[bytes], parts))

    def ping(self, payload: bytes) -> bytes | None:
        """A ping frame, or None once closing has begun."""
        if not self.open:
            return None
        return self._conn.send(Ping(payload))

    def close(self, code: int, reason: str) -> bytes | None:
        """The close frame to send (the answer, if the client closed first), or None when no
        close frame may be sent any more."""
        conn = self._conn
        if conn.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return None
        if code == CloseReason.NO_STATUS_RCVD:
            # The client's close had no code (a browser's bare ``close()``): answer in kind; a
            # close frame without a code cannot carry a reason.
            return conn.send(CloseConnection(CloseReason.NO_STATUS_RCVD))
        return conn.send(CloseConnection(code, reason))
