"""The listening socket and its accept loop: every connection waiting in the backlog is
accepted at once.

``trio.serve_tcp`` accepts one connection per scheduler pass (each ``accept`` ends with a
checkpoint). In a reconnect storm, when thousands of clients arrive together, a pass is as
long as every handshake step it runs, so one accept per pass leaves the backlog to drain at a
few hundred connections a second while the handshakes already accepted crawl. Like asyncio's
and libuv's accept loops, this one waits for the socket to be readable and then accepts until
the backlog is empty (at most ``MAX_BATCH`` before letting everything else run), so a storm's
handshakes all proceed in the same passes.

It also owns the listening socket's options (``backlog``, and ``SO_REUSEPORT`` for several
processes on one port) and counts accepts and wake-ups for the metrics.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("relay.listener")

MAX_BATCH = 256
"""Connections accepted per wake-up before the loop yields to the rest of the relay."""
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""Out of descriptors or memory: retry after a pause rather than spin (as trio does)."""
CAPACITY_PAUSE = 0.1
IGNORED_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
"""A connection that went away between arriving and being accepted (as trio ignores)."""


class Listener:
    """A bound, listening TCP socket (IPv4 or IPv6) and its accept loop."""

    def __init__(self, host: str, port: int, backlog: int, reuse_port: bool = False) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.socket = sock
        self.port: int = sock.getsockname()[1]
        self.accepted = 0
        self.wakeups = 0
        """Times the loop woke to a readable socket; accepted / wakeups is the batch size."""

    async def serve(self, handler: Callable[[trio.SocketStream], Awaitable[object]]) -> None:
        """Accept until cancelled, each connection's handler in a nursery of its own tasks."""
        sock = self.socket
        try:
            async with trio.open_nursery() as handlers:
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    self.wakeups += 1
                    for _ in range(MAX_BATCH):
                        try:
                            conn, _ = sock.accept()
                        except BlockingIOError:
                            break
                        except OSError as exc:
                            if exc.errno in IGNORED_ERRNOS:
                                continue
                            if exc.errno not in CAPACITY_ERRNOS:
                                raise
                            log.error(
                                "accept failed: %s; retrying in %.1f s",
                                errno.errorcode[exc.errno],
                                CAPACITY_PAUSE,
                            )
                            await trio.sleep(CAPACITY_PAUSE)
                            break
                        self.accepted += 1
                        stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
                        handlers.start_soon(handler, stream)
                    await trio.lowlevel.checkpoint()
        finally:
            sock.close()
