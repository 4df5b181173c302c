"""Holding a source's cluster lease: the Trio task carrying out the decisions of
:class:`relay.core.lease.Lease` against a :class:`LeaseStore` (Redis in production, an in-memory
one in the tests).

The store's failures are mapped to one exception, :class:`LeaseStoreUnavailable`, at the store
(as :mod:`relay.server.transports` does for the upstream libraries), so :func:`hold_lease` knows a
single kind of "no answer" whatever carries the requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import coredis
import coredis.exceptions
import trio

from relay.core.lease import Lease, LeaseRequest, RequestKind

log = logging.getLogger("relay.cluster.lease")


class LeaseStoreUnavailable(Exception):
    """The store could not be reached or dropped the connection: no answer."""


class LeaseStore(Protocol):
    """Where the leases live. ``token`` identifies one node process: it must never be reused
    by a later process, or a release delayed in the network could delete the key of its
    successor."""

    async def acquire(self, source: str, token: str, ttl_ms: int) -> bool:
        """Take the key if it is free or already ``token``'s, with ``ttl_ms`` to live."""
        ...

    async def renew(self, source: str, token: str, ttl_ms: int) -> bool:
        """Give the key ``ttl_ms`` to live again if it is still ``token``'s."""
        ...

    async def release(self, source: str, token: str) -> None:
        """Delete the key if it is still ``token``'s."""
        ...


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""
# Taking a key that is already ours (a renewal whose answer was lost, then the belief lapsed)
# renews it instead of waiting for our own key to expire: the source is back at once.
_ACQUIRE = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end" + _RENEW
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


@contextmanager
def _unavailable_on_network_errors() -> Iterator[None]:
    try:
        yield
    except (coredis.exceptions.ConnectionError, TimeoutError, OSError) as exc:
        raise LeaseStoreUnavailable(str(exc) or type(exc).__name__) from exc


class RedisLeaseStore:
    """The leases as Redis keys ``<prefix>:lease:<source>`` holding the owner's token, changed
    only by Lua scripts, so each check-and-change is atomic on the server."""

    def __init__(self, client: coredis.Redis[bytes], prefix: str) -> None:
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def key(self, source: str) -> str:
        return f"{self.prefix}:lease:{source}"

    async def acquire(self, source: str, token: str, ttl_ms: int) -> bool:
        with _unavailable_on_network_errors():
            return await self._acquire([self.key(source)], [token, ttl_ms]) == 1

    async def renew(self, source: str, token: str, ttl_ms: int) -> bool:
        with _unavailable_on_network_errors():
            return await self._renew([self.key(source)], [token, ttl_ms]) == 1

    async def release(self, source: str, token: str) -> None:
        with _unavailable_on_network_errors():
            await self._release([self.key(source)], [token])


async def hold_lease(
    lease: Lease,
    store: LeaseStore,
    source: str,
    token: str,
    on_change: Callable[[bool], None],
    *,
    request_timeout: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keeps asking ``store`` for ``source``'s lease as ``lease`` decides, until cancelled.

    ``on_change(True)`` when this node comes to hold the source, ``on_change(False)`` when it
    stops: at the latest at ``lease.held_until``, even while a request hangs (the task wakes
    then), and before the release goes out on cancellation. A request that gets no answer
    within ``request_timeout`` counts as failed. On cancellation (clean shutdown) the key is
    released, shielded, within ``request_timeout``; a node that dies without releasing leaves
    its key to expire.
    """
    if not request_timeout > 0:
        raise ValueError(f"request_timeout must be > 0 seconds, got {request_timeout!r}")
    send_answer, answers = trio.open_memory_channel[tuple[LeaseRequest, bool | None]](1)
    believed = False

    async def ask(request: LeaseRequest) -> None:
        granted: bool | None = None  # None: no answer
        with trio.move_on_after(request_timeout):
            try:
                if request.kind is RequestKind.ACQUIRE:
                    granted = await store.acquire(source, token, lease.ttl_ms)
                else:
                    granted = await store.renew(source, token, lease.ttl_ms)
            except LeaseStoreUnavailable as exc:
                log.debug("lease %s: %s failed: %s", source, request.kind.value, exc)
        send_answer.send_nowait((request, granted))

    def believe(now: float) -> None:
        nonlocal believed
        if lease.holds(now) != believed:
            believed = not believed
            if believed:
                log.info("lease %s: held until %.3f", source, lease.held_until)
            else:
                log.warning("lease %s: lost", source)
            on_change(believed)

    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                believe(now)
                request = lease.start_request(now)
                if request is not None:
                    nursery.start_soon(ask, request)
                with trio.move_on_at(lease.next_wakeup(now)):
                    answered, granted = await answers.receive()
                    if granted is None:
                        lease.failed(answered)
                    else:
                        lease.answered(answered, granted)
    finally:
        if believed:
            believed = False
            on_change(False)
        if lease.release():
            with trio.move_on_after(request_timeout, shield=True):
                try:
                    await store.release(source, token)
                except LeaseStoreUnavailable as exc:
                    log.warning(
                        "lease %s: release failed, the key expires instead: %s", source, exc
                    )
