"""``relay tail``: subscribe and print, one message a line. The first debugging tool."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import orjson
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url


async def tail(
    url: str,
    channels: Sequence[str],
    *,
    key: str | None = None,
    count: int | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print every message until ``count`` data messages arrived or the server closes.

    Data goes to ``out`` exactly as received; events other than data go to ``err`` so that
    ``relay tail ... | jq`` sees only the stream. Answers a process exit status.
    """
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else None
    try:
        async with open_websocket_url(url, extra_headers=headers) as ws:
            await ws.send_message(
                orjson.dumps({"action": "subscribe", "channels": list(channels), "id": 1}).decode()
            )
            seen = 0
            while count is None or seen < count:
                message = await ws.get_message()
                text = message if isinstance(message, str) else message.decode()
                if text.startswith('{"channel"'):
                    print(text, file=out, flush=True)
                    seen += 1
                else:
                    print(text, file=err, flush=True)
            return 0
    except HandshakeError as exc:
        print(f"relay tail: could not connect to {url}: {exc!r}", file=err)
        return 2
    except ConnectionClosed as exc:
        print(f"relay tail: connection closed: {exc.reason}", file=err)
        return 1


def run(url: str, channels: Sequence[str], key: str | None, count: int | None) -> int:
    return trio.run(lambda: tail(url, channels, key=key, count=count))
