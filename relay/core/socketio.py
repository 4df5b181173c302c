"""Socket.IO v5 in namespace ``/ws``: the relay's protocol spoken as Socket.IO events, without
any I/O.

Clients emit ``subscribe`` and ``unsubscribe`` with the body of the WebSocket command (its
``action`` is the event's name), and get the WebSocket protocol's events as Socket.IO events of
the same name whose one argument is the event's ``data``. Client packets are decoded with
python-socketio's :class:`socketio.packet.Packet`. The packets the relay sends are built here as
bytes around payloads that are already JSON: a channel message is encoded once for every
client, and its Socket.IO packet is that payload between a fixed prefix and ``]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson
from socketio.packet import CONNECT, DISCONNECT, EVENT, Packet

from relay.core.protocol import (
    Command,
    ErrorCode,
    EventData,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    encode_event_data,
    parse_request,
)

NAMESPACE: Final = "/ws"
_EVENT: Final = b"42/ws,"
"""An Engine.IO message holding a Socket.IO event in the namespace: what every event starts with."""
DATA_PREFIX: Final = _EVENT + b'["data",'
DISCONNECT_PACKET: Final = b"41/ws,"
ACTIONS: Final = ("subscribe", "unsubscribe")


def data_packet(payload: bytes) -> bytes:
    """A channel message (an envelope, already JSON) as the ``data`` event."""
    return DATA_PREFIX + payload + b"]"


def event_packet(event: str, data: EventData | None) -> bytes:
    """One of the relay's events: its ``data`` as the one argument (none without data)."""
    if data is None:
        return _EVENT + orjson.dumps([event])
    return _EVENT + b"[" + orjson.dumps(event) + b"," + encode_event_data(data) + b"]"


def error_packet(error: ProtocolError) -> bytes:
    return event_packet("error", error.data)


def ack_packet(ack: int, result: dict[str, Any]) -> bytes:
    return b"43/ws," + str(ack).encode() + orjson.dumps([result])


def connected_packet(sid: str) -> bytes:
    return b"40/ws," + orjson.dumps({"sid": sid})


def connect_error_packet(code: str, message: str, namespace: str = NAMESPACE) -> bytes:
    """Refuses a connect: socket.io-client's ``connect_error`` gets ``message`` = the code."""
    body = orjson.dumps({"message": code, "data": {"code": code, "message": message}})
    return b"44" + (b"" if namespace == "/" else namespace.encode() + b",") + body


# Client packets --------------------------------------------------------------------------


@attrs.frozen
class Connect:
    """A connect to the relay's namespace, with the credential from its ``auth`` (``token`` or
    ``key``), None without one."""

    credential: str | None


@attrs.frozen
class Refused:
    """A connect the relay answers with ``connect_error`` before it checks any credential."""

    namespace: str
    code: str
    message: str


@attrs.frozen
class Disconnect:
    """The client leaves the namespace."""


@attrs.frozen
class Request:
    """An event the client emitted: the command it asks for (or the error that answers it), and
    its acknowledgement id when it gave a callback."""

    command: Command | ProtocolError
    ack: int | None


ClientPacket = Connect | Refused | Disconnect | Request


def _bad(message: str, ack: int | None = None) -> Request:
    return Request(ProtocolError(ErrorCode.BAD_REQUEST, message), ack)


def read(text: str) -> ClientPacket:
    """One Socket.IO packet (an Engine.IO message's text)."""
    if not (text[:1].isdigit() and text[:1].isascii()):
        return _bad("not a Socket.IO packet")  # python-socketio's int() takes any digit
    try:
        packet = Packet(encoded_packet=text)
    except (ValueError, TypeError, RecursionError):
        # RecursionError: JSON nested deeper than the decoder (python's json) goes.
        return _bad("not a Socket.IO packet")
    namespace = packet.namespace or "/"
    kind = packet.packet_type
    if namespace != NAMESPACE:
        if kind == CONNECT:
            return Refused(namespace, "unknown_namespace", f"the namespace is {NAMESPACE}")
        return _bad(f"the namespace is {NAMESPACE}")
    if kind == CONNECT:
        return _connect(packet.data)
    if kind == DISCONNECT:
        return Disconnect()
    ack: int | None = packet.id  # the decoder's: digits after the namespace, or None
    if kind != EVENT:
        return _bad("the relay takes events (subscribe, unsubscribe), not binary or acks", ack)
    return _request(packet.data, ack)


def _connect(auth: object) -> ClientPacket:
    if auth is None:
        return Connect(None)
    if not isinstance(auth, dict):
        return Refused(NAMESPACE, ErrorCode.BAD_REQUEST, "auth is an object: {token} or {key}")
    for name in ("token", "key"):
        credential = auth.get(name)
        if credential is None or credential == "":
            continue
        if not isinstance(credential, str):
            return Refused(NAMESPACE, ErrorCode.BAD_REQUEST, f"auth's {name} is a string")
        return Connect(credential)
    return Connect(None)


def _request(data: object, ack: int | None) -> Request:
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        return _bad("an event is a name and its argument", ack)
    name = data[0]
    if name not in ACTIONS:
        return _bad(f"unknown event {name!r}: emit subscribe or unsubscribe", ack)
    body = data[1] if len(data) > 1 else None
    if not isinstance(body, dict):
        return _bad(f"{name}'s argument is an object such as {{channel: ...}}", ack)
    # Fields the WebSocket command has but a Socket.IO event does not: its own name, and an id
    # (the acknowledgement is the event's).
    request = {k: v for k, v in body.items() if k != "id"}
    request["action"] = name
    return Request(parse_request(name, request), ack)


def ack_result(
    command: Command | ProtocolError, holds: Callable[[str], bool], known: Callable[[str], bool]
) -> dict[str, Any]:
    """What the acknowledgement of a request carries once its events are queued: the channels
    the connection now holds (or no longer holds) and those it asked for in vain, whose reasons
    came as ``error`` events."""
    if isinstance(command, ProtocolError):
        return {"error": {"code": command.code, "message": command.message}}
    if isinstance(command, Subscribe):
        done = [c for c in command.channels if holds(c)]
        failed = [c for c in command.channels if not holds(c)]
        return {"subscribed": done, "failed": failed}
    if isinstance(command, Unsubscribe):
        done = [c for c in command.channels if known(c) and not holds(c)]
        failed = [c for c in command.channels if not known(c) or holds(c)]
        return {"unsubscribed": done, "failed": failed}
    raise TypeError(f"no acknowledgement for {command!r}")
