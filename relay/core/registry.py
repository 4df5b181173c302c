"""Who wants which channel, and therefore what each upstream must be subscribed to.

The reference count of a channel is the number of sessions holding it; the wanted set of a source
is its channels with a non-zero count. Both are derived from the same two maps, so they cannot
drift apart, and every mutation reports the transition (first in, last out) that the upstream
side acts on.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar, cast

from relay.core.channels import source_of

S = TypeVar("S", bound=Hashable)


class SubscriptionRegistry(Generic[S]):
    """Sessions and channels, both ways, with per-source wanted sets."""

    def __init__(self) -> None:
        # dict as an insertion-ordered set: fan-out iterates it, and order keeps runs repeatable.
        self._by_channel: dict[str, dict[S, None]] = {}
        self._by_session: dict[S, dict[str, None]] = {}
        self._by_source: dict[str, set[str]] = {}

    def add(self, session: S, channel: str) -> tuple[bool, bool]:
        """Subscribe; answers (added, first): added is False if it already held the channel,
        first is True if no other session held it, so the upstream must subscribe."""
        holders = self._by_channel.get(channel)
        if holders is None:
            holders = self._by_channel[channel] = {}
            self._by_source.setdefault(source_of(channel), set()).add(channel)
        if session in holders:
            return False, False
        holders[session] = None
        self._by_session.setdefault(session, {})[channel] = None
        return True, len(holders) == 1

    def remove(self, session: S, channel: str) -> tuple[bool, bool]:
        """Unsubscribe; answers (removed, last): last is True if nobody holds it any more."""
        holders = self._by_channel.get(channel)
        if holders is None or session not in holders:
            return False, False
        del holders[session]
        mine = self._by_session[session]
        del mine[channel]
        if not mine:
            del self._by_session[session]
        if holders:
            return True, False
        del self._by_channel[channel]
        source = source_of(channel)
        wanted = self._by_source[source]
        wanted.discard(channel)
        if not wanted:
            del self._by_source[source]
        return True, True

    def drop(self, session: S) -> list[str]:
        """Forget a session; answers the channels nobody holds any more."""
        released = []
        for channel in list(self._by_session.get(session, ())):
            _, last = self.remove(session, channel)
            if last:
                released.append(channel)
        return released

    def subscribers(self, channel: str) -> dict[S, None]:
        """The live holder map of a channel (do not mutate); empty when nobody holds it."""
        return self._by_channel.get(channel, cast("dict[S, None]", _EMPTY))

    def channels_of(self, session: S) -> list[str]:
        return list(self._by_session.get(session, ()))

    def count_of(self, session: S) -> int:
        return len(self._by_session.get(session, ()))

    def refcount(self, channel: str) -> int:
        return len(self._by_channel.get(channel, ()))

    def wanted(self, source: str) -> frozenset[str]:
        """Channels of ``source`` that at least one session holds."""
        return frozenset(self._by_source.get(source, ()))

    def sessions_of_source(self, source: str) -> set[S]:
        """Sessions holding any channel of ``source`` (for status events; not a hot path)."""
        out: set[S] = set()
        for channel in self._by_source.get(source, ()):
            out.update(self._by_channel[channel])
        return out

    def sessions(self) -> Iterator[S]:
        return iter(self._by_session)

    def channels(self) -> Iterator[tuple[str, int]]:
        """Each channel some session holds, with how many hold it (for the status page)."""
        return ((channel, len(holders)) for channel, holders in self._by_channel.items())

    def __len__(self) -> int:
        """Total subscriptions, for metrics."""
        return sum(len(h) for h in self._by_channel.values())

    @property
    def channel_count(self) -> int:
        return len(self._by_channel)


_EMPTY: dict[object, None] = {}
