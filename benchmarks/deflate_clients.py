"""Clients for the compression workload: the ``websockets`` library's client, which can offer
permessage-deflate and decode it (picows, the load generator's library, cannot).

Driven by the harness (``benchmarks/run.py``) over stdin/stdout, one JSON object per line
each way, like ``loadgen.py``. Every client counts the bytes its socket delivered, before
any WebSocket parsing or decompression (``data_received`` of the connection's asyncio
protocol): TCP payload as the server wrote it, frame headers included. Messages are
decoded and counted as data (``snapshot`` counted apart) or events.

Commands (all carry ``"cmd"`` and ``"group"``): ``open`` (n, deflate: offer
permessage-deflate or not), ``subscribe`` (channel; answers once every client's
subscription is confirmed), ``reset`` (zero the counters), ``wait`` (messages, limit: until
every client has that many data messages since the reset), ``counters``, ``close``,
``exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from typing import Any

import orjson
from command_loop import run, serve_commands  # sibling module: the harness runs this as a script
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

OPEN_CONCURRENCY = 32


class CountingConnection(ClientConnection):
    """A client connection that counts the raw bytes the socket delivered."""

    wire_bytes = 0

    def data_received(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        super().data_received(data)


class Client:
    """One connection, its reader task and its counters since the last reset."""

    def __init__(self, ws: CountingConnection) -> None:
        self.ws = ws
        self.deflate = bool(ws.protocol.extensions)
        self.messages = 0
        self.snapshots = 0
        self.events = 0
        self.bytes_at_reset = 0
        self.subscribed = asyncio.Event()
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = orjson.loads(raw)
                if "event" in message:
                    self.events += 1
                    if message["event"] == "subscribed":
                        self.subscribed.set()
                else:
                    self.messages += 1
                    self.snapshots += bool(message.get("snapshot"))

    def reset(self) -> None:
        self.messages = self.snapshots = self.events = 0
        self.bytes_at_reset = self.ws.wire_bytes

    def wire_bytes(self) -> int:
        return self.ws.wire_bytes - self.bytes_at_reset


class DeflateClients:
    def __init__(self, url: str) -> None:
        self.url = url
        self.groups: dict[str, list[Client]] = {}

    async def cmd_open(self, group: str, n: int, deflate: bool) -> dict[str, Any]:
        sem = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one() -> Client:
            async with sem:
                ws = await connect(
                    self.url,
                    compression="deflate" if deflate else None,
                    create_connection=CountingConnection,
                    ping_interval=None,
                    max_size=None,
                    max_queue=None,
                )
                assert isinstance(ws, CountingConnection)
                return Client(ws)

        clients = await asyncio.gather(*(one() for _ in range(n)))
        self.groups.setdefault(group, []).extend(clients)
        return {"opened": len(clients), "negotiated": sum(c.deflate for c in clients)}

    async def cmd_subscribe(self, group: str, channel: str, limit: float) -> dict[str, Any]:
        clients = self.groups[group]
        request = orjson.dumps({"action": "subscribe", "channel": channel, "id": 1})
        for client in clients:
            client.subscribed.clear()
            await client.ws.send(request.decode())
        async with asyncio.timeout(limit):
            for client in clients:
                await client.subscribed.wait()
        return {"subscribed": len(clients)}

    async def cmd_wait(self, group: str, messages: int, limit: float) -> dict[str, Any]:
        clients = self.groups[group]
        start = time.monotonic()
        while any(c.messages < messages for c in clients):
            if time.monotonic() - start > limit:
                break
            await asyncio.sleep(0.02)
        return {
            "complete": all(c.messages >= messages for c in clients),
            "seconds": time.monotonic() - start,
        }

    def cmd_counters(self, group: str) -> dict[str, Any]:
        clients = self.groups[group]
        return {
            "clients": len(clients),
            "negotiated": sum(c.deflate for c in clients),
            "wire_bytes": sum(c.wire_bytes() for c in clients),
            "messages": sum(c.messages for c in clients),
            "snapshots": sum(c.snapshots for c in clients),
            "events": sum(c.events for c in clients),
        }

    async def cmd_close(self, group: str) -> dict[str, Any]:
        clients = self.groups.pop(group, [])
        await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
        return {"closed": len(clients)}

    async def dispatch(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name, group = cmd["cmd"], cmd.get("group", "default")
        if name == "open":
            return await self.cmd_open(group, cmd["n"], cmd["deflate"])
        if name == "subscribe":
            return await self.cmd_subscribe(group, cmd["channel"], cmd.get("limit", 30.0))
        if name == "reset":
            for client in self.groups[group]:
                client.reset()
            return {}
        if name == "wait":
            return await self.cmd_wait(group, cmd["messages"], cmd.get("limit", 30.0))
        if name == "counters":
            return self.cmd_counters(group)
        if name == "close":
            return await self.cmd_close(group)
        raise ValueError(f"unknown command {name!r}")


async def main(url: str) -> None:
    """Answer the harness's commands until ``exit`` or end of input, then close every client."""
    clients = DeflateClients(url)
    await serve_commands(clients.dispatch, {"pid": os.getpid()})
    for group in list(clients.groups):
        await clients.cmd_close(group)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="compression workload clients")
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ws")
    args = parser.parse_args()
    run(main(args.url))
