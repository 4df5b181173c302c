"""Headless Chromium as a client: a browser's WebSocket (which always offers permessage-deflate
and compresses what it sends) against the relay, driven over the Chrome DevTools protocol; the
status page; and a page with both the plain WebSocket and socket.io-client's browser build.

Without Chromium on PATH the test skips, saying how to install it; in CI it fails instead
(.ci/run installs it)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.ci import skip_or_fail
from tests.e2e.conftest import HOST, running_stack
from tests.e2e.node_sio import BROWSER_BUNDLE, require_node_sio

pytestmark = pytest.mark.e2e

CHANNEL: Final = "sim:trades:BTC-USD"
ARTIFACTS: Final = Path(
    os.environ.get("RELAY_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)
"""Where tests leave files for a person (the status page's screenshot)."""
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


async def call(page: WebSocketConnection, method: str, params: dict[str, Any]) -> Any:
    """One DevTools command, and its result."""
    await page.send_message(json.dumps({"id": 2, "method": method, "params": params}))
    while (answer := json.loads(await page.get_message())).get("id") != 2:
        pass  # events of the page
    assert "error" not in answer, answer
    return answer["result"]


PAGE_FIGURES: Final = """(() => {
  const ids = ["connections-total", "messages-total", "deliveries-total", "latency-p50",
               "messages-rate", "channels", "error"];
  if (ids.some((id) => document.getElementById(id) === null)) return null;  // still loading
  const figure = (id) => document.getElementById(id).textContent.replaceAll(",", "");
  return {connections: figure("connections-total"), messages: figure("messages-total"),
          deliveries: figure("deliveries-total"), p50: figure("latency-p50"),
          rate: figure("messages-rate"),
          channels: document.querySelectorAll("#channels tr").length,
          error: document.getElementById("error").textContent};
})()"""


def metric(text: str, name: str) -> int:
    """A counter or gauge of ``/metrics`` (Prometheus text), summed over its labels."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    ]
    assert values, f"{name} not in /metrics"
    return int(sum(values))


async def test_the_status_page_renders_and_agrees_with_metrics(
    nursery: trio.Nursery, tmp_path: Path, chromium: str
) -> None:
    admin = {"tiers": {"default": {"max_connections": 1000, "admin": True}}}
    async with (
        running_stack(nursery, rate=50.0, **admin) as stack,
        open_websocket_url(stack.url) as first,
        open_websocket_url(stack.url) as second,
        devtools(chromium, tmp_path / "profile") as page,
    ):
        for ws in (first, second):
            await ws.get_message()  # welcome
            await ws.send_message(json.dumps({"action": "subscribe", "channel": CHANNEL}))
        for ws in (first, second):
            for _ in range(3):
                await ws.get_message()  # subscribed, then data flowing
        # The figures stop moving, so the page and /metrics can be compared exactly.
        await stack.control("pause")
        await trio.sleep(0.5)
        metrics = (await stack.http.get(f"{stack.base}/metrics")).text
        viewport = {"width": 1280, "height": 1100, "deviceScaleFactor": 1, "mobile": False}
        await call(page, "Emulation.setDeviceMetricsOverride", viewport)
        await call(page, "Page.navigate", {"url": f"{stack.base}/status"})
        expected = {
            "connections": str(metric(metrics, "relay_connections")),
            "messages": str(metric(metrics, "relay_messages_published_total")),
            "deliveries": str(metric(metrics, "relay_deliveries_total")),
        }
        assert expected["connections"] == "2"
        with trio.fail_after(20):
            while True:
                shown = await evaluate(page, PAGE_FIGURES)
                # Two polls: the rates (and the plot) come from the second.
                if (
                    shown is not None
                    and all(shown[k] == v for k, v in expected.items())
                    and shown["rate"] != "-"
                ):
                    break
                await trio.sleep(0.2)
        assert shown["error"] == ""
        assert shown["channels"] == 1
        assert shown["p50"] != "-"
        assert shown["rate"] == "0"  # the market is paused
        # Kept for a person to look at (CI keeps test-artifacts/).
        shot = await call(page, "Page.captureScreenshot", {"format": "png"})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "status-page.png").write_bytes(base64.b64decode(shot["data"]))


PAGE: Final = Path(__file__).resolve().parent / "chromium_both.html"
"""The page with both endpoints; served with socket.io-client's browser build next to it."""
BOTH_FIGURES: Final = """(() => {
  if (document.getElementById("sio-messages") === null) return null;  // not loaded yet
  const text = (id) => document.getElementById(id).textContent;
  const items = (id) => [...document.querySelectorAll(`#${id} li`)];
  const seqs = (id) => items(id).map((li) => Number(li.dataset.seq));
  const channels = (id) => [...new Set(items(id).map((li) => li.dataset.channel))];
  return {ws: seqs("ws-messages"), sio: seqs("sio-messages"),
          sio_transports: items("sio-messages").map((li) => li.dataset.transport),
          ws_channels: channels("ws-messages"), sio_channels: channels("sio-messages"),
          ws_state: text("ws-state"), ws_error: text("ws-error"),
          sio_state: text("sio-state"), sio_transport: text("sio-transport"),
          sio_upgrade: text("sio-upgrade"), sio_ack: text("sio-ack"), sio_error: text("sio-error")};
})()"""


async def serve_files(nursery: trio.Nursery, files: dict[str, tuple[Path, str]]) -> int:
    """A tiny HTTP server on a port of its own (so the page's origin is not the relay's):
    ``GET /NAME`` answers the file ``files[NAME]`` with its content type; answers its port."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            with trio.move_on_after(10):
                while b"\r\n\r\n" not in head and (chunk := await stream.receive_some()):
                    head += chunk
            target = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else ""
            found = files.get(target.split("?", 1)[0].lstrip("/"))
            if found is None:
                status, body, kind = "404 Not Found", b"not found", "text/plain"
            else:
                status, body, kind = "200 OK", found[0].read_bytes(), found[1]
            await stream.send_all(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
    port: int = listeners[0].socket.getsockname()[1]
    return port


@pytest.fixture
def socketio_bundle() -> Path:
    """socket.io-client's browser build; skips (fails in CI) when it is not installed."""
    require_node_sio()
    return BROWSER_BUNDLE


@pytest.mark.parametrize("transports", ["", "websocket"], ids=["polling-then-upgrade", "websocket"])
async def test_a_page_reads_both_the_websocket_and_socketio_endpoints(
    nursery: trio.Nursery, tmp_path: Path, chromium: str, socketio_bundle: Path, transports: str
) -> None:
    """The page is served from another origin than the relay's: long-polling's requests are
    cross-origin (the relay answers them with ``Access-Control-Allow-Origin``), WebSockets are
    not subject to CORS."""
    async with (
        running_stack(nursery) as stack,
        devtools(chromium, tmp_path / "profile") as page,
    ):
        files = {
            "page.html": (PAGE, "text/html; charset=utf-8"),
            "socket.io.min.js": (socketio_bundle, "text/javascript"),
        }
        port = await serve_files(nursery, files)
        query = {
            "relay": f"{HOST}:{stack.relay_port}",
            "channel": CHANNEL,
            "transports": transports,
        }
        url = f"http://{HOST}:{port}/page.html?{urlencode(query)}"
        await call(page, "Page.navigate", {"url": url})
        with trio.fail_after(30):
            while True:
                shown = await evaluate(page, BOTH_FIGURES)
                if shown is not None:
                    assert shown["ws_error"] == "" and shown["sio_error"] == "", shown
                    upgraded = shown["sio_transports"].count("websocket")
                    if len(shown["ws"]) >= 10 and upgraded >= 10:
                        break
                await trio.sleep(0.2)
        for endpoint in ("ws", "sio"):
            seqs = shown[endpoint]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (endpoint, seqs)
            assert shown[f"{endpoint}_channels"] == [CHANNEL], shown
        assert shown["ws_state"] == "subscribed"
        assert shown["sio_state"] == "connected"
        if transports:
            assert shown["sio_transport"] == "websocket" and shown["sio_upgrade"] == "", shown
        else:
            # Connected over long-polling (or just upgraded), then upgraded; the stream goes
            # on, its seqs consecutive across the upgrade.
            assert shown["sio_transport"] in ("polling", "websocket"), shown
            assert shown["sio_upgrade"] == "websocket", shown
            moved = shown["sio_transports"]
            assert moved == sorted(moved, key=lambda t: t == "websocket"), moved
        assert json.loads(shown["sio_ack"]) == {"subscribed": [CHANNEL], "failed": []}
        # Both are relay sessions, the Socket.IO one as much as the other.
        metrics = (await stack.http.get(f"{stack.base}/metrics")).text
        assert metric(metrics, "relay_connections") == 2
