"""Credentials over real loopback sockets, with the `websockets` library as the client: a real
``relay serve`` process reloading on SIGHUP (a revoked key's live connection closed with 1008
within a second; a narrowed tier removing a subscription with an event while the connection
stays), and JWT connections closed with 1008 when their token expires unless refreshed in place,
for HS256 and RS256."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import tomli_w
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from relay.keyfile import add_key
from relay.sim.server import SimServer
from tests.e2e.conftest import HOST, read_stderr_until, relay_command, running_stack

pytestmark = pytest.mark.e2e

INLINE_KEY = "inline-key-for-the-sighup-test"
HS_SECRET = "an-hs256-secret-of-at-least-32-bytes"


# The websockets library's sync client, run in threads -----------------------------------------


def open_client(exits: ExitStack, url: str, credential: str, *channels: str) -> ClientConnection:
    """Connect with a bearer credential (closed when ``exits`` is), subscribe, and check every
    ack."""
    headers = {"Authorization": f"Bearer {credential}"}
    # An unbounded queue: a bounded one stops reading when it is full, and then the client's
    # close waits out its timeout for a close frame it does not read.
    ws = exits.enter_context(
        connect(url, additional_headers=headers, open_timeout=5, max_queue=None)
    )
    assert orjson.loads(ws.recv(timeout=5))["event"] == "welcome"
    ws.send(orjson.dumps({"action": "subscribe", "channels": list(channels), "id": 1}).decode())
    acked: set[str] = set()
    while acked != set(channels):
        message = orjson.loads(ws.recv(timeout=5))
        if message.get("event") == "subscribed":
            acked.add(message["data"]["channel"])
    return ws


def next_message(ws: ClientConnection, field: str, value: str, within: float = 5.0) -> Any:
    """The next message whose ``field`` is ``value`` (an ``event``, or a data ``channel``)."""
    deadline = time.monotonic() + within
    while True:
        message: dict[str, Any] = orjson.loads(ws.recv(timeout=deadline - time.monotonic()))
        if message.get(field) == value:
            return message


def next_event(ws: ClientConnection, event: str) -> Any:
    return next_message(ws, "event", event)


def wait_closed(ws: ClientConnection, within: float = 10.0) -> tuple[int, str, float]:
    """Read until the server closes: its code, its reason, and when (time.monotonic)."""
    deadline = time.monotonic() + within
    try:
        while True:
            ws.recv(timeout=deadline - time.monotonic())
    except ConnectionClosed as closed:
        at = time.monotonic()
        assert closed.rcvd is not None, "closed without a close frame"
        return closed.rcvd.code, closed.rcvd.reason, at


def still_open(ws: ClientConnection, channel: str) -> bool:
    """Data keeps coming on ``channel`` (the connection was not dropped)."""
    return next_message(ws, "channel", channel)["channel"] == channel


async def in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


# A real `relay serve` process ---------------------------------------------------------------


@asynccontextmanager
async def relay_process(config_path: Path) -> AsyncIterator[tuple[trio.Process, str]]:
    """``relay serve`` as a user runs it; stopped with SIGTERM (and must exit 0) at the end."""
    async with relay_command("serve", "--config", str(config_path)) as process:
        output = await read_stderr_until(process, b"/ws\n")
        match = re.search(r"listening on (ws://\S+/ws)", output)
        assert match, output
        yield process, match.group(1)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0


def write_config(path: Path, sim_port: int, pro_channels: list[str], inline: bool = True) -> None:
    """A configuration for ``relay serve``: tiers pro (with these channels) and default, the
    inline key (as tier pro) unless ``inline`` is false, and the key file keys.toml."""
    config = {
        "server": {"host": HOST, "port": 0},
        "auth": {"key_file": "keys.toml"},
        "tiers": {"pro": {"channels": pro_channels}, "default": {}},
        "keys": [{"key": INLINE_KEY, "tier": "pro", "name": "inline"}] if inline else [],
        "sources": {
            "sim": {
                "kind": "sim",
                "url": f"ws://{HOST}:{sim_port}/ws",
                "rest_url": f"http://{HOST}:{sim_port}",
            }
        },
    }
    path.write_text(tomli_w.dumps(config))


@pytest.fixture
async def sim_port(nursery: trio.Nursery) -> int:
    port: int = await nursery.start(SimServer(rate=20.0).serve, HOST, 0)
    return port


def keys_cli(*argv: str) -> str:
    """`relay keys ...` as a user runs it; answers its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "relay", "keys", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


