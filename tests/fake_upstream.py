"""An in-memory upstream for the supervisor's tests: speaks the synthetic market's wire format,
tracks what it is subscribed to, and can drop, stall or refuse on command. Used where the real
market cannot be driven on a MockClock."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import trio
import trio.lowlevel

from relay.adapters.sim import SimAdapter
from relay.server.transports import ConnectFailed, UpstreamClosed, UpstreamConnection


class FakeConnection:
    def __init__(self, adapter: SimAdapter, opened_at: float) -> None:
        self._adapter = adapter
        self.opened_at = opened_at
        self.subscribed: set[str] = set()
        """Relay channel names, as the upstream understood the requests."""
        self.subscribe_batches: list[set[str]] = []
        self.requests = 0
        self.request_times: list[float] = []
        self._send, self._receive = trio.open_memory_channel[str | bytes](math.inf)
        self.closed = False
        self.pong = True
        self.answer = True
        """Acknowledge subscribe requests, as the market does."""
        self.raise_on_receive: BaseException | None = None
        """Raised by the next receive, as if from deep inside the connection."""

    def _channel(self, topic: str) -> str:
        stream, _, symbol = topic.partition(".")
        name = {"trade": "trades", "ticker": "ticker", "depth": "book"}[stream]
        return f"{self._adapter.source}:{name}:{symbol}"

    # The relay's side.

    async def send(self, text: str) -> None:
        self._check()
        message = orjson.loads(text)
        channels = {self._channel(t) for t in message["args"]}
        self.requests += 1
        self.request_times.append(trio.current_time())
        if message["op"] == "subscribe":
            assert not channels & self.subscribed, "subscribed twice"
            self.subscribed |= channels
            self.subscribe_batches.append(channels)
            if self.answer:
                ack = {"op": "subscribe", "ok": True, "args": message["args"]}
                self.push(orjson.dumps(ack).decode())
        else:
            assert channels <= self.subscribed, "unsubscribed from something not subscribed"
            self.subscribed -= channels

    async def receive(self) -> str | bytes:
        self._check()
        if self.raise_on_receive is not None:
            raise self.raise_on_receive
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise UpstreamClosed(1006, "dropped") from None

    async def ping(self) -> None:
        self._check()
        if not self.pong:
            await trio.sleep_forever()

    def _check(self) -> None:
        if self.closed:
            raise UpstreamClosed(1006, "dropped")

    # The test's side.

    def push(self, frame: str | bytes) -> None:
        if not self.closed:
            self._send.send_nowait(frame)

    def heartbeat(self) -> None:
        self.push('{"op":"heartbeat","time":1}')

    def drop(self) -> None:
        self.closed = True
        self._send.close()


class FakeTransport:
    """Connections on demand; ``refuse_until`` makes attempts fail like a closed port."""

    def __init__(self, adapter: SimAdapter) -> None:
        self.adapter = adapter
        self.connections: list[FakeConnection] = []
        self.attempts: list[float] = []
        self.refuse_until = -math.inf
        self.on_connect: Callable[[FakeConnection], None] | None = None

    @property
    def current(self) -> FakeConnection | None:
        if self.connections and not self.connections[-1].closed:
            return self.connections[-1]
        return None

    @asynccontextmanager
    async def connect(self, url: str, connect_timeout: float) -> AsyncIterator[UpstreamConnection]:
        now = trio.current_time()
        self.attempts.append(now)
        await trio.lowlevel.checkpoint()
        if now < self.refuse_until:
            raise ConnectFailed("[Errno 111] Connection refused")
        conn = FakeConnection(self.adapter, now)
        self.connections.append(conn)
        if self.on_connect is not None:
            self.on_connect(conn)
        try:
            yield conn
        finally:
            conn.drop()
