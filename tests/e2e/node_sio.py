"""npm's ``socket.io-client`` as a client in end-to-end tests: tests/node/sio_client.mjs in a
subprocess, one JSON event a line on its stdout, one command a line on its stdin (as
:mod:`tests.e2e.node_ws` drives Node's ``ws``).

Without Node or without ``socket.io-client`` installed (``npm ci --prefix tests/node``, which
``nox -s tests`` runs) the tests that use it skip with that command; in CI they fail instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import orjson
import trio

from tests.ci import skip_or_fail
from tests.e2e.node_ws import INSTALL_COMMAND, NODE_DIR

CLIENT: Final = NODE_DIR / "sio_client.mjs"
BROWSER_BUNDLE: Final = NODE_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
"""socket.io-client's build for browsers (the page of the Chromium test loads it)."""

SIDE_EVENTS: Final = frozenset({"upgrade", "ping"})
"""Events that may come between any two others: :meth:`NodeSio.next` keeps them aside."""


def node_sio_missing() -> str | None:
    """Why the Socket.IO client cannot run here, or None when it can."""
    if not shutil.which("node"):
        return f"Node.js is not on PATH: install it (https://nodejs.org), then `{INSTALL_COMMAND}`"
    if not (NODE_DIR / "node_modules" / "socket.io-client" / "package.json").exists():
        return f"socket.io-client is not installed: run `{INSTALL_COMMAND}` (or `nox -s tests`)"
    return None


def require_node_sio() -> None:
    """Skip the calling test when the Socket.IO client cannot run here; fail it in CI."""
    skip_or_fail(node_sio_missing(), "Socket.IO client tests")


class NodeSio:
    """One socket.io-client: its events in order, and a way to send it commands."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""
        self.side: list[dict[str, Any]] = []
        """The side events (:data:`SIDE_EVENTS`) :meth:`next` passed over, in order."""

    async def event(self, within: float = 10.0) -> dict[str, Any]:
        """The next thing that happened to the client (see sio_client.mjs)."""
        assert self.process.stdout is not None
        with trio.fail_after(within):
            while b"\n" not in self._buffer:
                data = await self.process.stdout.receive_some(1 << 16)
                if not data:
                    raise EOFError(f"the Socket.IO client exited without a word: {self._buffer!r}")
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        event: dict[str, Any] = orjson.loads(line)
        return event

    async def next(self, within: float = 10.0) -> dict[str, Any]:
        """The next event that is not a side event (those go to :attr:`side`)."""
        while (event := await self.event(within))["event"] in SIDE_EVENTS:
            self.side.append(event)
        return event

    async def server(self, within: float = 10.0) -> tuple[str, Any]:
        """The next server event's name and its one argument (failing on anything else)."""
        event = await self.next(within)
        assert event["event"] == "server", event
        assert len(event["args"]) == 1, event
        return event["name"], event["args"][0]

    async def connected(self, within: float = 10.0) -> dict[str, Any]:
        """Wait for the engine's handshake and the namespace's ``connect``; answer the latter."""
        opened = await self.next(within)
        assert opened["event"] == "open", opened
        connect = await self.next(within)
        assert connect["event"] == "connect", connect
        return connect

    async def emit(self, name: str, *args: Any, ack: str | None = None) -> None:
        await self.send({"emit": name, "args": list(args), "ack": ack})

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(orjson.dumps(command) + b"\n")


@asynccontextmanager
async def node_sio(
    url: str,
    *,
    auth: dict[str, Any] | None = None,
    transports: list[str] | None = None,
    pings: bool = False,
) -> AsyncIterator[NodeSio]:
    """A running socket.io-client connecting to ``url`` (its path is the namespace); on exit
    its stdin is closed (it disconnects) and the process is waited for, killed if it does not
    end."""
    options: dict[str, Any] = {"url": url, "auth": auth, "transports": transports, "pings": pings}
    process = await trio.lowlevel.open_process(
        ["node", str(CLIENT), json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        yield NodeSio(process)
    finally:
        assert process.stdin is not None and process.stdout is not None
        await process.stdin.aclose()
        with trio.move_on_after(5):
            # Read what it still prints: a client blocked on a full pipe would never exit.
            while await process.stdout.receive_some(1 << 16):
                pass
            await process.wait()
        if process.returncode is None:
            process.kill()
        await process.stdout.aclose()
        await process.wait()
