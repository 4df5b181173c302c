"""Admission decisions per client address, without I/O: the clock is passed in.

- :class:`AddressLimiter`: concurrent connections and new connections per second (a token
  bucket) per peer address, refused with HTTP 429.
- :func:`origin_allowed`: the browser ``Origin`` allow-list, refused with HTTP 403.
- :class:`RefusalLog`: at most one refusal log line per address per interval, counting the ones
  left out, so a flood of refused connections cannot flood the log.

State per address is forgotten once it carries no information (no open connection and a full
bucket; no recent log line), so the tables stay as small as the set of recently active peers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs

from relay.core.protocol import Refusal

__all__ = [
    "AddressLimiter",
    "AddressLimits",
    "RateRefusal",
    "RefusalLog",
    "normalize_origin",
    "origin_allowed",
    "origin_set",
]


class RateRefusal(Refusal):
    """429 ``connection_rate``, with the whole seconds to wait for the ``Retry-After`` header."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(429, "connection_rate", message)
        self.retry_after = retry_after


@attrs.frozen
class AddressLimits:
    max_connections: int
    """Connections open at once from one address (handshakes in progress included)."""
    rate: float
    """New connections per second from one address, sustained."""
    burst: int
    """How many new connections one address may open at once."""


@attrs.define
class _Entry:
    tokens: float
    stamp: float
    open: int = 0


class AddressLimiter:
    """Counts open connections and spends connection tokens, per address.

    :meth:`check` decides (and spends a token); :meth:`opened` counts a connection the caller
    admitted after its other checks, and :meth:`release` uncounts it when it ends.
    """

    def __init__(self, limits: AddressLimits) -> None:
        if limits.max_connections < 1 or not limits.rate > 0 or limits.burst < 1:
            raise ValueError("max_connections and burst must be >= 1, rate > 0")
        self.limits = limits
        self._entries: dict[str, _Entry] = {}
        self._refill = limits.burst / limits.rate
        """Seconds for an empty bucket to fill: an entry idle this long is a fresh one."""
        self._last_sweep = -math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def open_connections(self, address: str) -> int:
        entry = self._entries.get(address)
        return 0 if entry is None else entry.open

    def check(self, address: str, now: float) -> None:
        """Whether ``address`` may open a new connection now; raises :class:`Refusal` (429,
        :class:`RateRefusal` for the rate) if not. Does not count the connection.

        The rate is checked first and every attempt that passes it spends a token, refused
        later or not: a client hammering at its connection limit is rate limited too.
        """
        self._sweep(now)
        limits = self.limits
        entry = self._entries.get(address)
        if entry is None:
            entry = self._entries[address] = _Entry(float(limits.burst), now)
        elapsed = max(0.0, now - entry.stamp)
        entry.stamp = max(entry.stamp, now)
        entry.tokens = min(float(limits.burst), entry.tokens + elapsed * limits.rate)
        if entry.tokens < 1.0:
            wait = (1.0 - entry.tokens) / limits.rate
            retry_after = max(1, math.ceil(wait - 1e-9))
            raise RateRefusal(
                retry_after,
                f"more than {limits.burst} new connections at once or {limits.rate:g} per "
                f"second from this address; retry in {retry_after} s",
            )
        entry.tokens -= 1.0
        if entry.open >= limits.max_connections:
            raise Refusal(
                429,
                "too_many_connections",
                f"at most {limits.max_connections} connections from this address",
            )

    def opened(self, address: str) -> None:
        """Count a connection :meth:`check` let through (call it with no await in between)."""
        entry = self._entries.get(address)
        if entry is None:  # not checked first; count it all the same
            entry = self._entries[address] = _Entry(float(self.limits.burst), -math.inf)
        entry.open += 1

    def release(self, address: str) -> None:
        entry = self._entries.get(address)
        if entry is not None and entry.open > 0:
            entry.open -= 1

    def _sweep(self, now: float) -> None:
        """Forget addresses with nothing open whose bucket has refilled, at most once per
        refill period (amortized O(1) per call)."""
        if now - self._last_sweep < self._refill:
            return
        self._last_sweep = now
        stale = [
            address
            for address, entry in self._entries.items()
            if entry.open == 0 and now - entry.stamp >= self._refill
        ]
        for address in stale:
            del self._entries[address]


def normalize_origin(origin: str) -> str:
    """Origins compare case-insensitively (scheme and host), without a trailing slash."""
    return origin.strip().rstrip("/").lower()


def origin_set(origins: Iterable[str]) -> frozenset[str]:
    """The allow-list as :func:`origin_allowed` takes it (normalized once)."""
    return frozenset(normalize_origin(o) for o in origins)


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """An empty allow-list allows every request; otherwise a request without ``Origin``
    (not a browser) is allowed and one with an ``Origin`` must be in ``allowed``
    (from :func:`origin_set`)."""
    if not allowed or origin is None:
        return True
    return normalize_origin(origin) in allowed


class RefusalLog:
    """Decides which refusals get a log line: at most one per address per ``interval``."""

    def __init__(self, interval: float = 1.0) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._last_sweep = -math.inf

    def __len__(self) -> int:
        return len(self._last)

    def record(self, address: str, now: float) -> int | None:
        """None when this refusal is not to be logged (it is counted); otherwise how many
        refusals from the address were left out since its last line, to report in this one."""
        last = self._last.get(address)
        if last is not None and now - last < self.interval:
            self._suppressed[address] = self._suppressed.get(address, 0) + 1
            return None
        self._last[address] = now
        return self._suppressed.pop(address, 0)

    def sweep(self, now: float) -> list[tuple[str, int]]:
        """Forget addresses not logged for an interval; answers those that still had refusals
        left out, with their counts, for one closing line each (still at most one line per
        address per interval). Call it now and then; :meth:`record` does not need it."""
        if now - self._last_sweep < self.interval:
            return []
        self._last_sweep = now
        stale = [a for a, last in self._last.items() if now - last >= self.interval]
        flushed: list[tuple[str, int]] = []
        for address in stale:
            count = self._suppressed.pop(address, 0)
            if count:
                # This closing line counts as the address's line for the next interval.
                self._last[address] = now
                flushed.append((address, count))
            else:
                del self._last[address]
        return flushed
