"""The accept loop (relay/server/listener.py): every connection waiting in the backlog is taken
in one wake-up, bounded per wake-up; transient accept failures are skipped or paused on, as
trio's own loop does; several processes can share a port with SO_REUSEPORT."""

from __future__ import annotations

import errno
import socket

import pytest
import trio
import trio.testing

from relay.server.listener import CAPACITY_PAUSE, MAX_BATCH, Listener


def connect_all(port: int, count: int) -> list[socket.socket]:
    """Connections completed by the kernel (in the backlog) before anything accepts them."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


class Handled:
    def __init__(self, expect: int = 0) -> None:
        self.streams: list[trio.SocketStream] = []
        self.expect = expect
        self.all_in = trio.Event()

    async def __call__(self, stream: trio.SocketStream) -> None:
        self.streams.append(stream)
        if len(self.streams) == self.expect:
            self.all_in.set()
        await trio.sleep_forever()


async def test_every_waiting_connection_is_taken_in_one_wake_up(nursery: trio.Nursery) -> None:
    listener = Listener("127.0.0.1", 0, backlog=128)
    clients = connect_all(listener.port, 50)
    handled = Handled(50)
    nursery.start_soon(listener.serve, handled)
    with trio.fail_after(5):
        await handled.all_in.wait()
    assert listener.accepted == 50
    assert listener.wakeups == 1
    for stream in handled.streams:  # ready for the relay's handshake: non-blocking, no delay
        assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    for client in clients:
        client.close()


async def test_a_wake_up_takes_at_most_a_batch_then_lets_others_run(
    nursery: trio.Nursery,
) -> None:
    listener = Listener("127.0.0.1", 0, backlog=1024)
    clients = connect_all(listener.port, MAX_BATCH + 20)
    handled = Handled(MAX_BATCH + 20)
    nursery.start_soon(listener.serve, handled)
    with trio.fail_after(5):
        await handled.all_in.wait()
    assert listener.wakeups == 2
    for client in clients:
        client.close()


class FailingSocket:
    """The listening socket, with accept failing as given before it works again."""

    def __init__(self, real: socket.socket, failures: list[int]) -> None:
        self.real = real
        self.failures = failures

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures:
            raise OSError(self.failures.pop(0), "injected")
        return self.real.accept()

    def close(self) -> None:
        self.real.close()


async def test_out_of_descriptors_pauses_then_accepts_again(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    listener = Listener("127.0.0.1", 0, backlog=16)
    real = listener.socket
    listener.socket = FailingSocket(real, [errno.EMFILE])  # type: ignore[assignment]
    clients = connect_all(listener.port, 3)
    handled = Handled(3)
    started = trio.current_time()
    nursery.start_soon(listener.serve, handled)
    with trio.fail_after(5):
        await handled.all_in.wait()
    assert trio.current_time() - started >= CAPACITY_PAUSE
    assert listener.accepted == 3
    for client in clients:
        client.close()


async def test_a_connection_aborted_before_its_accept_is_skipped(nursery: trio.Nursery) -> None:
    listener = Listener("127.0.0.1", 0, backlog=16)
    listener.socket = FailingSocket(listener.socket, [errno.ECONNABORTED])  # type: ignore[assignment]
    clients = connect_all(listener.port, 2)
    handled = Handled(2)
    nursery.start_soon(listener.serve, handled)
    with trio.fail_after(5):
        await handled.all_in.wait()
    assert listener.wakeups == 1
    for client in clients:
        client.close()


async def test_any_other_accept_failure_is_raised() -> None:
    listener = Listener("127.0.0.1", 0, backlog=16)
    listener.socket = FailingSocket(listener.socket, [errno.EINVAL])  # type: ignore[assignment]
    client = socket.create_connection(("127.0.0.1", listener.port))
    with pytest.raises(ExceptionGroup) as raised, trio.fail_after(5):
        await listener.serve(Handled())
    failed = raised.value.subgroup(OSError)
    assert failed is not None
    assert [exc.errno for exc in failed.exceptions if isinstance(exc, OSError)] == [errno.EINVAL]
    client.close()


def test_the_port_is_shared_only_with_reuse_port() -> None:
    first = Listener("127.0.0.1", 0, backlog=16, reuse_port=True)
    second = Listener("127.0.0.1", first.port, backlog=16, reuse_port=True)
    assert second.port == first.port
    with pytest.raises(OSError) as taken:
        Listener("127.0.0.1", first.port, backlog=16)
    assert taken.value.errno == errno.EADDRINUSE
    first.socket.close()
    second.socket.close()


def test_ipv6_hosts_get_an_ipv6_socket() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        listener = Listener("::1", 0, backlog=16)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert listener.socket.family == socket.AF_INET6
    listener.socket.close()
