"""Messages the application publishes itself (``POST /v1/publish``, ``Relay.publish``), and the
channel patterns that say who may publish or read them.

A publish body is ``{"channel": ..., "data": {...}}`` or a list of them; it is checked whole
before anything is published, so a bad item never leaves half a batch out. Tier patterns may
contain ``{key}``, replaced by the connection's key name, so one tier gives every key its own
private channels (``user:{key}:*``). Sans-IO.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import orjson

from relay.core.channels import matches_any
from relay.core.model import StreamKind, Update
from relay.core.protocol import MAX_CHANNEL_NAME, Refusal

__all__ = [
    "KEY_PLACEHOLDER",
    "MAX_PUBLICATIONS",
    "Publication",
    "PublishedSource",
    "parse_publications",
    "personal_patterns",
]

MAX_PUBLICATIONS: Final = 1000
"""Messages in one request; a bigger batch is split by the publisher, not buffered here."""

KEY_PLACEHOLDER: Final = "{key}"


@attrs.frozen
class Publication:
    channel: str
    data: dict[str, Any]


def _bad(message: str) -> Refusal:
    return Refusal(400, "bad_request", message)


def parse_publications(body: bytes) -> list[Publication]:
    """The messages of a publish request, or raises :class:`Refusal` 400 ``bad_request``
    naming the first problem (with the item's index in a list)."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"not valid JSON: {exc}") from None
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise _bad("nothing to publish")
    if len(items) > MAX_PUBLICATIONS:
        raise _bad(f"at most {MAX_PUBLICATIONS} messages per request")
    out = []
    for i, item in enumerate(items):
        where = f"item {i}: " if isinstance(raw, list) else ""
        if not isinstance(item, dict):
            raise _bad(f'{where}expected {{"channel": ..., "data": {{...}}}}')
        channel, data = item.get("channel"), item.get("data")
        if not isinstance(channel, str) or not channel:
            raise _bad(f"{where}'channel' must be a non-empty string")
        if len(channel) > MAX_CHANNEL_NAME:
            raise _bad(f"{where}channel names are at most {MAX_CHANNEL_NAME} characters")
        if not isinstance(data, dict):
            raise _bad(f"{where}'data' must be a JSON object")
        out.append(Publication(channel, data))
    return out


def _escape(name: str) -> str:
    """A key name as a literal inside an fnmatch pattern (``*``, ``?`` and ``[`` match only
    themselves), so a key named ``*`` cannot widen its own pattern to every user's channels."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def personal_patterns(
    patterns: tuple[str, ...] | list[str], key_name: str | None
) -> tuple[str, ...]:
    """A tier's patterns for one connection: ``{key}`` replaced by its key name.

    No name (anonymous access, an unnamed key: connections that would share them) or a name
    with a ``:`` gets no ``{key}`` pattern at all. ``*`` matches across ``:``, so key ``a``'s
    ``user:a:*`` would otherwise read key ``a:b``'s ``user:a:b:...``. (Key names cannot contain
    one; a token's ``sub`` can, and its holder then has no private channels.)"""
    if key_name is None or ":" in key_name:
        return tuple(p for p in patterns if KEY_PLACEHOLDER not in p)
    escaped = _escape(key_name)
    return tuple(p.replace(KEY_PLACEHOLDER, escaped) for p in patterns)


class PublishedSource:
    """A source with no upstream, whose channels the application publishes: what the hub
    asks of a source (``want``, ``unwant``, ``channel_state``) has nothing to do here, since no
    upstream is subscribed and state channels keep their latest message in the hub."""

    def __init__(self, name: str, state: tuple[str, ...] | list[str] = ()) -> None:
        self.name = name
        self._state = tuple(state)

    def kind(self, channel: str) -> StreamKind | None:
        """STATE for channels the configuration lists as state, EVENT for the others; None for
        a name that is not this source's ``NAME:...``."""
        source, _, rest = channel.partition(":")
        if source != self.name or not rest or len(channel) > MAX_CHANNEL_NAME:
            return None
        return StreamKind.STATE if matches_any(channel, self._state) else StreamKind.EVENT

    def update(self, publication: Publication) -> Update:
        """The publication as the hub publishes it (ValueError when it is not this source's):
        every message of a state channel is its whole state, so it goes out as a snapshot."""
        kind = self.kind(publication.channel)
        if kind is None:
            raise ValueError(f"{publication.channel!r} is not a channel of source {self.name!r}")
        return Update(publication.channel, publication.data, None, kind is StreamKind.STATE)

    def want(self, channel: str) -> None:
        """Nothing to subscribe to: published messages arrive whether or not anyone listens."""

    def unwant(self, channel: str) -> None:
        """Nothing to unsubscribe from."""

    def channel_state(self, channel: str) -> dict[str, Any] | None:
        """None: a state channel's latest message is its state, and the hub keeps that."""
        return None
