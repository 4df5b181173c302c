"""The Socket.IO endpoint (``/socket.io/``, namespace ``/ws``) end to end: npm's socket.io-client
over long-polling, the upgrade and WebSocket only; the protocol by hand (long-polling with httpx,
the upgrade probe, a raw WebSocket); refused credentials; and slow consumers, which the same
outbox policies handle as on the plain WebSocket."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import orjson
import pytest
import trio
import wsproto
from trio_websocket import ConnectionRejected, open_websocket_url
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from tests.e2e.conftest import HOST, Stack, client, receive, running_stack, subscribe
from tests.e2e.node_sio import NodeSio, node_sio, require_node_sio

pytestmark = pytest.mark.e2e

CHANNEL: Final = "sim:trades:BTC-USD"
TICKER: Final = "sim:ticker:BTC-USD"
UNKNOWN: Final = "sim:trades:DOGE-USD"
NAMESPACE: Final = "/ws"
ENVELOPE: Final = {"channel", "seq", "ts", "data"}
"""The fields of a data envelope (and ``snapshot`` on a snapshot)."""
SEPARATOR: Final = "\x1e"
"""Between the packets of one long-polling payload (Engine.IO v4)."""


@pytest.fixture
def node_sio_installed() -> None:
    """socket.io-client can run; skips (fails in CI) without it. A synchronous fixture: a skip
    raised inside a Trio test reaches pytest wrapped in an exception group."""
    require_node_sio()


needs_node = pytest.mark.usefixtures("node_sio_installed")


def sio_url(stack: Stack) -> str:
    """What a socket.io-client connects to: the relay's origin and the namespace."""
    return stack.base + NAMESPACE


def metric(text: str, name: str) -> float:
    """A counter or gauge of ``/metrics`` (Prometheus text), summed over its labels."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    ]
    assert values, f"{name} not in /metrics"
    return sum(values)


async def metrics(stack: Stack) -> str:
    response = await stack.http.get(f"{stack.base}/metrics")
    assert response.status_code == 200, response.text
    return response.text


def disconnects(text: str, code: int) -> int:
    """``relay_disconnects_total`` for one close code (0 before the first)."""
    name = f'relay_disconnects_total{{code="{code}"}} '
    lines = [line for line in text.splitlines() if line.startswith(name)]
    return int(float(lines[0].rsplit(" ", 1)[1])) if lines else 0


async def connections_become(stack: Stack, count: int) -> None:
    """Wait until ``relay_connections`` is ``count`` (a session ends after its client left)."""
    with trio.fail_after(10):
        while metric(await metrics(stack), "relay_connections") != count:  # noqa: ASYNC110
            await trio.sleep(0.05)


def check_envelope(envelope: dict[str, Any], channel: str) -> None:
    assert envelope["channel"] == channel, envelope
    assert set(envelope) - {"snapshot"} == ENVELOPE, envelope
    assert isinstance(envelope["seq"], int) and isinstance(envelope["ts"], int), envelope


def consecutive(seqs: list[int]) -> bool:
    return bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def data_seqs(sio: NodeSio, channel: str, count: int) -> list[int]:
    """The seqs of the next ``count`` data events, all of them on ``channel``."""
    seqs: list[int] = []
    while len(seqs) < count:
        name, envelope = await sio.server()
        assert name == "data", (name, envelope)
        check_envelope(envelope, channel)
        seqs.append(envelope["seq"])
    return seqs


async def until_ack(sio: NodeSio, ack: str) -> tuple[list[tuple[str, Any]], list[Any]]:
    """The server events before the acknowledgement ``ack``, and the acknowledgement's args."""
    events: list[tuple[str, Any]] = []
    with trio.fail_after(20):  # data keeps coming: each event in time is not enough
        while (event := await sio.next())["event"] != "ack":
            assert event["event"] == "server", event
            assert len(event["args"]) == 1, event
            events.append((event["name"], event["args"][0]))
    assert event["id"] == ack, event
    return events, event["args"]


