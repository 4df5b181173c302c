"""What every adapter does with untrusted upstream text: parse one JSON object, and describe a
bad value briefly in an error message."""

from __future__ import annotations

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
