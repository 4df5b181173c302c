"""One supervisor per upstream source: one connection, however many clients.

Each attempt connects under a timeout, then runs the reader, the heartbeat watchdog, the
subscription syncer and (optionally) a pinger in a child nursery. Any of them failing ends the
attempt, the backoff schedule decides when the next one starts, and the plan re-subscribes
exactly what clients want at that moment.

Every decision about what the messages mean (sequencing, book sync, which repair) is the source
pipeline's (``core/source.py``); this module only does what a step says: publish, log, and run
the repairs it names (an HTTP fetch, a re-subscribe).
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Callable
from typing import Any

import trio

from relay.adapters.base import Adapter
from relay.config import SourceConfig
from relay.core.backoff import Backoff
from relay.core.hub import Outlet
from relay.core.model import (
    Ack,
    Head,
    Heartbeat,
    Reply,
    Update,
    UpstreamEvent,
    UpstreamFormatError,
)
from relay.core.source import (
    FetchItem,
    FetchSnapshot,
    Repair,
    Resubscribe,
    SourcePipeline,
    SourceStep,
)
from relay.core.upstream_plan import UpstreamPlan
from relay.server.transports import (
    HttpTransport,
    Transport,
    TransportError,
    UpstreamClosed,
    UpstreamConnection,
    WebSocketTransport,
)
from relay.server.wallclock import wall_clock_ms

log = logging.getLogger("relay.upstream")


class UpstreamState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STANDBY = "standby"
    """A cluster node's source whose lease another node holds: that node has its upstream."""


class UpstreamDead(Exception):
    """The connection is open but the upstream stopped talking, or stopped answering pings."""


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
        self.backfill_fetches = 0
        self.backfill_failures = 0
        self.resubscribes = 0
        self.refusals = 0


