"""Socket I/O that skips the scheduler when the socket is ready: a connection's handshake.

A trio stream operation always checkpoints, and under a deadline it needs a cancel scope,
even when the socket could complete it at once. In a reconnect storm every scheduler pass
carries every handshake in progress, so each pass and each scope a handshake spares is spared
thousands of times; and a fresh socket often has its request head waiting, and always has room
for the 101. These helpers try one non-blocking system call first and fall back to waiting
(under the deadline) only when the socket is not ready. What they do at once does not
checkpoint, so they serve the handshake, a few calls per connection, and never a connection's
read loop, where a client that always had bytes ready would keep the scheduler to itself.
"""

from __future__ import annotations

import errno
import os

import trio


def receive_ready(stream: trio.abc.ReceiveStream, max_bytes: int) -> bytes | None:
    """What a plain socket has ready now (``b""`` when the peer has closed it), or None when
    it has nothing yet or the stream is not a plain socket (TLS, memory streams in tests).
    A broken connection raises :class:`trio.BrokenResourceError`, as ``receive_some`` does."""
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        return os.read(stream.socket.fileno(), max_bytes)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise _stream_error(exc) from exc


async def receive_by(
    stream: trio.abc.ReceiveStream, max_bytes: int, deadline: float
) -> bytes | bytearray | None:
    """The next bytes from ``stream`` (``b""`` at its end), or None when ``deadline`` passes
    first: what is ready at once without a checkpoint, else what comes once the socket is
    readable (``receive_some`` would first try the read that just failed again), under the
    deadline."""
    data = receive_ready(stream, max_bytes)
    if data is not None:
        return data
    with trio.move_on_at(deadline):
        if not isinstance(stream, trio.SocketStream):
            return await stream.receive_some(max_bytes)
        while data is None:
            await trio.lowlevel.wait_readable(stream.socket)
            data = receive_ready(stream, max_bytes)
        return data
    return None


async def send_by(stream: trio.abc.SendStream, data: bytes, deadline: float) -> bool:
    """Send all of ``data``; False when ``deadline`` passes first. A plain socket that takes
    all of it at once (a fresh one always takes a 101) gets it in one non-blocking write,
    without a checkpoint or a cancel scope; the rest goes through ``send_all`` under the
    deadline."""
    if isinstance(stream, trio.SocketStream):
        try:
            sent = os.write(stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _stream_error(exc) from exc
        if sent == len(data):
            return True
        data = data[sent:]
    with trio.move_on_at(deadline):
        await stream.send_all(data)
        return True
    return False


def _stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """The error trio's stream raises for the same failure: closed by us, or broken."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")
