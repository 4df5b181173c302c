"""ConnectionCounts: a key's connection limit held across the cluster.

A node admits a connection with a script that sums the key's connections over the live nodes
and counts the new one in the same step (so two nodes cannot both take the last place), and
rewrites its own counts from its own sessions whenever they change (which also counts
connections out, and restores them after Redis lost them). A dead node's counts are dropped
once its heartbeat stops.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import trio

from relay.cluster.redis import FAILURES, answered_within
from relay.cluster.scripts import ADMIT
from relay.core.cluster_wire import ClusterKeys

log = logging.getLogger("relay.cluster")


class ConnectionCounts:
    def __init__(self, keys: ClusterKeys, node: str, request_timeout: float) -> None:
        self._keys = keys
        self._node = node
        self._timeout = request_timeout
        self.open: Counter[str] = Counter()
        """This node's open connections per key: the truth its counts in Redis are written
        from."""
        self._changed: set[str] = set()
        self._dirty = trio.lowlevel.ParkingLot()
        self._admit: Any = None

    def connected(self, client: Any) -> None:
        """A new Redis session: every count is written again (Redis may have lost them)."""
        self._admit = client.register_script(ADMIT)
        self._changed.update(self.open)

    def disconnected(self) -> None:
        self._admit = None

    async def admit(self, identity: str, limit: int) -> bool:
        """Whether one more connection of ``identity`` keeps it within ``limit`` over the
        cluster. With Redis unreachable only this node's connections are counted: refusing
        every client while Redis is away would be worse than a limit briefly too loose."""
        if self.open[identity] >= limit:
            return False
        admitted = True
        script = self._admit
        if script is not None:
            keys = [self._keys.connections(identity), self._keys.nodes]
            try:
                with answered_within(self._timeout):
                    admitted = await script(keys=keys, args=[self._node, str(limit)]) == 1
            except FAILURES as exc:
                log.warning("cluster: connection limits counted on this node only: %s", exc)
        if admitted:
            self.open[identity] += 1
            self._counted(identity)
        return admitted

    def released(self, identity: str) -> None:
        """A connection :meth:`admit` counted has ended."""
        self.open[identity] -= 1
        if not self.open[identity]:
            del self.open[identity]
        self._counted(identity)

    def _counted(self, identity: str) -> None:
        self._changed.add(identity)
        self._dirty.unpark_all()

    async def write(self, client: Any) -> None:
        """Until the session ends: write this node's count of each key whose count changed."""
        while True:
            if not self._changed:
                await self._dirty.park()
                continue
            changed, self._changed = self._changed, set()
            try:
                with answered_within(self._timeout):
                    for identity in changed:
                        key, count = self._keys.connections(identity), self.open[identity]
                        if count:
                            await client.hset(key, {self._node: count})
                        else:
                            await client.hdel(key, [self._node])
            except FAILURES:
                self._changed |= changed
                raise
