"""Headless Chromium as a client: a browser's WebSocket (which always offers permessage-deflate
and compresses what it sends) against the relay, driven over the Chrome DevTools protocol.

Without Chromium on PATH the test skips, saying how to install it; in CI it fails instead
(.ci/run installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.ci import skip_or_fail
from tests.e2e.conftest import HOST, running_stack

pytestmark = pytest.mark.e2e

CHANNEL: Final = "sim:trades:BTC-USD"
FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)
SUBSCRIBE_AND_READ: Final = """new Promise((resolve, reject) => {
  const ws = new WebSocket(%(url)s);
  const seqs = [];
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.event === "welcome") {
      ws.send(JSON.stringify({action: "subscribe", channel: %(channel)s, id: 1}));
    } else if (message.channel === %(channel)s && message.event === undefined) {
      seqs.push(message.seq);
      if (seqs.length === %(count)d) {
        resolve({seqs, extensions: ws.extensions});
        ws.close(1000);
      }
    }
  };
  ws.onerror = () => reject(new Error("WebSocket error"));
  ws.onclose = (event) => reject(new Error("closed early: " + event.code));
})"""
"""What the page runs: subscribe, then the seqs of the first messages and the extensions the
browser agreed to (``WebSocket.extensions``)."""


@pytest.fixture
def chromium() -> str:
    """The browser's path; skips (fails in CI) when it is not installed. A synchronous
    fixture: a skip raised inside a Trio test reaches pytest wrapped in an exception group."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = None if path else "Chromium is not on PATH: install it (`apt-get install chromium`)"
    skip_or_fail(missing, "Chromium test")
    assert path is not None
    return path


@asynccontextmanager
async def devtools(browser: str, profile: Path) -> AsyncIterator[WebSocketConnection]:
    """A headless Chromium on a blank page, and a DevTools protocol connection to that page."""
    process = await trio.lowlevel.open_process(
        [browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        with trio.fail_after(30):
            # A file the browser writes: nothing to wait on but the file itself.
            while not (port_file.exists() and port_file.read_text().strip()):  # noqa: ASYNC110
                await trio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://{HOST}:{port}/json/list")).json()
        (page,) = [t for t in targets if t["type"] == "page"]
        async with open_websocket_url(page["webSocketDebuggerUrl"]) as connection:
            yield connection
    finally:
        process.terminate()  # lets the browser take its helper processes down with it
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def evaluate(page: WebSocketConnection, expression: str) -> Any:
    """Run ``expression`` in the page and answer the value its promise resolves to."""
    await page.send_message(
        json.dumps(
            {
                "id": 1,
                "method": "Runtime.evaluate",
                "params": {"expression": expression, "awaitPromise": True, "returnByValue": True},
            }
        )
    )
    while (answer := json.loads(await page.get_message())).get("id") != 1:
        pass  # events of the page
    assert "exceptionDetails" not in answer["result"], answer
    return answer["result"]["result"]["value"]


async def test_chromium_negotiates_deflate_and_reads_compressed_frames(
    nursery: trio.Nursery, tmp_path: Path, chromium: str
) -> None:
    async with (
        running_stack(nursery, compression={"min_bytes": 0}) as stack,
        devtools(chromium, tmp_path / "profile") as page,
    ):
        script = SUBSCRIBE_AND_READ % {
            "url": json.dumps(stack.url),
            "channel": json.dumps(CHANNEL),
            "count": 5,
        }
        with trio.fail_after(30):
            result = await evaluate(page, script)
        seqs = result["seqs"]
        assert seqs == list(range(seqs[0], seqs[0] + 5))
        # The browser's side: the relay's answer, as Chromium took it.
        extensions = result["extensions"]
        assert extensions.startswith("permessage-deflate")
        assert "server_no_context_takeover" in extensions
        assert "client_no_context_takeover" in extensions
        # The relay's side: this client agreed to deflate, and its data went out compressed.
        relay = stack.relay
        assert relay.deflate_sessions == 1
        assert relay.hub.compressed_deliveries >= 5
