"""The reconnecting client: one WebSocket to a relay at a time, resumed after every drop.

Everything it decides (where each channel is, what a message means, what the buffer does when
the consumer is slow, how long to wait before reconnecting) is in the sans-IO parts
(:mod:`relay.client.sequence`, :mod:`relay.client.buffer`, :class:`relay.core.backoff.Backoff`);
this module only connects, reads, fetches snapshots and waits.

Close codes (protocol.md): 1008 (credentials refused) ends the client; 4029 (rate limited)
waits the longest backoff; everything else (1001 going away, 4008 slow consumer, a lost
connection) reconnects with exponential backoff and full jitter, and resubscribes every channel
with ``since``.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from relay.client.buffer import BufferPolicy, EventBuffer
from relay.client.events import ClientEvent, Data, ServerError, Snapshot, Status, Subscribed
from relay.client.sequence import ChannelSequencer, Verdict
from relay.core.backoff import Backoff

__all__ = ["ClientRefused", "ClientUnreachable", "RelayClient", "open_client"]

log = logging.getLogger("relay.client")

POLICY_CLOSE = 1008
RATE_LIMITED_CLOSE = 4029
#: HTTP answers to the upgrade that no retry can change.
_FINAL_STATUSES = frozenset({400, 401, 403, 404, 426})


class ClientRefused(Exception):
    """The relay refused these credentials or this request for good (HTTP 401/403/404 at the
    handshake, or close 1008): reconnecting would not help."""

    def __init__(self, message: str, code: int, body: bytes | None = None) -> None:
        super().__init__(message)
        self.code = code
        """The HTTP status of the refused handshake, or the close code (1008)."""
        self.body = body
        """The refusal's body (``{"error": ..., "message": ...}``), for an HTTP refusal."""


