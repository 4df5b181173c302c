"""The WebSocket transport maps trio-websocket's failures to the relay's own, whichever of its
tasks raises them, against the real synthetic market."""

from __future__ import annotations

import httpx
import pytest
import trio

from relay.server.transports import ConnectFailed, WebSocketTransport
from relay.sim.server import SimServer

pytestmark = pytest.mark.e2e


async def test_a_refused_handshake_is_a_connect_failure(nursery: trio.Nursery) -> None:
    """The market answers the upgrade with 503: trio-websocket raises that from its reader task,
    inside the transport's nursery, not from the connect call."""
    sim = SimServer()
    port = await nursery.start(sim.serve, "127.0.0.1", 0)
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"http://127.0.0.1:{port}/control/refuse?seconds=30")
        assert answer.status_code == 200
    for _ in range(5):  # which task reports the rejection first varies
        with pytest.raises(ConnectFailed, match="503"):
            async with WebSocketTransport().connect(f"ws://127.0.0.1:{port}/ws", 5.0):
                raise AssertionError("connected to a market that refuses connections")


async def test_nothing_listening_is_a_connect_failure() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectFailed):
        async with WebSocketTransport().connect(f"ws://127.0.0.1:{port}/ws", 5.0):
            raise AssertionError("connected to a closed port")
