"""A Trio program that embeds the relay: it publishes its own events (a feed from an async
generator, and single messages), serves them to WebSocket clients on 127.0.0.1, and reads them
back with the client library.

    python examples/embedded.py             # runs until Ctrl-C; try `relay tail` against it
    python examples/embedded.py --count 5   # reads 5 messages back, prints them, exits
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import trio

from relay import open_relay, parse_config
from relay.client import Data, Snapshot, open_client


async def ticks(interval: float) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The program's own events: anything that can be an async iterator of (channel, data)."""
    n = 0
    while True:
        n += 1
        yield "app:ticks", {"n": n}
        await trio.sleep(interval)


async def main(port: int, count: int | None) -> None:
    config = parse_config(
        {
            "server": {"host": "127.0.0.1", "port": port},
            "auth": {"required": False},
            "published": {"app": {"state": ["app:status"]}},
        }
    )
    async with open_relay(config, feeds={"app": ticks(0.05)}) as relay:
        await relay.publish("app:status", {"state": "started"})
        url = f"ws://127.0.0.1:{relay.port}/ws"
        print(f"relay embedded on {url}: channels app:ticks and app:status", flush=True)
        if count is None:
            await trio.sleep_forever()
        seen = 0
        async with open_client(url, ["app:status", "app:ticks"]) as client:
            async for event in client:
                if isinstance(event, Data | Snapshot):
                    print(event.channel, event.seq, event.data, flush=True)
                    seen += 1
                    if seen >= count:
                        break
            stats = relay.stats()
            print(f"{stats.connections} client, {stats.messages_published} published", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--count", type=int, help="read this many messages back, then exit")
    args = parser.parse_args()
    trio.run(main, args.port, args.count)
