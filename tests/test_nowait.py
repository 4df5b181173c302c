"""The handshake's I/O that skips the scheduler when the socket is ready
(``relay.server.nowait``): one system call when the socket can do it at once, the stream under
the deadline when it cannot, and a gone or closed socket reported the way trio reports it.
Deadlines run on MockClock over real socket pairs, so the non-blocking system calls run."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from relay.server.nowait import receive_by, receive_ready, send_by

HEAD = b"GET /ws HTTP/1.1\r\nHost: relay.test\r\n\r\n"


async def test_what_the_socket_takes_at_once_goes_in_one_write() -> None:
    ours, theirs = trio.socket.socketpair()
    assert await send_by(trio.SocketStream(ours), b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 0.0)
    assert await theirs.recv(100) == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"


async def test_a_write_taken_at_once_needs_no_checkpoint() -> None:
    """Past its deadline, and in a cancelled scope, a write the socket takes at once is done:
    no checkpoint, so nothing could cancel it."""
    ours, theirs = trio.socket.socketpair()
    with trio.CancelScope() as scope:
        scope.cancel()
        assert await send_by(trio.SocketStream(ours), b"101", trio.current_time() - 1)
    assert await theirs.recv(100) == b"101"


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
        assert await send_by(trio.SocketStream(ours), data, trio.current_time() + 10)
        await done.wait()
    assert bytes(received) == data


async def test_a_write_the_peer_never_reads_gives_up_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, _theirs = trio.socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    start = trio.current_time()
    assert not await send_by(trio.SocketStream(ours), b"x" * (1 << 20), start + 5)
    assert trio.current_time() == start + 5


async def test_a_gone_peer_is_a_broken_resource() -> None:
    ours, theirs = trio.socket.socketpair()
    theirs.close()
    with pytest.raises(trio.BrokenResourceError):
        await send_by(trio.SocketStream(ours), b"hello", 0.0)


async def test_a_closed_socket_is_a_closed_resource() -> None:
    ours, _theirs = trio.socket.socketpair()
    stream = trio.SocketStream(ours)
    fd = ours.detach()  # the stream's socket no longer has a descriptor
    socket.close(fd)
    with pytest.raises(trio.ClosedResourceError):
        await send_by(stream, b"hello", 0.0)
    with pytest.raises(trio.ClosedResourceError):
        receive_ready(stream, 100)


async def test_other_streams_use_send_all() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    assert await send_by(ours, b"hello", trio.current_time() + 1)
    assert await theirs.receive_some(100) == b"hello"


async def test_a_waiting_head_is_read_without_a_checkpoint() -> None:
    ours, theirs = trio.socket.socketpair()
    await theirs.send(HEAD)
    with trio.CancelScope() as scope:
        scope.cancel()
        assert await receive_by(trio.SocketStream(ours), 1024, trio.current_time() - 1) == HEAD


async def test_receive_ready_is_none_until_bytes_arrive_and_empty_at_the_end() -> None:
    ours, theirs = trio.socket.socketpair()
    stream = trio.SocketStream(ours)
    assert receive_ready(stream, 100) is None
    await theirs.send(b"abc")
    assert receive_ready(stream, 2) == b"ab"
    assert receive_ready(stream, 100) == b"c"
    theirs.close()
    assert receive_ready(stream, 100) == b""


async def test_a_reset_connection_is_a_broken_resource() -> None:
    ours = trio.socket.socket()
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    await ours.connect(listener.getsockname())
    theirs, _ = await listener.accept()
    # SO_LINGER 0: closing sends a reset instead of a FIN.
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    theirs.close()
    await trio.sleep(0.05)
    with pytest.raises(trio.BrokenResourceError):
        receive_ready(trio.SocketStream(ours), 100)
    listener.close()


async def test_a_head_that_does_not_come_is_given_up_at_the_deadline(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    ours, theirs = trio.socket.socketpair()
    start = trio.current_time()
    assert await receive_by(trio.SocketStream(ours), 100, start + 3) is None
    assert trio.current_time() == start + 3

    async def later() -> None:
        await trio.sleep(1)
        await theirs.send(HEAD)

    nursery.start_soon(later)
    assert await receive_by(trio.SocketStream(ours), 1024, trio.current_time() + 3) == HEAD


async def test_other_streams_receive_through_receive_some() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    assert receive_ready(ours, 100) is None
    await theirs.send_all(b"hello")
    assert await receive_by(ours, 100, trio.current_time() + 1) == b"hello"