# npm's socket.io-client -------------------------------------------------------------------------


@needs_node
async def test_the_default_client_polls_then_upgrades_and_the_stream_goes_on(
    stack: Stack,
) -> None:
    async with node_sio(sio_url(stack)) as sio:
        # The handshake is a long-polling request; the namespace's connect follows.
        assert await sio.next() == {"event": "open", "transport": "polling"}
        connect = await sio.next()
        assert connect["event"] == "connect", connect
        assert isinstance(connect["id"], str) and connect["id"]
        await sio.emit("subscribe", {"channel": CHANNEL}, ack="s1")
        events, ack = await until_ack(sio, "s1")
        assert events[0][0] == "subscribed" and events[0][1]["channel"] == CHANNEL, events
        assert ack == [{"subscribed": [CHANNEL], "failed": []}]
        seqs = [e["seq"] for name, e in events[1:] if name == "data"]
        # Data until the engine has moved to WebSocket, and on after it.
        after_upgrade = 0
        with trio.fail_after(30):
            while after_upgrade < 10:
                event = await sio.next()
                assert event["event"] == "server" and event["name"] == "data", event
                (envelope,) = event["args"]
                check_envelope(envelope, CHANNEL)
                seqs.append(envelope["seq"])
                if sio.side:
                    after_upgrade += 1
                    assert event["transport"] == "websocket", event
        assert sio.side == [{"event": "upgrade", "transport": "websocket"}]
        assert consecutive(seqs), seqs
        assert seqs[0] == events[0][1]["seq"] + 1  # nothing lost between the ack and the stream


@needs_node
async def test_websocket_only_streams_and_is_counted_with_the_websocket_sessions(
    stack: Stack,
) -> None:
    async with (
        client(stack.url) as ws,
        node_sio(sio_url(stack), transports=["websocket"]) as sio,
    ):
        assert await sio.next() == {"event": "open", "transport": "websocket"}
        connect = await sio.next()
        assert connect["event"] == "connect" and connect["transport"] == "websocket", connect
        await subscribe(ws, CHANNEL)
        await sio.emit("subscribe", {"channel": CHANNEL})
        name, subscribed = await sio.server()
        assert name == "subscribed", (name, subscribed)
        assert set(subscribed) == {"channel", "seq", "epoch"}, subscribed
        assert subscribed["channel"] == CHANNEL
        assert isinstance(subscribed["epoch"], str) and subscribed["epoch"]
        envelopes = []
        while len(envelopes) < 10:
            name, envelope = await sio.server()
            assert name == "data", (name, envelope)
            check_envelope(envelope, CHANNEL)
            envelopes.append(envelope)
        seqs = [e["seq"] for e in envelopes]
        assert consecutive(seqs) and seqs[0] == subscribed["seq"] + 1, (subscribed, seqs)
        # The same envelope as the WebSocket's: a message both got is the same message.
        while (message := await receive(ws))["seq"] < seqs[-1]:
            pass
        assert message == envelopes[-1]
        text = await metrics(stack)
        assert metric(text, "relay_connections") == 2
        assert metric(text, "relay_deliveries_total") >= 20
        assert not sio.side  # no upgrade: it was WebSocket from the start
        await sio.send({"disconnect": True})
        assert (await sio.next())["reason"] == "io client disconnect"
        await connections_become(stack, 1)


