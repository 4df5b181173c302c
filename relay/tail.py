"""``relay tail``: subscribe and print, one message a line. The first debugging tool."""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import urlsplit

import orjson
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    open_websocket_url,
)

EXAMPLE_URL = "ws://127.0.0.1:8765/ws"


async def tail(
    url: str,
    channels: Sequence[str],
    *,
    key: str | None = None,
    count: int | None = None,
    cafile: str | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print every message until ``count`` data messages arrived or the server closes.

    Data goes to ``out`` exactly as received; events other than data go to ``err`` so that
    ``relay tail ... | jq`` sees only the stream. Answers a process exit status: 0 after
    ``count`` messages, 1 when the server closes the connection or refuses every channel, 2
    when the connection cannot be opened (the reason on ``err``, with a hint).

    A ``wss://`` server's certificate is verified against ``cafile`` when given, else against
    the system's certificates (``SSL_CERT_FILE`` names another file, as for any OpenSSL
    program).
    """
    problem = url_problem(url)
    if problem:
        print(f"relay tail: {problem}", file=err)
        return 2
    context = None
    if cafile is not None:
        try:
            context = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            print(f"relay tail: cannot use --cafile {cafile}: {exc}", file=err)
            return 2
    if url.startswith("wss:"):
        refused = await certificate_refused(url, context or ssl.create_default_context())
        if refused is not None:
            print(
                f"relay tail: {url} has a certificate this machine does not trust: {refused}\n"
                "Give the certificate of the CA that signed it with --cafile FILE.",
                file=err,
            )
            return 2
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else None
    try:
        async with open_websocket_url(url, ssl_context=context, extra_headers=headers) as ws:
            await ws.send_message(
                orjson.dumps({"action": "subscribe", "channels": list(channels), "id": 1}).decode()
            )
            seen = 0
            answers = _Answers(len(set(channels)))
            while count is None or seen < count:
                message = await ws.get_message()
                text = message if isinstance(message, str) else message.decode()
                if text.startswith('{"channel"'):
                    print(text, file=out, flush=True)
                    seen += 1
                    continue
                print(text, file=err, flush=True)
                if answers.nothing_subscribed(text):
                    print("relay tail: no channel subscribed (see the errors above)", file=err)
                    return 1
            return 0
    except ConnectionRejected as exc:
        print(f"relay tail: {refusal(url, exc.status_code, exc.body, key)}", file=err)
        return 2
    except HandshakeError as exc:
        cause = exc.__cause__ or exc.__context__
        detail = str(cause) if cause is not None else repr(exc)
        print(
            f"relay tail: could not connect to {url}: {detail}\n"
            f"Is the relay running there? (`relay demo` starts one on {EXAMPLE_URL})",
            file=err,
        )
        return 2
    except ConnectionClosed as exc:
        print(f"relay tail: connection closed: {describe_close(exc.reason)}", file=err)
        return 1


async def certificate_refused(url: str, context: ssl.SSLContext) -> str | None:
    """Why the server's certificate is refused, or None (also when the server cannot be
    reached: the WebSocket connection that follows says so).

    A TLS handshake of its own before the WebSocket's: trio-websocket waits out its whole
    connect timeout, and then reports only the timeout, when the certificate is refused
    (python-trio/trio-websocket#199)."""
    parts = urlsplit(url)
    try:
        with trio.fail_after(10):
            stream = await trio.open_ssl_over_tcp_stream(
                parts.hostname or "", parts.port or 443, ssl_context=context
            )
            async with stream:
                await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            return exc.__cause__.verify_message or str(exc.__cause__)
    except (OSError, trio.TooSlowError):
        pass
    return None


class _Answers:
    """The server's answers to the subscribe command: every channel gets one, ``subscribed`` or
    an ``error`` naming it; an ``error`` naming none refuses the whole command."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.subscribed = 0
        self.refused = 0

    def nothing_subscribed(self, text: str) -> bool:
        """Take one event; True once every answer is in and none was ``subscribed``."""
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(event, dict) or event.get("id") != 1:
            return False
        data = event.get("data")
        if event.get("event") == "subscribed":
            self.subscribed += 1
        elif event.get("event") == "error":
            if not (isinstance(data, dict) and "channel" in data):
                return True
            self.refused += 1
        return self.subscribed == 0 and self.refused >= self.expected


def url_problem(url: str) -> str | None:
    """Why ``url`` is not one ``tail`` can open, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"not a URL: {url!r} ({exc}); expected one like {EXAMPLE_URL}"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return f"expected a ws:// or wss:// URL like {EXAMPLE_URL}, got {url!r}"
    return None


def refusal(url: str, status: int, body: bytes | None, key: str | None) -> str:
    """What to tell a person whose handshake the server answered with an HTTP error.

    The relay's refusals carry a JSON body ``{"error": code, "message": text}``; anything else
    is shown as text, shortened.
    """
    message = ""
    if body:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            message = data["message"]
        else:
            text = body.decode("utf-8", "replace").strip()
            message = text if len(text) <= 200 else text[:200] + "..."
    line = f"{url} refused the connection: HTTP {status}" + (f": {message}" if message else "")
    if status == 401:
        if key:
            line += "\nThe server does not accept this key: check --key against its [[keys]]."
        else:
            line += "\nThis relay requires an API key: pass one with --key KEY."
    elif status == 429:
        line += "\nToo many connections: close some, or try again later."
    return line


def describe_close(reason: CloseReason | None) -> str:
    if reason is None:
        return "without a close frame"
    text = f"code {reason.code}"
    if reason.name:
        text += f" ({reason.name})"
    if reason.reason:
        text += f": {reason.reason}"
    return text


def run(
    url: str,
    channels: Sequence[str],
    key: str | None,
    count: int | None,
    cafile: str | None = None,
) -> int:
    try:
        return trio.run(lambda: tail(url, channels, key=key, count=count, cafile=cafile))
    except (KeyboardInterrupt, BrokenPipeError, BaseExceptionGroup) as exc:
        if _only(exc, KeyboardInterrupt):
            return 130  # Ctrl-C: the usual way to stop it; no traceback
        if _only(exc, BrokenPipeError):
            # `relay tail ... | head`: the reader is gone. Stop quietly, and keep Python from
            # complaining again when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        raise


def _only(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(inner, kind) for inner in exc.exceptions)
    return isinstance(exc, kind)
