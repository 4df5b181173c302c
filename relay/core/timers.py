"""Heartbeat, pong and idle deadlines of every client session, served by one task.

A sleeping task per client costs a few KiB of frames and cancel state; at ten thousand idle
clients that dominated the relay's memory. Every session shares the same heartbeat interval,
pong timeout and idle timeout, and a deadline is always set as "now + constant", so each kind of
deadline arrives in the order it was set: three FIFO queues give the next deadline in O(1), with
no heap. Entries of sessions that left, and deadlines that were cancelled or moved, are skipped
lazily.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)


class Due(NamedTuple, Generic[K]):
    pings: list[K]
    """Sessions to ping now."""
    idle: list[K]
    """Sessions without a subscription for too long (forgotten here: they are being closed)."""
    silent: list[K]
    """Sessions whose ping went unanswered for the pong timeout (forgotten here too)."""


class SessionTimers(Generic[K]):
    """When to ping each session, when an unanswered ping means it is gone, and when an idle
    one must be closed."""

    def __init__(self, interval: float, idle_timeout: float, pong_timeout: float) -> None:
        if interval <= 0 or idle_timeout <= 0 or pong_timeout <= 0:
            raise ValueError("interval, idle_timeout and pong_timeout must be positive")
        self.interval = interval
        self.idle_timeout = idle_timeout
        self.pong_timeout = pong_timeout
        self._beats: deque[tuple[float, K]] = deque()
        self._idle: deque[tuple[float, K]] = deque()
        self._idle_at: dict[K, float] = {}
        self._pongs: deque[tuple[float, K]] = deque()
        self._pong_at: dict[K, float] = {}
        self._members: set[K] = set()

    def __len__(self) -> int:
        return len(self._members)

    def add(self, key: K, now: float) -> None:
        """A new session: first ping one interval from now; idle until it subscribes."""
        self._members.add(key)
        self._beats.append((now + self.interval, key))
        self.idle(key, now)

    def remove(self, key: K) -> None:
        self._members.discard(key)
        self._idle_at.pop(key, None)
        self._pong_at.pop(key, None)

    def pinged(self, key: K, now: float) -> None:
        """A ping went out: the session must answer within the pong timeout."""
        if key in self._members and key not in self._pong_at:
            deadline = now + self.pong_timeout
            self._pong_at[key] = deadline
            self._pongs.append((deadline, key))

    def awaiting_pong(self, key: K) -> bool:
        return key in self._pong_at

    def answered(self, key: K) -> None:
        self._pong_at.pop(key, None)

    def idle(self, key: K, now: float) -> None:
        """The session holds no subscription from ``now`` on."""
        if key in self._members:
            deadline = now + self.idle_timeout
            self._idle_at[key] = deadline
            self._idle.append((deadline, key))

    def busy(self, key: K) -> None:
        """The session holds a subscription: no idle deadline."""
        self._idle_at.pop(key, None)

    def next_deadline(self) -> float:
        """The earliest live deadline, or infinity when there is none."""
        self._skip_stale()
        beat = self._beats[0][0] if self._beats else math.inf
        idle = self._idle[0][0] if self._idle else math.inf
        pong = self._pongs[0][0] if self._pongs else math.inf
        return min(beat, idle, pong)

    def pop_due(self, now: float) -> Due[K]:
        """What is due at ``now``. Pinged sessions are due again one interval from now; a
        session whose ping is still unanswered is not pinged again (its pong deadline
        stands). Idle and silent sessions are forgotten: they are being closed."""
        due: Due[K] = Due([], [], [])
        self._skip_stale()
        self._expire(self._pongs, now, due.silent)
        self._expire(self._idle, now, due.idle)
        while self._beats and self._beats[0][0] <= now:
            _, key = self._beats.popleft()
            if key not in self._pong_at:
                due.pings.append(key)
            self._beats.append((now + self.interval, key))
            self._skip_stale()
        return due

    def _expire(self, queue: deque[tuple[float, K]], now: float, out: list[K]) -> None:
        """Pop the live deadlines due by ``now`` into ``out`` and forget their sessions."""
        while queue and queue[0][0] <= now:
            _, key = queue.popleft()
            out.append(key)
            self.remove(key)
            self._skip_stale()

    def _skip_stale(self) -> None:
        beats, members = self._beats, self._members
        while beats and beats[0][1] not in members:
            beats.popleft()
        _drop_moved(self._idle, self._idle_at)
        _drop_moved(self._pongs, self._pong_at)


def _drop_moved(queue: deque[tuple[float, K]], current: dict[K, float]) -> None:
    """Drop head entries that are no longer a session's current deadline."""
    while queue and current.get(queue[0][1]) != queue[0][0]:
        queue.popleft()
