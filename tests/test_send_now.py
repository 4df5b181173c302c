"""The handshake's one-write send (``relay.server.relay._send_now``): all at once when the
socket takes it, the rest through ``send_all`` when it does not, and a gone peer reported the
way trio reports it."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from relay.server.relay import _send_now


async def test_what_the_socket_takes_at_once_goes_in_one_write() -> None:
    ours, theirs = trio.socket.socketpair()
    await _send_now(trio.SocketStream(ours), b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert await theirs.recv(100) == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"


async def test_the_rest_follows_when_the_socket_is_full(nursery: trio.Nursery) -> None:
    ours, theirs = trio.socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 4096  # 1 MiB: far more than the socket takes at once
    received = bytearray()
    done = trio.Event()

    async def read() -> None:
        while len(received) < len(data):
            received.extend(await theirs.recv(65536))
        done.set()

    nursery.start_soon(read)
    with trio.fail_after(10):
        await _send_now(trio.SocketStream(ours), data)
        await done.wait()
    assert bytes(received) == data


async def test_a_gone_peer_is_a_broken_resource() -> None:
    ours, theirs = trio.socket.socketpair()
    theirs.close()
    with pytest.raises(trio.BrokenResourceError):
        await _send_now(trio.SocketStream(ours), b"hello")


async def test_other_streams_use_send_all() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    await _send_now(ours, b"hello")
    assert await theirs.receive_some(100) == b"hello"
