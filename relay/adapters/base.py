"""The contract between an upstream's wire format and the relay's normalized schema.

An adapter is sans-IO: it turns upstream frames into normalized events and channel names into
upstream subscribe frames, and never touches a socket or a clock. That keeps every exchange's
quirks in one module that property tests can drive, and lets the supervisor stay generic.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs


class StreamKind(enum.Enum):
    """How a channel's messages relate to its state; decides snapshots and gap handling."""

    #: Independent events (trades). No state, so no snapshot on subscribe.
    EVENT = "event"
    #: Every message is the whole state (ticker). The latest message is the snapshot.
    STATE = "state"
    #: A snapshot followed by sequenced deltas (level-2 book). Gaps must be repaired.
    BOOK = "book"


@attrs.frozen
class Update:
    """One normalized message for one relay channel."""

    channel: str
    """Full relay channel name, e.g. ``sim:book:BTC-USD``."""
    data: dict[str, Any]
    """Payload in the protocol's normalized schema (protocol.md, "Normalized data")."""
    seq: int | None
    """The upstream's own per-stream sequence number, or None if the stream has none."""
    snapshot: bool
    """True when ``data`` is the channel's full state rather than a delta or an event."""


@attrs.frozen
class Heartbeat:
    """The upstream said it is alive; only feeds the watchdog."""


@attrs.frozen
class Ack:
    """The upstream confirmed (or refused) a subscribe or unsubscribe request."""

    ok: bool
    detail: str = ""


UpstreamEvent = Update | Heartbeat | Ack


class UpstreamFormatError(ValueError):
    """An upstream frame the adapter cannot understand. Logged and counted, never fatal."""


class Adapter(Protocol):
    """What the relay needs from one kind of upstream."""

    @property
    def source(self) -> str:
        """The source's name in the configuration: the first part of its channel names."""
        ...

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between the upstream's own heartbeats; the watchdog allows 1.5 times this."""
        ...

    def channels(self) -> frozenset[str]:
        """Every channel this source can serve (full relay names)."""
        ...

    def kind(self, channel: str) -> StreamKind:
        """The stream kind of one of :meth:`channels`."""
        ...

    def subscribe_frames(self, channels: Sequence[str]) -> list[str]:
        """Upstream frames that subscribe to ``channels`` (may be one frame for all)."""
        ...

    def unsubscribe_frames(self, channels: Sequence[str]) -> list[str]:
        """Upstream frames that unsubscribe from ``channels``."""
        ...

    def parse(self, frame: str | bytes) -> Iterable[UpstreamEvent]:
        """Normalize one upstream frame. Raises UpstreamFormatError on malformed input."""
        ...

    def snapshot_path(self, channel: str) -> str | None:
        """Path and query of the REST snapshot for ``channel``, relative to the REST base URL,
        or None when the stream has no snapshot endpoint."""
        ...

    def parse_snapshot(self, channel: str, body: bytes) -> Update:
        """Normalize a REST snapshot body into an Update with ``snapshot=True`` and the
        upstream ``seq`` the snapshot reflects. Raises UpstreamFormatError."""
        ...
