"""A first run as a person makes it: `python -m relay ...` as a real process, its output read as
they would read it (help, mistakes, refusals, logs)."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from relay.cli import DEMO_SIM_PORT
from tests.e2e.conftest import HOST, client, running_stack, subscribe

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "relay.toml"
PRO_KEY = "pro-EXAMPLE-KEY-replace-me"
FREE_KEY = "free-EXAMPLE-KEY-replace-me"


def relay_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "relay", *args]


def run_relay(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        relay_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


async def run_tail(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(20):
        return await trio.run_process(
            relay_command("tail", *args), capture_stdout=True, capture_stderr=True, check=False
        )


@asynccontextmanager
async def started(args: Sequence[str], ready: str) -> AsyncIterator[tuple[trio.Process, list[str]]]:
    """A `relay` process, once a line of its output contains ``ready``; answers the process and
    the lines of its stderr and stdout read so far (growing until the process ends)."""
    process = await trio.lowlevel.open_process(
        relay_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT
    )
    lines: list[str] = []
    seen_ready = trio.Event()

    async def read_output() -> None:
        assert process.stdout is not None
        buffer = b""
        while chunk := await process.stdout.receive_some():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                lines.append(line.decode())
                if ready in lines[-1]:
                    seen_ready.set()
        if buffer:
            lines.append(buffer.decode())

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_output)
            with trio.fail_after(20):
                while not seen_ready.is_set():
                    assert process.poll() is None, "\n".join(lines)
                    with trio.move_on_after(0.1):
                        await seen_ready.wait()
            yield process, lines
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Help and mistakes: a few plain lines, never a traceback


def test_help_is_plain_text() -> None:
    result = run_relay("--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "``" not in out and "\x1b" not in out and ":class:" not in out
    assert out.splitlines()[0].startswith("usage: relay")
    for command in ("serve", "demo", "simulate", "tail"):
        assert f"\n    {command} " in out
    assert "relay serve --config examples/relay.toml" in out
    assert "--log-format FORMAT" in out and "json" in out


@pytest.mark.parametrize("command", ["serve", "demo", "simulate", "tail"])
def test_each_command_help_is_plain_text(command: str) -> None:
    result = run_relay(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: relay {command}")
    assert "``" not in result.stdout


def test_no_command_prints_the_help() -> None:
    result = run_relay()
    assert result.returncode == 2
    assert "usage: relay" in result.stderr and "relay demo" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_config_says_what_to_do() -> None:
    result = run_relay("serve")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: the following arguments are required" not in result.stderr
    assert "relay serve --config examples/relay.toml" in result.stderr
    assert "relay simulate" in result.stderr
    assert "relay demo" in result.stderr


def test_serve_with_a_missing_file_points_at_the_example(tmp_path: Path) -> None:
    result = run_relay("serve", "--config", str(tmp_path / "relay.toml"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no configuration file" in result.stderr
    assert "examples/relay.toml" in result.stderr and "relay demo" in result.stderr


def test_serve_with_a_bad_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("[server]\nprot = 1\n")
    result = run_relay("serve", "--config", str(path))
    assert result.returncode == 2
    assert "unknown key 'server.prot'" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_rejects_a_port_out_of_range() -> None:
    result = run_relay("serve", "--config", str(EXAMPLE), "--port", "70000")
    assert result.returncode == 2
    assert "--port: must be between 0 and 65535, got 70000" in result.stderr


def test_serve_on_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_relay("serve", "--config", str(EXAMPLE), "--port", str(port))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}" in result.stderr
    assert "--port" in result.stderr


# ---------------------------------------------------------------------------------------------
# serve: --host and --port over the file's [server], logs as JSON


async def test_serve_host_and_port_override_the_file_and_json_logs(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the file's port is in use: only the override can work
        taken.bind((HOST, 0))
        taken.listen()
        file_port = taken.getsockname()[1]
        path = tmp_path / "relay.toml"
        path.write_text(
            f'[server]\nhost = "localhost"\nport = {file_port}\n\n[auth]\nrequired = false\n'
        )
        args = ["serve", "--config", str(path), "--host", HOST, "--port", "0"]
        async with started([*args, "--log-format", "json"], "relay listening on") as (
            process,
            lines,
        ):
            listening = orjson.loads(lines[-1])
            assert listening["level"] == "info" and listening["logger"] == "relay"
            match = re.fullmatch(
                r"relay listening on ws://127\.0\.0\.1:(\d+)/ws", listening["message"]
            )
            assert match, listening
            port = int(match.group(1))
            assert port not in (0, file_port)
            async with client(f"ws://{HOST}:{port}/ws"):
                pass
            # The relay logs the close when it has seen it, which can be after the client is
            # done: wait for that line, or SIGTERM could come first and the order below differ.
            with trio.fail_after(10):
                while not any(" closed: " in line for line in lines):  # noqa: ASYNC110
                    await trio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await process.wait() == 0
    # Every line on stderr is a JSON log record, the stop included.
    records = [orjson.loads(line) for line in lines if line.strip()]
    assert [r["message"] for r in records][-2:] == ["SIGTERM: stopping", "stopped"]
    assert records[-2]["signal"] == "SIGTERM"
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)


async def test_log_options_before_the_command_work_too(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("[server]\nport = 0\n")
    async with started(
        ["--log-format", "json", "--log-level", "info", "serve", "--config", str(path)],
        "relay listening on",
    ) as (_, lines):
        assert orjson.loads(lines[-1])["message"].startswith("relay listening on ws://127.0.0.1:")
    async with started(
        ["serve", "--config", str(path), "--log-format", "text"], "relay listening on"
    ) as (_, lines):
        assert re.fullmatch(
            r"\d\d:\d\d:\d\d INFO    relay: relay listening on ws://127\.0\.0\.1:\d+/ws", lines[-1]
        ), lines[-1]


# ---------------------------------------------------------------------------------------------
# The example configuration, as the README runs it: `relay simulate`, then `relay serve`


async def test_example_config_runs_in_front_of_relay_simulate_as_written() -> None:
    if not port_is_free(DEMO_SIM_PORT):
        pytest.skip(f"port {DEMO_SIM_PORT} (relay simulate's default) is in use here")
    async with (
        started(["simulate", "--rate", "20"], "relay simulator listening"),
        started(["serve", "--config", str(EXAMPLE), "--port", "0"], "upstream sim: connected") as (
            _,
            lines,
        ),
    ):
        match = next(
            m for line in lines if (m := re.search(r"relay listening on (ws://\S+/ws)", line))
        )
        url = match.group(1)
        assert url.startswith("ws://127.0.0.1:")  # the example binds loopback
        result = await run_tail("--key", PRO_KEY, "--count", "1", url, "sim:trades:BTC-USD")
        assert result.returncode == 0, result.stderr
        message = orjson.loads(result.stdout)
        assert message["channel"] == "sim:trades:BTC-USD"

        # The free key may not read books: every channel refused, tail says so and stops.
        result = await run_tail("--key", FREE_KEY, url, "sim:book:BTC-USD")
        assert result.returncode == 1
        assert b"error sim:book:BTC-USD: forbidden: your tier may not subscribe" in result.stderr
        assert b"relay tail: no channel subscribed" in result.stderr


# ---------------------------------------------------------------------------------------------
# tail: the server's refusal, and what to do about it


def _keyed(**tier: Any) -> dict[str, Any]:
    return {
        "auth": {"required": True},
        "tiers": {"default": {"max_connections": 1, **tier}},
        "keys": [{"key": "secret-key", "tier": "default"}],
    }


async def test_tail_without_a_key_shows_the_refusal_and_hints_at_key(
    nursery: trio.Nursery,
) -> None:
    async with running_stack(nursery, **_keyed()) as stack:
        result = await run_tail(stack.url, "sim:trades:BTC-USD")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "Traceback" not in err
    assert f"{stack.url} refused the connection: HTTP 401: an API key is required" in err
    assert "--key" in err
    assert result.stdout == b""


async def test_tail_with_a_wrong_key_says_it_is_unknown(nursery: trio.Nursery) -> None:
    async with running_stack(nursery, **_keyed()) as stack:
        result = await run_tail("--key", "wrong", stack.url, "sim:trades:BTC-USD")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "HTTP 401: unknown API key" in err
    assert "--key" in err


async def test_tail_over_the_connection_limit_shows_the_message(nursery: trio.Nursery) -> None:
    async with running_stack(nursery, **_keyed()) as stack:
        headers = [(b"authorization", b"Bearer secret-key")]
        async with client(stack.url, extra_headers=headers) as ws:
            await subscribe(ws, "sim:trades:BTC-USD")
            result = await run_tail("--key", "secret-key", stack.url, "sim:trades:BTC-USD")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "HTTP 429: at most 1 connections for this key" in err
    assert "Traceback" not in err


async def test_tail_with_a_key_receives_data(nursery: trio.Nursery) -> None:
    async with running_stack(nursery, **_keyed()) as stack:
        result = await run_tail(
            "--key", "secret-key", "--count", "2", stack.url, "sim:trades:BTC-USD"
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert [orjson.loads(line)["channel"] for line in lines] == ["sim:trades:BTC-USD"] * 2


async def test_tail_with_nothing_listening_says_so() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        result = await run_tail(f"ws://{HOST}:{port}/ws", "sim:trades:BTC-USD")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert f"could not connect to ws://{HOST}:{port}/ws" in err
    assert "relay demo" in err and "Traceback" not in err


async def test_tail_rejects_a_url_that_is_not_websocket() -> None:
    result = await run_tail("http://127.0.0.1:8765/ws", "sim:trades:BTC-USD")
    assert result.returncode == 2
    assert b"expected a ws:// or wss:// URL" in result.stderr


# ---------------------------------------------------------------------------------------------
# demo: where `relay tail` comes from in the second terminal


async def test_demo_says_how_to_tail_from_another_terminal() -> None:
    args = ["demo", "--port", "0", "--sim-port", "0"]
    async with started(args, "Ctrl-C stops") as (_, lines):
        text = "\n".join(lines)
    assert "Watch a stream, from another terminal" in text
    if sys.prefix != sys.base_prefix:  # run from a virtual environment, as the README does
        assert f". {Path(sys.prefix) / 'bin' / 'activate'}" in text
    assert re.search(r"relay tail ws://127\.0\.0\.1:\d+/ws sim:trades:BTC-USD", text)
