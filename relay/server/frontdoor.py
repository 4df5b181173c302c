"""One TCP port for plain HTTP and WebSocket upgrades.

trio-websocket answers a plain GET with a bare 400 and cannot refuse an upgrade with a useful
status, so the relay reads the request head itself (h11, under the caller's deadline), decides
what the request is, and only then either answers it as HTTP or hands the connection, with the
bytes already read, to ``trio_websocket.wrap_server_stream``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import orjson
import trio

_RECEIVE_SIZE = 16384

REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class BadRequest(Exception):
    """The bytes on the wire are not an HTTP/1.1 request head we can serve."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.define
class RequestHead:
    """A parsed request head plus what is needed to answer it or to replay it."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ", " as RFC 9110 allows."""
    raw: bytes
    """Every byte read from the socket so far; the WebSocket handshake is replayed from it."""
    _h11: h11.Connection

    @property
    def is_upgrade(self) -> bool:
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "upgrade" in connection and self.headers.get("upgrade", "").lower() == "websocket"

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


def error_response(status: int, code: str, message: str) -> bytes:
    """A bare response for requests too broken for h11 to have a state we can answer from."""
    body = error_body(code, message)
    reason = REASONS.get(status, b"")
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, reason, len(body))
    )
    return head + body


async def read_request_head(stream: trio.abc.ReceiveStream, max_bytes: int) -> RequestHead | None:
    """Read up to the end of the request head. None when the peer closes first.

    The caller owns the deadline: a client that sends nothing, or a byte a second, is cut off by
    the cancel scope around this call, not by a per-read timeout it could keep resetting.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_bytes)
    raw = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            raise BadRequest(status, str(exc) or "malformed request") from None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_RECEIVE_SIZE)
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
            return RequestHead(
                method=event.method.decode("ascii"),
                target=target,
                path=split.path,
                query=parse_qs(split.query),
                headers=headers,
                raw=bytes(raw),
                h11=conn,
            )
        raise BadRequest(400, "expected an HTTP request")


CLOSING = -1
"""What :meth:`ReplayStream.try_send` answers when the WebSocket is closing."""


class ReplayStream(trio.abc.Stream):
    """The socket as trio-websocket sees it, plus the relay's own frame writes.

    Reads first replay the bytes the front door consumed. Every write, trio-websocket's (pings,
    pongs, close frames) and the relay's pre-built data frames, goes through one lock, so frames
    from the two writers never interleave mid-frame.
    """

    __slots__ = ("_fd", "_inner", "_lock", "_prefix")

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix: bytes | None = prefix or None
        self._lock = trio.StrictFIFOLock()
        self._fd = inner.socket.fileno() if isinstance(inner, trio.SocketStream) else None

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        prefix = self._prefix
        if prefix is not None:
            size = len(prefix) if max_bytes is None else max_bytes
            chunk, rest = prefix[:size], prefix[size:]
            self._prefix = rest or None  # released once replayed
            return chunk
        return await self._inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            await self._inner.send_all(data)

    async def send_frames(self, data: bytes, still_open: Callable[[], bool]) -> bool:
        """Write pre-built frames unless the WebSocket is closing; False when it was.

        The check happens under the lock because trio-websocket marks the connection closed
        before it writes the close frame: no data frame can follow a close frame.
        """
        lock = self._lock
        try:
            lock.acquire_nowait()  # uncontended almost always: no task switch for it
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if not still_open():
                return False
            await self._inner.send_all(data)
            return True
        finally:
            lock.release()

    def try_send(self, data: bytes, still_open: Callable[[], bool]) -> int | None:
        """Write what the socket takes right now, without waiting or yielding.

        Answers the number of bytes written (possibly 0), ``CLOSING`` when the WebSocket is
        closing (nothing written), or None when only the async path can write: no socket
        underneath, or another write holds the lock. Raises OSError when the peer is gone.

        Trio's ``send_all`` costs a task switch and several checkpoints per call; the relay
        writes to every client once per write round, so this synchronous non-blocking write
        (the same ``send`` trio itself performs) is what lets one round reach a thousand
        clients in a few milliseconds.
        """
        if self._fd is None:
            return None
        lock = self._lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            return None
        try:
            if not still_open():
                return CLOSING
            try:
                return os.write(self._fd, data)
            except BlockingIOError:
                return 0
        finally:
            lock.release()

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()
