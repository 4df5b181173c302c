"""Log lines for people and for machines.

Every upstream state change carries its fields as ``extra`` (source, state, reason, retry_in...).
Two formats, chosen with ``relay --log-format``:

- ``text`` (the default), for a person at a terminal: ``12:00:01 WARNING relay.upstream: ...``,
  the message followed only by the fields it does not already show, as ``key=value`` (values
  with spaces quoted, seconds rounded to milliseconds).
- ``json``, for a log collector: one JSON object a line with ``ts`` (Unix time), ``level``,
  ``logger``, ``message`` and every field, whether or not the message shows it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

# Libraries that log every request at INFO: a line per REST snapshot is noise at the relay's
# default level, so they only speak at WARNING unless the level is debug.
_CHATTY = ("httpx", "httpcore")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _rounded(value: Any) -> Any:
    """Durations are floats with 15 digits nobody reads: milliseconds are enough."""
    return round(value, 3) if isinstance(value, float) else value


def _in_message(value: Any, message: str) -> bool:
    if isinstance(value, float):
        return any(f"{value:.{digits}f}" in message for digits in (1, 2, 3))
    return str(value) in message


def _show(value: Any) -> str:
    text = str(_rounded(value))
    if not text or any(c.isspace() or c in '"=' for c in text):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message key=value ...``, fields the message shows left out."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        message = record.getMessage()
        extra = " ".join(
            f"{k}={_show(v)}" for k, v in _fields(record).items() if not _in_message(v, message)
        )
        if not extra:
            return line
        # Before a traceback, if any, so the fields stay on the event's own line.
        first, newline, rest = line.partition("\n")
        return f"{first} {extra}{newline}{rest}"


KeyValueFormatter = TextFormatter
"""The old name."""


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``message``, then every field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **{k: _rounded(v) for k, v in _fields(record).items()},
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in format ``fmt``."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