@needs_node
async def test_subscribe_with_an_ack_gets_events_snapshot_then_ack_and_unsubscribe(
    stack: Stack,
) -> None:
    # A WebSocket client holds the ticker, so the relay has its state when Socket.IO subscribes.
    async with client(stack.url) as holder, node_sio(sio_url(stack)) as sio:
        await subscribe(holder, TICKER)
        while not (await receive(holder)).get("snapshot"):
            pass
        await sio.connected()
        body = {"channels": ["sim:trades", "sim:ticker"], "symbols": ["BTC-USD"]}
        await sio.emit("subscribe", body, ack="sub")
        events, ack = await until_ack(sio, "sub")
        assert ack == [{"subscribed": [CHANNEL, TICKER], "failed": []}]
        names = [(name, data.get("channel")) for name, data in events]
        assert names[:1] == [("subscribed", CHANNEL)], names
        assert ("subscribed", TICKER) in names, names
        # The ticker's snapshot comes after its subscribed event, and before the ack.
        ticker = [data for name, data in events if name == "data" and data["channel"] == TICKER]
        assert ticker and ticker[0].get("snapshot") is True, events
        assert names.index(("subscribed", TICKER)) < names.index(("data", TICKER)), names
        for name, data in events:
            if name == "subscribed":
                assert set(data) == {"channel", "seq", "epoch"}, data
            else:
                assert name == "data", (name, data)
                check_envelope(data, data["channel"])
        trades = [d["seq"] for n, d in events if n == "data" and d["channel"] == CHANNEL]
        # Unsubscribing: its event, then its ack; no ticker data after the event.
        await sio.emit("unsubscribe", {"channel": TICKER}, ack="unsub")
        events, ack = await until_ack(sio, "unsub")
        assert ack == [{"unsubscribed": [TICKER], "failed": []}]
        assert events[-1] == ("unsubscribed", {"channel": TICKER}), events
        for name, data in events[:-1]:
            assert name == "data", (name, data)
            if data["channel"] == CHANNEL:
                trades.append(data["seq"])
        trades += await data_seqs(sio, CHANNEL, 10)  # fails on a ticker message
        assert consecutive(trades), trades


@needs_node
async def test_unknown_channels_and_malformed_requests_get_errors_and_lose_nothing(
    stack: Stack,
) -> None:
    async with node_sio(sio_url(stack), transports=["websocket"]) as sio:
        await sio.connected()
        await sio.emit("subscribe", {"channels": [CHANNEL, UNKNOWN]}, ack="mixed")
        events, ack = await until_ack(sio, "mixed")
        assert ack == [{"subscribed": [CHANNEL], "failed": [UNKNOWN]}]
        errors = [data for name, data in events if name == "error"]
        assert len(errors) == 1, events
        assert errors[0]["code"] == "unknown_channel" and errors[0]["channel"] == UNKNOWN
        assert isinstance(errors[0]["message"], str) and errors[0]["message"]
        assert ("subscribed", CHANNEL) in [(n, d.get("channel")) for n, d in events], events
        seqs = [d["seq"] for n, d in events if n == "data"]

        async def error_event(*emitted: Any) -> dict[str, Any]:
            """Emit, then the error event that answers it (data may come first)."""
            await sio.emit(*emitted)
            with trio.fail_after(20):
                while (answer := await sio.server())[0] == "data":
                    seqs.append(answer[1]["seq"])
            name, data = answer
            assert name == "error", answer
            return dict(data)

        # Not an object, an event the relay does not know: error events, no ack asked.
        for emitted in [
            ("subscribe", "sim:trades:BTC-USD"),
            ("subscribe", [CHANNEL]),
            ("fly", {"channel": CHANNEL}),
        ]:
            error = await error_event(*emitted)
            assert error["code"] == "bad_request", (emitted, error)
            assert isinstance(error["message"], str) and error["message"], error
        # Malformed objects, with an ack: the ack carries the error.
        for ack_id, event, body in [
            ("m1", "subscribe", {"channel": 5}),
            ("m2", "subscribe", {}),
            ("m3", "unsubscribe", {"channel": CHANNEL, "channels": [CHANNEL]}),
        ]:
            await sio.emit(event, body, ack=ack_id)
            events, ack = await until_ack(sio, ack_id)
            assert len(ack) == 1 and set(ack[0]) == {"error"}, ack
            assert ack[0]["error"]["code"] == "bad_request", ack
            assert isinstance(ack[0]["error"]["message"], str) and ack[0]["error"]["message"]
            for name, data in events:
                if name == "error":  # an error event besides the ack: the same error
                    assert data["code"] == "bad_request", data
                else:
                    assert name == "data", (name, data)
                    seqs.append(data["seq"])
        # Still subscribed, still connected, nothing lost.
        seqs += await data_seqs(sio, CHANNEL, 5)
        assert consecutive(seqs), seqs


