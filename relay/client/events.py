"""What a :class:`~relay.client.RelayClient` hands its caller: typed events, one per thing
that happened, so a consumer can ``match`` on them instead of parsing the wire format."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["ClientEvent", "Data", "Gap", "ServerError", "Snapshot", "Status", "Subscribed"]


@attrs.frozen
class Data:
    """A channel message, in order: ``seq`` is always one more than the channel's previous
    event (a :class:`Data` or :class:`Snapshot`), unless a :class:`Gap` came in between."""

    channel: str
    seq: int
    ts: int
    data: dict[str, Any]
    reorg: bool = False


@attrs.frozen
class Snapshot:
    """The channel's full state at ``seq``: replaces whatever the consumer held."""

    channel: str
    seq: int
    ts: int
    data: dict[str, Any]
    source: str = "relay"
    """``relay`` (pushed on the socket) or ``rest`` (fetched from ``/v1/snapshot`` to repair a
    gap)."""


@attrs.frozen
class Gap:
    """Messages of ``channel`` the consumer will never see. ``missed`` is how many, when known
    (None across relay restarts, whose numbering is another epoch). A :class:`Snapshot`
    follows when the channel has state."""

    channel: str
    missed: int | None
    reason: str
    """``lagged`` (the relay dropped them for this client), ``not_recovered`` (a reconnect
    the history could not bridge), ``sequence`` (a jump the client noticed itself),
    ``buffer`` (this client's own buffer dropped them)."""


@attrs.frozen
class Status:
    """The connection's state: ``connected``, ``disconnected`` (with the close code and
    reason when there was one) or ``reconnecting`` (with the delay before the next try)."""

    state: str
    code: int | None = None
    reason: str = ""
    delay: float | None = None


@attrs.frozen
class Subscribed:
    """The relay confirmed a channel (on every connection): at ``seq`` in ``epoch``;
    ``recovered`` says whether a resume replayed what was missed (None on a first subscribe)."""

    channel: str
    seq: int
    epoch: str
    recovered: bool | None = None


@attrs.frozen
class ServerError:
    """An ``error`` event from the relay (a refused channel, a bad command)."""

    code: str
    message: str
    channel: str | None = None


ClientEvent = Data | Snapshot | Gap | Status | Subscribed | ServerError
