"""What every adapter does with untrusted upstream text: parse one JSON object, read its fields
with their types checked (a malformed message is one UpstreamFormatError, never a KeyError or a
TypeError), and describe a bad value briefly in an error message."""

from __future__ import annotations

import re
from typing import Any

import orjson

from relay.core.model import UpstreamFormatError


def load_object(frame: str | bytes) -> dict[str, Any]:
    """A JSON object, or UpstreamFormatError for anything else."""
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise UpstreamFormatError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise UpstreamFormatError("not a JSON object")
    return message


def describe(value: object) -> str:
    """A short rendering of an untrusted value for an error message or log line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
"""A non-negative decimal as exchanges write prices and sizes: digits, optionally a fraction."""


def field_int(obj: dict[str, Any], key: str) -> int:
    """A non-negative integer field (an id, a sequence number)."""
    value = obj.get(key)
    # bool is an int subclass, and True is not a number.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UpstreamFormatError(f"{key!r} must be a non-negative integer, got {describe(value)}")
    return value


def field_decimal(obj: dict[str, Any], key: str) -> str:
    """A price or size field, as the exact decimal string the upstream wrote."""
    value = obj.get(key)
    if not isinstance(value, str) or not DECIMAL.fullmatch(value):
        raise UpstreamFormatError(f"{key!r} must be a decimal string, got {describe(value)}")
    return value


def field_object(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise UpstreamFormatError(f"{key!r} must be an object, got {describe(value)}")
    return value


def field_levels(obj: dict[str, Any], key: str) -> list[list[str]]:
    """Book levels written ``[[price, size], ...]`` with decimal strings."""
    value = obj.get(key)
    if not isinstance(value, list):
        raise UpstreamFormatError(f"{key!r} must be a list of [price, size]")
    levels = []
    for level in value:
        if not isinstance(level, list) or len(level) != 2:
            raise UpstreamFormatError(f"{key!r}: a level must be [price, size]")
        price, size = level
        if not (isinstance(price, str) and DECIMAL.fullmatch(price)):
            raise UpstreamFormatError(f"{key!r}: bad price {describe(price)}")
        if not (isinstance(size, str) and DECIMAL.fullmatch(size)):
            raise UpstreamFormatError(f"{key!r}: bad size {describe(size)}")
        levels.append([price, size])
    return levels


def source_name(source: str) -> str:
    """A source's name as adapters take it: it starts every channel name, so no ``:``."""
    if ":" in source:
        raise ValueError(f"source name must not contain ':': {source!r}")
    return source
