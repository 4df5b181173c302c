"""Every deadline of a client connection, on trio's MockClock (autojump): deterministic, and
asserting the exact moment each one fires, not just that it does."""

from __future__ import annotations

import weakref
from typing import Any

import orjson
import pytest
import trio
import trio.testing
import wsproto
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from relay.config import parse_config
from relay.core.model import Update
from relay.server.relay import Relay

SERVER = {
    "host": "127.0.0.1",
    "port": 0,
    "handshake_timeout": 5.0,
    "heartbeat": 15.0,
    "heartbeat_timeout": 10.0,
    "idle_timeout": 60.0,
    "send_timeout": 10.0,
    "close_timeout": 2.0,
}


def make_relay(server: dict[str, Any] | None = None, **outbox: Any) -> Relay:
    config = {
        "server": {**SERVER, **(server or {})},
        "auth": {"required": False},
        "sources": {"sim": {"kind": "sim", "url": "ws://127.0.0.1:9/ws"}},
    }
    if outbox:
        config["outbox"] = outbox
    return Relay(parse_config(config))


class Client:
    """A hand-driven WebSocket client: it answers pings only when told to."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.answer_pings = True
        self.messages: list[dict[str, Any]] = []
        self.closed: CloseConnection | None = None
        self.closed_at: float | None = None
        self.eof_at: float | None = None

    async def handshake(self) -> None:
        await self.stream.send_all(self.ws.send(Request(host="relay", target="/ws")))
        while True:
            self.ws.receive_data(await self.stream.receive_some())
            if any(isinstance(e, AcceptConnection) for e in self.ws.events()):
                return

    async def send(self, command: dict[str, Any]) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=orjson.dumps(command).decode())))

    async def read_forever(self) -> None:
        while True:
            try:
                data = await self.stream.receive_some()
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.eof_at = trio.current_time()
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self.messages.append(orjson.loads(event.data))
                elif isinstance(event, Ping) and self.answer_pings:
                    await self.stream.send_all(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection) and self.closed is None:
                    self.closed = event
                    self.closed_at = trio.current_time()


# Weak, not a set of ids: a finished test's relay is collected and its id can come back for a
# new relay, whose timers and write rounds would then never start (nothing is ever delivered).
_timers_started: weakref.WeakSet[Relay] = weakref.WeakSet()


async def connect(relay: Relay, nursery: trio.Nursery, lockstep: bool = False) -> Client:
    """A client connected through the front door. Also starts the relay's timer task, which
    ``Relay.serve`` would run, once per relay."""
    if relay not in _timers_started:
        _timers_started.add(relay)
        nursery.start_soon(relay.run_timers)
        nursery.start_soon(relay.rounds.run)
    if lockstep:
        client_end, server_end = trio.testing.lockstep_stream_pair()
    else:
        client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server_end)
    client = Client(client_end)
    await client.handshake()
    return client


async def test_heartbeat_timeout_closes_with_4001_exactly_on_time(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    client = await connect(relay, nursery)
    start = trio.current_time()
    client.answer_pings = False
    await client.send({"action": "subscribe", "channel": "sim:trades:BTC-USD"})
    await client.read_forever()
    assert client.closed is not None and client.closed.code == 4001
    # First ping after 15 s, no pong within 10 s; the client never answers the close frame
    # either, so the TCP connection goes after the 2 s close timeout.
    assert client.closed_at == pytest.approx(start + 25.0)
    assert client.eof_at == pytest.approx(start + 27.0)
    await trio.testing.wait_all_tasks_blocked()
    assert not relay.sessions


async def test_answered_heartbeats_keep_the_connection(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    client = await connect(relay, nursery)
    await client.send({"action": "subscribe", "channel": "sim:trades:BTC-USD"})
    with trio.move_on_after(1000):
        await client.read_forever()
    assert client.closed is None
    assert len(relay.sessions) == 1


async def test_idle_without_subscription_closes_with_4000(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    client = await connect(relay, nursery)
    start = trio.current_time()
    await client.read_forever()
    assert client.closed is not None and client.closed.code == 4000
    assert client.closed_at == pytest.approx(start + 60.0)


async def test_idle_clock_restarts_when_the_last_subscription_goes(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    client = await connect(relay, nursery)
    start = trio.current_time()
    nursery.start_soon(client.read_forever)
    await trio.sleep(30)
    await client.send({"action": "subscribe", "channel": "sim:trades:BTC-USD"})
    await trio.sleep(70)  # past the first idle deadline: subscribed, so still open
    assert client.closed is None
    await client.send({"action": "unsubscribe", "channel": "sim:trades:BTC-USD"})
    await trio.sleep(59)
    assert client.closed is None
    await trio.sleep(2)
    assert client.closed is not None and client.closed.code == 4000
    assert client.closed_at == pytest.approx(start + 160.0)


@pytest.mark.parametrize("trickle", [False, True])
async def test_handshake_deadline(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, trickle: bool
) -> None:
    """A client that sends nothing, or one byte a second, is cut off at the deadline."""
    relay = make_relay()
    client_end, server_end = trio.testing.memory_stream_pair()
    start = trio.current_time()
    nursery.start_soon(relay._handle_tcp, server_end)
    request = b"GET /ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n"
    closed_at = None

    async def trickler() -> None:
        for byte in request:
            await client_end.send_all(bytes([byte]))
            await trio.sleep(1)

    async with trio.open_nursery() as inner:
        if trickle:
            inner.start_soon(trickler)
        assert await client_end.receive_some() == b""
        closed_at = trio.current_time()
        inner.cancel_scope.cancel()
    assert closed_at == pytest.approx(start + 5.0)
    assert not relay.sessions


async def test_a_stalled_write_closes_the_connection_hard(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """The client stops reading; the write blocks; at send_timeout the relay cuts the TCP
    connection without a close frame (part of a frame may be on the wire)."""
    relay = make_relay()
    client = await connect(relay, nursery, lockstep=True)
    await client.send({"action": "subscribe", "channel": "sim:trades:BTC-USD"})
    await trio.testing.wait_all_tasks_blocked()
    (session,) = relay.sessions
    stalled_at = trio.current_time()
    relay.hub.publish(Update("sim:trades:BTC-USD", {"n": 1}, 1, False), ts=1)
    await trio.sleep(9.9)
    assert relay.sessions  # still waiting on the write
    await trio.sleep(0.2)
    assert not relay.sessions
    assert session.closing is not None and session.closing.hard
    assert trio.current_time() == pytest.approx(stalled_at + 10.1)
    assert len(relay.hub.registry) == 0


async def test_shutdown_closes_clients_with_1001(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay = make_relay()
    async with trio.open_nursery() as outer:
        server_scope = trio.CancelScope()
        client_end, server_end = trio.testing.memory_stream_pair()

        async def serve_one() -> None:
            with server_scope:
                await relay._handle_tcp(server_end)

        outer.start_soon(serve_one)
        client = Client(client_end)
        await client.handshake()
        await client.send({"action": "subscribe", "channel": "sim:trades:BTC-USD"})
        outer.start_soon(client.read_forever)
        await trio.sleep(1)
        server_scope.cancel()
    assert client.closed is not None and client.closed.code == 1001
    assert not relay.sessions and len(relay.hub.registry) == 0


async def test_a_client_close_is_answered_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """The client closed first: the relay answers and hangs up without the close timeout."""
    relay = make_relay()
    client = await connect(relay, nursery)
    await client.send({"action": "subscribe", "channel": "sim:trades:BTC-USD"})
    await trio.sleep(3)
    closed_at = trio.current_time()
    await client.stream.send_all(client.ws.send(CloseConnection(code=1000, reason="bye")))
    await client.read_forever()
    assert client.closed is not None and client.closed.code == 1000
    assert client.eof_at == pytest.approx(closed_at)
    await trio.testing.wait_all_tasks_blocked()
    assert not relay.sessions and len(relay.hub.registry) == 0
    assert relay.close_codes[1000] == 1


async def test_an_unsolicited_pong_counts_as_an_answer(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """RFC 6455 allows pongs as a one-way heartbeat: one that arrives while a ping waits
    keeps the connection, even if the client never answers the ping itself."""
    relay = make_relay()
    client = await connect(relay, nursery)
    client.answer_pings = False
    await client.send({"action": "subscribe", "channel": "sim:trades:BTC-USD"})
    nursery.start_soon(client.read_forever)
    await trio.sleep(1)
    for _ in range(10):
        await trio.sleep(15)  # the relay pings at each 15 s mark, this pong follows 1 s later
        await client.stream.send_all(client.ws.send(Pong(b"keepalive")))
    assert client.closed is None and len(relay.sessions) == 1
    await trio.sleep(30)  # no more pongs: the next ping goes unanswered
    assert client.closed is not None and client.closed.code == 4001


async def test_a_close_without_a_code_is_answered_and_cleans_up(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser's bare ``ws.close()`` sends a close frame with no code at all."""
    relay = make_relay()
    client = await connect(relay, nursery)
    await client.send({"action": "subscribe", "channel": "sim:trades:BTC-USD"})
    with trio.move_on_after(1):
        await client.read_forever()  # the ack
    await client.stream.send_all(b"\x88\x80abcd")  # masked, empty payload
    await client.read_forever()
    assert client.closed is not None and client.closed.code == 1005  # answered without one
    await trio.testing.wait_all_tasks_blocked()
    assert not relay.sessions and len(relay.hub.registry) == 0
    assert "connection failed" not in caplog.text


