"""500 connections that never finish their handshake, over real loopback sockets: each is cut
off at ``server.handshake_timeout`` (whether it sends nothing, half a request head, or trickles
a byte at a time), while a normal client connects, subscribes and streams all along."""

from __future__ import annotations

import base64
import os
import resource

import pytest
import trio

from tests.e2e.conftest import HOST, client, running_stack, seqs_until, subscribe

pytestmark = pytest.mark.e2e

STALLED = 500
HANDSHAKE_TIMEOUT = 3.0
"""Long enough that opening all 500 and the normal client fits inside it on a loaded machine."""
SLACK = 2.0
"""How late past the deadline a cut may be seen on a busy loop (500 connections at once)."""
CHANNEL = "sim:trades:BTC-USD"
# Each stalled connection is two descriptors in this process (client and relay side).
NEEDED_FDS = 2 * STALLED + 200


@pytest.fixture
def file_limit() -> None:
    """Enough descriptors for both ends of every connection: raise the soft limit, or skip.
    (A sync fixture: a skip raised inside the trio test would lose its reason.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < NEEDED_FDS:
        if hard != resource.RLIM_INFINITY and hard < NEEDED_FDS:
            pytest.skip(
                f"RLIMIT_NOFILE hard limit {hard} is below the {NEEDED_FDS} descriptors "
                f"{STALLED} stalled connections need on both ends"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (NEEDED_FDS, hard))


def request_head() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    ).encode()


MODES = ("silent", "partial", "almost", "trickle")


async def stall(
    port: int, mode: str, lifetimes: list[tuple[float, float]], answers: list[bytes]
) -> None:
    """One connection that never completes its request head; records how long the relay let
    it live, (from before our connect, from after it), and anything the relay sent."""
    connecting = trio.current_time()
    stream = await trio.open_tcp_stream(HOST, port)
    opened = trio.current_time()
    head = request_head()
    received = b""
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            try:
                if mode == "partial":
                    await stream.send_all(head[: len(head) // 2])
                elif mode == "almost":  # all but the final CRLF
                    await stream.send_all(head[:-2])
                elif mode == "trickle":  # a byte every 50 ms: the head would take seconds
                    for i in range(len(head) - 2):
                        await stream.send_all(head[i : i + 1])
                        await trio.sleep(0.05)
                await trio.sleep_forever()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await trio.sleep_forever()  # the relay hung up: the reader sees it too

        nursery.start_soon(send)
        while True:
            try:
                data = await stream.receive_some()
            except trio.BrokenResourceError:
                data = b""
            if not data:
                break
            received += data
        now = trio.current_time()
        lifetimes.append((now - connecting, now - opened))
        answers.append(received)
        nursery.cancel_scope.cancel()


async def test_stalled_handshakes_are_cut_at_the_deadline_while_a_client_streams(
    file_limit: None, nursery: trio.Nursery
) -> None:
    async with running_stack(
        nursery, rate=50.0, server={"handshake_timeout": HANDSHAKE_TIMEOUT}
    ) as stack:
        cut_after: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
        answers: list[bytes] = []
        seqs: list[int] = []
        with trio.fail_after(20):
            started = trio.current_time()
            async with trio.open_nursery() as stalls:
                for i in range(STALLED):
                    mode = MODES[i % len(MODES)]
                    stalls.start_soon(stall, stack.relay_port, mode, cut_after[mode], answers)
                # While they all hang there: a normal client gets in and streams.
                await trio.sleep(0.2)
                async with client(stack.url) as ws:
                    seqs += [m["seq"] for m in await subscribe(ws, CHANNEL)]
                    # It got in while the stalled connections were all still hanging there.
                    assert not any(cut_after.values()), {
                        m: v[:3] for m, v in cut_after.items() if v
                    }
                    # Stream past the moment every stalled connection is cut.
                    seqs += await seqs_until(ws, CHANNEL, started + HANDSHAKE_TIMEOUT + SLACK + 0.5)
                    assert len(stack.relay.sessions) == 1
                    # Every stalled connection is gone already.
                    assert sum(map(len, cut_after.values())) == STALLED

        for mode, lifetimes in cut_after.items():
            assert len(lifetimes) == STALLED // len(MODES), mode
            # Not before the deadline: the relay's clock starts at its accept, after we began to
            # connect (the cut is only seen later than it happens, never earlier)...
            earliest = min(since_connecting for since_connecting, _ in lifetimes)
            assert earliest >= HANDSHAKE_TIMEOUT, (mode, earliest)
            # ...and not long after it, counted from when our connect returned.
            latest = max(since_open for _, since_open in lifetimes)
            assert latest <= HANDSHAKE_TIMEOUT + SLACK, (mode, latest)
        # Cut off, not answered: there is no request to answer.
        assert set(answers) == {b""}
        # The normal client missed nothing while the relay dealt with them.
        assert len(seqs) > 50
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        await stack.wait_for(lambda: not stack.relay.sessions)
