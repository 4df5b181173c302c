"""Socket.IO sessions through the relay's front door, on trio's MockClock (autojump): each HTTP
request and WebSocket is a memory stream into ``Relay._handle_tcp``, so every deadline is
asserted at its exact moment, for long-polling, the upgrade and the WebSocket transport."""

from __future__ import annotations

import contextlib
from typing import Any

import h11
import orjson
import trio
import trio.testing
import wsproto
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from relay.core.model import Update
from relay.server.engine import SocketIOSession
from relay.server.relay import Relay
from tests.test_session_timeouts import make_relay

TRADES = "sim:trades:BTC-USD"
BASE = "/socket.io/?EIO=4"
HEARTBEAT = 15.0
PONG_TIMEOUT = 10.0
IDLE = 60.0
HANDSHAKE = 5.0


def _start(relay: Relay, nursery: trio.Nursery) -> None:
    if not getattr(relay, "_test_started", False):
        relay._test_started = True  # type: ignore[attr-defined]
        nursery.start_soon(relay.run_timers)
        nursery.start_soon(relay.rounds.run)


async def http(
    relay: Relay, nursery: trio.Nursery, method: str, target: str, body: bytes = b""
) -> tuple[int, bytes]:
    """One request through the front door; the relay closes the connection after answering."""
    _start(relay, nursery)
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server_end)
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", "relay"), ("content-length", str(len(body)))]
    data = conn.send(h11.Request(method=method, target=target, headers=headers))
    await client_end.send_all(data + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    status, received = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await client_end.receive_some())
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            received += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, received


def packets(body: bytes) -> list[str]:
    return body.decode().split("\x1e")


async def handshake(relay: Relay, nursery: trio.Nursery) -> str:
    status, body = await http(relay, nursery, "GET", f"{BASE}&transport=polling")
    assert status == 200 and body.startswith(b"0")
    opened = orjson.loads(body[1:])
    assert opened["upgrades"] == ["websocket"]
    assert opened["pingInterval"] == HEARTBEAT * 1000
    assert opened["pingTimeout"] == PONG_TIMEOUT * 1000
    sid: str = opened["sid"]
    return sid


async def post(relay: Relay, nursery: trio.Nursery, sid: str, *sent: str) -> None:
    body = "\x1e".join(sent).encode()
    status, answer = await http(relay, nursery, "POST", f"{BASE}&transport=polling&sid={sid}", body)
    assert (status, answer) == (200, b"ok")


async def poll(relay: Relay, nursery: trio.Nursery, sid: str) -> tuple[int, bytes]:
    return await http(relay, nursery, "GET", f"{BASE}&transport=polling&sid={sid}")


async def connected(relay: Relay, nursery: trio.Nursery) -> str:
    """A polling session connected to ``/ws``, its connect acknowledged."""
    sid = await handshake(relay, nursery)
    await post(relay, nursery, sid, "40/ws,")
    status, body = await poll(relay, nursery, sid)
    assert status == 200 and packets(body) == [f'40/ws,{{"sid":"{sid}"}}']
    return sid


def publish(relay: Relay, n: int) -> None:
    relay.hub.publish(Update(TRADES, {"n": n}, n, False), ts=n)


