"""The contract between an upstream's wire format and the relay's normalized model.

An adapter is sans-IO: it turns upstream frames into normalized events, channel names into
upstream subscribe frames, and repairs into HTTP requests, and never touches a socket or a clock.
That keeps every upstream's quirks in one module that property tests can drive, and lets the
supervisor stay generic. What an adapter may keep is per-connection bookkeeping (request ids,
subscription ids), which :meth:`Adapter.reset` clears when a new connection starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from relay.core.model import RepairKind, StreamKind, Update, UpstreamEvent
from relay.core.source import BookRules, FetchItem, FetchSnapshot


@attrs.frozen
class HttpRequest:
    """A request the shell sends for a repair, exactly as the adapter built it."""

    method: str
    url: str
    json: Any = None
    """A JSON body (sent with ``content-type: application/json``), or None for no body."""


@attrs.frozen
class HttpRepair:
    """How to run one repair over HTTP: the request, and the parser of its answer's body.

    The adapter hands both together, so the answer is always read by the code that knows what
    was asked: no second lookup that could disagree with the first."""

    request: HttpRequest
    parse: Callable[[bytes], Update | None]
    """Normalizes the body: the item or snapshot, or None when the upstream has no such item.
    Raises UpstreamFormatError for a body it cannot read."""


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

    def book_rules(self, channel: str) -> BookRules:
        """How the upstream keeps a book channel: its depth and checksum, if it has them."""
        ...

    def reset(self) -> None:
        """A new connection starts: forget the old one's request and subscription ids."""
        ...

    def subscribe_frames(self, channels: Sequence[str]) -> list[str]:
        """Upstream frames that subscribe to ``channels`` (may be one frame for all).

        :meth:`parse` must answer each of them with an :class:`Ack` naming its channels (for an
        upstream that confirms nothing, the channel's first message can stand for it): a
        subscribe unanswered for ``answer_timeout`` means the connection is dead."""
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

    def http_repair(self, repair: FetchSnapshot | FetchItem) -> HttpRepair | None:
        """How to fetch a channel's snapshot (an Update with ``snapshot=True`` and the upstream
        ``seq`` it reflects) or one of its numbered items; None when this upstream has no way
        to: the relay then cannot repair that channel."""
        ...
