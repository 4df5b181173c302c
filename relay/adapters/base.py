"""The contract between an upstream's wire format and the relay's normalized model.

An adapter is sans-IO: it turns upstream frames into normalized events, channel names into
upstream subscribe frames, and repairs into HTTP requests, and never touches a socket or a clock.
That keeps every upstream's quirks in one module that property tests can drive, and lets the
supervisor stay generic. What an adapter may keep is per-connection bookkeeping (request ids,
subscription ids), which :meth:`Adapter.reset` clears when a new connection starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs

from relay.core.model import RepairKind, StreamKind, Update, UpstreamEvent
from relay.core.source import FetchSnapshot


@attrs.frozen
class HttpRequest:
    """A request the shell sends for a repair, exactly as the adapter built it."""

    method: str
    url: str
    json: Any = None
    """A JSON body (sent with ``content-type: application/json``), or None for no body."""


class Adapter(Protocol):
    """What the relay needs from one kind of upstream."""

    @property
    def source(self) -> str:
        """The source's name in the configuration: the first part of its channel names."""
        ...

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between the upstream's own heartbeats (or the relay's probes); the watchdog
        allows 1.5 times this without a sign of life."""
        ...

    def channels(self) -> frozenset[str]:
        """The channels a client can discover (full relay names). Families that are open, such
        as one channel per contract address, are not listed; :meth:`kind` still knows them."""
        ...

    def kind(self, channel: str) -> StreamKind | None:
        """The stream kind of a channel, or None when this source does not serve it."""
        ...

    def repair(self, channel: str) -> RepairKind:
        """How a lost message on a channel is recovered, as this upstream documents it."""
        ...

    def reset(self) -> None:
        """A new connection starts: forget the old one's request and subscription ids."""
        ...

    def subscribe_frames(self, channels: Sequence[str]) -> list[str]:
        """Upstream frames that subscribe to ``channels`` (may be one frame for all)."""
        ...

    def unsubscribe_frames(self, channels: Sequence[str]) -> list[str]:
        """Upstream frames that unsubscribe from ``channels``."""
        ...

    def probe_frame(self) -> str | None:
        """A request sent every heartbeat interval whose answer proves the upstream alive, for
        upstreams that are silent when idle; None for upstreams with their own heartbeat."""
        ...

    def parse(self, frame: str | bytes) -> Iterable[UpstreamEvent]:
        """Normalize one upstream frame. Raises UpstreamFormatError on malformed input."""
        ...

    def snapshot_request(self, repair: FetchSnapshot) -> HttpRequest | None:
        """The HTTP request that fetches a channel's snapshot, or None when the upstream has
        no snapshot to fetch for it."""
        ...

    def parse_snapshot(self, repair: FetchSnapshot, body: bytes) -> Update:
        """Normalize the answer to :meth:`snapshot_request` into an Update with
        ``snapshot=True`` and the upstream ``seq`` it reflects. Raises UpstreamFormatError."""
        ...
