"""The relay inside another Trio program.

    async with open_relay(config) as relay:
        await relay.publish("app:alerts:disk", {"used": "91%"})
        print(relay.port, relay.stats().connections)

Everything the relay runs (listener, sessions, upstream supervisors, feeds) lives in a nursery
inside the ``async with``: leaving it, normally or by cancellation, closes every client with
1001 and every upstream connection, and nothing is left running. The library changes no
process-wide state (``relay serve`` raises the file limit itself; a program that embeds the
relay for many clients raises its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from relay.config import RelayConfig
from relay.issues import ConfigError, Issue
from relay.server.relay import Relay
from relay.server.stats import RelayStats

__all__ = ["EmbeddedRelay", "Feed", "open_relay"]

Feed = AsyncIterable[tuple[str, dict[str, Any]]]
"""``(channel, data)`` pairs, published as they come: any async iterator of the program's."""


class EmbeddedRelay:
    """A running relay, as :func:`open_relay` hands it to the program."""

    def __init__(self, relay: Relay, port: int) -> None:
        self.relay = relay
        self.port = port
        """The port the relay listens on (the configured one, or the one chosen for 0)."""

    def stats(self) -> RelayStats:
        """A frozen snapshot of the counters, the same one ``/metrics`` exports."""
        return self.relay.stats()

    async def publish(self, channel: str, data: dict[str, Any]) -> int:
        """Publish on a channel of a ``[published.NAME]`` source; answers its seq. The same
        path as ``POST /v1/publish``: sequenced, kept in history, fanned out. ValueError for a
        channel no published source has."""
        return await self.relay.publish_message(channel, data)

    async def feed(self, source: str, items: Feed) -> None:
        """Publish every item of ``items`` on ``source`` (a ``[published]`` source), until the
        iterator ends. An item for another source, or an exception from the iterator, ends
        the feed with that exception (the program's bug, raised where it can see it)."""
        if source not in self.relay.published:
            raise ValueError(f"no [published.{source}] source to feed")
        async for channel, data in items:
            if not channel.startswith(f"{source}:"):
                raise ValueError(f"feed {source!r} yielded {channel!r}, not one of its channels")
            await self.publish(channel, data)


@asynccontextmanager
async def open_relay(
    config: RelayConfig, *, feeds: Mapping[str, Feed] | None = None
) -> AsyncIterator[EmbeddedRelay]:
    """Start the relay (and a task per feed: ``{"ticks": async_iterator}``), hand it over, and
    stop it all when the block ends. Raises ConfigError for a feed with no ``[published]``
    source before anything starts."""
    feeds = dict(feeds or {})
    missing = [name for name in feeds if name not in config.published]
    if missing:
        raise ConfigError(
            [Issue(f"published.{name}", "a feed needs this source configured") for name in missing]
        )
    relay = Relay(config)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(relay.serve)
        embedded = EmbeddedRelay(relay, port)
        for source, items in feeds.items():
            nursery.start_soon(embedded.feed, source, items)
        try:
            yield embedded
        finally:
            nursery.cancel_scope.cancel()
