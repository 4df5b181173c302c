"""The server end of a client's WebSocket: wsproto, plus what the relay needs on top.

The relay serves each client from its own sessions on wsproto directly rather than through
trio-websocket's server connection. trio-websocket adds, per connection, a reader task, a
memory channel, three events, a stream lock and the handshake's h11 state, kept for the life
of the connection: about 12 KiB of an idle client's memory (measured in docs/performance.md).
The relay already has a reader task and a writer discipline of its own, so all it needs is
what this module adds to wsproto: whole messages under a size cap (checked at each frame's
header, which this module reads ahead of wsproto: only the lengths, never the payloads; what
compressed frames inflate to is checked by :class:`relay.core.deflate.InboundDeflate`), and
the frames to send for pings, pongs and closes. The handshake that opens it is
:mod:`relay.core.handshake`.

Sans-IO: bytes in, results out; the session does every read and write.
"""

from __future__ import annotations

from typing import Final, cast

import attrs
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

MESSAGE_TOO_BIG: Final = 1009
_TOO_BIG: Final = "message too big"
INVALID_PAYLOAD: Final = 1007

_DONE: Final = (ConnectionState.CLOSED, ConnectionState.REMOTE_CLOSING)
"""States after the client's close frame: nothing it sends after that is read."""

_CONTINUATION: Final = 0x0
_BINARY: Final = 0x2
"""Opcodes up to this one (continuation, text, binary) make up messages; control frames don't."""
_HEADER_SIZE: Final = tuple(
    2 + {126: 2, 127: 8}.get(second & 0x7F, 0) + (4 if second & 0x80 else 0)
    for second in range(256)
)
"""A frame header's size in bytes, by its second byte (mask bit, 7-bit length)."""


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


def _invalid_utf8(detail: str) -> str:
    """A fixed close reason for wsproto's 1007, whose own reason is Python's codec message
    (offsets and bytes of the client's text, meaningless to its user)."""
    if detail.startswith("Error decoding CLOSE reason"):
        return "invalid UTF-8 in a close reason"
    return "invalid UTF-8 in a text frame"


class _EventQueue(list[Event]):
    __slots__ = ()

    def popleft(self) -> Event:
        return self.pop(0)


class ServerWebSocket:
    """One client's frames in, and the control frames the relay sends back."""

    __slots__ = (
        "_announced",
        "_conn",
        "_failed",
        "_header",
        "_parts",
        "_skip",
        "_too_big",
        "deflate",
        "early",
        "max_message_size",
    )

    def __init__(self, connection: Connection, max_message_size: int, deflate: int = 0) -> None:
        # wsproto queues only one event of its own (an abnormal closure) and keeps a deque for
        # it: an empty deque allocates a 760-byte block, the largest single allocation of an
        # idle connection (docs/performance.md). A list with the one deque method it calls
        # holds the same and costs 56 bytes.
        connection._events = _EventQueue()  # type: ignore[assignment]
        self._conn = connection
        self.max_message_size = max_message_size
        self.deflate = deflate
        """The server window bits of the permessage-deflate the client agreed to (the variant
        of compressed frames it takes), 0 without it."""
        self._parts: list[str | bytes] = []
        # The frame headers, read here before wsproto (which hands out a data frame's payload
        # as it arrives and never says what its header announced), so that a message over the
        # cap is refused at its header rather than after max_message_size bytes of it.
        self._header = bytearray()
        """The bytes of a frame header read so far (it may span reads)."""
        self._skip = 0
        """Payload bytes of the current frame still to come."""
        self._announced = 0
        """Payload bytes the frames of the current (or last) message announced."""
        self._too_big = False
        """Messages are no longer read (the relay is closing with 1009); the client's close
        frame still is."""
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
        close frame is reported (an answer to the relay's), and nothing once it came.

        A frame whose header announces more than the message may hold ends the conversation
        with 1009 as soon as its header is read: what came before it is reported first, and
        none of its payload is waited for.
        """
        conn = self._conn
        if conn.state in _DONE or self._failed:
            return []
        out: list[Received] = []
        cut = None if self._too_big else self._oversized(data)
        if cut is None:
            conn.receive_data(cast(bytes, data))  # wsproto's buffer takes any bytes-like
            self._events(out)
            return out
        # wsproto reads up to the end of the oversized frame's header: a violation in what
        # came before, or in that header, keeps its own code; a valid header yields nothing.
        conn.receive_data(bytes(data[:cut]))
        if self._events(out):
            return out  # a close or a violation came first: nothing after it counts
        self._too_big = True
        self._parts.clear()
        out.append(Closed(MESSAGE_TOO_BIG, _TOO_BIG, by_client=False))
        # The rest goes to wsproto unread for now: only the client's close frame matters any
        # more, and it can only come after the oversized frame's payload.
        conn.receive_data(bytes(data[cut:]))
        return out

    def _events(self, out: list[Received]) -> bool:
        """wsproto's events into ``out``; True when the last is a :class:`Closed`."""
        conn = self._conn
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
                reason = event.reason or ""
                if not by_client and event.code == INVALID_PAYLOAD:
                    reason = _invalid_utf8(reason)
                elif not by_client and event.code == MESSAGE_TOO_BIG:
                    reason = _TOO_BIG  # inflated past the cap (wsproto: "error in extension")
                out.append(Closed(event.code, reason, by_client))
                return True
        return False

    def _oversized(self, data: bytes | bytearray) -> int | None:
        """Where in ``data`` the header of the first frame that takes its message over
        ``max_message_size`` ends, or None. Follows the frame boundaries across reads: headers
        are read, payloads skipped (wsproto parses them, and reports a malformed header
        itself). A compressed frame's payload bytes are counted as they are: what they inflate
        to is bounded as it is inflated (:class:`relay.core.deflate.InboundDeflate`)."""
        end = len(data)
        i = min(self._skip, end)
        self._skip -= i
        header = self._header
        while i < end:
            if header or end - i < 2 or end - i < _HEADER_SIZE[data[i + 1]]:
                # A header cut by the end of a read: kept until the next one completes it.
                while i < end and len(header) < (_HEADER_SIZE[header[1]] if len(header) > 1 else 2):
                    header.append(data[i])
                    i += 1
                if len(header) < 2 or len(header) < _HEADER_SIZE[header[1]]:
                    return None
                frame: bytes | bytearray = header
                at = 0
            else:
                frame, at = data, i
                i += _HEADER_SIZE[data[i + 1]]
            opcode, length = frame[at] & 0x0F, frame[at + 1] & 0x7F
            if length == 126:
                length = int.from_bytes(frame[at + 2 : at + 4], "big")
            elif length == 127:
                length = int.from_bytes(frame[at + 2 : at + 10], "big")
            header.clear()
            if opcode <= _BINARY:  # a message's frame (continuation, text, binary)
                # A text or binary frame starts a message; a continuation adds to it.
                total = length + (self._announced if opcode == _CONTINUATION else 0)
                if total > self.max_message_size:
                    return i  # no more scanning: the connection closes with 1009
                self._announced = total
            step = min(length, end - i)
            i += step
            self._skip = length - step
        return None

    def _assemble(self, data: str | bytes, finished: bool) -> str | bytes | None:
        """A whole message, or None while fragments are still arriving. (Its size was
        checked at its frames' headers.)"""
        if finished and not self._parts:
            return data
        self._parts.append(data)
        if not finished:
            return None
        parts, self._parts = self._parts, []
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