async def test_a_polling_session_is_pinged_every_interval_and_ends_when_a_pong_is_missing(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    start = trio.current_time()
    sid = await connected(relay, nursery)
    await trio.testing.wait_all_tasks_blocked()
    # Between requests a polling session holds no TCP connection, and none is counted.
    assert (len(relay.sessions), relay.tcp_connections) == (1, 0)
    status, body = await poll(relay, nursery, sid)  # waits for the first ping
    assert (status, packets(body)) == (200, ["2"])
    assert trio.current_time() - start == HEARTBEAT
    await post(relay, nursery, sid, "3")
    status, body = await poll(relay, nursery, sid)
    assert (status, packets(body)) == (200, ["2"])
    assert trio.current_time() - start == 2 * HEARTBEAT
    # No pong this time: the waiting poll is answered with the end.
    status, body = await poll(relay, nursery, sid)
    assert trio.current_time() - start == 2 * HEARTBEAT + PONG_TIMEOUT
    assert packets(body) == ["41/ws,"]  # the close would make the client drop the disconnect
    assert relay.close_codes[4001] == 1
    status, body = await poll(relay, nursery, sid)
    assert status == 400 and orjson.loads(body) == {"code": 1, "message": "Session ID unknown"}
    await trio.testing.wait_all_tasks_blocked()
    assert not relay.sessions and len(relay.hub.registry) == 0
    assert relay.tcp_connections == 0


async def test_a_waiting_poll_is_answered_the_moment_a_post_queues_something(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    sid = await connected(relay, nursery)
    answers: list[tuple[float, list[str]]] = []

    async def waiting_poll() -> None:
        _, body = await poll(relay, nursery, sid)
        answers.append((trio.current_time(), packets(body)))

    nursery.start_soon(waiting_poll)
    await trio.sleep(3)
    assert answers == []
    await post(relay, nursery, sid, f'42/ws,5["subscribe",{{"channel":"{TRADES}"}}]')
    await trio.testing.wait_all_tasks_blocked()
    [(at, sent)] = answers
    assert at == trio.current_time()
    assert [orjson.loads(p.removeprefix("42/ws,")) for p in sent[:1]] == [
        ["subscribed", {"channel": TRADES, "seq": 0, "epoch": relay.hub.epoch}]
    ]
    assert sent[1] == f'43/ws,5[{{"subscribed":["{TRADES}"],"failed":[]}}]'
    publish(relay, 1)
    _, body = await poll(relay, nursery, sid)
    [data] = packets(body)
    assert data.startswith('42/ws,["data",') and orjson.loads(data[6:])[1]["seq"] == 1


async def test_overlapping_polls_end_the_session(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    sid = await connected(relay, nursery)
    first: list[bytes] = []

    async def waiting_poll() -> None:
        first.append((await poll(relay, nursery, sid))[1])

    nursery.start_soon(waiting_poll)
    await trio.sleep(1)
    status, _ = await poll(relay, nursery, sid)
    assert status == 400
    await trio.testing.wait_all_tasks_blocked()
    assert first == [b"41/ws,"]
    assert not relay.sessions


async def test_an_unconnected_session_ends_at_the_idle_timeout(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    start = trio.current_time()
    sid = await handshake(relay, nursery)
    while True:
        _, body = await poll(relay, nursery, sid)
        if packets(body) != ["2"]:
            break
        await post(relay, nursery, sid, "3")
    assert trio.current_time() - start == IDLE
    assert packets(body) == ["1"]  # never connected to /ws: no namespace to leave
    assert relay.close_codes[4000] == 1


async def test_a_slow_polling_client_is_disconnected_by_the_outbox_policy(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay(max_messages=5, policy="disconnect")
    sid = await connected(relay, nursery)
    await post(relay, nursery, sid, f'42/ws,["subscribe",{{"channel":"{TRADES}"}}]')
    _, body = await poll(relay, nursery, sid)
    assert packets(body)[0].startswith('42/ws,["subscribed"')
    for n in range(1, 7):  # one more than the outbox holds, and the client does not poll
        publish(relay, n)
    await trio.testing.wait_all_tasks_blocked()
    assert relay.close_codes[4008] == 1
    assert not relay.sessions and len(relay.hub.registry) == 0
    # The next poll learns the end; the session is gone after it.
    status, body = await poll(relay, nursery, sid)
    assert (status, packets(body)) == (200, ["41/ws,"])
    await trio.testing.wait_all_tasks_blocked()
    status, body = await poll(relay, nursery, sid)
    assert status == 400 and orjson.loads(body)["code"] == 1


class WebSocketClient:
    """A hand-driven WebSocket client of the Engine.IO endpoint."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.texts: list[str] = []
        self.closed: CloseConnection | None = None

    @classmethod
    async def open(
        cls, relay: Relay, nursery: trio.Nursery, target: str, socket: bool = False
    ) -> WebSocketClient:
        """``socket``: over a real socket pair instead of memory streams, so the session
        writes with ``os.write`` as on TCP."""
        _start(relay, nursery)
        client_end: trio.abc.Stream
        server_end: trio.abc.Stream
        if socket:
            ours, theirs = trio.socket.socketpair()
            client_end, server_end = trio.SocketStream(theirs), trio.SocketStream(ours)
        else:
            client_end, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(relay._handle_tcp, server_end)
        client = cls(client_end)
        await client_end.send_all(client.ws.send(Request(host="relay", target=target)))
        while True:
            client.ws.receive_data(await client_end.receive_some())
            accepted = False
            # On a socket the open packet can come in the same read as the 101: keep it.
            for event in client.ws.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                elif isinstance(event, TextMessage):
                    client.texts.append(event.data)
            if accepted:
                return client

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def _read(self) -> bool:
        """One read's messages into ``texts`` (and the close frame); False at the end."""
        data = await self.stream.receive_some()
        if not data:
            return False
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self.texts.append(event.data)
            elif isinstance(event, CloseConnection):
                self.closed = event
        return True

    async def next_text(self) -> str:
        while not self.texts:
            if not await self._read():
                raise EOFError(f"closed: {self.closed}")
        return self.texts.pop(0)

    async def until_closed(self) -> CloseConnection:
        """Reads until the close frame (the texts before it stay in ``texts``)."""
        while self.closed is None and await self._read():
            pass
        assert self.closed is not None
        return self.closed


def payload(text: str) -> Any:
    assert text.startswith("42/ws,")
    return orjson.loads(text[6:])


async def test_the_upgrade_hands_a_polling_session_over_to_its_websocket(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    sid = await connected(relay, nursery)
    await post(relay, nursery, sid, f'42/ws,["subscribe",{{"channel":"{TRADES}"}}]')
    _, body = await poll(relay, nursery, sid)
    assert payload(packets(body)[0])[0] == "subscribed"
    answers: list[bytes] = []

    async def waiting_poll() -> None:
        answers.append((await poll(relay, nursery, sid))[1])

    nursery.start_soon(waiting_poll)
    await trio.sleep(1)
    ws = await WebSocketClient.open(relay, nursery, f"{BASE}&transport=websocket&sid={sid}")
    await ws.send("2probe")
    assert await ws.next_text() == "3probe"
    await trio.testing.wait_all_tasks_blocked()
    assert answers == [b"6"]  # the waiting poll lets go, so the client can pause polling
    # Still for the polls: queued until the upgrade (two in one write round, so one entry of
    # two packets), then on the WebSocket, one packet per frame.
    publish(relay, 1)
    publish(relay, 2)
    await trio.testing.wait_all_tasks_blocked()
    await ws.send("5")
    assert payload(await ws.next_text())[1]["seq"] == 1
    assert payload(await ws.next_text())[1]["seq"] == 2
    publish(relay, 3)
    assert payload(await ws.next_text())[1]["seq"] == 3
    status, body = await poll(relay, nursery, sid)
    assert status == 400 and orjson.loads(body)["code"] == 3
    # A poll after the upgrade is refused, and the session goes on.
    await ws.send(f'42/ws,9["unsubscribe",{{"channel":"{TRADES}"}}]')
    assert payload(await ws.next_text()) == ["unsubscribed", {"channel": TRADES}]
    assert await ws.next_text() == f'43/ws,9[{{"unsubscribed":["{TRADES}"],"failed":[]}}]'
    # Heartbeats now run on the WebSocket, as Engine.IO packets.
    assert await ws.next_text() == "2"
    await ws.send("3")
    assert len(relay.sessions) == 1


async def test_on_a_socket_the_websocket_transport_is_written_in_the_rounds_flush(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, monkeypatch: Any
) -> None:
    """A Socket.IO client on the WebSocket transport with nothing waiting gets a message at
    the instant it is published, written in the round's flush without its writer being
    released; a polling client of the same channel has no socket of its own and is released
    for its poll, as before."""
    relay = make_relay()
    sid = await connected(relay, nursery)
    await post(relay, nursery, sid, f'42/ws,["subscribe",{{"channel":"{TRADES}"}}]')
    _, body = await poll(relay, nursery, sid)
    assert payload(packets(body)[0])[0] == "subscribed"
    ws = await WebSocketClient.open(relay, nursery, f"{BASE}&transport=websocket", socket=True)
    assert (await ws.next_text()).startswith("0")
    await ws.send("40/ws,")
    assert (await ws.next_text()).startswith('40/ws,{"sid":')
    await ws.send(f'42/ws,["subscribe",{{"channel":"{TRADES}"}}]')
    assert payload(await ws.next_text())[0] == "subscribed"
    await trio.testing.wait_all_tasks_blocked()
    released: list[bool] = []
    release = SocketIOSession.release

    def recorded(self: SocketIOSession, now_ms: int = 0) -> None:
        released.append(self.polling)
        release(self, now_ms)

    monkeypatch.setattr(SocketIOSession, "release", recorded)
    published_at = trio.current_time()
    publish(relay, 1)
    with trio.fail_after(1.0):  # virtual time: nothing else would write it
        assert payload(await ws.next_text())[1]["seq"] == 1
    assert trio.current_time() == published_at
    _, body = await poll(relay, nursery, sid)
    assert payload(packets(body)[0])[1]["seq"] == 1
    assert released == [True]  # the polling session only


async def test_a_probe_without_its_upgrade_is_dropped_and_the_session_keeps_polling(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    sid = await connected(relay, nursery)
    start = trio.current_time()
    ws = await WebSocketClient.open(relay, nursery, f"{BASE}&transport=websocket&sid={sid}")
    await ws.send("2probe")
    assert await ws.next_text() == "3probe"
    closed = await ws.until_closed()
    # The upgrade must come within the handshake's deadline.
    assert closed.code == 1008 and trio.current_time() - start == HANDSHAKE
    await post(relay, nursery, sid, f'42/ws,["subscribe",{{"channel":"{TRADES}"}}]')
    _, body = await poll(relay, nursery, sid)
    # The probe's noop (there was no poll waiting to take it), then the subscribe's answer.
    assert packets(body)[0] == "6" and payload(packets(body)[1])[0] == "subscribed"
    assert len(relay.sessions) == 1


async def test_a_websocket_session_is_pinged_with_engineio_packets_and_ends_without_pongs(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    start = trio.current_time()
    ws = await WebSocketClient.open(relay, nursery, f"{BASE}&transport=websocket")
    opened = await ws.next_text()
    assert opened.startswith("0") and orjson.loads(opened[1:])["upgrades"] == []
    await ws.send("40/ws,")
    assert (await ws.next_text()).startswith('40/ws,{"sid":')
    await ws.send(f'42/ws,["subscribe",{{"channel":"{TRADES}"}}]')
    assert payload(await ws.next_text())[0] == "subscribed"
    assert await ws.next_text() == "2"
    assert trio.current_time() - start == HEARTBEAT
    closed = await ws.until_closed()
    assert ws.texts[-1] == "41/ws,"  # the namespace is told before the WebSocket closes
    assert closed.code == 4001 and trio.current_time() - start == HEARTBEAT + PONG_TIMEOUT


async def test_a_refused_connect_gets_connect_error_and_the_socket_closes(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    ws = await WebSocketClient.open(relay, nursery, f"{BASE}&transport=websocket")
    await ws.next_text()
    await ws.send('40/ws,{"token":"not a key"}')
    refused = await ws.next_text()
    assert refused.startswith("44/ws,")
    error = orjson.loads(refused[6:])
    assert error["message"] == "invalid_credentials"
    assert error["data"]["code"] == "invalid_credentials"
    closed = await ws.until_closed()
    assert closed.code == 1008
    assert relay.rejected[401] == 1


async def test_a_poll_left_waiting_through_the_upgrade_is_released_with_a_noop(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    sid = await connected(relay, nursery)
    ws = await WebSocketClient.open(relay, nursery, f"{BASE}&transport=websocket&sid={sid}")
    await ws.send("2probe")
    assert await ws.next_text() == "3probe"
    _, body = await poll(relay, nursery, sid)
    assert body == b"6"  # the probe's noop, for the client to pause polling
    answers: list[bytes] = []

    async def waiting_poll() -> None:
        answers.append((await poll(relay, nursery, sid))[1])

    nursery.start_soon(waiting_poll)  # a client that polls once more: it must not hang
    await trio.sleep(1)
    await ws.send("5")
    await trio.testing.wait_all_tasks_blocked()
    assert answers == [b"6"]
    publish(relay, 1)
    await ws.send(f'42/ws,["subscribe",{{"channel":"{TRADES}"}}]')
    assert payload(await ws.next_text())[0] == "subscribed"


async def test_a_second_probe_is_refused_and_leaves_the_first_to_upgrade(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay()
    sid = await connected(relay, nursery)
    first = await WebSocketClient.open(relay, nursery, f"{BASE}&transport=websocket&sid={sid}")
    await first.send("2probe")
    assert await first.next_text() == "3probe"
    second = await WebSocketClient.open(relay, nursery, f"{BASE}&transport=websocket&sid={sid}")
    await second.send("2probe")
    assert (await second.until_closed()).code == 1008
    await first.send("5")
    await first.send(f'42/ws,["subscribe",{{"channel":"{TRADES}"}}]')
    assert payload(await first.next_text())[0] == "subscribed"


async def test_a_post_carries_as_many_packets_as_the_client_buffered(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """socket.io-client posts its whole buffer at once: 20 emits in a loop are one post."""
    relay = make_relay()
    sid = await connected(relay, nursery)
    known = [f"sim:{kind}:BTC-USD" for kind in ("trades", "ticker", "book")]
    channels = [known[n % 3] for n in range(20)]  # 20 emits, some for the same channel
    await post(
        relay,
        nursery,
        sid,
        *(f'42/ws,{n}["subscribe",{{"channel":"{c}"}}]' for n, c in enumerate(channels)),
    )
    _, body = await poll(relay, nursery, sid)
    acks = [p for p in packets(body) if p.startswith("43/ws,")]
    assert acks == [
        f'43/ws,{n}[{{"subscribed":["{c}"],"failed":[]}}]' for n, c in enumerate(channels)
    ]
    assert relay.hub.registry.count_of(next(iter(relay.sessions))) == 3


async def test_everything_a_socketio_client_sends_counts_against_its_command_rate(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """Not only events: connects to other namespaces and packets before the connect too; a
    client that keeps at it is closed with 4029 as on the WebSocket endpoint."""
    relay = make_relay()
    ws = await WebSocketClient.open(relay, nursery, f"{BASE}&transport=websocket")
    await ws.next_text()
    with contextlib.suppress(trio.BrokenResourceError):  # the relay may close mid-way
        for _ in range(200):
            await ws.send('40/other,{"token":"x"}')
    while ws.closed is None and await ws._read():
        pass
    # Over memory streams every write goes through a writer task; when the close interrupts
    # one, the relay cannot know how much of a frame went out and cuts the connection instead
    # of sending its close frame (over a socket it knows, and sends it).
    assert ws.closed is None or ws.closed.code == 4029
    await ws.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    refusals = [t for t in ws.texts if t.startswith("44/other,")]
    limited = [t for t in ws.texts if t.startswith('42/ws,["error"') and "rate_limited" in t]
    assert refusals and limited  # answered while under the rate, then refused, then closed
    assert dict(relay.close_codes) == {4029: 1}


async def test_the_sessions_end_cancels_a_connect_its_post_is_waiting_for(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """A post's task is not the session's: when the session ends (here its heartbeat), a
    connect the post waits for (a cluster's count in Redis) is cancelled, and nothing is
    counted for a session that is gone."""
    relay = make_relay()
    _start(relay, nursery)
    waiting = trio.Event()

    async def connect(session: SocketIOSession, credential: str | None) -> None:
        waiting.set()
        await trio.sleep_forever()

    session = SocketIOSession(
        None, None, relay.hub, relay._unconnected, relay.timers, relay.rounds, connect, 65536
    )

    async def own() -> None:
        async with trio.open_nursery() as connection:
            await session.run(connection)

    nursery.start_soon(own)
    await trio.testing.wait_all_tasks_blocked()
    relay._timers_changed.unpark_all()  # as Relay._run_session does for a new session
    posted: list[object] = []

    async def posting() -> None:
        posted.append(await session.post(b'40/ws,{"token":"k"}'))
        posted.append(trio.current_time())

    start = trio.current_time()
    nursery.start_soon(posting)
    await waiting.wait()
    await session.ended.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert posted == [None, start + HEARTBEAT + PONG_TIMEOUT]
    assert not session.connected and session.grant is None
