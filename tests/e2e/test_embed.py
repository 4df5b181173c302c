"""The relay embedded in a Trio program: it runs inside the caller's ``async with`` and leaves
nothing behind, and the examples/ programs run as written."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, connect_websocket_url

from relay import ConfigError, open_relay, parse_config
from relay.sim.server import SimServer
from tests.e2e.conftest import HOST, client, receive, relay_config, subscribe

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def config(sim_port: int) -> Any:
    return parse_config(relay_config(sim_port, published={"app": {"state": ["app:status"]}}))


async def test_it_serves_publishes_and_stops_with_nothing_left_running(
    nursery: trio.Nursery,
) -> None:
    sim = SimServer(rate=20)
    sim_port = await nursery.start(sim.serve, HOST, 0)
    baseline = trio.lowlevel.current_statistics().tasks_living
    async with open_relay(config(sim_port)) as relay:
        url = f"ws://{HOST}:{relay.port}/ws"
        async with client(url) as ws:
            await subscribe(ws, "app:alerts", "sim:trades:BTC-USD")
            assert await relay.publish("app:alerts", {"n": 1}) == 1
            assert await relay.publish("app:alerts", {"n": 2}) == 2
            got = []
            while len(got) < 2:
                message = await receive(ws)
                if message["channel"] == "app:alerts":
                    got.append((message["seq"], message["data"]))
            assert got == [(1, {"n": 1}), (2, {"n": 2})]
            stats = relay.stats()
            assert stats.connections == 1 and stats.subscriptions == 2
            assert stats.upstreams["sim"].state == "connected"
            assert sim.connections_open == 1
            with pytest.raises(ValueError, match=r"not a channel of a \[published\] source"):
                await relay.publish("sim:trades:BTC-USD", {})
        # A client still connected when the block ends (its connection lives in the test's
        # nursery, not the relay's).
        stayer = await connect_websocket_url(nursery, url)
        assert (await receive(stayer))["event"] == "welcome"
        relay_port = relay.port
    with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
        while True:
            await stayer.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == 1001
    with trio.fail_after(5):
        # The upstream connection closed, and every task the relay started is gone.
        while sim.connections_open or trio.lowlevel.current_statistics().tasks_living > baseline:  # noqa: ASYNC110
            await trio.sleep(0.01)
    with pytest.raises(OSError):
        await trio.open_tcp_stream(HOST, relay_port)


async def test_a_feed_publishes_an_async_iterator(nursery: trio.Nursery) -> None:
    sim = SimServer(rate=20)
    sim_port = await nursery.start(sim.serve, HOST, 0)
    go = trio.Event()

    async def feed() -> AsyncIterator[tuple[str, dict[str, Any]]]:
        await go.wait()
        for n in range(5):
            yield "app:status", {"n": n}

    async with (
        open_relay(config(sim_port), feeds={"app": feed()}) as relay,
        client(f"ws://{HOST}:{relay.port}/ws") as ws,
    ):
        await subscribe(ws, "app:status")
        go.set()
        got = [await receive(ws) for _ in range(5)]
    assert [(m["seq"], m["data"]["n"]) for m in got] == [(i + 1, i) for i in range(5)]
    # A state channel: every message is the whole state.
    assert all(m["snapshot"] is True for m in got)


async def test_a_feed_needs_its_source_and_its_errors_reach_the_program(
    nursery: trio.Nursery,
) -> None:
    async def empty() -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return
        yield  # pragma: no cover - makes this an async generator

    with pytest.raises(ConfigError, match=r"published\.nope"):
        async with open_relay(config(1), feeds={"nope": empty()}):
            pass

    async def wrong() -> AsyncIterator[tuple[str, dict[str, Any]]]:
        yield "other:x", {}

    with pytest.raises(ExceptionGroup) as raised:
        async with open_relay(config(1), feeds={"app": wrong()}):
            await trio.sleep_forever()
    assert raised.group_contains(ValueError, match="not one of its channels")


def test_the_embedding_example_runs_as_written() -> None:
    result = subprocess.run(
        [sys.executable, "examples/embedded.py", "--count", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("relay embedded on ws://127.0.0.1:")
    assert lines[1] == "app:status 1 {'state': 'started'}"
    ticks = [line for line in lines[2:6] if line.startswith("app:ticks ")]
    assert len(ticks) == 4
    seqs = [int(line.split()[1]) for line in ticks]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert lines[6].startswith("1 client, ")
