"""ChannelMirrors: which channel messages from Redis a cluster node relays to its clients.

A node relays a channel only while its view of it is consistent: it has read the channel's
seq (and state) in Redis at a known point of its Pub/Sub stream (a join's answer, which Redis
delivers in order with the channel's messages), and every message since then arrived, one seq
after the other. A message that skips seqs (the node's Pub/Sub connection dropped and came back,
or Redis restarted) means messages were lost: the channel resynchronizes, with a join that
fetches what was missed from Redis's history, and drops everything until that answer comes
(what arrives meanwhile is in the answer). A message at or below the seq already relayed is a
duplicate and is dropped.
"""

from __future__ import annotations

import enum

import attrs


class Verdict(enum.Enum):
    RELAY = "relay"
    """Next in order: fan it out."""
    DROP = "drop"
    """Not consistent yet, resynchronizing, a duplicate, or a channel this node no longer
    follows."""
    RESYNC = "resync"
    """Messages were lost before this one: ask Redis for them (since :meth:`resync_from`)."""


class Phase(enum.Enum):
    COLD = "cold"
    """Subscribed on Pub/Sub, waiting for the first join's answer."""
    LIVE = "live"
    RESYNCING = "resyncing"


@attrs.define(slots=True)
class _Channel:
    phase: Phase = Phase.COLD
    seq: int = 0


@attrs.frozen
class Resynced:
    """What a resynchronized channel's subscribers get: the messages they missed, in order, or
    (when Redis's history no longer holds them all) nothing but the fresh state."""

    missed: list[bytes] | None
    lost: int
    """How many messages they will never see (0 when the history covered the gap)."""


class ChannelMirrors:
    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}

    def __contains__(self, channel: str) -> bool:
        return channel in self._channels

    def follow(self, channel: str) -> bool:
        """The node subscribed to the channel on Pub/Sub. True when it was not following it."""
        if channel in self._channels:
            return False
        self._channels[channel] = _Channel()
        return True

    def unfollow(self, channel: str) -> None:
        self._channels.pop(channel, None)

    def followed(self) -> list[str]:
        return list(self._channels)

    def phase(self, channel: str) -> Phase | None:
        entry = self._channels.get(channel)
        return None if entry is None else entry.phase

    def seq(self, channel: str) -> int:
        """The last seq relayed (0 before the channel is live or when not followed)."""
        entry = self._channels.get(channel)
        return 0 if entry is None else entry.seq

    def live(self, channel: str) -> bool:
        entry = self._channels.get(channel)
        return entry is not None and entry.phase is Phase.LIVE

    def message(self, channel: str, seq: int) -> Verdict:
        entry = self._channels.get(channel)
        if entry is None or entry.phase is not Phase.LIVE or seq <= entry.seq:
            return Verdict.DROP
        if seq == entry.seq + 1:
            entry.seq = seq
            return Verdict.RELAY
        entry.phase = Phase.RESYNCING
        return Verdict.RESYNC

    def resync_from(self, channel: str) -> int:
        """The seq a resynchronization asks for what comes after."""
        return self._channels[channel].seq

    def joined(self, channel: str, seq: int) -> bool:
        """A client's join was answered at ``seq``. True when the channel is live at that seq
        (the subscriber can be added); False when the node stopped following the channel or it
        is resynchronizing (the client's join is answered again once it is live)."""
        entry = self._channels.get(channel)
        if entry is None or entry.phase is Phase.RESYNCING:
            return False
        # Cold (seq 0): the answer is the first consistent view. Live with a higher seq: Redis
        # holds messages this node never saw (a renumbering only Redis's loss could cause);
        # its answer is the truth from here on.
        entry.seq = max(entry.seq, seq)
        entry.phase = Phase.LIVE
        return True

    def resynced(self, channel: str, seq: int, missed: list[bytes] | None) -> Resynced | None:
        """A resynchronization's answer at ``seq``. None when it no longer applies (the channel
        is not followed or not resynchronizing)."""
        entry = self._channels.get(channel)
        if entry is None or entry.phase is not Phase.RESYNCING:
            return None
        gap = max(0, seq - entry.seq)
        entry.phase = Phase.LIVE
        entry.seq = max(entry.seq, seq)
        if missed is not None and len(missed) == gap:
            return Resynced(missed, 0)
        return Resynced(None, gap)

    def interrupted(self, channel: str) -> bool:
        """The channel's Pub/Sub subscription was made again (the connection was replaced):
        messages may have been lost. True when the channel must resynchronize (it was live)."""
        entry = self._channels.get(channel)
        if entry is None or entry.phase is not Phase.LIVE:
            return False
        entry.phase = Phase.RESYNCING
        return True
