"""A TCP proxy for tests, to sever a connection on command (e.g. the relay's WebSocket to an
upstream node) while the upstream lives on.

    proxy = TcpProxy("127.0.0.1", node_port)
    port = await nursery.start(proxy.run)     # point the client at 127.0.0.1:port
    proxy.cut()                               # every connection reset at once; new ones too
    proxy.restore()                           # new connections go through again
"""

from __future__ import annotations

import contextlib
import socket
import struct

import attrs
import trio

HOST = "127.0.0.1"
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


def _reset(stream: trio.SocketStream) -> None:
    """Make the stream's close abortive (RST), as when a link or a host dies."""
    with contextlib.suppress(OSError, trio.ClosedResourceError):  # already closed
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)


@attrs.define(eq=False)
class _Connection:
    client: trio.SocketStream
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    upstream: trio.SocketStream | None = None


class TcpProxy:
    """Listens on 127.0.0.1 (port 0: any free port, in ``port`` once running) and forwards each
    connection to ``target_host:target_port``, bytes as they come, half-closes included."""

    def __init__(self, target_host: str, target_port: int, *, host: str = HOST) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.is_cut = False
        self.accepted = 0
        """Connections accepted, forwarded or not."""
        self.refused = 0
        """Connections reset at once: while cut, or when the target refused."""
        self._connections: set[_Connection] = set()

    @property
    def connections(self) -> int:
        """Connections forwarded now."""
        return len(self._connections)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``nursery.start(proxy.run)`` answers the port."""
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    def cut(self) -> None:
        """Reset every current connection, both sides, at once; reset new ones until
        ``restore()``."""
        self.is_cut = True
        for connection in self._connections:
            _reset(connection.client)
            if connection.upstream is not None:
                _reset(connection.upstream)
            connection.scope.cancel()

    def restore(self) -> None:
        """Forward new connections again (the cut ones stay gone)."""
        self.is_cut = False

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        connection = _Connection(client)
        try:
            if self.is_cut:
                self.refused += 1
                _reset(client)
                return
            self._connections.add(connection)
            with connection.scope:
                try:
                    connection.upstream = await trio.open_tcp_stream(
                        self.target_host, self.target_port
                    )
                except OSError:
                    self.refused += 1
                    _reset(client)
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, connection.upstream, connection)
                    nursery.start_soon(self._pump, connection.upstream, client, connection)
        finally:
            self._connections.discard(connection)
            with trio.CancelScope(shield=True):
                await client.aclose()
                if connection.upstream is not None:
                    await connection.upstream.aclose()

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, connection: _Connection
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
            await sink.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # One side failed: fail the other too, abortively, as a broken link would.
            _reset(connection.client)
            if connection.upstream is not None:
                _reset(connection.upstream)
            connection.scope.cancel()