CREDENTIALS: Final = {
    "auth": {"required": True},
    "tiers": {"pro": {"max_connections": 1, "channels": ["sim:*"]}},
    "keys": [{"key": "sio-key", "tier": "pro", "name": "sio"}],
}


async def refused(stack: Stack, auth: Any, transports: list[str] | None) -> dict[str, Any]:
    """The connect_error of a client the namespace refuses (after the engine's handshake)."""
    async with node_sio(sio_url(stack), auth=auth, transports=transports) as sio:
        assert (await sio.next())["event"] == "open"
        error = await sio.next()
    assert error["event"] == "connect_error", (auth, transports, error)
    assert isinstance(error["data"], dict), (auth, transports, error)
    assert error["data"]["code"] == error["message"], error
    assert isinstance(error["data"]["message"], str) and error["data"]["message"], error
    return error


@needs_node
async def test_credentials_are_checked_at_the_namespace_connect(nursery: trio.Nursery) -> None:
    websocket = ["websocket"]
    async with running_stack(nursery, **CREDENTIALS) as stack:
        wrong = await refused(stack, {"token": "wrong-key"}, websocket)
        assert wrong["message"] == "invalid_credentials", wrong
        wrong = await refused(stack, {"key": "wrong-key"}, websocket)
        assert wrong["message"] == "invalid_credentials", wrong
        missing = await refused(stack, None, websocket)
        assert missing["message"] == "missing_credentials", missing
        async with node_sio(sio_url(stack), auth={"token": "sio-key"}) as sio:
            await sio.connected()
            await sio.emit("subscribe", {"channel": CHANNEL}, ack="s")
            _, ack = await until_ack(sio, "s")
            assert ack == [{"subscribed": [CHANNEL], "failed": []}]
            # The key's one connection is taken, whichever endpoint asks for a second.
            over = await refused(stack, {"key": "sio-key"}, websocket)
            assert over["message"] == "too_many_connections", over
            with pytest.raises(ConnectionRejected) as refused_ws:
                async with open_websocket_url(f"{stack.url}?api_key=sio-key"):
                    pass
            assert refused_ws.value.status_code == 429
            await data_seqs(sio, CHANNEL, 3)  # the first one is served all along
        await connections_become(stack, 0)
        async with node_sio(sio_url(stack), auth={"key": "sio-key"}) as again:
            connect = await again.connected()
            assert connect["event"] == "connect"


@needs_node
async def test_credentials_refused_over_long_polling_reach_the_client(
    nursery: trio.Nursery,
) -> None:
    """The connect_error packet goes out in the answer to a poll: the refused session must
    last until that poll has taken it."""
    async with running_stack(nursery, **CREDENTIALS) as stack:
        wrong = await refused(stack, {"token": "wrong-key"}, None)
        assert wrong["message"] == "invalid_credentials", wrong
        missing = await refused(stack, None, None)
        assert missing["message"] == "missing_credentials", missing
        async with node_sio(sio_url(stack), auth={"key": "sio-key"}) as sio:
            await sio.connected()
            over = await refused(stack, {"token": "sio-key"}, None)
            assert over["message"] == "too_many_connections", over


@needs_node
async def test_engine_pings_keep_an_idle_session_open(nursery: trio.Nursery) -> None:
    server = {"heartbeat": 0.2, "heartbeat_timeout": 2.0}
    async with running_stack(nursery, server=server) as stack:
        for transports in (None, ["websocket"]):
            async with node_sio(sio_url(stack), transports=transports, pings=True) as sio:
                assert (await sio.event())["event"] == "open"
                pings = 0
                # Nothing subscribed: only pings (and the connect, and maybe the upgrade).
                while pings < 5:
                    event = await sio.event()
                    assert event["event"] in ("ping", "connect", "upgrade"), event
                    pings += event["event"] == "ping"
                await sio.emit("subscribe", {"channel": CHANNEL}, ack="s")
                with trio.fail_after(20):
                    while (event := await sio.event())["event"] != "ack":
                        assert event["event"] in ("ping", "upgrade", "server"), event
                assert event["args"] == [{"subscribed": [CHANNEL], "failed": []}]


