"""The client processes' side of the harness's control channel: JSON lines on stdin, one
answer line each on stdout, so the harness (``run.py``) drives the load generator, the
compression clients and the latency checker the same way."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson

LOOP_ENV = "RELAY_BENCH_CLIENT_LOOP"
"""``uvloop`` (the default) or ``asyncio``: the event loop of the harness's own processes (the
clients, and the storm's floor server), never of a server under test. ``run.py`` sets it from
its ``--client-loop``."""


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a client process's ``main`` on the chosen event loop.

    uvloop by default: on two cores the clients share the CPU with the server under test, and
    at 100 msg/s to 1,000 clients the asyncio loop alone took about a core, so every
    implementation's latency was partly the load generator's wait for the CPU. picows is
    built for uvloop (its own benchmarks run on it). ``asyncio`` is kept to compare.
    """
    loop = os.environ.get(LOOP_ENV, "uvloop")
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    elif loop == "asyncio":
        asyncio.run(main)
    else:
        raise SystemExit(f"{LOOP_ENV} must be uvloop or asyncio, not {loop!r}")


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
