"""Reconnect schedule for upstream connections: exponential growth, full jitter, a cap, and a reset
once a connection has proven healthy.

Full jitter (a uniformly random delay between zero and the exponential ceiling) is what keeps a
relay fleet from reconnecting in lockstep after an upstream outage; the cap keeps a long outage
from turning into minutes of needless silence after the upstream is back. The reset only happens
after a connection stayed up for ``reset_after`` seconds, because an upstream that accepts the
handshake and then drops us straight away must keep backing off, not hammer it at full rate.

Sans-IO: the caller passes the time and the random source, so tests drive it deterministically.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs


@attrs.define
class Backoff:
    """The reconnect schedule of one upstream source."""

    initial: float = 1.0
    """Ceiling of the first delay, in seconds."""
    factor: float = 2.0
    """Growth of the ceiling per consecutive failure."""
    cap: float = 30.0
    """Largest ceiling, in seconds."""
    reset_after: float = 30.0
    """Seconds a connection must stay up before the schedule starts over."""
    attempts: int = attrs.field(default=0, init=False)
    """Consecutive failures since the last reset; the exponent of the ceiling."""
    connected_at: float | None = attrs.field(default=None, init=False)
    """When the current connection came up, or None while disconnected."""

    def __attrs_post_init__(self) -> None:
        for name in ("initial", "factor", "cap", "reset_after"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"Backoff.{name} must be a finite number, got {value!r}")
        if self.initial <= 0:
            raise ValueError(f"Backoff.initial must be > 0 seconds, got {self.initial!r}")
        if self.factor < 1:
            raise ValueError(
                f"Backoff.factor must be >= 1 (delays never shrink), got {self.factor!r}"
            )
        if self.cap < self.initial:
            raise ValueError(
                f"Backoff.cap ({self.cap!r}) must be >= Backoff.initial ({self.initial!r})"
            )
        if self.reset_after < 0:
            raise ValueError(f"Backoff.reset_after must be >= 0 seconds, got {self.reset_after!r}")

    def ceiling(self) -> float:
        """The largest delay the next failure can get."""
        try:
            raw = self.initial * self.factor**self.attempts
        except OverflowError:
            # A source that has been down for days reaches exponents a float cannot hold.
            return self.cap
        return min(self.cap, raw)

    def next_delay(self, random: Callable[[], float]) -> float:
        """Seconds to wait before the next attempt; counts this as one more failure.

        ``random`` returns a float in [0, 1), e.g. ``random.random``.
        """
        delay = random() * self.ceiling()
        self.attempts += 1
        return delay

    def connected(self, now: float) -> None:
        """A connection came up at ``now``; starts the clock towards a reset."""
        self.connected_at = now

    def disconnected(self, now: float) -> None:
        """The connection went down at ``now``.

        Starts the schedule over only if it had been up for at least ``reset_after`` seconds. A
        call without a prior :meth:`connected` (a connect attempt that never came up) changes
        nothing.
        """
        if self.connected_at is not None and now - self.connected_at >= self.reset_after:
            self.attempts = 0
        self.connected_at = None