async def test_sighup_closes_revoked_keys_with_1008_within_a_second_and_keeps_the_others(
    sim_port: int, tmp_path: Path
) -> None:
    config_path = tmp_path / "relay.toml"
    write_config(config_path, sim_port, ["*"])
    now = datetime.now(UTC)
    revoked_secret = add_key(str(tmp_path / "keys.toml"), "revoked", "pro", now)
    kept_secret = add_key(str(tmp_path / "keys.toml"), "kept", "pro", now)
    channel = "sim:trades:BTC-USD"
    closes: dict[str, tuple[int, str, float]] = {}

    async def watch(name: str, ws: ClientConnection) -> None:
        closes[name] = await in_thread(wait_closed, ws)

    async with relay_process(config_path) as (process, url):
        exits = ExitStack()
        inline = await in_thread(open_client, exits, url, INLINE_KEY, channel)
        from_file = await in_thread(open_client, exits, url, revoked_secret, channel)
        kept = await in_thread(open_client, exits, url, kept_secret, channel)
        async with trio.open_nursery() as waiters:
            waiters.start_soon(watch, "inline", inline)
            waiters.start_soon(watch, "file", from_file)
            # The inline key goes from the configuration (only a SIGHUP applies that), the other
            # from the key file, with the command.
            write_config(config_path, sim_port, ["*"], inline=False)
            await in_thread(keys_cli, "revoke", "revoked", "--config", str(config_path))
            await trio.sleep(0.5)
            assert "inline" not in closes
            signalled = time.monotonic()
            process.send_signal(signal.SIGHUP)
        for name in ("inline", "file"):
            code, reason, at = closes[name]
            assert (code, reason) == (1008, "credentials revoked")
            assert at - signalled < 1.0
        assert closes["inline"][2] > signalled
        assert await in_thread(still_open, kept, channel)
        await in_thread(exits.close)


async def test_sighup_narrowing_a_tier_removes_a_subscription_with_an_event(
    sim_port: int, tmp_path: Path
) -> None:
    config_path = tmp_path / "relay.toml"
    write_config(config_path, sim_port, ["*"])
    add_key(str(tmp_path / "keys.toml"), "x", "pro", datetime.now(UTC))
    trades, ticker = "sim:trades:BTC-USD", "sim:ticker:BTC-USD"
    async with relay_process(config_path) as (process, url):
        exits = ExitStack()
        ws = await in_thread(open_client, exits, url, INLINE_KEY, trades, ticker)
        write_config(config_path, sim_port, ["sim:trades:*"])
        process.send_signal(signal.SIGHUP)
        event = await in_thread(next_event, ws, "unsubscribed")
        assert event == {
            "event": "unsubscribed",
            "data": {
                "channel": ticker,
                "reason": "forbidden",
                "message": f"your credentials no longer allow {ticker}",
            },
        }
        assert await in_thread(still_open, ws, trades)
        # Nothing more arrives on the removed channel, and subscribing again is forbidden.
        ws.send(orjson.dumps({"action": "subscribe", "channel": ticker, "id": 9}).decode())
        error = await in_thread(next_event, ws, "error")
        assert error["data"]["code"] == "forbidden" and error["id"] == 9
        await in_thread(exits.close)


# JWT ------------------------------------------------------------------------------------------


def _rsa_keys(directory: Path) -> tuple[rsa.RSAPrivateKey, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "public.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, str(path)


@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
async def test_an_expired_jwt_is_closed_with_1008_and_a_refreshed_one_is_kept(
    nursery: trio.Nursery, tmp_path: Path, algorithm: str
) -> None:
    if algorithm == "HS256":
        signing_key: Any = HS_SECRET
        jwt_config: dict[str, Any] = {"algorithms": ["HS256"], "secret": HS_SECRET}
    else:
        signing_key, public_path = _rsa_keys(tmp_path)
        jwt_config = {"algorithms": ["RS256"], "public_key_file": public_path}

    def token(sub: str, lifetime: float) -> str:
        claims = {"sub": sub, "exp": int(time.time() + lifetime), "tier": "default"}
        return jwt.encode(claims, signing_key, algorithm=algorithm)

    channel = "sim:trades:BTC-USD"
    async with running_stack(nursery, auth={"required": True, "jwt": jwt_config}) as stack:
        exits = ExitStack()
        expiring = await in_thread(open_client, exits, stack.url, token("dana", 2), channel)
        refreshed = await in_thread(open_client, exits, stack.url, token("erik", 2), channel)
        fresh = token("erik", 60)
        refreshed.send(orjson.dumps({"action": "auth", "token": fresh, "id": "r"}).decode())
        answer = await in_thread(next_event, refreshed, "authenticated")
        assert answer == {
            "event": "authenticated",
            "data": {"expires": jwt.decode(fresh, options={"verify_signature": False})["exp"]},
            "id": "r",
        }
        code, reason, _ = await in_thread(wait_closed, expiring)
        assert (code, reason) == (1008, "token expired")
        assert await in_thread(still_open, refreshed, channel)
        await in_thread(exits.close)
