"""The client processes' side of the harness's control channel: JSON lines on stdin, one
answer line each on stdout, so the harness (``run.py``) drives the load generator, the
compression clients and the latency checker the same way."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.buffer.flush()


async def serve_commands(
    dispatch: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], hello: dict[str, Any]
) -> None:
    """Answer ``hello`` (with ``ready``), then each command until ``exit`` or end of input.

    A command that raises is answered ``ok: false`` with the error: the harness reports it,
    and the process stays usable for the next command.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    reply({"ok": True, "ready": True, **hello})
    while line := await reader.readline():
        cmd = orjson.loads(line)
        if cmd.get("cmd") == "exit":
            reply({"ok": True})
            break
        try:
            reply({"ok": True, **await dispatch(cmd)})
        except Exception as exc:
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
