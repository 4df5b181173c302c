"""RedisOutlet: where a source's messages go while this node holds its lease.

The holder sequences each message (going on from the seqs in Redis, so a takeover never
renumbers), encodes it once, and queues it; one task writes the queue to Redis in batches, each
batch one call of the fenced publish script, so messages keep their order and a node whose lease
has passed to another can never publish again. Every node, this one included, then relays what
Redis publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import trio

from relay.cluster.scripts import PUBLISH
from relay.core.cluster_wire import ClusterKeys, encode_message
from relay.core.history import HistoryBounds
from relay.core.model import StreamKind, Update
from relay.core.protocol import encode_envelope

log = logging.getLogger("relay.cluster")

MAX_BATCH = 512
"""Entries per script call: a long burst goes out in calls of this many, so one call never
holds Redis for long."""


class LeaseLost(Exception):
    """Redis refused a batch: the lease is another node's now."""


class RedisOutlet:
    """The :class:`relay.core.hub.Outlet` of a source this node holds."""

    def __init__(
        self,
        source: str,
        keys: ClusterKeys,
        token: str,
        seqs: dict[str, int],
        kind_of: Callable[[str], StreamKind | None],
        state_of: Callable[[str], dict[str, Any] | None],
        history_for: Callable[[str], HistoryBounds],
        wanted: Callable[[], Iterable[str]],
    ) -> None:
        """``seqs``: each channel's last seq in Redis when the lease was taken. ``state_of``:
        a book channel's current book (the source pipeline's), sent with each of its messages.
        ``wanted``: the source's channels some client of the cluster holds."""
        self.source = source
        self._keys = keys
        self._token = token
        self._seqs = seqs
        self._kind_of = kind_of
        self._state_of = state_of
        self._history_for = history_for
        self._wanted = wanted
        self._channels: dict[str, tuple[StreamKind | None, int]] = {}
        """Per channel, its kind and history length: asked once, not per message."""
        self._queue: list[bytes | str] = []
        self._queued = trio.lowlevel.ParkingLot()
        self.published = 0
        self.batches = 0

    # Outlet --------------------------------------------------------------------------------

    def publish(self, update: Update, ts: int) -> None:
        channel = update.channel
        seq = self._seqs.get(channel, 0) + 1
        self._seqs[channel] = seq
        payload = encode_envelope(channel, seq, ts, update.data, update.snapshot, update.reorg)
        known = self._channels.get(channel)
        if known is None:
            bounds = self._history_for(channel)
            known = self._channels[channel] = (
                self._kind_of(channel),
                bounds.max_messages if bounds.enabled else 0,
            )
        kind, keep = known
        state = self._state(kind, update, seq, ts, payload)
        header, _ = encode_message(seq, ts, payload, update.snapshot, state)
        self._push("m", channel, seq, ts, header, payload, state or b"", keep)

    def _state(
        self, kind: StreamKind | None, update: Update, seq: int, ts: int, payload: bytes
    ) -> bytes | None:
        if kind is StreamKind.STATE:
            if update.snapshot:
                return payload
            return encode_envelope(update.channel, seq, ts, update.data, True)
        if kind is StreamKind.BOOK:
            book = self._state_of(update.channel)
            if book is not None:
                return encode_envelope(update.channel, seq, ts, book, True)
        return None

    def status(self, source: str, state: str) -> None:
        event = {"kind": "status", "source": source, "state": state}
        self._push("c", "", 0, 0, b"", orjson.dumps(event), b"", 0)

    def forget_state(self, channel: str) -> None:
        event = {"kind": "forget", "channel": channel}
        self._push("f", channel, 0, 0, b"", orjson.dumps(event), b"", 0)

    def upstream_refused(self, channel: str, message: str) -> None:
        event = {"kind": "refused", "channel": channel, "message": message}
        self._push("c", channel, 0, 0, b"", orjson.dumps(event), b"", 0)

    def wanted(self, source: str) -> Iterable[str]:
        return self._wanted()

    def _push(
        self,
        kind: str,
        channel: str,
        seq: int,
        ts: int,
        header: bytes,
        payload: bytes,
        state: bytes,
        keep: int,
    ) -> None:
        self._queue.extend((kind, channel, str(seq), str(ts), header, payload, state, str(keep)))
        self._queued.unpark()

    # Writing -------------------------------------------------------------------------------

    async def run(
        self, client: Any, retry_after: float, unreachable: tuple[type[BaseException], ...]
    ) -> None:
        """Write the queue to Redis until cancelled; raises LeaseLost when Redis refuses. A
        batch Redis could not take is sent again (every ``retry_after`` seconds) until it
        does or the lease ends: a short outage loses no message."""
        script = client.register_script(PUBLISH)
        lease = self._keys.lease(self.source)
        fixed = [self._token, self._keys.prefix, self.source]
        width = 8
        while True:
            if not self._queue:
                await self._queued.park()
                continue
            batch = self._queue[: MAX_BATCH * width]
            try:
                granted = await script(keys=[lease], args=fixed + batch)
            except unreachable as exc:
                log.warning("cluster: %s's messages wait for Redis: %s", self.source, exc)
                await trio.sleep(retry_after)
                continue
            del self._queue[: len(batch)]
            self.batches += 1
            if granted != 1:
                raise LeaseLost(f"Redis refused {self.source}'s messages: the lease is not ours")
            self.published += len(batch) // width
