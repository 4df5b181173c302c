"""What one write round costs per client, on real sockets: the path between a message queued
in each subscriber's outbox and the bytes handed to the kernel (``Session.release``, with the
fan-out latency recorded as the relay records it), with nothing else running. The sockets are
AF_UNIX pairs, whose system call is cheaper than TCP loopback's, so the relay's own share of
a write shows. The harness's end-to-end figures include two other processes on the
same two cores; this isolates the relay's own per-write cost, which sets how long a round
to 1,000 clients takes and so the latency every client sees at light load.

    python benchmarks/write_round.py        # best of 7 runs, 1 and 8 messages per round
"""

from __future__ import annotations

import socket
import time

import trio
from hub_publish import Source  # sibling module: run as a script
from wsproto import ConnectionType
from wsproto.connection import Connection

from relay.core.hub import Hub, Limits
from relay.core.latency import LatencyHistogram
from relay.core.model import StreamKind, Update
from relay.core.outbox import Policy
from relay.core.timers import SessionTimers
from relay.core.websocket import ServerWebSocket
from relay.server.rounds import CLOCK_EVERY, WriteRounds
from relay.server.session import Session, SessionSettings

CHANNEL = "sim:trades:BTC-USD"
DATA = {"symbol": "BTC-USD", "price": "100.5", "size": "0.1", "side": "buy", "trade_id": "1"}
SETTINGS = SessionSettings(
    heartbeat=15.0,
    heartbeat_timeout=10.0,
    idle_timeout=60.0,
    send_timeout=10.0,
    close_timeout=1.0,
    max_messages=4096,
    max_bytes=4 << 20,
    rate_limit=50.0,
    rate_burst=100,
)


async def microseconds_per_write(clients: int, per_round: int, rounds: int) -> float:
    hub = Hub(lambda _: StreamKind.EVENT, lambda _: Policy.DROP, epoch="bench")
    hub.add_source("sim", Source())
    timers: SessionTimers[Session] = SessionTimers(15.0, 60.0, 10.0)
    write_rounds = WriteRounds(hub)
    pairs = [socket.socketpair() for _ in range(clients)]
    sessions = []
    latency = LatencyHistogram()
    for ours, _ in pairs:
        ours.setblocking(False)
        ws = ServerWebSocket(Connection(ConnectionType.SERVER), 1 << 20)
        session = Session(
            trio.SocketStream(trio.socket.from_stdlib_socket(ours)),
            ws,
            hub,
            Limits(10),
            SETTINGS,
            timers,
            write_rounds,
            latency=latency,
        )
        hub.subscribe(session, [CHANNEL], None, Limits(10))
        sessions.append(session)
    for session in sessions:  # the subscribe confirmations
        session.release()
    for _, theirs in pairs:
        theirs.recv(1 << 20)
    spent = 0.0
    for n in range(rounds):
        now_ms = time.time_ns() // 1_000_000
        for i in range(per_round):
            hub.publish(Update(CHANNEL, DATA, n * per_round + i, False), now_ms)
        started = time.perf_counter()
        for i, session in enumerate(sessions):  # as the write rounds do it
            if not i % CLOCK_EVERY:
                now_ms = time.time_ns() // 1_000_000
            session.release(now_ms)
        spent += time.perf_counter() - started
        for _, theirs in pairs:
            theirs.recv(1 << 20)
    for ours, theirs in pairs:
        ours.close()
        theirs.close()
    return spent / (rounds * clients) * 1e6


def main() -> None:
    for per_round in (1, 8):
        best = min(trio.run(microseconds_per_write, 1000, per_round, 30) for _ in range(7))
        print(f"1,000 clients, {per_round} message(s) per round: {best:6.2f} us per client write")


if __name__ == "__main__":
    main()
