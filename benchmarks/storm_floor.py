"""The reconnect storm's floor: a server that does nothing but the protocol's first steps.

It answers the upgrade, sends the welcome, and answers a subscribe with ``subscribed`` and
one data envelope at once, with no market and no fan-out behind it. The harness runs the
storm against it to show how fast the load generator itself opens, subscribes and reads
10,000 clients on this machine: a server under test cannot be measured faster than that, so a
figure close to this floor says "the load generator is the limit", not "the server is fast".

Its listen backlog is the kernel's maximum (``net.core.somaxconn``) so that, as far as
possible, what remains is the load generator's own cost.

Run: ``python benchmarks/storm_floor.py --port 9200``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from command_loop import run  # sibling module: run as a script
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

WELCOME = json.dumps({"event": "welcome", "data": {"session": "0", "heartbeat": 30}}).encode()


def somaxconn() -> int:
    """The kernel's cap on any listen backlog (128 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 128


class Client(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, WELCOME)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        cmd = json.loads(frame.get_payload_as_utf8_text())
        if cmd.get("action") != "subscribe":
            return
        channel = cmd.get("channel")
        reply = {"event": "subscribed", "data": {"channel": channel}, "id": cmd.get("id")}
        transport.send(WSMsgType.TEXT, json.dumps(reply).encode())
        envelope = {"channel": channel, "seq": 1, "ts": int(time.time() * 1000), "data": {}}
        transport.send(WSMsgType.TEXT, json.dumps(envelope).encode())


def route(request: WSUpgradeRequest) -> WSListener | None:
    return Client() if request.path.split(b"?")[0] == b"/ws" else None


async def main(port: int) -> None:
    server = await ws_create_server(route, "127.0.0.1", port, backlog=somaxconn())
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run(main(args.port))
