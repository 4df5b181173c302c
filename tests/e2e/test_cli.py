"""The `relay` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import re
import signal

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.e2e.conftest import client, read_stderr_until, relay_command, subscribe

pytestmark = pytest.mark.e2e


async def test_demo_serves_and_stops_cleanly_on_sigterm() -> None:
    demo = relay_command("demo", "--port", "0", "--sim-port", "0", "--rate", "20")
    async with demo as process:
        output = await read_stderr_until(process, b"Ctrl-C stops")
        match = re.search(r"relay on (ws://\S+/ws)", output)
        assert match, output
        url = match.group(1)
        assert "relay tail" in output and "sim:book:BTC-USD" in output
        async with client(url) as ws:
            await subscribe(ws, "sim:trades:BTC-USD")
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 1001
        with trio.fail_after(10):
            assert await process.wait() == 0
