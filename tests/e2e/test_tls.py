"""TLS on the relay's port over real loopback sockets, with certificates from a trustme CA:
wss:// with trio-websocket and the ``websockets`` library, https:// with httpx, clients that do
not trust the CA, stalled TLS handshakes, and a certificate reloaded while clients stream."""

from __future__ import annotations

import io
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from relay.config import TlsConfig
from relay.tail import tail
from tests.certs import Certificates, issue
from tests.e2e.conftest import HOST, client, receive, running_stack, seqs_until, subscribe

pytestmark = pytest.mark.e2e

CHANNEL = "sim:trades:BTC-USD"


def tls_server(certs: Certificates, **server: Any) -> dict[str, Any]:
    return {"tls": certs.tls, **server}


def stream_with_websockets(url: str, context: ssl.SSLContext, count: int) -> list[dict[str, Any]]:
    """The ``websockets`` library's client: welcome, subscribe, ``count`` data messages."""
    from websockets.sync.client import connect

    with connect(url, ssl=context, open_timeout=5) as ws:
        welcome = orjson.loads(ws.recv(timeout=5))
        assert welcome["event"] == "welcome", welcome
        ws.send(orjson.dumps({"action": "subscribe", "channel": CHANNEL, "id": 1}).decode())
        subscribed = orjson.loads(ws.recv(timeout=5))
        assert subscribed["event"] == "subscribed" and subscribed["id"] == 1, subscribed
        assert subscribed["data"]["channel"] == CHANNEL
        return [orjson.loads(ws.recv(timeout=5)) for _ in range(count)]