# The protocol by hand ---------------------------------------------------------------------------


def packets(payload: str) -> list[str]:
    """The Engine.IO packets of one long-polling response."""
    assert payload, "an empty long-polling payload"
    return payload.split(SEPARATOR)


def socketio_event(packet: str) -> tuple[str, Any]:
    """An Engine.IO message (4) carrying a Socket.IO EVENT (2) on the namespace: its name and
    its one argument."""
    prefix = f"42{NAMESPACE},"
    assert packet.startswith(prefix), packet
    name, *args = orjson.loads(packet[len(prefix) :])
    assert len(args) == 1, packet
    return name, args[0]


class Polling:
    """An Engine.IO long-polling session, by hand."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http = http
        self.endpoint = f"{base}/socket.io/"
        self.sid = ""
        self.handshake: dict[str, Any] = {}

    def params(self, **extra: str) -> dict[str, str]:
        return {"EIO": "4", "transport": "polling", "sid": self.sid, **extra}

    async def open(self) -> None:
        response = await self.http.get(self.endpoint, params={"EIO": "4", "transport": "polling"})
        assert response.status_code == 200, response.text
        assert response.headers["connection"] == "close"  # no keep-alive on this port
        assert response.text.startswith("0"), response.text
        self.handshake = orjson.loads(response.text[1:])
        self.sid = self.handshake["sid"]

    async def post(self, *packets: str) -> None:
        response = await self.http.post(
            self.endpoint, params=self.params(), content=SEPARATOR.join(packets).encode()
        )
        assert response.status_code == 200, response.text
        assert response.text == "ok", response.text

    async def get(self) -> list[str]:
        response = await self.http.get(self.endpoint, params=self.params(), timeout=30)
        assert response.status_code == 200, response.text
        return packets(response.text)


async def test_long_polling_by_hand_then_the_upgrade_probe(stack: Stack) -> None:
    polling = Polling(stack.http, stack.base)
    await polling.open()
    handshake = polling.handshake
    assert isinstance(polling.sid, str) and polling.sid
    assert handshake["upgrades"] == ["websocket"]
    server = stack.relay.config.server
    assert handshake["pingInterval"] == int(server.heartbeat * 1000)
    assert handshake["pingTimeout"] == int(server.heartbeat_timeout * 1000)
    assert isinstance(handshake["maxPayload"], int) and handshake["maxPayload"] > 0
    # The namespace's connect.
    await polling.post(f"40{NAMESPACE},{{}}")
    (connected,) = await polling.get()
    prefix = f"40{NAMESPACE},"
    assert connected.startswith(prefix), connected
    assert set(orjson.loads(connected[len(prefix) :])) == {"sid"}
    # An event with an acknowledgement id: the subscribed event, then the ack (43), id 7.
    await polling.post(f'42{NAMESPACE},7["subscribe",{{"channel":"{CHANNEL}"}}]')
    received: list[str] = []
    ack_prefix = f"43{NAMESPACE},7"
    with trio.fail_after(10):
        while not any(p.startswith(ack_prefix) for p in received):
            received += await polling.get()
    ack_at = next(i for i, p in enumerate(received) if p.startswith(ack_prefix))
    assert orjson.loads(received[ack_at][len(ack_prefix) :]) == [
        {"subscribed": [CHANNEL], "failed": []}
    ]
    name, subscribed = socketio_event(received[0])
    assert name == "subscribed" and subscribed["channel"] == CHANNEL, received
    seqs: list[int] = []
    for packet in received[1:ack_at] + received[ack_at + 1 :]:
        if packet == "2":
            await polling.post("3")  # the engine's ping, answered
            continue
        name, envelope = socketio_event(packet)
        assert name == "data", packet
        check_envelope(envelope, CHANNEL)
        seqs.append(envelope["seq"])
    # A sid the relay does not know.
    bad = await stack.http.get(polling.endpoint, params={**polling.params(), "sid": "nope"})
    assert bad.status_code == 400, bad.text
    # The upgrade: probe over WebSocket, then "5"; the stream goes on there, nothing lost.
    url = f"ws://{HOST}:{stack.relay_port}/socket.io/?EIO=4&transport=websocket&sid={polling.sid}"
    async with open_websocket_url(url) as ws:
        # As socket.io-client does: a poll in flight, the probe; once the poll is answered
        # (with what was pending, or a noop "6"), the upgrade.
        async with trio.open_nursery() as nursery:

            async def last_poll() -> None:
                for packet in await polling.get():
                    if packet == "2":
                        await polling.post("3")
                    elif packet != "6":
                        name, envelope = socketio_event(packet)
                        assert name == "data", packet
                        seqs.append(envelope["seq"])

            nursery.start_soon(last_poll)
            with trio.fail_after(20):
                await ws.send_message("2probe")
                assert await ws.get_message() == "3probe"
        await ws.send_message("5")
        with trio.fail_after(10):
            while len(seqs) < 20 or not seqs[-1] > seqs[0] + 19:
                message = await ws.get_message()
                if message == "2":
                    await ws.send_message("3")
                    continue
                name, envelope = socketio_event(str(message))
                assert name == "data", message
                check_envelope(envelope, CHANNEL)
                seqs.append(envelope["seq"])
    assert consecutive(seqs) and seqs[0] == subscribed["seq"] + 1, (subscribed, seqs)


async def test_protocol_versions_other_than_4_are_refused(stack: Stack) -> None:
    for version in ("3", "5"):
        response = await stack.http.get(
            f"{stack.base}/socket.io/", params={"EIO": version, "transport": "polling"}
        )
        assert response.status_code == 400, response.text
        assert response.json() == {"code": 5, "message": "Unsupported protocol version"}


# Slow consumers ---------------------------------------------------------------------------------


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class RawWebSocket:
    """A WebSocket client on wsproto with a tiny receive buffer: one that stops reading, stops
    (unlike trio-websocket, whose reader task keeps taking what arrives)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.accepted = False
        self.closed: Closed | None = None
        """How the relay closed, once it has (the messages before it are still received)."""
        self._messages: list[str] = []
        self._text = ""

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int, target: str) -> AsyncIterator[RawWebSocket]:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((HOST, port))
        async with trio.SocketStream(sock) as stream:
            raw = cls(stream)
            await stream.send_all(raw.ws.send(Request(host=HOST, target=target)))
            with trio.fail_after(10):
                while not raw.accepted:
                    await raw._pump()
            yield raw

    async def _pump(self) -> None:
        """Read once, and take every event that completes; answer pings and closes."""
        if self.closed is not None:
            raise self.closed
        data = await self.stream.receive_some(1 << 16)
        if not data:
            raise Closed(None, "the relay closed the TCP connection without a close frame")
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                raise AssertionError(f"handshake refused: {event.status_code}")
            elif isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.ws.state is wsproto.ConnectionState.REMOTE_CLOSING:
                    await self.stream.send_all(self.ws.send(event.response()))
                self.closed = Closed(event.code, event.reason)
            elif isinstance(event, TextMessage):
                self._text += event.data  # wsproto hands out large messages in pieces
                if event.message_finished:
                    self._messages.append(self._text)
                    self._text = ""
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def receive(self, within: float = 10.0) -> str:
        """The next text message; :class:`Closed` when the relay closes."""
        with trio.fail_after(within):
            while not self._messages:
                await self._pump()
        return self._messages.pop(0)

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))


