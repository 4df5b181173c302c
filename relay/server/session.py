"""One downstream client: a reader task and a writer, in the connection's nursery.

When either ends, the connection's nursery is cancelled and ``finally`` releases the session's
subscriptions, so a session cannot leak a task, a subscription or a queue, however it ends.
Writes normally happen outside this session's tasks: the relay's write rounds release it and it
writes its whole outbox with one non-blocking send (see ``release``); the writer task only
takes over what the socket would not take at once, and the close.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Final

import attrs
import trio
from prometheus_client import Histogram
from trio_websocket import ConnectionClosed, WebSocketConnection

from relay.core.hub import Hub, Limits
from relay.core.outbox import Outbox
from relay.core.protocol import (
    ErrorCode,
    Lagged,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    Welcome,
    encode_error,
    encode_event,
    parse_command,
)
from relay.core.ratelimit import TokenBucket
from relay.core.timers import SessionTimers
from relay.server.frontdoor import CLOSING, ReplayStream
from relay.server.rounds import WriteRounds

log = logging.getLogger("relay.session")


class CloseCode:
    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001
    POLICY: Final = 1008
    TOO_BIG: Final = 1009
    IDLE: Final = 4000
    HEARTBEAT: Final = 4001
    SLOW_CONSUMER: Final = 4008
    RATE_LIMITED: Final = 4029


@attrs.frozen
class SessionSettings:
    heartbeat: float
    heartbeat_timeout: float
    idle_timeout: float
    send_timeout: float
    close_timeout: float
    max_messages: int
    max_bytes: int
    rate_limit: float
    rate_burst: int


@attrs.frozen
class Closing:
    code: int
    reason: str
    hard: bool = False
    """Close the TCP stream without a close frame: the peer is gone, or a frame was cut."""


class Session:
    """A client connection once its WebSocket handshake is done.

    Slotted and lean: an idle connection's memory is mostly this object, its outbox and its
    tasks, and ten thousand idle connections is a normal day.
    """

    __slots__ = (
        "_backlog",
        "_backlog_oldest",
        "_bucket",
        "_hub",
        "_latency",
        "_limits",
        "_nursery",
        "_oldest_ms",
        "_released",
        "_requested",
        "_rounds",
        "_settings",
        "_stream",
        "_timers",
        "_waiter",
        "_writing",
        "_ws",
        "bytes_out",
        "closing",
        "id",
        "key_name",
        "outbox",
        "writes",
    )

    def __init__(
        self,
        ws: WebSocketConnection,
        stream: ReplayStream,
        hub: Hub,
        limits: Limits,
        settings: SessionSettings,
        timers: SessionTimers[Session],
        rounds: WriteRounds,
        key_name: str = "",
        latency: Histogram | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.key_name = key_name
        self._ws = ws
        self._stream = stream
        self._hub = hub
        self._limits = limits
        self._settings = settings
        self.outbox = Outbox(settings.max_messages, settings.max_bytes)
        self._timers = timers
        self._rounds = rounds
        self._requested = False
        self._released = False
        self._waiter: trio.lowlevel.Task | None = None
        self._backlog: bytes | None = None
        """The unwritten end of a batch the socket only partly took: the writer task's job."""
        self._backlog_oldest = 0
        self._nursery: trio.Nursery | None = None
        self._bucket = TokenBucket(settings.rate_limit, settings.rate_burst, trio.current_time())
        self._writing = False
        self._oldest_ms = 0
        self._latency = latency
        self.closing: Closing | None = None
        self.bytes_out = 0
        self.writes = 0

    def __repr__(self) -> str:
        return f"<Session {self.id}>"

    # The hub's Subscriber interface. Both run inside the fan-out loop, so they only flip state.

    def wake(self) -> None:
        # Only the first delivery after a drain does anything: it notes when the oldest queued
        # message arrived and asks for the writer to be released in the next write round.
        if not self._requested:
            self._requested = True
            self._oldest_ms = self._hub.publish_ts
            self._rounds.request(self)

    def release(self) -> None:
        """Called by the write rounds: write what is queued, now.

        The fast path writes the whole batch synchronously with one non-blocking ``send``; the
        writer task is woken only for what that cannot do (a socket that takes part of the
        batch or nothing, a closing session, a stream without a socket).
        """
        if self._writing:
            self._released = True  # the writer task looks again when its write is done
            return
        self._requested = False
        if self.closing is not None:
            self._wake_writer()
            return
        data, oldest = self._collect()
        if data is None:
            return
        try:
            sent = self._stream.try_send(data, self._open)
        except OSError:
            self._end(Closing(CloseCode.NORMAL, "peer gone", hard=True))
            return
        if sent is None:
            self._backlog, self._backlog_oldest = data, oldest
            self._wake_writer()
            return
        if sent == CLOSING:
            self._end(Closing(CloseCode.NORMAL, "closed by peer"))
            return
        self.bytes_out += sent
        if sent == len(data):
            self._wrote(oldest)
            return
        # Part of a frame may be on the wire now: the rest must follow before anything else,
        # and if the session ends first the connection can only be cut.
        self._writing = True
        self._backlog, self._backlog_oldest = data[sent:], oldest
        self._wake_writer()

    def _wake_writer(self) -> None:
        self._released = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def _collect(self) -> tuple[bytes | None, int]:
        """Everything queued, as one buffer, and when its oldest message arrived."""
        outbox = self.outbox
        if not outbox.pending:
            return None, 0
        hub = self._hub
        drained = outbox.drain()
        oldest, self._oldest_ms = self._oldest_ms, 0
        frames = drained.frames
        for channel in drained.resnapshot:
            snapshot = hub.snapshot_frame(hub.channel(channel))
            if snapshot is not None:
                frames.append(snapshot)
        for channel, dropped in drained.lagged.items():
            frames.append(hub.framer.text(encode_event("lagged", Lagged(channel, dropped))))
        if not frames:
            return None, oldest
        return (b"".join(frames) if len(frames) > 1 else frames[0]), oldest

    def _wrote(self, oldest: int) -> None:
        self.writes += 1
        if oldest and self._latency is not None:
            self._latency.observe(max(0, time.time_ns() // 1_000_000 - oldest) / 1000)

    def overflow(self) -> None:
        """A slow consumer is usually in the middle of a write. Cutting it now would leave half
        a frame and no close code, so the writer finishes that write (bounded by the send
        timeout), sends nothing more, and the session closes politely with 4008."""
        if self.closing is None:
            self.closing = Closing(CloseCode.SLOW_CONSUMER, "slow consumer")
        self.wake()

    def _end(self, closing: Closing) -> None:
        """First reason wins; later ones are consequences of it."""
        if self.closing is None:
            self.closing = closing
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # Lifecycle ---------------------------------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """Serve the client until the connection ends; runs the writer itself.

        ``nursery`` is the connection's: it already holds trio-websocket's reader task, and
        cancelling it ends everything the connection runs. The reader and this task (the
        writer) are all a session runs; heartbeats and idle deadlines come from the relay's
        one timer task (:class:`SessionTimers`), which starts a ping task only while a ping is
        in flight.
        """
        self._nursery = nursery
        welcome = Welcome(self.id, self._settings.heartbeat)
        self.outbox.offer_control(self._hub.framer.text(encode_event("welcome", welcome)))
        self.wake()
        self._timers.add(self, trio.current_time())
        try:
            nursery.start_soon(self._reader)
            await self._writer()
        finally:
            self._timers.remove(self)
            self._hub.drop(self)
            await self._close()

    async def _close(self) -> None:
        """Send the close frame when the wire allows it; otherwise cut the connection.

        Shielded: a server shutdown cancels sessions, and that is exactly when clients should
        hear 1001 rather than see a reset.
        """
        closing = self.closing or Closing(CloseCode.GOING_AWAY, "server shutting down")
        with trio.CancelScope(shield=True):
            if not (closing.hard or self._writing):
                with trio.move_on_after(self._settings.close_timeout):
                    await self._ws.aclose(closing.code, closing.reason)
            await trio.aclose_forcefully(self._stream)

    # Tasks -------------------------------------------------------------------------------

    async def _writer(self) -> None:
        """The slow path: what the write rounds could not write without waiting."""
        while True:
            while not self._released:
                await self._wait()
            self._released = False
            if self.closing is not None:
                self._end(self.closing)
                return
            data: bytes | None
            if self._backlog is not None:
                data, oldest = self._backlog, self._backlog_oldest
                self._backlog = None
            else:
                self._requested = False
                data, oldest = self._collect()
            if data is None:
                continue
            if not await self._send(data, oldest):
                return
            if self.outbox.pending:
                self._released = True  # fell behind: keep writing from here until caught up

    async def _send(self, data: bytes, oldest: int) -> bool:
        """Write with a deadline; False when the session must end."""
        self._writing = True
        try:
            # A bare CancelScope: move_on_after's generator showed up in profiles of this path.
            with trio.CancelScope(
                deadline=trio.current_time() + self._settings.send_timeout
            ) as deadline:
                written = await self._stream.send_frames(data, self._open)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end(Closing(CloseCode.NORMAL, "peer gone", hard=True))
            return False
        if deadline.cancelled_caught:
            # Part of a frame may be on the wire: nothing may follow it, not even a close.
            self._end(Closing(CloseCode.SLOW_CONSUMER, "send timed out", hard=True))
            return False
        self._writing = False
        if not written:
            self._end(Closing(CloseCode.NORMAL, "closed by peer"))
            return False
        self.bytes_out += len(data)
        self._wrote(oldest)
        return True

    async def _wait(self) -> None:
        """Sleep until the write rounds hand this writer work (``_wake_writer``). A parking lot
        would do, but costs an OrderedDict per idle client; one task slot costs nothing."""
        self._waiter = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _open(self) -> bool:
        return self._ws.closed is None

    async def _reader(self) -> None:
        ws = self._ws
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                code = reason.code if reason is not None else CloseCode.NORMAL
                self._end(Closing(code, "closed by peer", hard=True))
                return
            self._handle(message)

    def _handle(self, message: str | bytes) -> None:
        now = trio.current_time()
        if not self._bucket.take(now):
            if self._bucket.abusive:
                self._end(Closing(CloseCode.RATE_LIMITED, "rate limited"))
                return
            error = ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"at most {self._bucket.rate:g} commands per second",
                None,
            )
            self._reply(encode_error(error))
            return
        command = parse_command(message)
        had = self._hub.registry.count_of(self)
        match command:
            case Subscribe(channels, request_id):
                self._hub.subscribe(self, channels, request_id, self._limits)
            case Unsubscribe(channels, request_id):
                self._hub.unsubscribe(self, channels, request_id)
            case Ping(request_id):
                self._reply(encode_event("pong", None, request_id))
            case ProtocolError():
                self._reply(encode_error(command))
        if self.outbox.overflowed:
            self.overflow()
            return
        has = self._hub.registry.count_of(self)
        if has and not had:
            self._timers.busy(self)
        elif had and not has:
            self._timers.idle(self, now)

    def _reply(self, payload: bytes) -> None:
        if self.outbox.offer_control(self._hub.framer.text(payload)):
            self.wake()
        else:
            self.overflow()

    # Called by the relay's timer task.

    def ping_soon(self) -> None:
        if self._nursery is not None and self.closing is None:
            self._nursery.start_soon(self._ping)

    def idle_expired(self) -> None:
        self._end(Closing(CloseCode.IDLE, "idle timeout"))

    async def _ping(self) -> None:
        with trio.move_on_after(self._settings.heartbeat_timeout) as deadline:
            try:
                await self._ws.ping()
            except ConnectionClosed:
                self._end(Closing(CloseCode.NORMAL, "closed", hard=True))
                return
        if deadline.cancelled_caught:
            self._end(Closing(CloseCode.HEARTBEAT, "heartbeat timeout"))