def consecutive(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_wss_and_https_on_one_port(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    certs = issue(tmp_path)
    async with running_stack(nursery, server=tls_server(certs)) as stack:
        assert stack.url == f"wss://{HOST}:{stack.relay_port}/ws"
        messages = await trio.to_thread.run_sync(
            stream_with_websockets, stack.url, certs.client_context(), 10
        )
        assert {m["channel"] for m in messages} == {CHANNEL}
        assert consecutive([m["seq"] for m in messages])
        async with client(stack.url, ssl_context=certs.client_context()) as ws:
            data = await subscribe(ws, CHANNEL)
            while len(data) < 5:
                data.append(await receive(ws))
            assert consecutive([m["seq"] for m in data])
        async with httpx.AsyncClient(verify=certs.client_context(), timeout=5) as https:
            health = await https.get(f"https://{HOST}:{stack.relay_port}/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            assert health.http_version == "HTTP/1.1"
            ready = await https.get(f"https://{HOST}:{stack.relay_port}/readyz")
            assert ready.status_code == 200 and ready.json()["ready"] is True
    listening = [r.getMessage() for r in caplog.records if "listening on" in r.getMessage()]
    assert listening == [f"relay listening on wss://{HOST}:{stack.relay_port}/ws"]


async def test_clients_that_do_not_trust_the_ca_fail_while_the_relay_keeps_serving(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay")
    certs = issue(tmp_path)
    async with running_stack(nursery, server=tls_server(certs)) as stack:
        async with client(stack.url, ssl_context=certs.client_context()) as ws:
            seqs = [m["seq"] for m in await subscribe(ws, CHANNEL)]

            # The system's CAs only.
            refused = await trio.to_thread.run_sync(
                untrusted, stack.url, ssl.create_default_context()
            )
            assert "certificate verify failed" in str(refused)
            with pytest.raises(httpx.ConnectError):  # the system's CAs only
                await httpx.AsyncClient().get(f"https://{HOST}:{stack.relay_port}/healthz")
            # Plain HTTP on the TLS port: not a TLS handshake.
            with pytest.raises(httpx.HTTPError):
                await stack.http.get(f"http://{HOST}:{stack.relay_port}/healthz")
            # The streaming client missed nothing meanwhile.
            while len(seqs) < 20:
                message = await receive(ws)
                seqs.append(message["seq"])
            assert consecutive(seqs)
            assert len(stack.relay.sessions) == 1
        # And new clients that trust it still get in.
        messages = await trio.to_thread.run_sync(
            stream_with_websockets, stack.url, certs.client_context(), 3
        )
        assert len(messages) == 3
    failures = [r for r in caplog.records if r.getMessage().startswith("TLS handshake with")]
    assert len(failures) >= 3
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in failures)
    assert all(r.__dict__["address"] == HOST for r in failures)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


STALLED = 40
HANDSHAKE_TIMEOUT = 1.0
SLACK = 1.5
"""How late past the deadline a cut may be seen on a busy loop."""


def client_hello() -> bytes:
    """The first flight of a real TLS client, made without a socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def stall(port: int, sends: bytes, lifetimes: list[tuple[float, float]]) -> None:
    """A TCP connection that sends ``sends`` and then nothing; records how long the relay let
    it live (from before the connect, from after it)."""
    connecting = trio.current_time()
    stream = await trio.open_tcp_stream(HOST, port)
    opened = trio.current_time()
    async with stream:
        if sends:
            await stream.send_all(sends)
        while True:
            try:
                data = await stream.receive_some()
            except trio.BrokenResourceError:
                break
            if not data:
                break
    now = trio.current_time()
    lifetimes.append((now - connecting, now - opened))


async def test_stalled_tls_handshakes_are_cut_at_the_deadline_while_a_client_streams(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    certs = issue(tmp_path)
    hello = client_hello()
    # Nothing at all; half a ClientHello; a whole one, after which the client never answers
    # the server's flight.
    modes = {"silent": b"", "partial": hello[: len(hello) // 2], "hello": hello}
    server = tls_server(certs, handshake_timeout=HANDSHAKE_TIMEOUT)
    async with running_stack(nursery, rate=50.0, server=server) as stack:
        cut_after: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
        seqs: list[int] = []
        with trio.fail_after(15):
            started = trio.current_time()
            async with trio.open_nursery() as stalls:
                for i in range(STALLED):
                    mode = list(modes)[i % len(modes)]
                    stalls.start_soon(stall, stack.relay_port, modes[mode], cut_after[mode])
                await trio.sleep(0.2)
                async with client(stack.url, ssl_context=certs.client_context()) as ws:
                    seqs += [m["seq"] for m in await subscribe(ws, CHANNEL)]
                    assert not any(cut_after.values())
                    seqs += await seqs_until(ws, CHANNEL, started + HANDSHAKE_TIMEOUT + SLACK + 0.5)
                    assert sum(map(len, cut_after.values())) == STALLED
    for mode, lifetimes in cut_after.items():
        assert len(lifetimes) == len(range(list(modes).index(mode), STALLED, len(modes))), mode
        earliest = min(since_connecting for since_connecting, _ in lifetimes)
        assert earliest >= HANDSHAKE_TIMEOUT, (mode, earliest)
        latest = max(since_open for _, since_open in lifetimes)
        assert latest <= HANDSHAKE_TIMEOUT + SLACK, (mode, latest)
    assert len(seqs) > 50
    assert consecutive(seqs)


async def test_a_reloaded_certificate_serves_new_connections_and_open_ones_keep_theirs(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    old, new = issue(tmp_path, "old"), issue(tmp_path, "new")
    async with (
        running_stack(nursery, server=tls_server(old)) as stack,
        client(stack.url, ssl_context=old.client_context()) as before,
    ):
        seqs = [m["seq"] for m in await subscribe(before, CHANNEL)]
        stack.relay.reload_tls(TlsConfig(str(new.certificate), str(new.private_key)))
        # New connections get the new certificate: only its CA's clients get in.
        refused = await trio.to_thread.run_sync(untrusted, stack.url, old.client_context())
        assert "certificate verify failed" in str(refused)
        async with client(stack.url, ssl_context=new.client_context()) as after:
            await subscribe(after, CHANNEL)
            await receive(after)
        messages = await trio.to_thread.run_sync(
            stream_with_websockets, stack.url, new.client_context(), 2
        )
        assert len(messages) == 2
        # The connection opened before the reload goes on, with nothing missed.
        while len(seqs) < 20:
            seqs.append((await receive(before))["seq"])
        assert consecutive(seqs)


def untrusted(url: str, context: ssl.SSLContext) -> ssl.SSLCertVerificationError:
    """The ``websockets`` library's handshake with ``context``, refused by the client."""
    from websockets.sync.client import connect

    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        connect(url, ssl=context, open_timeout=5)
    return caught.value


async def test_relay_tail_over_wss(tmp_path: Path, nursery: trio.Nursery) -> None:
    certs = issue(tmp_path)
    async with running_stack(nursery, server=tls_server(certs)) as stack:
        with trio.fail_after(20):
            command = ["tail", "--count", "2", "--cafile", str(certs.ca_file), stack.url, CHANNEL]
            result = await trio.run_process(
                [sys.executable, "-m", "relay", *command],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        assert [orjson.loads(line)["channel"] for line in lines] == [CHANNEL] * 2
        # SSL_CERT_FILE does the same for any OpenSSL program, relay tail included.
        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SSL_CERT_FILE", str(certs.ca_file))
            assert await tail(stack.url, [CHANNEL], count=1, out=out, err=err) == 0
        # Without the CA: a prompt answer saying what to do, not a timeout.
        err = io.StringIO()
        with trio.fail_after(5):
            status = await tail(stack.url, [CHANNEL], count=1, out=io.StringIO(), err=err)
        assert status == 2
        assert "has a certificate this machine does not trust" in err.getvalue()
        assert "--cafile FILE" in err.getvalue()
        err = io.StringIO()
        missing = str(tmp_path / "missing.pem")
        assert await tail(stack.url, [CHANNEL], cafile=missing, err=err) == 2
        assert err.getvalue().startswith(f"relay tail: cannot use --cafile {missing}:")