class UpstreamSupervisor:
    """Owns one source: its connection, its subscriptions and its books."""

    def __init__(
        self,
        adapter: Adapter,
        settings: SourceConfig,
        hub: Outlet,
        transport: Transport | None = None,
        rng: Callable[[], float] = random.random,
        wall_clock_ms: Callable[[], int] = wall_clock_ms,
        url: str | None = None,
        request_interval: float = 0.0,
    ) -> None:
        self.adapter = adapter
        self.source = adapter.source
        self.settings = settings
        resolved = url if url is not None else settings.url
        if resolved is None:
            raise ValueError(f"source {adapter.source!r} has no URL")
        self.url = resolved
        """Where the upstream is: the source's ``url``, or its kind's public endpoint."""
        self.request_interval = request_interval
        """Left after each subscribe or unsubscribe frame: some upstreams (Binance) disconnect a
        connection that sends more than a few requests a second. Changes that come meanwhile
        are batched into the next requests by the plan."""
        self.outlet: Outlet = hub
        """Where the source's messages and status go: the hub, or in a cluster node that holds
        the source, Redis (every node then relays them)."""
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
        self.pipeline = SourcePipeline(adapter)
        self._plan_changed = trio.lowlevel.ParkingLot()
        self._requests_sent = trio.lowlevel.ParkingLot()
        self._last_frame = 0.0
        self._http: HttpTransport | None = None

    # SourceListener: called by the hub from client sessions ------------------------------

    def want(self, channel: str) -> None:
        self.plan.want(channel)
        self._plan_changed.unpark_all()

    def unwant(self, channel: str) -> None:
        self.plan.unwant(channel, trio.current_time())
        self._plan_changed.unpark_all()

    def channel_state(self, channel: str) -> dict[str, Any] | None:
        return self.pipeline.state(channel)

    # Supervision -------------------------------------------------------------------------

    async def run(
        self,
        http: HttpTransport | None = None,
        outlet: Outlet | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, serve, and reconnect forever; returns only by cancellation.

        ``outlet``: in a cluster node, where this holding of the source's lease sends what the
        source produces; the plan and the books start afresh, as the last holder's are gone."""
        self._http = http
        if outlet is not None:
            self.outlet = outlet
            self.plan = UpstreamPlan(self.settings.linger)
            self.pipeline = SourcePipeline(self.adapter)
            self.state = UpstreamState.CONNECTING
        task_status.started()
        while True:
            reason = await self._attempt()
            self._connection_lost(reason)
            delay = self.backoff.next_delay(self._rng)
            self.next_retry = trio.current_time() + delay
            # One line per attempt, for a person: what went wrong and when the next try is.
            log.warning(
                "upstream %s: %s; retry %d in %.1fs",
                self.source,
                reason,
                self.backoff.attempts,
                delay,
                extra={
                    "source": self.source,
                    "state": "reconnecting",
                    "reason": reason,
                    "retry_in": round(delay, 3),
                    "attempt": self.backoff.attempts,
                },
            )
            await trio.sleep(delay)
            self.next_retry = None

    async def _attempt(self) -> str:
        """One connection's life; answers why it ended."""
        settings = self.settings
        try:
            async with self.transport.connect(self.url, settings.connect_timeout) as conn:
                self._connected(conn)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read, conn, nursery)
                    nursery.start_soon(self._watch)
                    nursery.start_soon(self._sync, conn)
                    nursery.start_soon(self._probe, conn)
                    if settings.ping_interval > 0:
                        nursery.start_soon(self._ping, conn)
        except (Exception, BaseExceptionGroup) as exc:
            # One source's failure must never reach the relay's nursery, but a cancellation
            # that arrives together with a failure must still propagate, alone; and what is not
            # a failure of this source at all (KeyboardInterrupt, SystemExit) must stop it.
            leaves = leaf_exceptions(exc)
            if not all(isinstance(e, Exception | trio.Cancelled) for e in leaves):
                raise
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
        self.adapter.reset()
        self.backoff.connected(now)
        self.state = UpstreamState.CONNECTED
        self._last_frame = now
        log.info(
            "upstream %s: connected to %s",
            self.source,
            self.url,
            extra={"source": self.source, "state": "connected"},
        )
        self.outlet.status(self.source, UpstreamState.CONNECTED.value)

    def _connection_lost(self, reason: str) -> None:
        self.stats.disconnects += 1
        self.backoff.disconnected(trio.current_time())
        self.plan.connection_lost()
        self.pipeline.connection_lost()
        for channel in self.outlet.wanted(self.source):
            self.outlet.forget_state(channel)
        self.state = UpstreamState.RECONNECTING
        self.outlet.status(self.source, UpstreamState.RECONNECTING.value)

    def stand_by(self) -> None:
        """A cluster node's lease on the source ended: another node has (or will have) it."""
        self.state = UpstreamState.STANDBY
        self.next_retry = None

    @property
    def _dead_after(self) -> float:
        return 1.5 * self.adapter.heartbeat_interval

    async def _watch(self) -> None:
        """Dead after 1.5 heartbeat intervals without a sign of life, or when a subscribe
        request stays unanswered for ``answer_timeout``.

        The reader only records when the last sign of life came; this task wakes at the deadline
        that implies (or earlier, when requests are sent). When it passes, the reader gets a
        few ticks to take frames that may already be waiting: a loop busy with thousands of
        handshakes can leave a healthy upstream unread for longer than the interval, and that
        is not the upstream's death.
        """
        dead_after = self._dead_after
        timeout = self.settings.answer_timeout
        while True:
            silent_at = self._last_frame + dead_after
            answer_by = self.plan.answer_deadline(timeout)
            with trio.move_on_at(silent_at if answer_by is None else min(silent_at, answer_by)):
                await self._requests_sent.park()
            now = trio.current_time()
            overdue = self.plan.overdue(now, timeout)
            if overdue:
                await trio.lowlevel.checkpoint_if_cancelled()
                raise UpstreamDead(
                    f"no answer to subscribe within {timeout:g}s: {', '.join(overdue)}"
                )
            if now < self._last_frame + dead_after:
                continue
            for _ in range(3):
                await trio.lowlevel.checkpoint()
            if trio.current_time() >= self._last_frame + dead_after:
                break
        # If the relay is being cancelled too, that wins: no failure report during shutdown.
        await trio.lowlevel.checkpoint_if_cancelled()
        raise UpstreamDead(f"no message for {dead_after:g}s")

    async def _probe(self, conn: UpstreamConnection) -> None:
        """For upstreams that are silent when idle: a request at once (its answer may tell what
        was missed while disconnected) and then every heartbeat interval."""
        interval = self.adapter.heartbeat_interval
        while (frame := self.adapter.probe_frame()) is not None:
            await conn.send(frame)
            await trio.sleep(interval)

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
            sent = 0
            if plan.subscribe:
                for channel in plan.subscribe:
                    self.pipeline.track(channel)
                for frame in adapter.subscribe_frames(plan.subscribe):
                    await conn.send(frame)
                    sent += 1
                self._requests_sent.unpark_all()
            if plan.unsubscribe:
                for channel in plan.unsubscribe:
                    self.pipeline.untrack(channel)
                    self.outlet.forget_state(channel)
                for frame in adapter.unsubscribe_frames(plan.unsubscribe):
                    await conn.send(frame)
                    sent += 1
            if self.request_interval > 0 and sent:
                await trio.sleep(self.request_interval * sent)
            if plan:
                continue
            deadline = self.plan.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._plan_changed.park()

    # Data --------------------------------------------------------------------------------

    async def _read(self, conn: UpstreamConnection, nursery: trio.Nursery) -> None:
        adapter = self.adapter
        stats = self.stats
        while True:
            frame = await conn.receive()
            received = trio.current_time()
            stats.messages += 1
            # Only the adapter's verdict on the frame is a malformed frame; a ValueError from
            # anywhere after it is a bug, and ends the attempt with its traceback.
            try:
                events = list(adapter.parse(frame))
            except UpstreamFormatError as exc:
                stats.malformed += 1
                log.warning(
                    "upstream %s: malformed message skipped: %s (%r)",
                    self.source,
                    exc,
                    frame[:200],
                    extra={"source": self.source},
                )
                continue
            if any(_shows_life(event) for event in events):
                self._last_frame = received
            for reply in self._on_events(events, conn, nursery):
                await conn.send(reply)

    def _on_events(
        self, events: list[UpstreamEvent], conn: UpstreamConnection, nursery: trio.Nursery
    ) -> list[str]:
        """Act on one frame's events; answers the frames the adapter needs sent in reply."""
        now_ms = self._now_ms()
        replies = []
        for event in events:
            if isinstance(event, Update):
                self._apply(self.pipeline.on_update(event), now_ms, conn, nursery)
            elif isinstance(event, Head):
                self._apply(self.pipeline.on_head(event.channel, event.seq), now_ms, conn, nursery)
            elif isinstance(event, Ack):
                self.plan.answered(event.channels)
                if not event.ok:
                    self._refused(event)
            elif isinstance(event, Reply):
                replies.append(event.frame)
        return replies

    def _refused(self, ack: Ack) -> None:
        self.stats.refusals += 1
        log.warning(
            "upstream %s refused a request: %s",
            self.source,
            ack.detail,
            extra={"source": self.source},
        )
        for channel in ack.channels:
            self.outlet.upstream_refused(channel, f"{self.source} refused it: {ack.detail}")

    def _apply(
        self,
        step: SourceStep,
        now_ms: int,
        conn: UpstreamConnection,
        nursery: trio.Nursery,
        running: Repair | None = None,
    ) -> bool:
        """Do what a pipeline step says; answers whether it names ``running`` again (a
        snapshot older than the deltas buffered since the gap), which its task then retries."""
        for update in step.publish:
            self.outlet.publish(update, now_ms)
        for channel in step.gaps:
            self.stats.gaps += 1
            log.warning(
                "upstream %s: gap on %s",
                self.source,
                channel,
                extra={"source": self.source, "channel": channel},
            )
        for channel in step.resynced:
            self._resynced(channel)
        again = False
        for repair in step.repairs:
            if repair == running:
                again = True
            else:
                nursery.start_soon(self._repair, repair, conn, nursery)
        return again

    def _resynced(self, channel: str) -> None:
        self.stats.resyncs += 1
        log.info(
            "upstream %s: %s resynchronized",
            self.source,
            channel,
            extra={"source": self.source, "channel": channel, "state": "resynced"},
        )
        self.outlet.status(self.source, "resynced")

    async def _repair(
        self, repair: Repair, conn: UpstreamConnection, nursery: trio.Nursery
    ) -> None:
        if isinstance(repair, Resubscribe):
            # Until the upstream's fresh snapshot makes the book live: if that snapshot is lost
            # too, the book must not stay stale until the next reconnect.
            channels = [repair.channel]
            while self.pipeline.wants(repair):
                for frame in self.adapter.unsubscribe_frames(channels):
                    await conn.send(frame)
                for frame in self.adapter.subscribe_frames(channels):
                    await conn.send(frame)
                self.stats.resubscribes += 1
                await trio.sleep(self.settings.answer_timeout)
            return
        await self._fetch(repair, conn, nursery)

    async def _fetch(
        self, repair: FetchSnapshot | FetchItem, conn: UpstreamConnection, nursery: trio.Nursery
    ) -> None:
        """Fetch until the pipeline no longer wants it; each failure waits a little longer."""
        how = self.adapter.http_repair(repair)
        if how is None or self._http is None:
            log.error(
                "upstream %s: %s has a gap and nothing to repair it from",
                self.source,
                repair.channel,
            )
            raise UpstreamDead(f"unrepairable gap on {repair.channel}")
        snapshot = isinstance(repair, FetchSnapshot)
        what = "snapshot" if snapshot else "backfill"
        retry = Backoff(initial=0.2, factor=2.0, cap=5.0, reset_after=0.0)
        http = self._http
        while self.pipeline.wants(repair):
            if snapshot:
                self.stats.snapshot_fetches += 1
            else:
                self.stats.backfill_fetches += 1
            try:
                with trio.fail_after(self.settings.snapshot_timeout):
                    body = await http.fetch(how.request)
                step = self.pipeline.on_repaired(repair, how.parse(body))
            except (TransportError, trio.TooSlowError, ValueError) as exc:
                # ValueError covers UpstreamFormatError and an answer the pipeline rejects (a
                # book it cannot read, a block that is not the one asked for).
                if snapshot:
                    self.stats.snapshot_failures += 1
                else:
                    self.stats.backfill_failures += 1
                delay = retry.next_delay(self._rng)
                log.warning(
                    "upstream %s: %s of %s failed (%s); retry in %.2fs",
                    self.source,
                    what,
                    repair.channel,
                    exc,
                    delay,
                    extra={
                        "source": self.source,
                        "channel": repair.channel,
                        "retry_in": round(delay, 3),
                    },
                )
                await trio.sleep(delay)
                continue
            if not self._apply(step, self._now_ms(), conn, nursery, running=repair):
                return
            # Older than the deltas buffered since the gap: the source's snapshot lags its
            # stream. Ask again, but give it time to catch up.
            await trio.sleep(retry.next_delay(self._rng))


_EXPECTED_FAILURES = (
    TransportError,
    UpstreamDead,
    trio.TooSlowError,
)
"""The network's fault, not a bug: logged as a reason and retried, without a traceback."""


def _shows_life(event: UpstreamEvent) -> bool:
    """Only what the adapter understood as the upstream working keeps the watchdog quiet:
    garbage, or an upstream that answers every request with an error, is not alive."""
    if isinstance(event, Ack):
        return event.ok
    return isinstance(event, Update | Heartbeat | Head)


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) groups, or the exception itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in leaf_exceptions(e)]
    return [exc]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UpstreamClosed | UpstreamDead):
        return str(exc)
    cause = exc.__cause__ or exc.__context__
    detail = str(exc) or (repr(cause) if cause is not None else "")
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
