"""Per-connection command rate limit: a token bucket, with the clock passed in."""

from __future__ import annotations


class TokenBucket:
    """``rate`` commands per second sustained, bursts up to ``burst``.

    ``strikes`` counts commands refused since the last accepted one: a client that keeps
    sending while limited is abusing the connection, and the session closes it (4029) once
    strikes reach ``burst``.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate", "strikes")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now
        self.strikes = 0

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    @property
    def abusive(self) -> bool:
        return self.strikes >= self.burst