async def test_a_ping_goes_ahead_of_a_backlog(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """A client that lags but reads must not be taken for dead: the heartbeat ping is written
    at the head of the next batch, not behind everything queued."""
    # A send timeout longer than the heartbeat: the client is slow, not stuck.
    relay = make_relay({"send_timeout": 30.0}, max_messages=1000, max_bytes=1 << 20)
    client = await connect(relay, nursery, lockstep=True)
    await client.send({"action": "subscribe", "channel": "sim:trades:BTC-USD"})
    with trio.move_on_after(0.5):
        await client.read_forever()  # welcome and ack; from here on the client stalls
    relay.hub.publish(Update("sim:trades:BTC-USD", {"n": 1}, 1, False), ts=1)
    await trio.testing.wait_all_tasks_blocked()  # the writer is blocked on message 1
    for n in range(2, 50):
        relay.hub.publish(Update("sim:trades:BTC-USD", {"n": n}, n, False), ts=n)
    await trio.sleep(15)  # the heartbeat is due while all that waits
    order: list[str] = []
    while len(client.messages) < 2 + 49:
        data = await client.stream.receive_some()
        assert data, f"connection closed after {order}"
        client.ws.receive_data(data)
        for event in client.ws.events():
            if isinstance(event, Ping):
                order.append("ping")
                await client.stream.send_all(client.ws.send(event.response()))
            elif isinstance(event, TextMessage):
                client.messages.append(orjson.loads(event.data))
                order.append(str(client.messages[-1]["data"]["n"]))
    assert order[:3] == ["1", "ping", "2"]
    assert len(relay.sessions) == 1
