"""Comparison peer: asyncio + picows, ``transport.send`` per client.

picows is the fastest Python WebSocket library we know of (Cython framing, a
callback API with no per-message coroutine). Sending the same payload to every
subscriber with ``transport.send(WSMsgType.TEXT, payload)`` is its obvious fan-out,
so this peer is the bar the relay has to clear by a wide margin.

Run: ``python benchmarks/peers/picows_peer.py --port 9200 --upstream ws://127.0.0.1:9101/ws``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict

from common import normalize, topic_for  # sibling module: peers run as scripts
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_connect,
    ws_create_server,
)

subscribers: dict[str, set[WSTransport]] = defaultdict(set)
seqs: dict[str, int] = defaultdict(int)
upstream_topics: set[str] = set()
upstream_transport: list[WSTransport] = []  # filled once connected


def want(channel: str) -> None:
    """Subscribe upstream the first time any client asks for a channel."""
    topic = topic_for(channel)
    if topic is None or topic in upstream_topics:
        return
    upstream_topics.add(topic)
    for up in upstream_transport:
        up.send(WSMsgType.TEXT, json.dumps({"op": "subscribe", "args": [topic]}).encode())


class Client(WSListener):
    """One downstream session: welcome on connect, commands in, registry cleanup on close."""

    sessions = 0

    def __init__(self) -> None:
        self.subscribed: set[str] = set()

    def on_ws_connected(self, transport: WSTransport) -> None:
        Client.sessions += 1
        welcome = {"session": str(Client.sessions), "heartbeat": 30, "protocol": 1}
        transport.send(WSMsgType.TEXT, json.dumps({"event": "welcome", "data": welcome}).encode())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        try:
            cmd = json.loads(frame.get_payload_as_utf8_text())
        except ValueError:
            return
        action = cmd.get("action")
        channels = cmd.get("channels") or [cmd.get("channel")]
        if action in ("subscribe", "unsubscribe"):
            for channel in channels:
                if action == "subscribe":
                    self.subscribed.add(channel)
                    subscribers[channel].add(transport)
                    want(channel)
                else:
                    self.subscribed.discard(channel)
                    subscribers[channel].discard(transport)
                reply = {"event": f"{action}d", "data": {"channel": channel}, "id": cmd.get("id")}
                transport.send(WSMsgType.TEXT, json.dumps(reply).encode())
        elif action == "ping":
            reply = {"event": "pong", "id": cmd.get("id")}
            transport.send(WSMsgType.TEXT, json.dumps(reply).encode())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for channel in self.subscribed:
            subscribers[channel].discard(transport)


class Upstream(WSListener):
    """The single market connection: normalize each message and send it to subscribers."""

    def on_ws_connected(self, transport: WSTransport) -> None:
        upstream_transport.append(transport)
        if upstream_topics:
            request = {"op": "subscribe", "args": sorted(upstream_topics)}
            transport.send(WSMsgType.TEXT, json.dumps(request).encode())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        ts = int(time.time() * 1000)
        mapped = normalize(json.loads(frame.get_payload_as_utf8_text()))
        if mapped is None:
            return
        channel, data = mapped
        seqs[channel] += 1
        envelope = {"channel": channel, "seq": seqs[channel], "ts": ts, "data": data}
        payload = json.dumps(envelope).encode()
        for client in subscribers[channel]:
            client.send(WSMsgType.TEXT, payload)


def route(request: WSUpgradeRequest) -> WSListener | None:
    """Accept upgrades on /ws only (picows answers 404 for None)."""
    return Client() if request.path.split(b"?")[0] == b"/ws" else None


async def main(port: int, upstream: str) -> None:
    """Listen, connect upstream once, and run until the market connection ends."""
    server = await ws_create_server(route, "127.0.0.1", port)
    transport, _ = await ws_connect(Upstream, upstream)
    async with server:
        await transport.wait_disconnected()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.upstream))
