"""A loopback stand-in for an exchange: a WebSocket endpoint and a REST endpoint, both scripted.

Each exchange's fixture (``tests/exchanges/<exchange>/``) supplies what differs: how it answers a
client's messages (acknowledgements, subscription ids), what it pushes (heartbeats, the fixture
file's frames) and which REST bodies it serves. This module only carries bytes, so every
exchange's tests run its protocol over real sockets with the relay's real transports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

HOST = "127.0.0.1"

#: Answers one REST request: (path, query) -> (status, body). Raise KeyError for a 404.
RestHandler = Callable[[str, Mapping[str, str]], tuple[int, bytes]]


@attrs.define(eq=False)
class FixtureConnection:
    """One client connection as the fixture sees it."""

    ws: WebSocketConnection
    path: str
    received: list[str] = attrs.Factory(list)
    """Every text message the client sent, in order."""

    async def send(self, text: str) -> None:
        await self.ws.send_message(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.aclose(code, reason)


#: Called for each message a client sends; answers by sending on the connection.
MessageHandler = Callable[[FixtureConnection, str], Awaitable[None]]


class ExchangeFixture:
    """Serve until cancelled: ``ws_port = await nursery.start(fixture.run)``."""

    def __init__(
        self,
        on_message: MessageHandler,
        rest: RestHandler | None = None,
        on_connect: Callable[[FixtureConnection], Awaitable[None]] | None = None,
    ) -> None:
        self.on_message = on_message
        self.rest = rest
        self.on_connect = on_connect
        self.ws_port = 0
        self.http_port = 0
        self.connections: list[FixtureConnection] = []
        self.rest_requests: list[str] = []
        """Each REST request's path and query, in order."""
        self._connected = trio.lowlevel.ParkingLot()

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.ws_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def current(self) -> FixtureConnection | None:
        """The newest connection that is still open."""
        for conn in reversed(self.connections):
            if not conn.ws.closed:
                return conn
        return None

    async def wait_connected(self, count: int = 1, within: float = 5.0) -> FixtureConnection:
        """Until ``count`` connections were made in all; answers the newest."""
        with trio.fail_after(within):
            while len(self.connections) < count:
                await self._connected.park()
        return self.connections[-1]

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, self._serve_ws, HOST, 0, None)
            self.ws_port = server.port
            listeners = await nursery.start(trio.serve_tcp, self._serve_http, 0)
            self.http_port = listeners[0].socket.getsockname()[1]
            task_status.started(self.ws_port)

    async def _serve_ws(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        conn = FixtureConnection(ws, request.path)
        self.connections.append(conn)
        self._connected.unpark_all()
        try:
            if self.on_connect is not None:
                await self.on_connect(conn)
            while True:
                message = await ws.get_message()
                text = message if isinstance(message, str) else message.decode()
                conn.received.append(text)
                await self.on_message(conn, text)
        except ConnectionClosed:
            pass

    async def _serve_http(self, stream: trio.SocketStream) -> None:
        """One request per connection: enough for a test client, and no keep-alive to track."""
        connection = h11.Connection(h11.SERVER)
        with trio.move_on_after(5):
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    connection.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    break
                return
            target = event.target.decode()
            self.rest_requests.append(target)
            parts = urlsplit(target)
            try:
                if self.rest is None:
                    raise KeyError(parts.path)
                status, body = self.rest(parts.path, dict(parse_qsl(parts.query)))
            except KeyError:
                status, body = 404, b'{"error": "not found"}'
            headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
            headers.append(("connection", "close"))
            out = connection.send(h11.Response(status_code=status, headers=headers))
            out += connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage())
            await stream.send_all(out)
        await stream.aclose()
