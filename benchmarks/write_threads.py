"""How long a round of 1,000 small writes to loopback TCP sockets takes from one thread and
from two, with nothing else in the process: is the kernel's share of a round, which runs with
the GIL released, worth sharing between two threads?

At 100 msg/s three quarters of the relay's CPU is the kernel's (docs/performance.md, Known
limits), and ``os.write`` releases the GIL around the system call, so a second thread could
run half a round's writes while the first runs the other half. This measures only that
upper bound: 1,000 connected pairs in one process, 180 bytes to each server-side socket per
round, the receiving sides drained between batches of rounds. The relay itself writes from
one thread; nothing here is in it.

    python benchmarks/write_threads.py            # 1,000 sockets, 100 rounds per figure
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import threading
import time
from collections.abc import Callable

FRAME = b"x" * 180


def connected_pairs(n: int) -> tuple[list[int], list[socket.socket]]:
    """``n`` loopback TCP connections: the server sides' fds (non-blocking, as the relay's),
    and every socket object, which must stay referenced to stay open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listener = socket.create_server(("127.0.0.1", 0), backlog=n)
    fds, keep = [], [listener]
    for _ in range(n):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.setblocking(False)
        client.setblocking(False)
        fds.append(server.fileno())
        keep += [client, server]
    return fds, keep


def write_all(fds: list[int]) -> None:
    write = os.write
    for fd in fds:
        write(fd, FRAME)


class SecondThread:
    """A thread that writes the second half of each round when told to, as a round's helper
    would: started once, woken per round."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.go = threading.Event()
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            self.go.wait()
            self.go.clear()
            write_all(self.fds)
            self.done.set()

    def round(self, first_half: list[int]) -> None:
        self.go.set()
        write_all(first_half)
        self.done.wait()
        self.done.clear()


def drain(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        try:
            while sock.recv(1 << 20):
                pass
        except BlockingIOError:
            pass


def timed_rounds(round_: Callable[[], None], rounds: int, keep: list[socket.socket]) -> float:
    """Median milliseconds of ``rounds`` rounds, 5 ms apart (light load: each round starts
    with the sockets idle)."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        round_()
        times.append(time.perf_counter() - started)
        time.sleep(0.005)
    drain(keep[1::2])  # the client sides: 180 B x rounds stays far below their buffers
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    fds, keep = connected_pairs(args.clients)
    half = len(fds) // 2
    helper = SecondThread(fds[half:])
    for _ in range(3):  # alternated, so a slow minute of the machine lands on both
        one = timed_rounds(lambda: write_all(fds), args.rounds, keep)
        two = timed_rounds(lambda: helper.round(fds[:half]), args.rounds, keep)
        print(f"{args.clients:,} writes a round: one thread {one:5.2f} ms, two {two:5.2f} ms")


if __name__ == "__main__":
    main()