class RawSocketIo:
    """A Socket.IO client by hand over :class:`RawWebSocket` (``transport=websocket``)."""

    def __init__(self, ws: RawWebSocket) -> None:
        self.ws = ws

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[RawSocketIo]:
        target = "/socket.io/?EIO=4&transport=websocket"
        async with RawWebSocket.connect(port, target) as ws:
            opened = await ws.receive()
            assert opened.startswith("0"), opened
            assert set(orjson.loads(opened[1:])) >= {"sid", "pingInterval", "pingTimeout"}
            await ws.send(f"40{NAMESPACE},{{}}")
            sio = cls(ws)
            connected = await sio.packet()
            assert connected.startswith(f"40{NAMESPACE},{{"), connected
            yield sio

    async def packet(self) -> str:
        """The next packet that is not an engine ping (which is answered)."""
        while (text := await self.ws.receive()) == "2":
            await self.ws.send("3")
        return text

    async def event(self) -> tuple[str, Any]:
        return socketio_event(await self.packet())

    async def emit(self, name: str, data: Any) -> None:
        await self.ws.send(f"42{NAMESPACE}," + orjson.dumps([name, data]).decode())


class RawWsClient:
    """The plain WebSocket protocol over :class:`RawWebSocket`."""

    def __init__(self, ws: RawWebSocket) -> None:
        self.ws = ws

    async def message(self) -> dict[str, Any]:
        message: dict[str, Any] = orjson.loads(await self.ws.receive())
        return message


