"""Fan-out latency counted on the write path at the cost of a list increment.

Each client write records how long its oldest message waited since the relay received it. A
prometheus-client ``Histogram.observe`` takes a lock and walks its buckets: measured 2.4 us,
a fifth of a whole loopback write at light load. Here a write costs a list lookup (the waits
are whole milliseconds, so each one's bucket is looked up, not searched for: a ``bisect``
comparing an int with the float bounds was 5 % of the instructions of a client's write) and
two additions; the metrics collector turns the counts into a histogram family when
``/metrics`` is read.
"""

from __future__ import annotations

import math
from bisect import bisect_left

BOUNDS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
"""Upper bounds of the buckets, in milliseconds (receipt times have millisecond resolution)."""

TABLE_MS = 1 << 16
"""Waits up to this many milliseconds have their bucket in a table; longer ones (bounds this
high, or a wait past the last bound) are searched for."""


class LatencyHistogram:
    __slots__ = ("_bucket_of", "bounds_ms", "counts", "sum_ms")

    def __init__(self, bounds_ms: tuple[float, ...] = BOUNDS_MS) -> None:
        if list(bounds_ms) != sorted(set(bounds_ms)) or not bounds_ms:
            raise ValueError("bounds must be distinct and increasing")
        self.bounds_ms = bounds_ms
        self.counts = [0] * (len(bounds_ms) + 1)
        """Per bucket (not cumulative); the last counts what is above every bound."""
        self.sum_ms = 0
        self._bucket_of = [
            bisect_left(bounds_ms, ms) for ms in range(min(int(bounds_ms[-1]) + 1, TABLE_MS))
        ]
        """The bucket of each whole number of milliseconds up to the last bound."""

    def record(self, ms: int) -> None:
        """One write whose oldest message waited ``ms`` whole milliseconds (a negative wait,
        the wall clock stepped back, counts as none)."""
        if ms < 0:
            ms = 0
        table = self._bucket_of
        self.counts[table[ms] if ms < len(table) else bisect_left(self.bounds_ms, ms)] += 1
        self.sum_ms += ms

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in ms, observations at or below it), ending with infinity: what a
        Prometheus histogram exports."""
        bounds = (*self.bounds_ms, math.inf)
        out: list[tuple[float, int]] = []
        total = 0
        for i, count in enumerate(self.counts):
            total += count
            out.append((bounds[i], total))
        return out

    def quantile(self, q: float) -> float | None:
        """The upper bound (ms) of the bucket holding the ``q`` quantile of the writes: the
        latency that a fraction ``q`` of them were at or below. None before any write;
        infinity when it lies above the last bound."""
        if not 0 < q <= 1:
            raise ValueError(f"a quantile is in (0, 1], got {q!r}")
        total = self.count
        if not total:
            return None
        rank = q * total
        for bound, seen in self.cumulative()[:-1]:
            if seen >= rank:
                return bound
        return math.inf
