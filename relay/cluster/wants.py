"""NodeWants: which channels this node's clients hold, per source, and the union over the
cluster, which the source's holder subscribes upstream to.

Each node writes its own channels with its heartbeat (a script that also forgets nodes whose
heartbeat stopped and answers the union), at every change and every ``lease_renew``, since
Redis may have lost them; a Pub/Sub note tells the holders to read the union again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import trio

from relay.cluster.redis import answered_within
from relay.cluster.scripts import WANTED
from relay.core.cluster_wire import ClusterKeys


class SourceInterest:
    """The hub's listener for one source in a cluster node: which of the source's channels
    this node's clients hold."""

    def __init__(self, source: str, changed: Callable[[str, bool], None]) -> None:
        self.source = source
        self.channels: set[str] = set()
        self._changed = changed

    def want(self, channel: str) -> None:
        self.channels.add(channel)
        self._changed(channel, True)

    def unwant(self, channel: str) -> None:
        self.channels.discard(channel)
        self._changed(channel, False)

    def channel_state(self, channel: str) -> dict[str, Any] | None:
        # A node's state of a channel is what the holder sent with its messages (the hub's
        # mirrored state), never a book of its own.
        return None


class NodeWants:
    def __init__(
        self,
        keys: ClusterKeys,
        node: str,
        sources: Iterable[str],
        alive_ms: int,
        request_timeout: float,
        changed: Callable[[str, bool], None],
    ) -> None:
        """``sources``: every source whose channels clients may hold (upstream and published
        ones); ``alive_ms``: how long a node counts as alive after its heartbeat.
        ``changed(channel, wanted)``: a channel's first client came or its last one left."""
        self._keys = keys
        self._node = node
        self._alive = str(alive_ms)
        self._timeout = request_timeout
        self._changed = changed
        self.interests = {source: SourceInterest(source, self._note) for source in sources}
        self._changes = trio.lowlevel.ParkingLot()

    def _note(self, channel: str, wanted: bool) -> None:
        self._changes.unpark_all()
        self._changed(channel, wanted)

    def of(self, source: str) -> set[str]:
        return self.interests[source].channels

    async def union(self, client: Any, source: str) -> set[str]:
        """Write this node's channels of ``source`` and its heartbeat; answer the union of
        every live node's."""
        script = client.register_script(WANTED)
        keys = [self._keys.wants(source), self._keys.nodes]
        args = [self._node, " ".join(sorted(self.of(source))), self._alive]
        with answered_within(self._timeout):
            union = await script(keys=keys, args=args)
        return set(union.decode().split())

    async def keep(
        self, client: Any, sources: Iterable[str], every: float, written: Callable[[], None]
    ) -> None:
        """Until the session ends: write this node's channels of each of ``sources`` at every
        change and every ``every`` seconds, and tell the holders; ``written`` after each
        round that Redis took (the node's sign that Redis answers)."""
        sources = list(sources)
        while True:
            for source in sources:
                await self.union(client, source)
                with answered_within(self._timeout):
                    await client.publish(self._keys.wants_changed, source)
            written()
            with trio.move_on_after(every):
                await self._changes.park()
