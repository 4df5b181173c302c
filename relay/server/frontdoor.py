"""One TCP port for plain HTTP and WebSocket upgrades.

The relay reads the request head itself (h11, under the caller's deadline), decides what the
request is, and either answers it as HTTP, with a real status and a JSON body when it refuses an
upgrade, or hands the head and whatever followed it to the WebSocket handshake
(:func:`relay.core.websocket.accept`).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import orjson
import trio

from relay.core.protocol import Refusal
from relay.server.nowait import receive_by

_RECEIVE_SIZE = 16384

REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


@attrs.define
class RequestHead:
    """A parsed request head plus what is needed to answer it or to hand it to the WebSocket
    handshake."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ", " as RFC 9110 allows."""
    head: bytes
    """The request head exactly as read: the WebSocket handshake is answered from it."""
    trailing: bytes
    """What the client sent after the head (a client may send frames without waiting)."""
    _h11: h11.Connection

    @property
    def is_upgrade(self) -> bool:
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "upgrade" in connection and self.headers.get("upgrade", "").lower() == "websocket"

    async def read_body(self, stream: trio.abc.ReceiveStream, max_bytes: int) -> bytes:
        """The request's body (``Content-Length`` or chunked, as h11 reads it), under the
        caller's deadline. Raises :class:`Refusal`: 413 past ``max_bytes`` (refused from the
        announced length when there is one, before reading it), 400 for a malformed or
        truncated body."""
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise Refusal(413, "too_large", f"the body is over {max_bytes} bytes")
        conn = self._h11
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise Refusal(400, "bad_request", str(exc) or "malformed body") from None
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_RECEIVE_SIZE)
                if not data:
                    raise Refusal(400, "bad_request", "the body ended early")
                conn.receive_data(bytes(data))
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_bytes:
                    raise Refusal(413, "too_large", f"the body is over {max_bytes} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def response(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """A complete response; the connection closes after it (no keep-alive on this port)."""
        all_headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("connection", "close"),
            *headers,
        ]
        reason = REASONS.get(status, b"")
        out = self._h11.send(h11.Response(status_code=status, headers=all_headers, reason=reason))
        out = (out or b"") + (self._h11.send(h11.Data(data=body)) or b"")
        return out + (self._h11.send(h11.EndOfMessage()) or b"")


def error_body(code: str, message: str) -> bytes:
    """The protocol's HTTP error shape: ``{"error": "<code>", "message": "..."}``."""
    return orjson.dumps({"error": code, "message": message})


def error_response(refused: Refusal) -> bytes:
    """A bare response for requests too broken for h11 to have a state we can answer from."""
    body = error_body(refused.code, refused.message)
    reason = REASONS.get(refused.status, b"")
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (refused.status, reason, len(body))
    )
    return head + body


async def read_request_head(
    stream: trio.abc.ReceiveStream, max_bytes: int, deadline: float
) -> RequestHead | None:
    """Read up to the end of the request head. None when the peer closes first or
    ``deadline`` passes.

    One deadline for the whole head: a client that sends nothing, or a byte a second, is cut
    off when it passes, not by a per-read timeout it could keep resetting. A head that is
    already waiting (nearly every one, in a reconnect storm) is read without a checkpoint.
    Raises :class:`Refusal` for bytes that are not a request head this port can serve.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_bytes)
    raw = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            raise Refusal(status, "bad_request", str(exc) or "malformed request") from None
        if event is h11.NEED_DATA:
            data = await receive_by(stream, _RECEIVE_SIZE, deadline)
            if not data:
                return None
            raw += data
            conn.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Request):
            target = event.target.decode("latin-1")
            split = urlsplit(target)
            headers: dict[str, str] = {}
            for name, value in event.headers:
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            trailing = conn.trailing_data[0]
            return RequestHead(
                method=event.method.decode("ascii"),
                target=target,
                path=split.path,
                query=parse_qs(split.query),
                headers=headers,
                head=bytes(raw[: len(raw) - len(trailing)]),
                trailing=bytes(trailing),
                h11=conn,
            )
        raise Refusal(400, "bad_request", "expected an HTTP request")
