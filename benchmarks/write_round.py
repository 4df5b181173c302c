"""What one write round costs per client, on real sockets: the path between a message queued
in each subscriber's outbox and the bytes handed to the kernel (``Session.release``, with the
fan-out latency recorded as the relay records it), with nothing else running. The sockets are
AF_UNIX pairs, whose system call is cheaper than TCP loopback's, so the relay's own share of
a write shows. The harness's end-to-end figures include two other processes on the
same two cores; this isolates the relay's own per-write cost, which sets how long a round
to 1,000 clients takes and so the latency every client sees at light load.

On this kind of machine the timings of the same commit swing by a third from one run to the
next, more than most changes to this path are worth. ``--instructions`` counts instead: it
runs the whole per-client path of one message (``Hub.publish``, then a write round: the
``Hub.flush_round`` that writes it to each subscriber with nothing waiting, and the release
of those it queued for) under valgrind's
callgrind for 20 and for 120 rounds, and divides the difference by 100 rounds of 1,000
clients, so the set-up cancels out. The count is of user-space instructions (the kernel's
share of a write is the same whoever calls it), and repeats within a few hundredths of a
percent. ``--deflate`` makes every client one that agreed to permessage-deflate (as a browser
does), so the count includes the message's compression, once for all of them.

    python benchmarks/write_round.py                   # best of 7 runs, 1 and 8 messages per round
    python benchmarks/write_round.py --instructions    # needs valgrind (apt-get install valgrind)
    python benchmarks/write_round.py --instructions --deflate
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import trio
from hub_publish import Source  # sibling module: run as a script
from wsproto import ConnectionType
from wsproto.connection import Connection

from relay.core.deflate import CompressionPolicy
from relay.core.hub import Hub, Limits
from relay.core.latency import LatencyHistogram
from relay.core.model import StreamKind, Update
from relay.core.outbox import Policy
from relay.core.timers import SessionTimers
from relay.core.websocket import ServerWebSocket
from relay.server.rounds import WriteRounds
from relay.server.session import Session, SessionSettings
from relay.server.wallclock import wall_clock_ms

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


def subscribed(
    clients: int, deflate: int = 0
) -> tuple[Hub, WriteRounds, list[Session], list[tuple[socket.socket, ...]]]:
    """A hub whose batches wait for write rounds, as in the relay, and ``clients`` sessions
    on AF_UNIX socket pairs subscribed to one channel (their confirmations queued); with
    ``deflate``, the server window bits of the permessage-deflate every client agreed to."""
    hub = Hub(
        lambda _: StreamKind.EVENT,
        lambda _: Policy.DROP,
        epoch="bench",
        compression=CompressionPolicy() if deflate else None,
    )
    hub.add_source("sim", Source())
    timers: SessionTimers[Session] = SessionTimers(15.0, 60.0, 10.0)
    latency = LatencyHistogram()
    write_rounds = WriteRounds(hub, latency=latency)
    hub.flush_before_writing(write_rounds.published)
    pairs = [socket.socketpair() for _ in range(clients)]
    sessions = []
    for ours, _ in pairs:
        ours.setblocking(False)
        ws = ServerWebSocket(Connection(ConnectionType.SERVER), 1 << 20, deflate)
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
    return hub, write_rounds, sessions, pairs


async def microseconds_per_write(clients: int, per_round: int, rounds: int) -> float:
    hub, write_rounds, _, pairs = subscribed(clients)
    write_rounds.write_round()  # the subscribe confirmations
    for _, theirs in pairs:
        theirs.recv(1 << 20)
    spent = 0.0
    for n in range(rounds):
        now_ms = wall_clock_ms()
        for i in range(per_round):
            hub.publish(Update(CHANNEL, DATA, n * per_round + i, False), now_ms)
        hub.flush()  # queued: the round below only releases
        started = time.perf_counter()
        write_rounds.write_round()
        spent += time.perf_counter() - started
        for _, theirs in pairs:
            theirs.recv(1 << 20)
    for ours, theirs in pairs:
        ours.close()
        theirs.close()
    return spent / (rounds * clients) * 1e6


async def fan_out_unread(clients: int, rounds: int, deflate: int) -> None:
    """``rounds`` messages, each published, flushed by a write round and written by every
    session, as in the relay. Nobody reads: what a round writes (about 180 bytes a client)
    fits in the socket buffers 120 times over, and reading would add its own instructions."""
    hub, write_rounds, sessions, pairs = subscribed(clients, deflate)
    write_rounds.write_round()  # the subscribe confirmations
    for n in range(1, rounds + 1):
        hub.publish(Update(CHANNEL, DATA, n, False), wall_clock_ms())
        write_rounds.write_round()  # as the relay's round, without its task's ticks
    written = hub.round_writes + sum(session.writes for session in sessions)
    if written != clients * (rounds + 1):
        sys.exit(f"{written:,} writes of {clients * (rounds + 1):,}: a socket buffer filled")
    if deflate and hub.compressions != rounds:
        sys.exit(f"{hub.compressions} messages compressed of {rounds}")
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


def instructions_per_client(clients: int = 1000, deflate: int = 0) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("--instructions needs valgrind: apt-get install valgrind")
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for rounds in (20, 120):
            out = os.path.join(tmp, f"{rounds}.out")
            subprocess.run(
                [
                    *(valgrind, "--tool=callgrind", f"--callgrind-out-file={out}"),
                    *(sys.executable, __file__, "--count-rounds", str(rounds)),
                    *("--clients", str(clients), "--deflate", str(deflate)),
                ],
                check=True,
                capture_output=True,
            )
            with open(out) as f:
                found = re.search(r"^(?:totals|summary): (\d+)", f.read(), re.MULTILINE)
            assert found, f"no instruction total in {out}"
            totals.append(int(found[1]))
    return (totals[1] - totals[0]) // (100 * clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true", help="count, under callgrind")
    parser.add_argument("--count-rounds", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument(
        "--deflate",
        type=int,
        nargs="?",
        const=15,
        default=0,
        help="with --instructions: clients agreed to permessage-deflate (window bits, 15)",
    )
    args = parser.parse_args()
    if args.deflate and args.count_rounds is None and not args.instructions:
        parser.error("--deflate counts instructions: use it with --instructions")
    if args.count_rounds is not None:
        trio.run(fan_out_unread, args.clients, args.count_rounds, args.deflate)
    elif args.instructions:
        count = instructions_per_client(args.clients, args.deflate)
        framing = f", compressed (window bits {args.deflate})" if args.deflate else ""
        print(
            f"{args.clients:,} clients{framing}, 1 message per round: "
            f"{count:,} instructions per client"
        )
    else:
        for per_round in (1, 8):
            best = min(trio.run(microseconds_per_write, 1000, per_round, 30) for _ in range(7))
            print(f"1,000 clients, {per_round} message(s) per round: {best:6.2f} us a client write")


if __name__ == "__main__":
    main()
