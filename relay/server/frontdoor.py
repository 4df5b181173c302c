"""One TCP port for plain HTTP and WebSocket upgrades.

The relay reads the request head itself (httptools, llhttp's binding: about a tenth of h11's
cost, which a reconnect storm pays ten thousand times), decides what the
request is, and either answers it as HTTP, with a real status and a JSON body when it refuses an
upgrade, or hands the head and whatever followed it to the WebSocket handshake
(:func:`relay.core.websocket.accept`).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

import attrs
import httptools
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


class _Parsed:
    """httptools' callbacks: what the first request on the connection has carried so far. The
    URL may come in pieces (a head split across reads); each header comes whole. Whatever
    llhttp reports after the head (a chunked body's trailers) or after the request (a request
    pipelined behind it) is not this request's and is left out, as h11 left it."""

    __slots__ = ("body", "complete", "ended", "headers", "upgrade", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.body = bytearray()
        self.ended = False
        self.upgrade = False
        """llhttp took the request for an upgrade (any ``Upgrade``) and did not read its body."""

    def on_url(self, url: bytes) -> None:
        if not self.complete:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True

    def on_body(self, body: bytes) -> None:
        if not self.ended:
            self.body += body

    def on_message_complete(self) -> None:
        self.ended = True


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
    _parser: httptools.HttpRequestParser
    _parsed: _Parsed

    @property
    def is_upgrade(self) -> bool:
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "upgrade" in connection and self.headers.get("upgrade", "").lower() == "websocket"

    async def read_body(self, stream: trio.abc.ReceiveStream, max_bytes: int) -> bytes:
        """The request's body (``Content-Length`` or chunked, as httptools reads it), under
        the caller's deadline. Raises :class:`Refusal`: 413 past ``max_bytes`` (refused from
        the announced length when there is one, before reading it), 400 for a malformed or
        truncated body."""
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise Refusal(413, "too_large", f"the body is over {max_bytes} bytes")
        parsed = self._parsed
        if parsed.upgrade and (length not in ("", "0") or "transfer-encoding" in self.headers):
            # llhttp stopped at the head: the body is not read, so it is refused, not lost.
            raise Refusal(400, "bad_request", "a request with a body cannot ask for an upgrade")
        while True:
            if len(parsed.body) > max_bytes:
                raise Refusal(413, "too_large", f"the body is over {max_bytes} bytes")
            if parsed.ended:
                return bytes(parsed.body)
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise Refusal(400, "bad_request", "the body ended early")
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise Refusal(400, "bad_request", str(exc) or "malformed body") from None

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
        """A complete response; the connection closes after it (no keep-alive on this port).
        The answer to a HEAD has the headers of the answer to a GET, and no body."""
        return _response(status, body, content_type, headers, with_body=self.method != "HEAD")


def error_body(code: str, message: str) -> bytes:
    """The protocol's HTTP error shape: ``{"error": "<code>", "message": "..."}``."""
    return orjson.dumps({"error": code, "message": message})


def error_response(refused: Refusal) -> bytes:
    """A response for requests too broken to have a method we could answer from."""
    return _response(refused.status, error_body(refused.code, refused.message))


def _response(
    status: int,
    body: bytes,
    content_type: str = "application/json",
    headers: Iterable[tuple[str, str]] = (),
    with_body: bool = True,
) -> bytes:
    lines = [
        b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"")),
        b"content-type: " + content_type.encode("latin-1"),
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    for name, value in headers:
        line = f"{name}: {value}".encode("latin-1")
        if b"\r" in line or b"\n" in line:
            raise ValueError(f"a line break in the response header {name!r}")
        lines.append(line)
    lines += [b"", body if with_body else b""]
    return b"\r\n".join(lines)


async def read_request_head(
    stream: trio.abc.ReceiveStream, max_bytes: int, deadline: float
) -> RequestHead | None:
    """Read up to the end of the request head. None when the peer closes first or
    ``deadline`` passes.

    One deadline for the whole head: a client that sends nothing, or a byte a second, is cut
    off when it passes, not by a per-read timeout it could keep resetting. A head that is
    already waiting (often so, in a reconnect storm) is read without a checkpoint.
    Raises :class:`Refusal` for bytes that are not a request head this port can serve: 431
    when more than ``max_bytes`` have come without the head ending, 400 for the rest.
    """
    parsed = _Parsed()
    parser = httptools.HttpRequestParser(parsed)
    raw = bytearray()
    end = -1
    while end < 0:
        data = await receive_by(stream, _RECEIVE_SIZE, deadline)
        if not data:
            return None
        start = len(raw)
        raw += data
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            parsed.upgrade = True
            end = start + upgrade.args[0]  # where the head ends (and its body, if it had one)
            break
        except httptools.HttpParserError as exc:
            if not parsed.ended:  # what follows a whole request is not this request's
                raise Refusal(400, "bad_request", str(exc) or "malformed request") from None
        if parsed.complete:
            # llhttp takes only CRLF line ends (its lenient flags are off), so the head ends
            # at the first blank line after the request line; what follows is the body,
            # parsed on into ``parsed``.
            end = raw.find(b"\r\n\r\n", _request_line_start(raw)) + 4
        elif len(raw) > max_bytes:
            raise Refusal(431, "bad_request", "the request head is too large")
    lead = _request_line_start(raw)
    request_line = bytes(raw[lead : raw.find(b"\r\n", lead)])
    method = request_line.partition(b" ")[0].decode("ascii")
    version = request_line.rpartition(b" ")[2].decode("ascii")
    if version not in ("HTTP/1.1", "HTTP/1.0"):  # llhttp also takes RTSP/1.0 and ICE/1.0
        raise Refusal(400, "bad_request", f"{version} is not served here")
    headers: dict[str, str] = {}
    for name, value in parsed.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip(" \t")
        if key == "host" and key in headers:
            raise Refusal(400, "bad_request", "Found multiple Host: headers")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if version == "HTTP/1.1" and "host" not in headers:
        raise Refusal(400, "bad_request", "Missing mandatory Host: header")
    target = parsed.url.decode("latin-1")
    try:
        split = urlsplit(target)
    except ValueError as exc:  # "Invalid IPv6 URL" and the like
        raise Refusal(400, "bad_request", f"the request target: {exc}") from None
    return RequestHead(
        method=method,
        target=target,
        path=split.path,
        query=parse_qs(split.query),
        headers=headers,
        head=bytes(raw[lead:end]),
        trailing=bytes(raw[end:]),
        parser=parser,
        parsed=parsed,
    )


def _request_line_start(raw: bytearray) -> int:
    """Past the empty lines a client may send before its request line (RFC 9112 lets a server
    skip them, and llhttp does)."""
    return len(raw) - len(raw.lstrip(b"\r\n"))
