"""The `relay` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.e2e.conftest import client, subscribe

pytestmark = pytest.mark.e2e


async def test_demo_serves_and_stops_cleanly_on_sigterm() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "relay", "demo", "--port", "0", "--sim-port", "0", "--rate", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        output = b""
        with trio.fail_after(20):
            while b"Ctrl-C stops" not in output:
                chunk = await process.stderr.receive_some()
                assert chunk, output.decode()
                output += chunk
        match = re.search(r"relay on (ws://\S+/ws)", output.decode())
        assert match, output.decode()
        url = match.group(1)
        assert "relay tail" in output.decode() and "sim:book:BTC-USD" in output.decode()
        async with client(url) as ws:
            await subscribe(ws, "sim:trades:BTC-USD")
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 1001
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
