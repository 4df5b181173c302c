"""Node's ``ws`` as a client in end-to-end tests: tests/node/client.mjs in a subprocess, one
JSON event a line on its stdout, one command a line on its stdin.

Without Node or without ``ws`` installed (``npm ci --prefix tests/node``, which ``nox -s tests``
runs) the tests that use it skip with that command; in CI they fail instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import orjson
import trio

from tests.ci import skip_or_fail

NODE_DIR: Final = Path(__file__).resolve().parents[1] / "node"
CLIENT: Final = NODE_DIR / "client.mjs"
INSTALL_COMMAND: Final = "npm ci --prefix tests/node"


def node_ws_missing() -> str | None:
    """Why the Node client cannot run here, or None when it can."""
    if not shutil.which("node"):
        return f"Node.js is not on PATH: install it (https://nodejs.org), then `{INSTALL_COMMAND}`"
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").exists():
        return f"Node's ws is not installed: run `{INSTALL_COMMAND}` (or `nox -s tests`)"
    return None


def require_node_ws() -> None:
    """Skip the calling test when the Node client cannot run here; fail it in CI."""
    skip_or_fail(node_ws_missing(), "Node ws tests")


class NodeWs:
    """One Node ``ws`` client: its events in order, and a way to send it commands."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    async def event(self, within: float = 5.0) -> dict[str, Any]:
        """The next thing that happened to the client (see client.mjs)."""
        assert self.process.stdout is not None
        with trio.fail_after(within):
            while b"\n" not in self._buffer:
                data = await self.process.stdout.receive_some()
                if not data:
                    raise EOFError(f"the Node client exited without a word: {self._buffer!r}")
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        event: dict[str, Any] = orjson.loads(line)
        return event

    async def message(self, within: float = 5.0) -> dict[str, Any]:
        """The next frame the relay sent (failing on any other event)."""
        event = await self.event(within)
        assert event["event"] == "message", event
        data: dict[str, Any] = event["data"]
        return data

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(orjson.dumps(command) + b"\n")


@asynccontextmanager
async def node_ws(
    url: str,
    *,
    ca: Path | None = None,
    origin: str | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[NodeWs]:
    """A running Node client connecting to ``url``; on exit its stdin is closed (it closes
    with 1000) and the process is waited for, killed if it does not end."""
    options: dict[str, Any] = {
        "url": url,
        "ca": None if ca is None else str(ca),
        "origin": origin,
        "headers": headers or {},
    }
    process = await trio.lowlevel.open_process(
        ["node", str(CLIENT), json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        yield NodeWs(process)
    finally:
        assert process.stdin is not None and process.stdout is not None
        await process.stdin.aclose()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
        await process.stdout.aclose()
        await process.wait()
