"""What the cluster's Redis requests raise, in one place: Redis unreachable (the client's own
errors), or silent past ``request_timeout`` (ours). Either ends the node's Redis session
(:class:`RedisLost`); a caller that answers someone (a publish, a snapshot) says
:class:`ClusterUnavailable` instead."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import coredis
import trio

REDIS_DOWN = (coredis.exceptions.ConnectionError, coredis.exceptions.BusyLoadingError, OSError)
"""What a Redis request raises when Redis cannot be reached."""


class RedisLost(Exception):
    """Redis did not answer in time: the node's Redis session ends and a new one starts."""


class ClusterUnavailable(Exception):
    """Redis did not answer a request made for a client in time (a publish may or may not
    have been taken)."""


FAILURES = (*REDIS_DOWN, TimeoutError, RedisLost)
"""What ends a Redis session."""


@contextmanager
def answered_within(seconds: float) -> Iterator[None]:
    """Requests that must be answered within ``seconds``, or RedisLost."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise RedisLost(f"no answer within {seconds:g}s") from None


@contextmanager
def for_a_client(seconds: float) -> Iterator[None]:
    """Requests made for a client: any failure is ClusterUnavailable, with what happened."""
    try:
        with answered_within(seconds):
            yield
    except FAILURES as exc:
        raise ClusterUnavailable(f"Redis unreachable: {exc}") from None
