"""Between the connection and the consumer: a bounded buffer of events with a chosen policy
for when the consumer is slower than the feed.

- ``block``: the connection waits for room, so the relay's own backpressure policy applies
  (its ``lagged`` events and snapshots reach the consumer). The only choice for books.
- ``drop_oldest``: the oldest data message goes; the consumer hears a :class:`Gap` right before
  that channel's next event.
- ``latest``: at most one pending data message per channel, the newest, with a :class:`Gap`
  for the ones it replaced: for whole-state channels (tickers), where only the last counts.

Snapshots, gaps, status and errors are never dropped: they are few, and losing one would
leave the consumer wrong rather than late. Sans-IO: the connection decides when to wait.
"""

from __future__ import annotations

import enum
from collections import deque
from itertools import islice

from relay.client.events import ClientEvent, Data, Gap, Snapshot

__all__ = ["BufferPolicy", "EventBuffer"]


class BufferPolicy(enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    LATEST = "latest"


class _Slot:
    """A queued event, and how many data messages of its channel were dropped just before it
    (announced as a :class:`Gap` when it comes to be taken)."""

    __slots__ = ("dropped", "event")

    def __init__(self, event: ClientEvent, dropped: int) -> None:
        self.event = event
        self.dropped = dropped


def _is_buffer_gap(event: ClientEvent) -> bool:
    return isinstance(event, Gap) and event.reason == "buffer"


def _channel(event: ClientEvent) -> str | None:
    return event.channel if isinstance(event, Data | Snapshot | Gap) else None


class EventBuffer:
    """Events for one consumer, oldest first."""

    def __init__(self, capacity: int, policy: BufferPolicy) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.policy = policy
        self._slots: deque[_Slot] = deque()
        self._data = 0
        """Data messages queued: what the capacity bounds (other events are few and never
        dropped, so they neither count nor make room)."""
        self._pending_data: dict[str, _Slot] = {}
        """``latest``: each channel's last slot, when it holds data (replaceable in place)."""

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def full(self) -> bool:
        """With ``block``, the producer must wait while this holds before putting data."""
        return self._data >= self.capacity

    def put(self, event: ClientEvent) -> None:
        channel = _channel(event)
        if self.policy is BufferPolicy.LATEST and isinstance(event, Data):
            pending = self._pending_data.get(event.channel)
            if pending is not None:
                pending.event = event
                pending.dropped += 1
                return
        if self.full and isinstance(event, Data):
            if self.policy is BufferPolicy.BLOCK:
                raise RuntimeError("the buffer is full: wait for room before putting data")
            if self.policy is BufferPolicy.DROP_OLDEST:
                self._drop_oldest_data()
        slot = _Slot(event, 0)
        self._slots.append(slot)
        if channel is not None:
            if isinstance(event, Data):
                self._data += 1
                self._pending_data[channel] = slot
            else:
                # Nothing may replace a message across a snapshot or a gap of its channel.
                self._pending_data.pop(channel, None)

    def _drop_oldest_data(self) -> None:
        slots = self._slots
        for i, slot in enumerate(slots):
            event = slot.event
            if not isinstance(event, Data):
                continue
            del slots[i]
            self._data -= 1
            channel = event.channel
            lost = slot.dropped + 1
            if self._pending_data.get(channel) is slot:
                del self._pending_data[channel]
            # The loss is announced before the channel's next event, or at the end by a gap of
            # its own (one per channel: later losses add to it).
            later = next((s for s in islice(slots, i, None) if _channel(s.event) == channel), None)
            if later is None:
                last = next((s for s in reversed(slots) if _channel(s.event) == channel), None)
                if last is not None and _is_buffer_gap(last.event):
                    later = last
            if later is None:
                slots.append(_Slot(Gap(channel, lost, "buffer"), 0))
            elif isinstance(later.event, Gap) and _is_buffer_gap(later.event):
                later.event = Gap(channel, (later.event.missed or 0) + lost, "buffer")
            else:
                later.dropped += lost
            return

    def take(self) -> ClientEvent | None:
        """The next event, or None when empty. A channel that lost messages here gets its
        :class:`Gap` first."""
        if not self._slots:
            return None
        slot = self._slots[0]
        event = slot.event
        if slot.dropped:
            assert isinstance(event, Data | Snapshot | Gap)
            missed, slot.dropped = slot.dropped, 0
            return Gap(event.channel, missed, "buffer")
        self._slots.popleft()
        if isinstance(event, Data):
            self._data -= 1
            if self._pending_data.get(event.channel) is slot:
                del self._pending_data[event.channel]
        return event
