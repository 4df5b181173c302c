"""The normalized model every source is translated into: what the core reasons about.

Adapters produce these and the hub, the source pipeline and the gap logic consume them, so they
live in the core and the core imports no adapter: a new kind of source adds an adapter and
touches nothing here.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs


class StreamKind(enum.Enum):
    """How a channel's messages relate to its state; decides snapshots and coalescing."""

    #: Independent events (trades, logs). No state, so no snapshot on subscribe.
    EVENT = "event"
    #: Every message is the channel's latest state (ticker, the newest block). The latest
    #: message is the snapshot a new subscriber gets.
    STATE = "state"
    #: A snapshot followed by sequenced deltas (level-2 book). Gaps must be repaired.
    BOOK = "book"


class RepairKind(enum.Enum):
    """How a source recovers a channel after a lost message; decided by the adapter, because
    each upstream documents its own way."""

    #: Nothing to recover from: a lost trade is gone, a ticker is whole in every message.
    #: Gaps are counted and logged, never hidden.
    NONE = "none"
    #: Fetch the book's REST snapshot and merge it with the deltas buffered meanwhile.
    REST_SNAPSHOT = "rest_snapshot"
    #: Unsubscribe and subscribe again: the upstream sends a fresh snapshot on subscribe.
    RESUBSCRIBE = "resubscribe"
    #: A chain of numbered items (blocks): fetch the missing ones by number, and walk back by
    #: parent hash when the upstream reorganizes.
    BACKFILL = "backfill"


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
    reorg: bool = False
    """A block of a new branch after a reorganization: the client drops the block it holds at
    this number and every block above it (protocol.md, "Ethereum sources")."""
    first_seq: int | None = None
    """For a delta that covers a range of upstream sequence numbers (Binance's ``U``..``u``):
    the first of them, ``seq`` being the last. None when it covers ``seq`` alone."""
    checksum: int | None = None
    """The upstream's checksum of its book after this message (Kraken's CRC32), verified
    against the relay's own book."""


@attrs.frozen
class Heartbeat:
    """The upstream said it is alive; only feeds the watchdog."""


@attrs.frozen
class Ack:
    """The upstream confirmed (or refused) a request: a subscribe, an unsubscribe, a probe."""

    ok: bool
    detail: str = ""
    channels: tuple[str, ...] = ()
    """The relay channels the request was about, where the upstream's answer names them (or
    the adapter correlated it by request id): what the relay stops waiting for."""


@attrs.frozen
class Head:
    """The upstream says a numbered stream has reached ``seq`` (an Ethereum node's answer to
    ``eth_blockNumber``): items up to it exist even if they were never announced, so the ones
    missing can be fetched now rather than at the next announcement."""

    channel: str
    seq: int


@attrs.frozen
class Reply:
    """A frame the adapter needs sent because of what it just parsed: an unsubscribe for a
    subscription the upstream confirmed after the relay had already given it up."""

    frame: str


UpstreamEvent = Update | Heartbeat | Ack | Head | Reply


class UpstreamFormatError(ValueError):
    """An upstream frame the adapter cannot understand. Logged and counted, never fatal."""
