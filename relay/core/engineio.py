"""Engine.IO v4, the transport under Socket.IO: its packets, its HTTP errors, and the life of one
socket's transports (long-polling, the upgrade, WebSocket), without any I/O.

A Socket.IO socket outlives the HTTP requests that carry it while it polls: its state here says
which request may come next (one poll at a time, posts until the upgrade, the probe, then the
WebSocket), so the shell only routes requests and carries bytes. An Engine.IO packet from a
client is a type digit and the text after it (the relay's clients send no binary), which is
all that is read here; the Socket.IO packet inside a message is decoded by python-socketio
(:mod:`relay.core.socketio`). The few packets the relay sends are fixed bytes.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs
import orjson

PROTOCOL: Final = "4"
PATH: Final = "/socket.io/"

OPEN: Final = 0
CLOSE: Final = 1
PING: Final = 2
PONG: Final = 3
MESSAGE: Final = 4
UPGRADE: Final = 5
NOOP: Final = 6

CLOSE_PACKET: Final = b"1"
PING_PACKET: Final = b"2"
NOOP_PACKET: Final = b"6"
PROBE: Final = "probe"
PROBE_ANSWER: Final = b"3probe"
SEPARATOR: Final = b"\x1e"
"""Between packets in a long-polling body."""

POLLING: Final = "polling"
WEBSOCKET: Final = "websocket"


@attrs.frozen
class EngineError(Exception):
    """An Engine.IO request refused with its protocol's HTTP 400 body ``{"code", "message"}``."""

    code: int
    message: str

    def body(self) -> bytes:
        return orjson.dumps({"code": self.code, "message": self.message})


UNKNOWN_TRANSPORT: Final = EngineError(0, "Transport unknown")
UNKNOWN_SID: Final = EngineError(1, "Session ID unknown")
BAD_METHOD: Final = EngineError(2, "Bad handshake method")
BAD_REQUEST: Final = EngineError(3, "Bad request")
BAD_VERSION: Final = EngineError(5, "Unsupported protocol version")


@attrs.frozen
class EngineRequest:
    """What an Engine.IO request's query asks for."""

    transport: str
    sid: str | None


def read_query(query: dict[str, list[str]]) -> EngineRequest:
    """The request's transport and session id; raises :class:`EngineError` as Engine.IO
    servers answer (the version first: a v3 client must learn that it is one)."""
    if _first(query, "EIO") != PROTOCOL:
        raise BAD_VERSION
    transport = _first(query, "transport")
    if transport is None or transport not in (POLLING, WEBSOCKET):
        raise UNKNOWN_TRANSPORT
    return EngineRequest(transport, _first(query, "sid") or None)


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def open_packet(
    sid: str, upgrades: bool, ping_interval: float, ping_timeout: float, max_payload: int
) -> bytes:
    """The handshake's answer; intervals in seconds, sent in milliseconds."""
    return b"0" + orjson.dumps(
        {
            "sid": sid,
            "upgrades": [WEBSOCKET] if upgrades else [],
            "pingInterval": round(ping_interval * 1000),
            "pingTimeout": round(ping_timeout * 1000),
            "maxPayload": max_payload,
        }
    )


@attrs.frozen
class Received:
    """One decoded Engine.IO packet from the client: its type, and its text for a message."""

    type: int
    data: str = ""


_CLIENT_TYPES: Final = {str(t): t for t in (CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP)}


def decode(text: str) -> Received:
    """One packet (a WebSocket text message, or one of a post's packets): its type and its
    text as sent. Raises :class:`EngineError` for one the relay cannot take: empty, base64
    binary (``b...``), or a type a client does not send."""
    kind = _CLIENT_TYPES.get(text[:1])
    if kind is None:
        raise BAD_REQUEST
    return Received(kind, text[1:])


def decode_payload(body: bytes) -> list[Received]:
    """A long-polling post's packets; raises :class:`EngineError` for a body that is not UTF-8
    or any packet :func:`decode` refuses. No count bound: socket.io-client posts everything
    it has buffered at once, bounded only by bytes (``maxPayload``, which the caller applies),
    and each packet is rate limited like a WebSocket message."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise BAD_REQUEST from None
    return [decode(part) for part in text.split("\x1e")]


class Phase(enum.Enum):
    POLLING = "polling"
    UPGRADING = "upgrading"
    """A WebSocket has sent the probe: polls are still served until the client's upgrade."""
    WEBSOCKET = "websocket"
    CLOSED = "closed"


class EngineState:
    """Which requests one socket may take next.

    Engine.IO's rules: one poll at a time (a second concurrent poll is a broken client and ends
    the socket); posts while polling; one probe, from a socket that polls, then the upgrade
    packet on that WebSocket; nothing over HTTP after the upgrade. Each method answers whether
    the request is allowed and moves the state; only overlapping polls close the socket, other
    requests out of turn are refused and change nothing.
    """

    __slots__ = ("phase", "polling")

    def __init__(self, websocket: bool) -> None:
        self.phase = Phase.WEBSOCKET if websocket else Phase.POLLING
        self.polling = False
        """A poll is waiting for packets."""

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    def _polls(self) -> bool:
        return self.phase in (Phase.POLLING, Phase.UPGRADING)

    def poll(self) -> bool:
        """A poll arrives."""
        if not self._polls():
            return False
        if self.polling:
            self.close()
            return False
        self.polling = True
        return True

    def polled(self) -> None:
        """The waiting poll was answered (or abandoned by its client)."""
        self.polling = False

    def post(self) -> bool:
        """A post of packets arrives."""
        return self._polls()

    def probe(self) -> bool:
        """A WebSocket with this socket's id sent the probe."""
        if self.phase is not Phase.POLLING:
            return False  # a second probe, or one after the upgrade: that WebSocket is refused
        self.phase = Phase.UPGRADING
        return True

    def upgrade(self) -> bool:
        """The probing WebSocket sent the upgrade packet: the socket is on it from now on."""
        if self.phase is not Phase.UPGRADING:
            return False
        self.phase = Phase.WEBSOCKET
        return True

    def probe_failed(self) -> None:
        """The probing WebSocket went away before its upgrade: polling goes on."""
        if self.phase is Phase.UPGRADING:
            self.phase = Phase.POLLING

    def close(self) -> None:
        self.phase = Phase.CLOSED
        self.polling = False