BURST: Final = 5000
"""Trades in one burst of the market: far more than the outbox and the socket buffers of a
client that does not read hold (about 1 MB), and few enough for a reading client to take."""


async def burst(stack: Stack) -> None:
    result = await stack.control(f"burst?n={BURST}&topic=trade.BTC-USD")
    assert result["n"] == BURST, result


class Reader:
    """A socket.io-client reading the channel all along, its stdout drained in a task so
    that it never stalls on a full pipe."""

    def __init__(self, sio: NodeSio) -> None:
        self.sio = sio
        self.seqs: list[int] = []
        self.other: list[dict[str, Any]] = []
        self.changed = trio.Event()

    async def run(self) -> None:
        while True:
            event = await self.sio.event(within=60)
            if event["event"] == "server" and event["name"] == "data":
                (envelope,) = event["args"]
                check_envelope(envelope, CHANNEL)
                self.seqs.append(envelope["seq"])
            else:
                self.other.append(event)
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(60):
            while len(self.seqs) < count:
                await self.changed.wait()


async def data_then_close(receive: Any, parse: Any) -> tuple[list[int], list[Any], Closed]:
    """Read a stalled client: the seqs of its data, what else came, and how it was closed."""
    seqs: list[int] = []
    others: list[Any] = []
    with trio.fail_after(30):
        while True:
            try:
                item = parse(await receive())
            except Closed as closed:
                return seqs, others, closed
            if item is not None and item[0] == "data":
                check_envelope(item[1], CHANNEL)
                seqs.append(item[1]["seq"])
            else:
                others.append(item)


def ws_item(text: str) -> tuple[str, Any]:
    message = orjson.loads(text)
    return ("data", message) if "event" not in message else (message["event"], message)


def sio_item(text: str) -> Any:
    return socketio_event(text) if text.startswith(f"42{NAMESPACE},") else text


@needs_node
async def test_a_slow_socketio_client_is_disconnected_as_a_websocket_one_while_readers_go_on(
    nursery: trio.Nursery,
) -> None:
    async with (
        running_stack(nursery, outbox={"policy": "disconnect"}) as stack,
        RawWebSocket.connect(stack.relay_port, "/ws") as raw_ws,
        RawSocketIo.connect(stack.relay_port) as slow_sio,
        node_sio(sio_url(stack), transports=["websocket"]) as reading,
    ):
        slow_ws = RawWsClient(raw_ws)
        assert (await slow_ws.message())["event"] == "welcome"
        await raw_ws.send(orjson.dumps({"action": "subscribe", "channel": CHANNEL}).decode())
        assert (await slow_ws.message())["event"] == "subscribed"
        await slow_sio.emit("subscribe", {"channel": CHANNEL})
        name, subscribed = await slow_sio.event()
        assert (name, subscribed["channel"]) == ("subscribed", CHANNEL)
        await reading.connected()
        await reading.emit("subscribe", {"channel": CHANNEL}, ack="s")
        _, ack = await until_ack(reading, "s")
        assert ack == [{"subscribed": [CHANNEL], "failed": []}]
        reader = Reader(reading)
        async with trio.open_nursery() as reading_task:
            reading_task.start_soon(reader.run)
            await stalled_clients_are_disconnected(stack, reader, slow_ws, slow_sio)
            reading_task.cancel_scope.cancel()


