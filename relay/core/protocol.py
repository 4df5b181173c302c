"""Client protocol v1: commands in, events out (docs/protocol.md).

Parsing never raises: every malformed input becomes a :class:`ProtocolError` carrying the
documented error code, so the session answers with an error event and keeps the connection. The
converter is strict on purpose: cattrs would happily turn ``5`` into ``"5"`` or ``"abc"`` into
``["a", "b", "c"]``, which would hide client bugs behind confusing ``unknown_channel`` errors.
"""

from __future__ import annotations

from typing import Any, Final, get_args, get_origin

import attrs
import cattrs
import orjson
from cattrs.strategies import configure_union_passthrough

PROTOCOL_VERSION: Final = 1

#: The most channels one command may name after expanding ``channels`` x ``symbols``.
MAX_CHANNELS_PER_COMMAND: Final = 1000
MAX_CHANNEL_NAME: Final = 200

RequestId = int | str | None


class ErrorCode:
    """The error codes of protocol.md, plus the ones the relay adds."""

    BAD_JSON: Final = "bad_json"
    BAD_REQUEST: Final = "bad_request"
    UNKNOWN_ACTION: Final = "unknown_action"
    UNKNOWN_CHANNEL: Final = "unknown_channel"
    FORBIDDEN: Final = "forbidden"
    TOO_MANY_SUBSCRIPTIONS: Final = "too_many_subscriptions"
    RATE_LIMITED: Final = "rate_limited"
    UPSTREAM_REFUSED: Final = "upstream_refused"
    INVALID_CREDENTIALS: Final = "invalid_credentials"
    UNAVAILABLE: Final = "unavailable"


# Commands ------------------------------------------------------------------------------------


class Refusal(Exception):
    """A request answered with an HTTP status and the protocol's error body,
    ``{"error": code, "message": message}``, instead of being served."""

    def __init__(
        self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        """Response headers the refusal needs (a 426's ``Sec-WebSocket-Version``)."""


@attrs.frozen
class Since:
    """Where a resuming client left a channel: the last ``seq`` it holds, in ``epoch``."""

    seq: int
    epoch: str


@attrs.frozen
class Subscribe:
    channels: tuple[str, ...]
    id: RequestId = None
    since: Since | None = None


@attrs.frozen
class Unsubscribe:
    channels: tuple[str, ...]
    id: RequestId = None


@attrs.frozen
class Ping:
    id: RequestId = None


@attrs.frozen
class Auth:
    """Replace the connection's token in place (a JWT connection refreshing before ``exp``)."""

    token: str = attrs.field(repr=False)
    id: RequestId = None


Command = Subscribe | Unsubscribe | Ping | Auth


@attrs.frozen
class ProtocolError:
    """A command that could not be understood; becomes an ``error`` event."""

    code: str
    message: str
    id: RequestId = None
    channel: str | None = None

    @property
    def data(self) -> ErrorData:
        """The ``error`` event's data."""
        return ErrorData(self.code, self.message, self.channel)


@attrs.frozen
class _ChannelRequest:
    """The wire shape shared by subscribe and unsubscribe."""

    action: str
    channel: str | None = None
    channels: list[str] | None = None
    symbols: list[str] | None = None
    id: RequestId = None
    since: Since | None = None


@attrs.frozen
class _PingRequest:
    action: str
    id: RequestId = None


@attrs.frozen
class _AuthRequest:
    action: str
    token: str
    id: RequestId = None


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()

    def exact(kind: type) -> Any:
        def hook(value: Any, _: Any) -> Any:
            if type(value) is not kind:
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
            return value

        return hook

    for kind in (str, int):
        converter.register_structure_hook(kind, exact(kind))

    def is_list(tp: Any) -> bool:
        return get_origin(tp) is list

    def list_hook(value: Any, tp: Any) -> list[Any]:
        if type(value) is not list:
            raise TypeError(f"expected a list, got {type(value).__name__}")
        (item,) = get_args(tp)
        return [converter.structure(v, item) for v in value]

    converter.register_structure_hook_func(is_list, list_hook)
    configure_union_passthrough(int | str | None, converter)
    return converter


converter: Final = _make_converter()


def _request_id(raw: dict[str, Any]) -> RequestId:
    """The id to echo in an error, if the client sent a usable one."""
    value = raw.get("id")
    return value if type(value) in (int, str) else None


def command_id(message: str | bytes) -> RequestId:
    """The id of a command refused without being acted on (rate limited, a binary frame), so
    that the refusal echoes it like every other reply: None unless the message is a JSON
    object with a string or integer ``id``."""
    try:
        raw = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return _request_id(raw) if isinstance(raw, dict) else None


BINARY_REFUSED: Final = "commands are JSON text frames: send this as text"


def refuse_binary(payload: bytes) -> ProtocolError:
    """The answer to a binary frame: commands are JSON text frames (protocol.md), so a binary
    one is a ``bad_request``, never executed, and the connection stays open. Clients that
    send binary by mistake (``send(orjson.dumps(...))`` in many libraries) learn why, with
    their command's id when it has one."""
    return ProtocolError(ErrorCode.BAD_REQUEST, BINARY_REFUSED, command_id(payload))


def _channels(request: _ChannelRequest) -> tuple[str, ...] | ProtocolError:
    if request.channel is not None:
        if request.channels is not None or request.symbols is not None:
            return ProtocolError(
                ErrorCode.BAD_REQUEST,
                "give either 'channel' or 'channels' (with optional 'symbols'), not both",
                request.id,
            )
        names: tuple[str, ...] = (request.channel,)
    elif request.channels is not None:
        if request.symbols is None:
            names = tuple(request.channels)
        else:
            names = tuple(f"{c}:{s}" for c in request.channels for s in request.symbols)
    else:
        return ProtocolError(ErrorCode.BAD_REQUEST, "missing 'channel' or 'channels'", request.id)
    if not names:
        return ProtocolError(ErrorCode.BAD_REQUEST, "no channels given", request.id)
    if len(names) > MAX_CHANNELS_PER_COMMAND:
        return ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"at most {MAX_CHANNELS_PER_COMMAND} channels per command",
            request.id,
        )
    too_long = next((n for n in names if len(n) > MAX_CHANNEL_NAME), None)
    if too_long is not None:
        return ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"channel names are at most {MAX_CHANNEL_NAME} characters",
            request.id,
        )
    # One reply per channel: asking twice for the same channel in one command is one request.
    return tuple(dict.fromkeys(names))


