"""Where a client is on each channel, and what each arriving message means for it.

The relay numbers every channel's messages by one. A client that checks this itself can
reconnect with ``since`` to get exactly what it missed, drop what it already has, and tell a
gap it was told about (``lagged``, ``recovered: false``) from one it was not. Sans-IO: the
connection feeds it what arrived and acts on the verdicts.
"""

from __future__ import annotations

import enum

import attrs

from relay.client.events import Gap

__all__ = ["ChannelSequencer", "Verdict"]


class Verdict(enum.Enum):
    DELIVER = "deliver"
    """In order (or a snapshot at or past the position): hand it to the consumer."""
    DUPLICATE = "duplicate"
    """Already handed out (a replay overlapping a repair, a stale snapshot): drop it."""
    GAP = "gap"
    """Messages are missing before this one: announce the gap, repair, then offer it again."""


@attrs.define
class _Position:
    seq: int | None = None
    """The seq of the last message or snapshot handed out (or acknowledged as the start)."""
    epoch: str | None = None
    announced: int = 0
    """Messages the relay said it dropped (``lagged``) that no jump has accounted for yet."""


class ChannelSequencer:
    """Each subscribed channel's position, by the seqs the relay put on its messages."""

    def __init__(self) -> None:
        self._positions: dict[str, _Position] = {}

    def since(self, channel: str) -> dict[str, int | str] | None:
        """What to resume ``channel`` from on a new connection, or None for a fresh start."""
        position = self._positions.get(channel)
        if position is None or position.seq is None or position.epoch is None:
            return None
        return {"seq": position.seq, "epoch": position.epoch}

    def position(self, channel: str) -> int | None:
        position = self._positions.get(channel)
        return None if position is None else position.seq

    def forget(self, channel: str) -> None:
        """The consumer unsubscribed: a later subscribe starts fresh."""
        self._positions.pop(channel, None)

    def subscribed(self, channel: str, seq: int, epoch: str, recovered: bool | None) -> Gap | None:
        """The relay acknowledged a subscribe at ``seq`` in ``epoch``. Answers the gap the
        consumer must hear about when a resume could not be exact."""
        position = self._positions.setdefault(channel, _Position())
        previous, same_epoch = position.seq, position.epoch == epoch
        position.epoch = epoch
        position.announced = 0
        if recovered and same_epoch and previous is not None:
            return None  # the replay continues from previous + 1
        position.seq = seq
        if previous is None or (same_epoch and previous >= seq):
            return None
        return Gap(channel, seq - previous if same_epoch else None, "not_recovered")

    def lagged(self, channel: str, dropped: int) -> None:
        """The relay dropped ``dropped`` messages for this client: the jump to come is known."""
        position = self._positions.setdefault(channel, _Position())
        position.announced += dropped

    def message(self, channel: str, seq: int, snapshot: bool) -> Verdict:
        """What to do with a message; DELIVER moves the position to ``seq``."""
        position = self._positions.setdefault(channel, _Position())
        last = position.seq
        if last is None or (snapshot and seq >= last) or seq == last + 1:
            position.seq = seq
            return Verdict.DELIVER
        if seq <= last:
            return Verdict.DUPLICATE
        return Verdict.GAP

    def gap(self, channel: str, seq: int) -> Gap:
        """The gap before ``seq`` (after :meth:`message` answered GAP), as the consumer hears
        it: ``lagged`` when the relay announced at least that many drops."""
        position = self._positions[channel]
        assert position.seq is not None
        missed = seq - position.seq - 1
        announced = position.announced >= missed
        position.announced = max(0, position.announced - missed)
        return Gap(channel, missed, "lagged" if announced else "sequence")

    def skip_to(self, channel: str, seq: int) -> None:
        """Accept a jump that cannot be repaired (a channel without state): go on from ``seq``."""
        self._positions.setdefault(channel, _Position()).seq = seq
