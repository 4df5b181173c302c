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

from relay.client import (
    ClientRefused,
    ClientUnreachable,
    Data,
    Gap,
    RelayClient,
    ServerError,
    Snapshot,
    Status,
    Subscribed,
)
from relay.core.protocol import encode_envelope

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
    """Print every message until ``count`` data messages arrived (or forever).

    Built on the client library (:mod:`relay.client`): once connected, a dropped connection is
    reconnected and every channel resumed from where it was, with gaps and snapshots reported.
    Data goes to ``out`` as the relay sends it; everything else (subscriptions, errors, gaps,
    connection states) goes to ``err``, a line each, so that ``relay tail ... | jq`` sees only
    the stream. Answers a process exit status: 0 after ``count`` messages, 1 when every
    channel is refused or the relay closes with 1008, 2 when the first connection cannot be
    made (the reason on ``err``, with a hint): the user should fix the command, not wait.

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
    client = RelayClient(url, channels, key=key, ssl_context=context, retry_first=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            # The client's end (refused, unreachable) is raised here, by its iteration.
            return await _print_events(client, len(set(channels)), count, out, err)
        except (ClientRefused, ClientUnreachable) as exc:
            return _ended(exc, url, key, err)
        finally:
            nursery.cancel_scope.cancel()


def _ended(exc: ClientRefused | ClientUnreachable, url: str, key: str | None, err: TextIO) -> int:
    """What to tell the user when the client stopped for good, and the exit status."""
    if isinstance(exc, ClientRefused):
        if exc.body is not None:  # refused at the handshake: nothing was ever connected
            print(f"relay tail: {refusal(url, exc.code, exc.body, key)}", file=err)
            return 2
        print(f"relay tail: connection closed: {exc}", file=err)
        return 1
    if exc.status is not None:
        print(f"relay tail: {refusal(url, exc.status, exc.body, key)}", file=err)
    else:
        print(
            f"relay tail: {exc}\n"
            f"Is the relay running there? (`relay demo` starts one on {EXAMPLE_URL})",
            file=err,
        )
    return 2


async def _print_events(
    client: RelayClient, expected: int, count: int | None, out: TextIO, err: TextIO
) -> int:
    """Data to ``out`` as the relay sent it, everything else to ``err`` a line each; answers
    the exit status once ``count`` messages arrived, or every channel was refused."""
    seen = subscribed = refused = 0
    async for event in client:
        match event:
            case Data(channel, seq, ts, data, reorg):
                print(encode_envelope(channel, seq, ts, data, False, reorg).decode(), file=out)
            case Snapshot(channel, seq, ts, data):
                print(encode_envelope(channel, seq, ts, data, True).decode(), file=out)
            case Subscribed(channel, seq, _, recovered):
                subscribed += 1
                resumed = "" if recovered is None else f", recovered: {str(recovered).lower()}"
                print(f"subscribed {channel} (seq {seq}{resumed})", file=err, flush=True)
                continue
            case ServerError(code, message, channel):
                where = f" {channel}" if channel else ""
                print(f"error{where}: {code}: {message}", file=err, flush=True)
                refused += channel is not None
                if subscribed == 0 and refused >= expected:
                    print("relay tail: no channel subscribed (see the errors above)", file=err)
                    return 1
                continue
            case Gap(channel, missed, reason):
                lost = "an unknown number of" if missed is None else str(missed)
                print(f"gap in {channel}: {lost} messages missed ({reason})", file=err, flush=True)
                continue
            case Status(state, code, reason, delay):
                detail = "".join(
                    (
                        f" {code}" if code is not None else "",
                        f": {reason}" if reason else "",
                        f" in {delay:.1f} s" if delay is not None else "",
                    )
                )
                print(f"{state}{detail}", file=err, flush=True)
                continue
        out.flush()
        seen += 1
        if count is not None and seen >= count:
            return 0
    return 0


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
