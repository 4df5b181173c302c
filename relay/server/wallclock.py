"""The wall clock in whole milliseconds: what an envelope's ``ts`` carries and what fan-out
latency is measured against, so every one of them reads it the same way (the relay's
deadlines use trio's clock, never this one)."""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