async def stalled_clients_are_disconnected(
    stack: Stack, reader: Reader, slow_ws: RawWsClient, slow_sio: RawSocketIo
) -> None:
    """The stalled clients are closed with 4008 after a burst; the reader gets it all."""
    # The market stops, then bursts; the two raw clients read nothing meanwhile.
    await reader.wait_for(1)
    await stack.control("pause")
    await trio.sleep(0.3)  # what was on its way has arrived
    before = len(reader.seqs)
    await burst(stack)
    await reader.wait_for(before + BURST)
    # Both stalled clients: the data that was in flight, whole and in order, then 4008.
    ws_seqs, ws_other, ws_closed = await data_then_close(slow_ws.ws.receive, ws_item)
    sio_seqs, sio_other, sio_closed = await data_then_close(slow_sio.packet, sio_item)
    assert ws_closed.code == 4008, (ws_closed, ws_other)
    assert sio_closed.code == 4008, (sio_closed, sio_other)
    assert not ws_other, ws_other
    assert sio_other == [f"41{NAMESPACE},"], sio_other  # the namespace's disconnect
    for seqs in (ws_seqs, sio_seqs):
        assert seqs and consecutive(seqs) and len(seqs) < BURST, seqs[:3] + seqs[-3:]
    with trio.fail_after(10):
        while disconnects(await metrics(stack), 4008) < 2:  # noqa: ASYNC110 - a metric
            await trio.sleep(0.05)
    assert disconnects(await metrics(stack), 4008) == 2
    # The reading socket.io-client got everything, and is still connected.
    await stack.control("resume")
    await reader.wait_for(before + BURST + 10)
    assert consecutive(reader.seqs), reader.seqs[:3]
    assert not reader.other, reader.other


async def test_a_slow_socketio_client_under_drop_is_told_what_it_lost(
    nursery: trio.Nursery,
) -> None:
    async with (
        running_stack(nursery, outbox={"policy": "drop"}) as stack,
        RawSocketIo.connect(stack.relay_port) as slow,
        client(stack.url) as reader,
    ):
        await slow.emit("subscribe", {"channel": CHANNEL})
        name, subscribed = await slow.event()
        assert (name, subscribed["channel"]) == ("subscribed", CHANNEL)
        await subscribe(reader, CHANNEL)
        await stack.control("pause")
        # A reading client tells where the burst ends.
        last = subscribed["seq"]
        with trio.move_on_after(0.5):
            while True:
                last = (await receive(reader))["seq"]
        await burst(stack)
        count = 0
        while count < BURST:
            message = await receive(reader, within=30)
            if "event" not in message:
                count += 1
                last = message["seq"]
        await stack.control("resume")
        # The stalled one reads again: data, a lagged event counting what it missed, then
        # data published after the burst.
        seqs: list[int] = []
        dropped = 0
        with trio.fail_after(30):
            while not seqs or seqs[-1] < last + 10:
                name, data = await slow.event()
                if name == "lagged":
                    assert data["channel"] == CHANNEL and data["dropped"] > 0, data
                    dropped += data["dropped"]
                else:
                    assert name == "data", (name, data)
                    check_envelope(data, CHANNEL)
                    seqs.append(data["seq"])
        # Every seq is either received or counted as dropped.
        first = subscribed["seq"] + 1
        assert dropped > 0
        assert len(seqs) + dropped == seqs[-1] - first + 1, (len(seqs), dropped, first, seqs[-1])
