"""One client's bounded outbound queue, and what happens when it is full.

The hub's flush offers each channel's batch (its messages since the last write round, framed
back to back once) to every subscriber of the channel, synchronously, so :meth:`Outbox.offer_all`
and :meth:`Outbox.offer` are on the relay's hottest path: when the batch fits it costs a few
comparisons, a dict lookup and a list append. Everything else (a full queue) is the slow path,
where the channel's policy decides for each message, and it only ever touches this one client.

Frames are shared between clients and never copied or changed here.
"""

from __future__ import annotations

import enum

import attrs


class Policy(enum.Enum):
    """What to do with a data message for a client whose queue is full."""

    DROP = "drop"
    """Drop it and tell the client how many it lost (a ``lagged`` event) once it catches up."""
    COALESCE = "coalesce"
    """Keep only what the client needs to be current: the latest message for whole-state
    channels, a fresh snapshot for delta channels."""
    DISCONNECT = "disconnect"
    """Close the session as a slow consumer (4008): for clients that must never miss a message."""


class Offer(enum.IntEnum):
    """The result of :meth:`Outbox.offer`. Values are 0..3 so callers can count into a list."""

    QUEUED = 0
    DROPPED = 1
    COALESCED = 2
    OVERFLOW = 3
    """The DISCONNECT policy tripped: the session must close with 4008."""


_QUEUED = Offer.QUEUED


@attrs.frozen
class Drained:
    """Everything an outbox had to hand out, at once."""

    frames: list[bytes]
    """Queued frames in order, then the coalesced latest frame of each channel holding one."""
    lagged: dict[str, int]
    """Messages dropped per channel since the previous drain: one ``lagged`` event each."""
    resnapshot: list[str]
    """Delta channels that lost messages: the client needs a fresh snapshot of each before any
    further message of that channel."""


# Validators run at construction only: on the fan-out path every ``self._bytes += size`` would
# otherwise go through attrs' validating __setattr__ (measured: half the cost of an offer).
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Outbox:
    """Bounded by message count and by bytes, the bytes being what a slow client really costs.

    A channel that coalesced is "held" until the next drain: its later messages go to its slot
    (or are dropped behind its resnapshot mark) even if the queue has room again, because
    queueing them would deliver them before the older message in the slot, or deliver deltas
    before the snapshot they depend on. Control frames bypass the policies and the message limit
    but share the queue, so they stay in order with data.
    """

    max_messages: int = attrs.field(validator=attrs.validators.gt(0))
    max_bytes: int = attrs.field(validator=attrs.validators.gt(0))
    _queue: list[bytes] = attrs.field(init=False, factory=list, repr=False)
    """A list, not a deque: drain hands the whole list over without copying, and an empty
    list costs 56 bytes where an empty deque allocates a 600-byte block (per idle client).
    An entry may hold several messages of one channel (a write round's batch)."""
    _bytes: int = attrs.field(init=False, default=0)
    _messages: int = attrs.field(init=False, default=0)
    """Messages queued, data and control: what ``max_messages`` bounds."""
    _held: dict[str, bytes | None] = attrs.field(init=False, factory=dict, repr=False)
    """Held channels: the latest coalesced frame, or None for a resnapshot mark."""
    _dropped: dict[str, int] = attrs.field(init=False, factory=dict, repr=False)
    _overflowed: bool = attrs.field(init=False, default=False)

    def __len__(self) -> int:
        """Queued messages, data and control (coalesced slots not included)."""
        return self._messages

    @property
    def queued_bytes(self) -> int:
        """Bytes of the queued messages (coalesced slots not included)."""
        return self._bytes

    @property
    def pending(self) -> bool:
        """Whether :meth:`drain` has anything to hand out."""
        return bool(self._queue or self._held or self._dropped)

    @property
    def overflowed(self) -> bool:
        """Sticky: the client is a slow consumer and its session must close."""
        return self._overflowed

    def offer(self, channel: str, frame: bytes, policy: Policy, delta: bool) -> Offer:
        """Queue one data frame of ``channel``, or apply ``policy`` if it does not fit.

        ``delta`` says the message only makes sense on top of the previous ones (a book delta):
        coalescing then means "send a fresh snapshot instead" rather than "keep the latest".
        """
        size = len(frame)
        if (
            self._messages < self.max_messages
            and self._bytes + size <= self.max_bytes
            and channel not in self._held
        ):
            self._queue.append(frame)
            self._bytes += size
            self._messages += 1
            return _QUEUED
        return self._full(channel, frame, policy, delta)

    def offer_all(self, channel: str, frames: bytes, count: int) -> bool:
        """Queue ``count`` data messages of ``channel``, framed back to back in ``frames``, if
        they all fit (exactly when :meth:`offer` would queue each of them); otherwise change
        nothing and answer False, and the caller offers them one by one."""
        size = len(frames)
        if (
            self._messages + count <= self.max_messages
            and self._bytes + size <= self.max_bytes
            and channel not in self._held
        ):
            self._queue.append(frames)
            self._bytes += size
            self._messages += count
            return True
        return False

    def _full(self, channel: str, frame: bytes, policy: Policy, delta: bool) -> Offer:
        if policy is Policy.DROP:
            self._dropped[channel] = self._dropped.get(channel, 0) + 1
            return Offer.DROPPED
        if policy is Policy.COALESCE:
            held = self._held
            if delta:
                # The slot's whole-state message (if any) is superseded by the snapshot to come.
                held[channel] = None
            elif channel not in held or held[channel] is not None:
                held[channel] = frame
            # else: behind a resnapshot mark, the fresh snapshot will carry this state too.
            return Offer.COALESCED
        self._overflowed = True
        return Offer.OVERFLOW

    def offer_control(self, frame: bytes) -> bool:
        """Queue a control event (subscribed, error, pong, lagged, status...).

        Returns False, and marks the outbox overflowed, when the queue would pass twice
        ``max_bytes``: a client that lets even its control events pile up is not reading at all.
        """
        size = len(frame)
        if self._bytes + size > 2 * self.max_bytes:
            self._overflowed = True
            return False
        self._queue.append(frame)
        self._bytes += size
        self._messages += 1
        return True

    def take(self) -> list[bytes] | None:
        """The queued frames, when that is all there is to hand out (the common case: no
        :class:`Drained` to build); None when a slot, a resnapshot mark or a drop count waits
        too, and :meth:`drain` must hand out everything."""
        if self._held or self._dropped:
            return None
        frames = self._queue
        self._queue = []
        self._bytes = 0
        self._messages = 0
        return frames

    def drain(self) -> Drained:
        """Hand out everything and start empty; :attr:`overflowed` stays as it is."""
        frames = self._queue
        self._queue = []
        self._bytes = 0
        self._messages = 0
        held = self._held
        resnapshot: list[str] = []
        for channel, slot in held.items():
            if slot is None:
                resnapshot.append(channel)
            else:
                frames.append(slot)
        self._held = {}
        lagged = self._dropped
        self._dropped = {}
        return Drained(frames, lagged, resnapshot)

    def discard(self, channel: str) -> None:
        """The client unsubscribed from ``channel``: forget its slot, mark and drop count.

        Its frames already queued stay; they precede the ``unsubscribed`` acknowledgement.
        """
        self._held.pop(channel, None)
        self._dropped.pop(channel, None)
