"""How the relay reaches upstreams: one module per concern's client library, behind narrow
interfaces, with the libraries' exceptions mapped to the relay's own at this seam.

The supervisor then knows one family of failures, :class:`TransportError` ("the network's fault,
retry"), whatever library carries the bytes, and a fake transport in the tests raises the same
ones. (httpx does the same with httpcore's exceptions.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, connect_websocket_url

from relay.adapters.base import HttpRequest


class TransportError(Exception):
    """The network failed us (refused, closed, timed out, answered with an error status)."""


class ConnectFailed(TransportError):
    """The upstream could not be reached or refused the WebSocket handshake."""


class UpstreamClosed(TransportError):
    """The upstream connection closed, cleanly or not."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed ({code}{', ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class FetchFailed(TransportError):
    """An HTTP request for a repair failed: network, timeout or an error status."""


class UpstreamConnection(Protocol):
    async def send(self, text: str) -> None:
        """Raises UpstreamClosed when the connection is gone."""
        ...

    async def receive(self) -> str | bytes:
        """The next frame; raises UpstreamClosed when the upstream closes."""
        ...

    async def ping(self) -> None:
        """A WebSocket ping; returns when its pong arrives."""
        ...


class Transport(Protocol):
    """Opens upstream connections; a fake one drives the supervisor's tests."""

    def connect(
        self, url: str, connect_timeout: float
    ) -> AbstractAsyncContextManager[UpstreamConnection]:
        """Raises ConnectFailed, or trio.TooSlowError past ``connect_timeout``."""
        ...


def _closed(exc: ConnectionClosed) -> UpstreamClosed:
    reason = exc.reason
    return (
        UpstreamClosed(None, None) if reason is None else UpstreamClosed(reason.code, reason.reason)
    )


class _WebSocketUpstream:
    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def receive(self) -> str | bytes:
        try:
            message: str | bytes = await self._ws.get_message()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        return message

    async def ping(self) -> None:
        try:
            await self._ws.ping()
        except ConnectionClosed as exc:
            raise _closed(exc) from None


class WebSocketTransport:
    """The real transport: a trio-websocket client connection.

    It owns the connection's lifetime instead of using ``open_websocket_url``, whose exit waits
    for a close handshake: a stalled upstream never answers one, and the reconnect would wait
    for it. After a failure the stream is cut at once; only a clean exit closes politely.
    """

    def __init__(
        self,
        message_queue_size: int = 1024,
        max_message_size: int = 16 * 2**20,
        close_timeout: float = 1.0,
    ) -> None:
        self.message_queue_size = message_queue_size
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout

    @asynccontextmanager
    async def connect(self, url: str, connect_timeout: float) -> AsyncIterator[UpstreamConnection]:
        opened = False
        try:
            async with self._open(url, connect_timeout) as upstream:
                opened = True
                yield upstream
        except BaseExceptionGroup as group:
            # Whether from the connect call or from trio-websocket's reader task (which raises a
            # refused handshake, an HTTP 503 to the upgrade say), it arrives through the
            # connection's nursery as a group.
            failed, rest = group.split(_CONNECT_FAILURES)
            if opened or failed is None or rest is not None:
                raise
            raise ConnectFailed(_first_leaf(failed)) from None

    @asynccontextmanager
    async def _open(self, url: str, connect_timeout: float) -> AsyncIterator[UpstreamConnection]:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(connect_timeout):
                ws = await connect_websocket_url(
                    nursery,
                    url,
                    message_queue_size=self.message_queue_size,
                    max_message_size=self.max_message_size,
                )
            clean = False
            try:
                yield _WebSocketUpstream(ws)
                clean = True
            finally:
                # Shielded so that shutdown still closes; a zero budget means the close is
                # cancelled at once, and trio-websocket then closes the TCP stream itself.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + (self.close_timeout if clean else 0)
                    await ws.aclose()
                nursery.cancel_scope.cancel()


_CONNECT_FAILURES = (HandshakeError, OSError, ConnectionClosed)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> str:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    if isinstance(leaf, OSError):
        return str(leaf) or type(leaf).__name__
    return f"handshake failed: {leaf!r}"


class HttpTransport:
    """Repairs over HTTP (REST snapshots, JSON-RPC backfill), on one shared httpx client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def fetch(self, request: HttpRequest) -> bytes:
        """The body of a successful answer; FetchFailed for anything else. The caller sets
        the deadline (``trio.fail_after``), as Trio code does."""
        try:
            response = await self._client.request(request.method, request.url, json=request.json)
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise FetchFailed(f"HTTP {response.status_code}")
        return response.content
