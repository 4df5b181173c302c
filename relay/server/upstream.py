"""One supervisor per upstream source: one connection, however many clients.

Each attempt connects under a timeout, then runs the reader, the heartbeat watchdog, the
subscription syncer and (optionally) a pinger in a child nursery. Any of them failing ends the
attempt, the backoff schedule decides when the next one starts, and the plan re-subscribes
exactly what clients want at that moment. Gaps in a book's sequence numbers are repaired from the
source's REST snapshot while the deltas that keep arriving are buffered.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, connect_websocket_url

from relay.adapters.base import Ack, Adapter, StreamKind, Update, UpstreamFormatError
from relay.config import SourceConfig
from relay.core.backoff import Backoff
from relay.core.gaps import BookSync, GapDetector, SyncState, Verdict
from relay.core.hub import Hub
from relay.core.upstream_plan import UpstreamPlan

log = logging.getLogger("relay.upstream")


class UpstreamState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"


class UpstreamDead(Exception):
    """The connection is open but the upstream stopped talking, or stopped answering pings."""


class UpstreamConnection(Protocol):
    async def send(self, text: str) -> None: ...

    async def receive(self) -> str | bytes:
        """The next frame; raises ConnectionClosed (trio-websocket's) when the upstream closes."""
        ...

    async def ping(self) -> None: ...


class Transport(Protocol):
    """Opens upstream connections; a fake one drives the multiplexer's property tests."""

    def connect(
        self, url: str, connect_timeout: float
    ) -> AbstractAsyncContextManager[UpstreamConnection]: ...


class _WebSocketUpstream:
    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        await self._ws.send_message(text)

    async def receive(self) -> str | bytes:
        message: str | bytes = await self._ws.get_message()
        return message

    async def ping(self) -> None:
        await self._ws.ping()


class WebSocketTransport:
    """The real transport: a trio-websocket client connection.

    It owns the connection's lifetime instead of using ``open_websocket_url``, whose exit waits
    for a close handshake: a stalled upstream never answers one, and the reconnect would wait
    for it. After a failure the stream is cut at once; only a clean exit closes politely.
    """

    def __init__(
        self,
        message_queue_size: int = 1024,
        max_message_size: int = 16 * 2**20,
        close_timeout: float = 1.0,
    ) -> None:
        self.message_queue_size = message_queue_size
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout

    @asynccontextmanager
    async def connect(self, url: str, connect_timeout: float) -> AsyncIterator[UpstreamConnection]:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(connect_timeout):
                ws = await connect_websocket_url(
                    nursery,
                    url,
                    message_queue_size=self.message_queue_size,
                    max_message_size=self.max_message_size,
                )
            clean = False
            try:
                yield _WebSocketUpstream(ws)
                clean = True
            finally:
                # Shielded so that shutdown still closes; a zero budget means the close is
                # cancelled at once, and trio-websocket then closes the TCP stream itself.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + (self.close_timeout if clean else 0)
                    await ws.aclose()
                nursery.cancel_scope.cancel()


class UpstreamStats:
    """Counters the metrics endpoint exports."""

    def __init__(self) -> None:
        self.connects = 0
        self.disconnects = 0
        self.messages = 0
        self.malformed = 0
        self.gaps = 0
        self.resyncs = 0
        self.snapshot_fetches = 0
        self.snapshot_failures = 0


class UpstreamSupervisor:
    """Owns one source: its connection, its subscriptions and its books."""

    def __init__(
        self,
        adapter: Adapter,
        settings: SourceConfig,
        hub: Hub,
        transport: Transport | None = None,
        rng: Callable[[], float] = random.random,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.adapter = adapter
        self.source = adapter.source
        self.settings = settings
        self.hub = hub
        self.transport: Transport = transport or WebSocketTransport()
        self._rng = rng
        self._now_ms = wall_clock_ms
        self.plan = UpstreamPlan(settings.linger)
        self.backoff = Backoff(
            initial=settings.backoff_initial,
            factor=settings.backoff_factor,
            cap=settings.backoff_cap,
            reset_after=settings.backoff_reset_after,
        )
        self.state = UpstreamState.CONNECTING
        self.stats = UpstreamStats()
        self.next_retry: float | None = None
        self._books: dict[str, BookSync] = {}
        self._book_ts: dict[str, int] = {}
        self._detectors: dict[str, GapDetector] = {}
        self._fetching: set[str] = set()
        self._plan_changed = trio.lowlevel.ParkingLot()
        self._last_frame = 0.0
        self._http: httpx.AsyncClient | None = None

    # SourceListener: called by the hub from client sessions ------------------------------

    def want(self, channel: str) -> None:
        self.plan.want(channel)
        self._plan_changed.unpark_all()

    def unwant(self, channel: str) -> None:
        self.plan.unwant(channel, trio.current_time())
        self._plan_changed.unpark_all()

    # Supervision -------------------------------------------------------------------------

    async def run(
        self,
        http: httpx.AsyncClient | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, serve, and reconnect forever; returns only by cancellation."""
        self._http = http
        task_status.started()
        while True:
            reason = await self._attempt()
            self._connection_lost(reason)
            delay = self.backoff.next_delay(self._rng)
            self.next_retry = trio.current_time() + delay
            log.warning(
                "upstream %s: %s; next attempt in %.2fs (attempt %d)",
                self.source,
                reason,
                delay,
                self.backoff.attempts,
                extra={"source": self.source, "reason": reason, "retry_in": delay},
            )
            await trio.sleep(delay)
            self.next_retry = None

    async def _attempt(self) -> str:
        """One connection's life; answers why it ended."""
        settings = self.settings
        try:
            async with self.transport.connect(settings.url, settings.connect_timeout) as conn:
                self._connected(conn)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read, conn, nursery)
                    nursery.start_soon(self._watch)
                    nursery.start_soon(self._sync, conn)
                    if settings.ping_interval > 0:
                        nursery.start_soon(self._ping, conn)
        except (Exception, BaseExceptionGroup) as exc:
            # One source's failure must never reach the relay's nursery, but a cancellation
            # that arrives together with a failure must still propagate, alone.
            leaves = _leaves(exc)
            failures = [e for e in leaves if not isinstance(e, trio.Cancelled)]
            if not all(isinstance(e, _EXPECTED_FAILURES) for e in failures):
                log.error("upstream %s: unexpected failure", self.source, exc_info=exc)
            if len(failures) < len(leaves):
                assert isinstance(exc, BaseExceptionGroup)
                cancelled = exc.subgroup(lambda e: isinstance(e, trio.Cancelled))
                assert cancelled is not None
                raise cancelled from None
            return "; ".join(_describe(e) for e in failures)
        return "connection ended"

    def _connected(self, conn: UpstreamConnection) -> None:
        now = trio.current_time()
        self.stats.connects += 1
        self.backoff.connected(now)
        self.state = UpstreamState.CONNECTED
        self._last_frame = now
        log.info(
            "upstream %s: connected to %s",
            self.source,
            self.settings.url,
            extra={"source": self.source, "state": "connected"},
        )
        self.hub.status(self.source, UpstreamState.CONNECTED.value)

    def _connection_lost(self, reason: str) -> None:
        self.stats.disconnects += 1
        self.backoff.disconnected(trio.current_time())
        self.plan.connection_lost()
        for sync in self._books.values():
            sync.reset()
        self._books.clear()
        self._detectors.clear()
        self._fetching.clear()
        for channel in self.hub.registry.wanted(self.source):
            self.hub.forget_state(channel)
        self.state = UpstreamState.RECONNECTING
        log.info(
            "upstream %s: reconnecting (%s)",
            self.source,
            reason,
            extra={"source": self.source, "state": "reconnecting", "reason": reason},
        )
        self.hub.status(self.source, UpstreamState.RECONNECTING.value)

    @property
    def _dead_after(self) -> float:
        return 1.5 * self.settings.heartbeat_interval

    async def _watch(self) -> None:
        """Dead after 1.5 heartbeat intervals without any message.

        The reader only records when the last frame came; this task wakes at the deadline that
        implies. When it passes, the reader gets a few ticks to take frames that may already be
        waiting: a loop busy with thousands of handshakes can leave a healthy upstream unread
        for longer than the interval, and that is not the upstream's death.
        """
        dead_after = self._dead_after
        while True:
            await trio.sleep_until(self._last_frame + dead_after)
            if trio.current_time() < self._last_frame + dead_after:
                continue
            for _ in range(3):
                await trio.lowlevel.checkpoint()
            if trio.current_time() >= self._last_frame + dead_after:
                break
        # If the relay is being cancelled too, that wins: no failure report during shutdown.
        await trio.lowlevel.checkpoint_if_cancelled()
        raise UpstreamDead(f"no message for {dead_after:g}s")

    async def _ping(self, conn: UpstreamConnection) -> None:
        interval = self.settings.ping_interval
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as deadline:
                await conn.ping()
            if deadline.cancelled_caught:
                raise UpstreamDead(f"no pong within {interval:g}s")

    async def _sync(self, conn: UpstreamConnection) -> None:
        """Bring the upstream's subscriptions in line with the plan, now and on every change."""
        adapter = self.adapter
        while True:
            plan = self.plan.plan(trio.current_time())
            if plan.subscribe:
                for channel in plan.subscribe:
                    self._track(channel)
                for frame in adapter.subscribe_frames(plan.subscribe):
                    await conn.send(frame)
            if plan.unsubscribe:
                for channel in plan.unsubscribe:
                    self._untrack(channel)
                for frame in adapter.unsubscribe_frames(plan.unsubscribe):
                    await conn.send(frame)
            if plan:
                continue
            deadline = self.plan.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._plan_changed.park()

    def _track(self, channel: str) -> None:
        if self.adapter.kind(channel) is StreamKind.BOOK:
            sync = BookSync(channel, channel.rsplit(":", 1)[-1])
            self._books[channel] = sync
            self.hub.channel(channel).state_provider = lambda: self._book_data(channel)
        else:
            self._detectors[channel] = GapDetector()

    def _untrack(self, channel: str) -> None:
        self._books.pop(channel, None)
        self._book_ts.pop(channel, None)
        self._detectors.pop(channel, None)
        self.hub.channel(channel).state_provider = None
        self.hub.forget_state(channel)

    def _book_data(self, channel: str) -> dict[str, Any] | None:
        sync = self._books.get(channel)
        if sync is None or not sync.live:
            return None
        return sync.book.to_data(sync.symbol, self._book_ts.get(channel, 0))

    # Data --------------------------------------------------------------------------------

    async def _read(self, conn: UpstreamConnection, nursery: trio.Nursery) -> None:
        adapter = self.adapter
        stats = self.stats
        while True:
            frame = await conn.receive()
            self._last_frame = trio.current_time()
            stats.messages += 1
            try:
                events = adapter.parse(frame)
                now_ms = self._now_ms()
                for event in events:
                    if isinstance(event, Update):
                        self._on_update(event, now_ms, nursery)
                    elif isinstance(event, Ack) and not event.ok:
                        log.warning("upstream %s refused a request: %s", self.source, event.detail)
            except (UpstreamFormatError, ValueError) as exc:
                stats.malformed += 1
                log.warning(
                    "upstream %s: malformed message skipped: %s (%r)",
                    self.source,
                    exc,
                    frame[:200],
                    extra={"source": self.source},
                )

    def _on_update(self, update: Update, now_ms: int, nursery: trio.Nursery) -> None:
        channel = update.channel
        sync = self._books.get(channel)
        if sync is not None:
            resyncing = sync.state is SyncState.RESYNCING
            step = sync.on_snapshot(update) if update.snapshot else sync.on_delta(update)
            self._publish_book(channel, step.publish, now_ms)
            if step.fetch_snapshot:
                if not resyncing:
                    self.stats.gaps += 1
                    log.warning(
                        "upstream %s: gap on %s at seq %s; resyncing from REST",
                        self.source,
                        channel,
                        update.seq,
                        extra={"source": self.source, "channel": channel},
                    )
                self._request_snapshot(channel, nursery)
            elif resyncing and step.publish:
                self._resynced(channel)
            return
        detector = self._detectors.get(channel)
        if detector is None:
            return  # late message for a channel no client wants any more
        if update.seq is not None and detector.observe(update.seq) is Verdict.GAP:
            # Trades and tickers have nothing to repair from: a ticker is whole in every
            # message, a lost trade is gone. Counted and logged, never hidden.
            self.stats.gaps += 1
            log.warning(
                "upstream %s: gap on %s before seq %s",
                self.source,
                channel,
                update.seq,
                extra={"source": self.source, "channel": channel},
            )
        self.hub.publish(update, now_ms)

    def _publish_book(self, channel: str, updates: list[Update], now_ms: int) -> None:
        """Publish what a BookSync step released, remembering the book's time for snapshots."""
        for update in updates:
            self._book_ts[channel] = update.data.get("ts", now_ms)
            self.hub.publish(update, now_ms)

    def _resynced(self, channel: str) -> None:
        self.stats.resyncs += 1
        log.info(
            "upstream %s: %s resynchronized",
            self.source,
            channel,
            extra={"source": self.source, "channel": channel, "state": "resynced"},
        )
        self.hub.status(self.source, "resynced")

    def _request_snapshot(self, channel: str, nursery: trio.Nursery) -> None:
        if channel not in self._fetching:
            self._fetching.add(channel)
            nursery.start_soon(self._fetch_snapshot, channel)

    async def _fetch_snapshot(self, channel: str) -> None:
        """Fetch until the book is live again; each failure waits a little longer."""
        path = self.adapter.snapshot_path(channel)
        base = self.settings.rest_url
        if path is None or base is None or self._http is None:
            log.error(
                "upstream %s: %s has a gap and no REST snapshot to repair it", self.source, channel
            )
            raise UpstreamDead(f"unrepairable gap on {channel}")
        retry = Backoff(initial=0.2, factor=2.0, cap=5.0, reset_after=0.0)
        http = self._http
        try:
            while (sync := self._books.get(channel)) is not None and not sync.live:
                self.stats.snapshot_fetches += 1
                try:
                    with trio.fail_after(self.settings.snapshot_timeout):
                        response = await http.get(base.rstrip("/") + path)
                    response.raise_for_status()
                    snapshot = self.adapter.parse_snapshot(channel, response.content)
                    if self._books.get(channel) is not sync:
                        return  # unsubscribed or reconnected meanwhile
                    step = sync.on_snapshot(snapshot)
                except (httpx.HTTPError, trio.TooSlowError, ValueError) as exc:
                    # ValueError covers UpstreamFormatError and a snapshot the book rejects.
                    self.stats.snapshot_failures += 1
                    delay = retry.next_delay(self._rng)
                    log.warning(
                        "upstream %s: snapshot of %s failed (%r); retry in %.2fs",
                        self.source,
                        channel,
                        exc,
                        delay,
                        extra={"source": self.source, "channel": channel, "retry_in": delay},
                    )
                    await trio.sleep(delay)
                    continue
                now_ms = self._now_ms()
                self._publish_book(channel, step.publish, now_ms)
                if step.publish:
                    self._resynced(channel)
                elif step.fetch_snapshot:
                    # Older than the deltas buffered since the gap: the source's snapshot lags
                    # its stream. Ask again, but give it time to catch up.
                    await trio.sleep(retry.next_delay(self._rng))
        finally:
            self._fetching.discard(channel)


_EXPECTED_FAILURES = (
    OSError,
    HandshakeError,
    ConnectionClosed,
    UpstreamDead,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)
"""The network's fault, not a bug: logged as a reason and retried, without a traceback."""


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        return f"connection closed ({exc.reason})"
    if isinstance(exc, UpstreamDead):
        return str(exc)
    cause = exc.__cause__ or exc.__context__
    detail = str(exc) or (repr(cause) if cause is not None else "")
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
