"""Comparison peer: the obvious trio-websocket fan-out.

This is the baseline a competent developer writes first with trio-websocket: one
upstream connection, a dict of subscribers per channel, and for every upstream
message a loop that awaits ``send_message`` once per subscribed client. It is kept
deliberately plain (no pre-built frames, no per-client writer, no backpressure
policy) because the benchmark exists to show what those cost and buy.

Run: ``python benchmarks/peers/trio_naive.py --port 9200 --upstream ws://127.0.0.1:9101/ws``
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import trio
from common import normalize, topic_for  # sibling module: peers run as scripts
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


class Peer:
    """Subscriber registry plus the two tasks: upstream pump and client handler."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.subscribers: dict[str, set[WebSocketConnection]] = defaultdict(set)
        self.seqs: dict[str, int] = defaultdict(int)
        self.sessions = 0
        self.up: WebSocketConnection | None = None
        self.topics: set[str] = set()

    async def want(self, channel: str) -> None:
        """Subscribe upstream the first time any client asks for a channel."""
        topic = topic_for(channel)
        if topic is None or topic in self.topics:
            return
        self.topics.add(topic)
        if self.up is not None:
            await self.up.send_message(json.dumps({"op": "subscribe", "args": [topic]}))

    async def pump(self) -> None:
        """Read the market and send each envelope to every subscriber, one await each."""
        async with open_websocket_url(self.upstream) as up:
            self.up = up
            if self.topics:
                await up.send_message(json.dumps({"op": "subscribe", "args": sorted(self.topics)}))
            while True:
                raw = await up.get_message()
                ts = int(time.time() * 1000)
                mapped = normalize(json.loads(raw))
                if mapped is None:
                    continue
                channel, data = mapped
                self.seqs[channel] += 1
                text = json.dumps(
                    {"channel": channel, "seq": self.seqs[channel], "ts": ts, "data": data}
                )
                for ws in list(self.subscribers[channel]):
                    try:
                        await ws.send_message(text)
                    except ConnectionClosed:
                        self.subscribers[channel].discard(ws)

    async def handle(self, request: WebSocketRequest) -> None:
        """Serve one client: welcome, then answer subscribe/unsubscribe/ping until it goes."""
        ws = await request.accept()
        self.sessions += 1
        subscribed: set[str] = set()
        try:
            await ws.send_message(
                json.dumps(
                    {
                        "event": "welcome",
                        "data": {"session": str(self.sessions), "heartbeat": 30, "protocol": 1},
                    }
                )
            )
            while True:
                cmd = json.loads(await ws.get_message())
                action = cmd.get("action")
                channels = cmd.get("channels") or [cmd.get("channel")]
                if action in ("subscribe", "unsubscribe"):
                    for channel in channels:
                        if action == "subscribe":
                            subscribed.add(channel)
                            self.subscribers[channel].add(ws)
                            await self.want(channel)
                        else:
                            subscribed.discard(channel)
                            self.subscribers[channel].discard(ws)
                        reply = {"event": f"{action}d", "data": {"channel": channel}}
                        await ws.send_message(json.dumps({**reply, "id": cmd.get("id")}))
                elif action == "ping":
                    await ws.send_message(json.dumps({"event": "pong", "id": cmd.get("id")}))
        except (ConnectionClosed, ValueError):
            pass
        finally:
            for channel in subscribed:
                self.subscribers[channel].discard(ws)


async def main(port: int, upstream: str) -> None:
    """Run the upstream pump and the listener side by side until killed."""
    peer = Peer(upstream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.pump)
        await serve_websocket(peer.handle, "127.0.0.1", port, ssl_context=None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    trio.run(main, args.port, args.upstream)
