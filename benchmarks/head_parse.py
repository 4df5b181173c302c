"""What reading one WebSocket upgrade's request head costs the front door
(``relay.server.frontdoor.read_request_head``), in-process: the head handed over in one
receive, parsed, and turned into the relay's ``RequestHead``. A reconnect storm pays it once
per client, where the harness's storm figures swing by more than the difference.

    python benchmarks/head_parse.py                  # this checkout's relay
    python benchmarks/head_parse.py --repo /tmp/old  # another checkout's (a git worktree)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import trio

HEAD = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"User-Agent: picows\r\n\r\n"
)
"""What the harness's load generator sends."""


class OneHead(trio.abc.ReceiveStream):
    """A stream whose first receive is the whole head (so no socket is involved)."""

    def __init__(self) -> None:
        self._data = HEAD

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data, self._data = self._data, b""
        return data

    async def aclose(self) -> None:
        pass


async def per_head(n: int) -> float:
    """Microseconds per head, over ``n`` heads."""
    from relay.server.frontdoor import read_request_head

    start = time.perf_counter()
    for _ in range(n):
        head = await read_request_head(OneHead(), 8192, trio.current_time() + 10)
        assert head is not None and head.is_upgrade
    return (time.perf_counter() - start) / n * 1e6


async def main(runs: int, n: int) -> None:
    await per_head(n // 10)  # warm up
    best = min([await per_head(n) for _ in range(runs)])
    print(f"read_request_head: {best:.1f} us per head (best of {runs} runs of {n:,})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("-n", type=int, default=20000)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    trio.run(main, args.runs, args.n)
