"""Heartbeat and idle deadlines of every client session, served by one task.

A sleeping task per client costs a few KiB of frames and cancel state; at ten thousand idle
clients that dominated the relay's memory. Every session shares the same heartbeat interval and
the same idle timeout, and a deadline is always set as "now + constant", so both kinds of deadline
arrive in the order they were set: two FIFO queues give the next deadline in O(1), with no heap.
Entries of sessions that left, or idle deadlines that were cancelled or moved, are skipped lazily.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class SessionTimers(Generic[K]):
    """When to ping each session, and when an idle one must be closed."""

    def __init__(self, interval: float, idle_timeout: float) -> None:
        if interval <= 0 or idle_timeout <= 0:
            raise ValueError("interval and idle_timeout must be positive")
        self.interval = interval
        self.idle_timeout = idle_timeout
        self._beats: deque[tuple[float, K]] = deque()
        self._idle: deque[tuple[float, K]] = deque()
        self._idle_at: dict[K, float] = {}
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
        return min(beat, idle)

    def pop_due(self, now: float) -> tuple[list[K], list[K]]:
        """(sessions to ping now, sessions idle too long). Pinged sessions are due again one
        interval from now; idle ones are forgotten (they are being closed)."""
        pings: list[K] = []
        idles: list[K] = []
        self._skip_stale()
        while self._idle and self._idle[0][0] <= now:
            _, key = self._idle.popleft()
            if self._idle_at.get(key) is not None:
                idles.append(key)
                self.remove(key)
            self._skip_stale()
        while self._beats and self._beats[0][0] <= now:
            _, key = self._beats.popleft()
            if key in self._members:
                pings.append(key)
                self._beats.append((now + self.interval, key))
            self._skip_stale()
        return pings, idles

    def _skip_stale(self) -> None:
        beats, idle, members, idle_at = self._beats, self._idle, self._members, self._idle_at
        while beats and beats[0][1] not in members:
            beats.popleft()
        while idle and idle_at.get(idle[0][1]) != idle[0][0]:
            idle.popleft()
