"""Channel names: ``SOURCE:STREAM:SYMBOL`` or ``SOURCE:STREAM``.

The source part routes a channel to its upstream, so it is parsed in exactly one place.
"""

from __future__ import annotations

from fnmatch import fnmatchcase


def source_of(channel: str) -> str:
    """The upstream a channel belongs to (everything before the first ':')."""
    return channel.partition(":")[0]


def matches_any(channel: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """Tier and backpressure rules use shell-style patterns such as ``sim:*`` or ``*:ticker:*``."""
    return any(fnmatchcase(channel, p) for p in patterns)