def parse_command(text: str | bytes) -> Command | ProtocolError:
    """One command's JSON text (a text frame's, or its UTF-8 bytes) to a command, or the error
    event that answers it. Binary frames are not commands: see :func:`refuse_binary`."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}")
    if not isinstance(raw, dict):
        return ProtocolError(ErrorCode.BAD_REQUEST, "a command is a JSON object")
    action = raw.get("action")
    if not isinstance(action, str):
        return ProtocolError(
            ErrorCode.BAD_REQUEST, "missing or non-string 'action'", _request_id(raw)
        )
    return parse_request(action, raw)


def parse_request(action: str, raw: dict[str, Any]) -> Command | ProtocolError:
    """A decoded command object (with its ``action``) to a command: shared by the WebSocket
    protocol and Socket.IO's events, whose name is the action and whose argument the rest."""
    try:
        if action in ("subscribe", "unsubscribe"):
            request = converter.structure(raw, _ChannelRequest)
            channels = _channels(request)
            if isinstance(channels, ProtocolError):
                return channels
            if action == "unsubscribe":
                return Unsubscribe(channels, request.id)
            since = request.since
            if since is not None:
                if len(channels) != 1:
                    return ProtocolError(
                        ErrorCode.BAD_REQUEST,
                        "'since' resumes one channel: give a single 'channel'",
                        request.id,
                    )
                if since.seq < 0:
                    return ProtocolError(
                        ErrorCode.BAD_REQUEST, "'since.seq' must be 0 or more", request.id
                    )
            return Subscribe(channels, request.id, since)
        if action == "ping":
            return Ping(converter.structure(raw, _PingRequest).id)
        if action == "auth":
            auth = converter.structure(raw, _AuthRequest)
            if not auth.token:
                return ProtocolError(ErrorCode.BAD_REQUEST, "'token' is empty", auth.id)
            return Auth(auth.token, auth.id)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        return ProtocolError(ErrorCode.BAD_REQUEST, detail, _request_id(raw))
    return ProtocolError(ErrorCode.UNKNOWN_ACTION, f"unknown action {action!r}", _request_id(raw))


# Events --------------------------------------------------------------------------------------


@attrs.frozen
class Welcome:
    session: str
    heartbeat: float
    protocol: int = PROTOCOL_VERSION


@attrs.frozen
class ChannelAck:
    channel: str


@attrs.frozen
class Subscribed:
    """``subscribed``: the channel's last published ``seq`` and the ``epoch`` it counts in, so
    a client can resume later; ``recovered`` only answers a subscribe with ``since``."""

    channel: str
    seq: int
    epoch: str
    recovered: bool | None = None


@attrs.frozen
class ChannelRevoked:
    """An ``unsubscribed`` the client did not ask for: its credentials no longer allow it."""

    channel: str
    reason: str
    message: str


@attrs.frozen
class Authenticated:
    expires: float
    """The new token's ``exp``."""


@attrs.frozen
class ErrorData:
    code: str
    message: str
    channel: str | None = None


@attrs.frozen
class Lagged:
    channel: str
    dropped: int


@attrs.frozen
class Status:
    source: str
    state: str


EventData = (
    Welcome | ChannelAck | Subscribed | ChannelRevoked | Authenticated | ErrorData | Lagged | Status
)


def _unstructure_data(data: EventData) -> dict[str, Any]:
    out: dict[str, Any] = attrs.asdict(data)
    if isinstance(data, ErrorData) and data.channel is None:
        del out["channel"]
    elif isinstance(data, Subscribed) and data.recovered is None:
        del out["recovered"]
    return out


def encode_event(event: str, data: EventData | None = None, id: RequestId = None) -> bytes:
    """A server event as JSON bytes: ``{"event", "data"?, "id"?}``."""
    out: dict[str, Any] = {"event": event}
    if data is not None:
        out["data"] = _unstructure_data(data)
    if id is not None:
        out["id"] = id
    return orjson.dumps(out)


def encode_event_data(data: EventData) -> bytes:
    """An event's ``data`` alone, as JSON (Socket.IO's events carry it as their argument)."""
    return orjson.dumps(_unstructure_data(data))


def encode_error(error: ProtocolError) -> bytes:
    return encode_event("error", error.data, error.id)


def encode_envelope(
    channel: str, seq: int, ts: int, data: dict[str, Any], snapshot: bool, reorg: bool = False
) -> bytes:
    """A data message. Once per channel message on the hot path, so a plain dict for orjson,
    and the flags only when they are set."""
    if snapshot:
        return orjson.dumps(
            {"channel": channel, "seq": seq, "ts": ts, "snapshot": True, "data": data}
        )
    if reorg:
        return orjson.dumps({"channel": channel, "seq": seq, "ts": ts, "reorg": True, "data": data})
    return orjson.dumps({"channel": channel, "seq": seq, "ts": ts, "data": data})
