"""Comparison peer: asyncio ``websockets`` (new asyncio API) with ``broadcast()``.

``broadcast()`` is the library's own answer to fan-out: it frames the message once
per connection and writes it without awaiting, skipping connections that are not
open. That makes it the idiomatic, fair asyncio baseline for the relay.

Run: ``python benchmarks/peers/websockets_broadcast.py --port 9200 --upstream ws://127.0.0.1:9101/ws``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict

from common import normalize, topic_for  # sibling module: peers run as scripts
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

subscribers: dict[str, set[ServerConnection]] = defaultdict(set)
seqs: dict[str, int] = defaultdict(int)
upstream_topics: set[str] = set()
upstream_ws: ClientConnection | None = None


async def want(channel: str) -> None:
    """Subscribe upstream the first time any client asks for a channel."""
    topic = topic_for(channel)
    if topic is None or topic in upstream_topics:
        return
    upstream_topics.add(topic)
    if upstream_ws is not None:
        await upstream_ws.send(json.dumps({"op": "subscribe", "args": [topic]}))


async def handler(ws: ServerConnection) -> None:
    """Serve one client: welcome, then answer subscribe/unsubscribe/ping until it goes."""
    subscribed: set[str] = set()
    welcome = {"event": "welcome", "data": {"session": str(ws.id), "heartbeat": 20, "protocol": 1}}
    try:
        await ws.send(json.dumps(welcome))
        async for raw in ws:
            cmd = json.loads(raw)
            action = cmd.get("action")
            channels = cmd.get("channels") or [cmd.get("channel")]
            if action in ("subscribe", "unsubscribe"):
                for channel in channels:
                    if action == "subscribe":
                        subscribed.add(channel)
                        subscribers[channel].add(ws)
                        await want(channel)
                    else:
                        subscribed.discard(channel)
                        subscribers[channel].discard(ws)
                    reply = {"event": f"{action}d", "data": {"channel": channel}}
                    await ws.send(json.dumps({**reply, "id": cmd.get("id")}))
            elif action == "ping":
                await ws.send(json.dumps({"event": "pong", "id": cmd.get("id")}))
    except (ConnectionClosed, ValueError):
        pass
    finally:
        for channel in subscribed:
            subscribers[channel].discard(ws)


async def pump(upstream: str) -> None:
    """Read the market and broadcast each envelope to the channel's subscribers."""
    global upstream_ws
    async with connect(upstream) as up:
        upstream_ws = up
        if upstream_topics:
            await up.send(json.dumps({"op": "subscribe", "args": sorted(upstream_topics)}))
        async for raw in up:
            ts = int(time.time() * 1000)
            mapped = normalize(json.loads(raw))
            if mapped is None:
                continue
            channel, data = mapped
            seqs[channel] += 1
            text = json.dumps({"channel": channel, "seq": seqs[channel], "ts": ts, "data": data})
            broadcast(subscribers[channel], text)


async def main(port: int, upstream: str) -> None:
    """Serve clients while the pump runs; the process lives as long as the pump."""
    async with serve(handler, "127.0.0.1", port):
        await pump(upstream)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.upstream))
