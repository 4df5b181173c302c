"""Each channel's recent messages, kept as the frames already sent, so a client that comes back
with the last ``seq`` it saw gets exactly what it missed instead of a snapshot and a gap.

The history stores the same ``bytes`` object the fan-out offered to every client: keeping it
costs one append per channel message, never a copy or an encode, and a replay to plain clients
shares it too (clients of another framing get it re-framed: ``Framer.payload_of``). It is
bounded by count (a ``deque`` with ``maxlen``) and by age, measured on the relay's receive
times (``ts``, in milliseconds) that the caller passes in; nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

import attrs

__all__ = ["ChannelHistory", "HistoryBounds"]


@attrs.frozen
class HistoryBounds:
    """How much of a channel to keep: the last ``max_messages`` messages, none older than
    ``max_age_ms``. A channel with ``max_messages == 0`` keeps no history."""

    max_messages: int = attrs.field(validator=attrs.validators.ge(0))
    max_age_ms: int = attrs.field(validator=attrs.validators.gt(0))

    @property
    def enabled(self) -> bool:
        return self.max_messages > 0


class ChannelHistory:
    """The last messages of one channel, oldest first, as ``(seq, ts, frame)``.

    ``seq`` values are appended in increasing order (the hub numbers them), so the messages
    after a given ``seq`` are a suffix of the deque.
    """

    __slots__ = ("_entries", "_max_age_ms")

    def __init__(self, bounds: HistoryBounds) -> None:
        if not bounds.enabled:
            raise ValueError("a history needs max_messages >= 1")
        self._entries: deque[tuple[int, int, bytes]] = deque(maxlen=bounds.max_messages)
        self._max_age_ms = bounds.max_age_ms

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, seq: int, ts: int, frame: bytes) -> None:
        entries = self._entries
        entries.append((seq, ts, frame))
        # Usually nothing to expire: one comparison per message.
        if entries[0][1] <= ts - self._max_age_ms:
            self.expire(ts)

    def expire(self, now: int) -> None:
        """Forget messages that are ``max_age_ms`` old or older at ``now``."""
        entries = self._entries
        oldest_kept = now - self._max_age_ms
        while entries and entries[0][1] <= oldest_kept:
            entries.popleft()

    def after(self, seq: int, last_seq: int, now: int) -> list[bytes] | None:
        """Every frame after ``seq``, in order, when the history still holds all of them
        (``last_seq`` is the channel's latest); None when some are gone or ``seq`` is not one
        this channel has reached. ``[]`` when the client missed nothing."""
        if not 0 <= seq <= last_seq:
            return None
        if seq == last_seq:
            return []
        self.expire(now)
        entries = self._entries
        if not entries or entries[0][0] > seq + 1 or entries[-1][0] != last_seq:
            return None
        return [frame for _, _, frame in islice(entries, seq + 1 - entries[0][0], None)]

    def seqs(self) -> list[int]:
        """The seqs held, oldest first (for tests and diagnostics)."""
        return [seq for seq, _, _ in self._entries]

    def times(self) -> list[int]:
        """The receive times held, oldest first (for tests and diagnostics)."""
        return [ts for _, ts, _ in self._entries]
