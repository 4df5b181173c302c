"""A socket that takes only part of a batch: the rest is finished by the session's writer task,
and the client still receives every frame whole and in order."""

from __future__ import annotations

import socket
from typing import Any

import orjson
import pytest
import trio
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage

from relay.core.model import Update
from tests.e2e.conftest import HOST, running_stack

pytestmark = pytest.mark.e2e

CHANNEL = "sim:trades:SOL-USD"
COUNT = 3000  # x ~2 KiB: far more than the socket buffers hold while the client is not reading


async def test_partly_written_batches_arrive_whole_and_in_order(nursery: trio.Nursery) -> None:
    overrides: dict[str, Any] = {"outbox": {"max_messages": 100_000, "max_bytes": 64 << 20}}
    async with running_stack(nursery, rate=1.0, **overrides) as stack:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((HOST, stack.relay_port))
        stream = trio.SocketStream(sock)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=HOST, target="/ws")))
        with trio.fail_after(5):
            accepted = False
            while not accepted:
                ws.receive_data(await stream.receive_some())
                accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
        command = orjson.dumps({"action": "subscribe", "channel": CHANNEL}).decode()
        await stream.send_all(ws.send(TextMessage(data=command)))
        await stack.wait_for(lambda: stack.relay.hub.registry.refcount(CHANNEL) == 1)
        (session,) = stack.relay.sessions
        await stack.control("pause")

        padding = "x" * 2000
        partial = False
        for n in range(COUNT):
            data = {"n": n, "padding": padding}
            stack.relay.hub.publish(Update(CHANNEL, data, None, False), ts=n)
            if n % 100 == 99:
                await trio.sleep(0.01)  # let write rounds run while the client does not read
                partial = partial or session._writing
        assert partial, "the socket never refused part of a batch: the test proves nothing"

        received: list[int] = []
        seqs: list[int] = []
        text = ""
        with trio.fail_after(30):
            while len(received) < COUNT:
                ws.receive_data(await stream.receive_some(1 << 16))
                for event in ws.events():
                    assert isinstance(event, TextMessage), event
                    text += event.data  # wsproto hands out large messages in pieces
                    if not event.message_finished:
                        continue
                    message, text = orjson.loads(text), ""
                    if message.get("channel") == CHANNEL:
                        received.append(message["data"]["n"])
                        seqs.append(message["seq"])
                        assert message["data"]["padding"] == padding
        assert received == list(range(COUNT))
        assert seqs == list(range(seqs[0], seqs[0] + COUNT))
        assert session.closing is None
        await stream.aclose()
