"""permessage-deflate over real sockets: the `websockets` library (which offers it by default)
and raw wsproto clients against the relay, compressed frames shared between clients, compressed
commands, and a compression bomb refused with 1009 while a bystander goes on."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import PerMessageDeflate as WebsocketsDeflate
from websockets.sync.client import connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from tests.e2e.conftest import HOST, client, receive, running_stack, subscribe

pytestmark = pytest.mark.e2e

CHANNEL = "sim:trades:BTC-USD"
ALL_COMPRESSED = {"compression": {"min_bytes": 0}}


def websockets_session(url: str, count: int) -> dict[str, Any]:
    """A `websockets` client (its defaults: permessage-deflate offered): subscribe, read
    ``count`` messages of the channel, and say what it agreed to."""
    with connect(url) as ws:
        assert orjson.loads(ws.recv(timeout=5))["event"] == "welcome"
        ws.send(orjson.dumps({"action": "subscribe", "channel": CHANNEL, "id": 1}).decode())
        messages = []
        while len(messages) < count:
            message = orjson.loads(ws.recv(timeout=5))
            if message.get("channel") == CHANNEL and "seq" in message and "event" not in message:
                messages.append(message)
        (extension,) = ws.protocol.extensions
        assert isinstance(extension, WebsocketsDeflate)
        return {
            "remote_no_context_takeover": extension.remote_no_context_takeover,
            "local_no_context_takeover": extension.local_no_context_takeover,
            "seqs": [m["seq"] for m in messages],
        }


async def test_the_websockets_library_gets_compressed_frames(nursery: trio.Nursery) -> None:
    async with running_stack(nursery, **ALL_COMPRESSED) as stack:
        agreed = await trio.to_thread.run_sync(websockets_session, stack.url, 10)
        # The relay compresses each message on its own and asks the client to do the same.
        assert agreed["remote_no_context_takeover"] and agreed["local_no_context_takeover"]
        seqs = agreed["seqs"]
        assert seqs == list(range(seqs[0], seqs[0] + 10))
        relay = stack.relay
        assert relay.deflate_sessions == 1
        assert relay.hub.compressed_deliveries >= 10
        assert relay.hub.compressions == relay.hub.compressed_deliveries  # one client: 1 to 1
        metrics = (await stack.http.get(f"{stack.base}/metrics")).text
        assert "relay_connections_deflate_total 1.0" in metrics
        assert 'relay_handshakes_total{outcome="completed"} 1.0' in metrics
        assert "relay_handshake_seconds_count 1.0" in metrics


class RawDeflateClient:
    """wsproto's client offering permessage-deflate on a raw socket, keeping the frames as
    they came off the wire next to what they decode to."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.wire = b""
        self.frames: list[bytes] = []
        self.messages: list[dict[str, Any]] = []

    async def open(self, port: int) -> None:
        offer = Request(host=HOST, target="/ws", extensions=[PerMessageDeflate()])
        await self.stream.send_all(self.ws.send(offer))
        while True:
            self.ws.receive_data(await self.stream.receive_some())
            events = list(self.ws.events())
            if events:
                break
        (accepted, *rest) = events
        assert isinstance(accepted, AcceptConnection)
        assert [e.name for e in accepted.extensions] == ["permessage-deflate"]
        self.messages += [orjson.loads(e.data) for e in rest if isinstance(e, TextMessage)]

    async def send(self, command: dict[str, Any]) -> None:
        # wsproto compresses every message it sends on a deflate connection.
        await self.stream.send_all(self.ws.send(TextMessage(data=orjson.dumps(command).decode())))

    async def read(self) -> None:
        data = await self.stream.receive_some()
        assert data
        self.wire += data
        self.ws.receive_data(data)
        self.messages += [
            orjson.loads(e.data) for e in self.ws.events() if isinstance(e, TextMessage)
        ]
        while len(self.wire) >= 2:  # server frames: unmasked; data frames here are short
            length = self.wire[1] & 0x7F
            size = 2 + {126: 2, 127: 8}.get(length, 0)
            if len(self.wire) < size:
                return
            if length >= 126:
                length = int.from_bytes(self.wire[2:size], "big")
            if len(self.wire) < size + length:
                return
            self.frames.append(self.wire[: size + length])
            self.wire = self.wire[size + length :]


async def test_two_deflate_clients_get_byte_identical_frames_from_one_compression(
    nursery: trio.Nursery,
) -> None:
    async with running_stack(nursery, **ALL_COMPRESSED) as stack:
        clients = []
        for _ in range(2):
            stream = await trio.open_tcp_stream(HOST, stack.relay_port)
            raw = RawDeflateClient(stream)
            await raw.open(stack.relay_port)
            await raw.send({"action": "subscribe", "channel": CHANNEL, "id": "z"})  # compressed
            clients.append(raw)
        hub = stack.relay.hub

        def data(raw: RawDeflateClient) -> list[dict[str, Any]]:
            return [m for m in raw.messages if m.get("channel") == CHANNEL and "seq" in m]

        async def read_until(enough: Any) -> None:
            with trio.fail_after(10):
                while not all(enough(c) for c in clients):
                    for raw in clients:
                        if not enough(raw):
                            await raw.read()

        await read_until(lambda c: any(m.get("event") == "subscribed" for m in c.messages))
        for raw in clients:
            acks = [m for m in raw.messages if m.get("event") == "subscribed"]
            assert acks[0]["id"] == "z"  # the compressed command was understood
        # Both subscribed from here on: every message is compressed once for the two of them.
        compressions, deliveries = hub.compressions, hub.compressed_deliveries
        await read_until(lambda c: len(data(c)) >= 8)
        assert hub.compressions > compressions
        assert hub.compressed_deliveries - deliveries == 2 * (hub.compressions - compressions)
        # And the frames on the two wires are the same bytes (RSV1 set: compressed).
        first, second = ({f for f in c.frames if f[0] == 0xC1} for c in clients)
        assert len(first & second) >= 5
        for raw in clients:
            await raw.stream.aclose()


def bomb(url: str, size: int) -> int | None:
    """Send a message that inflates to ``size`` bytes (a few KB on the wire); the close code."""
    with connect(url) as ws:
        assert orjson.loads(ws.recv(timeout=5))["event"] == "welcome"
        ws.send(orjson.dumps({"action": "ping", "pad": "x" * size}).decode())
        try:
            while True:
                ws.recv(timeout=5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


async def test_a_compression_bomb_is_closed_with_1009_and_a_bystander_goes_on(
    nursery: trio.Nursery,
) -> None:
    async with (
        running_stack(nursery, server={"max_message_size": 65536}) as stack,
        client(stack.url) as bystander,
    ):
        await subscribe(bystander, CHANNEL)
        code = await trio.to_thread.run_sync(bomb, stack.url, 20_000_000)
        assert code == 1009
        await stack.wait_for(lambda: stack.relay.close_codes[1009] == 1)
        before = (await receive(bystander))["seq"]
        assert (await receive(bystander))["seq"] == before + 1
        assert len(stack.relay.sessions) == 1
