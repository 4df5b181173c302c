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

from relay.core.protocol import MAX_CHANNEL_NAME, Refusal

__all__ = ["MAX_PUBLICATIONS", "Publication", "parse_publications", "personal_patterns"]

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


def personal_patterns(patterns: tuple[str, ...] | list[str], key_name: str) -> tuple[str, ...]:
    """A tier's patterns for one connection: ``{key}`` replaced by its key name.

    A name with a ``:`` gets no ``{key}`` pattern at all: ``*`` matches across ``:``, so key
    ``a``'s ``user:a:*`` would otherwise read key ``a:b``'s ``user:a:b:...``. (Key names
    cannot contain one; a token's ``sub`` can, and its holder then has no private channels.)"""
    if ":" in key_name:
        return tuple(p for p in patterns if KEY_PLACEHOLDER not in p)
    escaped = _escape(key_name)
    return tuple(p.replace(KEY_PLACEHOLDER, escaped) for p in patterns)