class ClientUnreachable(Exception):
    """The first connection failed and the client was told not to retry it
    (``retry_first=False``: a command-line tool whose user should fix the URL or wait)."""

    def __init__(self, message: str, status: int | None = None, body: bytes | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status of a refused handshake (429, 503...), None for a network failure."""
        self.body = body


class RelayClient:
    """Subscribes, reconnects, resumes, repairs; hands typed events to ``async for``.

    Construct it and run :meth:`run` in a nursery (or use :func:`open_client`).
    """

    def __init__(
        self,
        url: str,
        channels: Iterable[str] = (),
        *,
        key: str | None = None,
        buffer: int = 1024,
        policy: BufferPolicy | str = BufferPolicy.BLOCK,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        retry_first: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        http: httpx.AsyncClient | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self._wanted: dict[str, None] = dict.fromkeys(channels)
        self._key = key
        self._buffer = EventBuffer(buffer, BufferPolicy(policy))
        self._backoff = backoff or Backoff(initial=0.5, cap=30.0, reset_after=10.0)
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._retry_first = retry_first
        self._http = http
        self._random = random_source
        self.sequencer = ChannelSequencer()
        self._ws: WebSocketConnection | None = None
        self._readable = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._ended: BaseException | None = None
        self._finished = False
        self.connections = 0
        """Connections opened so far (for tests and diagnostics)."""

    # The consumer's side ---------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[ClientEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[ClientEvent]:
        while True:
            event = self._buffer.take()
            if event is not None:
                self._room.unpark_all()
                yield event
                continue
            if self._finished:
                if self._ended is not None:
                    raise self._ended
                return
            await self._readable.park()

    async def subscribe(self, *channels: str) -> None:
        """Add channels; sent now when connected, and on every reconnect."""
        new = [c for c in channels if c not in self._wanted]
        self._wanted.update(dict.fromkeys(new))
        ws = self._ws
        if ws is not None:
            for channel in new:
                await self._send_subscribe(ws, channel)

    async def unsubscribe(self, *channels: str) -> None:
        for channel in channels:
            self._wanted.pop(channel, None)
            self.sequencer.forget(channel)
        ws = self._ws
        if ws is not None and channels:
            command = {"action": "unsubscribe", "channels": list(channels)}
            await ws.send_message(orjson.dumps(command).decode())

    # The connection's side -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and reconnect until cancelled or refused for good; then the consumer's
        iteration ends (raising :class:`ClientRefused` in the second case)."""
        task_status.started()
        try:
            async with _http_client(self._http, self._ssl) as http:
                while True:
                    delay = await self._connect_once(http)
                    await self._put(Status("reconnecting", delay=delay))
                    await trio.sleep(delay)
        except (ClientRefused, ClientUnreachable) as ended:
            self._ended = ended
        finally:
            self._finished = True
            self._readable.unpark_all()

    async def _connect_once(self, http: httpx.AsyncClient) -> float:
        """One connection, from the handshake to its end; answers the delay before the next."""
        headers = [(b"authorization", f"Bearer {self._key}".encode())] if self._key else None
        code: int | None = None
        reason = ""
        try:
            async with open_websocket_url(
                self.url,
                ssl_context=self._ssl,
                extra_headers=headers,
                # A handshake the network swallows must not stall the client for a minute
                # (trio-websocket's default).
                connect_timeout=self._connect_timeout,
                disconnect_timeout=min(2.0, self._connect_timeout),
            ) as ws:
                try:
                    await self._session(ws, http)
                finally:
                    self._ws = None
                    self._backoff.disconnected(trio.current_time())
        except ConnectionRejected as rejected:
            message = f"the relay refused the connection: HTTP {rejected.status_code} " + (
                rejected.body or b""
            ).decode(errors="replace")
            if rejected.status_code in _FINAL_STATUSES:
                raise ClientRefused(message, rejected.status_code, rejected.body) from None
            if not self._retry_first and self.connections == 0:
                raise ClientUnreachable(message, rejected.status_code, rejected.body) from None
            code, reason = rejected.status_code, "refused"
        except ConnectionClosed as closed:
            if closed.reason is not None:
                code, reason = closed.reason.code, closed.reason.reason or ""
        except (HandshakeError, OSError, trio.TooSlowError) as exc:
            cause = exc.__cause__ or exc.__context__
            reason = str(cause if cause is not None else exc) or type(exc).__name__
            if not self._retry_first and self.connections == 0:
                raise ClientUnreachable(f"could not connect to {self.url}: {reason}") from None
        await self._put(Status("disconnected", code=code, reason=reason))
        if code == POLICY_CLOSE:
            raise ClientRefused(f"the relay closed the connection: 1008 {reason}", code)
        if code == RATE_LIMITED_CLOSE:
            # Told to back off: wait as long as the schedule ever would.
            self._backoff.attempts += 1
            return self._backoff.cap * (0.5 + 0.5 * self._random())
        return self._backoff.next_delay(self._random)

    async def _session(self, ws: WebSocketConnection, http: httpx.AsyncClient) -> None:
        with trio.fail_after(self._connect_timeout):
            welcome = orjson.loads(await ws.get_message())
        if welcome.get("event") != "welcome":
            raise HandshakeError(f"expected a welcome, got {welcome!r}")
        self.connections += 1
        self._backoff.connected(trio.current_time())
        self._ws = ws
        await self._put(Status("connected"))
        for channel in list(self._wanted):
            await self._send_subscribe(ws, channel)
        while True:
            message = orjson.loads(await ws.get_message())
            if "event" in message:
                await self._on_event(message)
            else:
                await self._on_message(message, http)

    async def _send_subscribe(self, ws: WebSocketConnection, channel: str) -> None:
        command: dict[str, Any] = {"action": "subscribe", "channel": channel}
        since = self.sequencer.since(channel)
        if since is not None:
            command["since"] = since
        await ws.send_message(orjson.dumps(command).decode())

    async def _on_event(self, message: dict[str, Any]) -> None:
        event, data = message["event"], message.get("data") or {}
        if event == "subscribed":
            recovered = data.get("recovered")
            gap = self.sequencer.subscribed(data["channel"], data["seq"], data["epoch"], recovered)
            await self._put(Subscribed(data["channel"], data["seq"], data["epoch"], recovered))
            if gap is not None:
                await self._put(gap)
        elif event == "lagged":
            self.sequencer.lagged(data["channel"], data["dropped"])
        elif event == "unsubscribed" and "reason" in data:
            # The relay took the channel away (credentials changed): do not ask again.
            self._wanted.pop(data["channel"], None)
            await self._put(ServerError(data["reason"], data.get("message", ""), data["channel"]))
        elif event == "error":
            await self._put(ServerError(data["code"], data["message"], data.get("channel")))
        elif event == "status":
            await self._put(Status(f"upstream {data['source']} {data['state']}"))

    async def _on_message(self, message: dict[str, Any], http: httpx.AsyncClient) -> None:
        channel, seq = message["channel"], message["seq"]
        snapshot = bool(message.get("snapshot"))
        sequencer = self.sequencer
        verdict = sequencer.message(channel, seq, snapshot)
        if verdict is Verdict.GAP:
            await self._put(sequencer.gap(channel, seq))
            repaired = await self._fetch_snapshot(http, channel)
            if repaired is not None:
                await self._put(repaired)
            verdict = sequencer.message(channel, seq, snapshot)
            if verdict is Verdict.GAP:
                # No state to repair from (or an older one): go on from here, announced.
                await self._put(sequencer.gap(channel, seq))
                sequencer.skip_to(channel, seq)
                verdict = Verdict.DELIVER
        if verdict is Verdict.DUPLICATE:
            return
        if snapshot:
            await self._put(Snapshot(channel, seq, message["ts"], message["data"]))
        else:
            await self._put(
                Data(channel, seq, message["ts"], message["data"], bool(message.get("reorg")))
            )

    async def _fetch_snapshot(self, http: httpx.AsyncClient, channel: str) -> Snapshot | None:
        """The channel's state from ``/v1/snapshot``, when the relay has one newer than what
        the consumer holds; None otherwise (a channel without state, a failed request)."""
        headers = {"authorization": f"Bearer {self._key}"} if self._key else {}
        try:
            response = await http.get(snapshot_url(self.url, channel), headers=headers)
        except httpx.HTTPError as exc:
            log.info("snapshot of %s failed: %s", channel, exc)
            return None
        if response.status_code != 200:
            return None
        body = response.json()
        if self.sequencer.message(channel, body["seq"], True) is not Verdict.DELIVER:
            return None
        return Snapshot(channel, body["seq"], body["ts"], body["data"], source="rest")

    async def _put(self, event: ClientEvent) -> None:
        buffer = self._buffer
        while buffer.policy is BufferPolicy.BLOCK and buffer.full and isinstance(event, Data):
            await self._room.park()
        buffer.put(event)
        self._readable.unpark_all()


def snapshot_url(ws_url: str, channel: str) -> str:
    """``ws://host/ws`` -> ``http://host/v1/snapshot/<channel>`` (wss -> https)."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, f"/v1/snapshot/{quote(channel, safe=':')}", "", ""))


@asynccontextmanager
async def _http_client(
    given: httpx.AsyncClient | None, ssl_context: ssl.SSLContext | None
) -> AsyncIterator[httpx.AsyncClient]:
    if given is not None:
        yield given
        return
    verify: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
    async with httpx.AsyncClient(timeout=10.0, verify=verify) as http:
        yield http


@asynccontextmanager
async def open_client(
    url: str, channels: Iterable[str] = (), **options: Any
) -> AsyncIterator[RelayClient]:
    """A running :class:`RelayClient`, stopped when the block ends."""
    client = RelayClient(url, channels, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()
