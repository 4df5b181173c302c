"""One downstream client: a single task that reads, and writes that need no task at all.

An idle client costs one task (the one the listener started for its connection), parked in
``receive_some``. Writes happen outside it: the relay's write rounds release the session and it
writes its whole outbox with one non-blocking ``send`` (see ``release``); the answers to its own
commands it writes itself, as soon as they are queued (``_answer``). Only when the socket
will not take everything at once does a writer task start, in the connection's nursery, and it
ends as soon as it has caught up. Heartbeats and idle deadlines come from the relay's one timer
task. When the session ends, the connection's nursery is cancelled and ``finally`` releases its
subscriptions, so it cannot leak a task, a subscription or a queue, however it ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import attrs
import trio

from relay.core.channels import matches_any
from relay.core.credentials import Grant
from relay.core.framing import PLAIN
from relay.core.hub import QUEUE, TAKEN, WRITTEN, Hub, Limits
from relay.core.latency import LatencyHistogram
from relay.core.outbox import Outbox
from relay.core.protocol import (
    Auth,
    Command,
    ErrorCode,
    EventData,
    Lagged,
    Ping,
    ProtocolError,
    RequestId,
    Since,
    Subscribe,
    Unsubscribe,
    Welcome,
    command_id,
    parse_command,
    refuse_binary,
)
from relay.core.ratelimit import TokenBucket
from relay.core.timers import SessionTimers
from relay.core.websocket import Answer, Closed, PongReceived, Received, ServerWebSocket
from relay.server.rounds import WriteRounds
from relay.server.wallclock import wall_clock_ms

log = logging.getLogger("relay.session")

RECEIVE_BYTES = 16384
PING_PAYLOAD = b"relay"


class Joiner(Protocol):
    """A cluster node, as a session's subscribes see it (relay.cluster.node.ClusterNode)."""

    def subscribe(
        self,
        sub: Session,
        channels: Iterable[str],
        request_id: RequestId,
        limits: Limits,
        since: Since | None,
    ) -> Any:
        """Answers now, or returns a join to :meth:`wait` for."""
        ...

    async def wait(self, join: Any) -> None: ...


def socket_fd(stream: trio.abc.Stream | None) -> int | None:
    """The socket a session writes to synchronously: only a real socket gets the synchronous
    write; other streams (tests' memory streams) always go through the writer task."""
    return stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None


class CloseCode:
    """The codes the session closes with itself; 1009 and the protocol errors come from
    :mod:`relay.core.websocket`, and a client's own close is answered with its code."""

    GOING_AWAY: Final = 1001
    POLICY: Final = 1008
    """Credentials revoked or expired: do not reconnect with the same ones."""
    LOST: Final = 1006
    """Not sent: recorded when the connection ended without a close frame."""
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
    flush: bool = False
    """Write what is queued (the replies to the commands read before this close) ahead of
    the close frame: for closes caused by what the client sent (4029, 1009, 1002, 1007)."""


class Session:
    """A client connection once its WebSocket handshake is done.

    Slotted and lean: an idle connection's memory is mostly this object, its outbox, its
    wsproto connection and its one task, and ten thousand idle connections is a normal day.
    """

    __slots__ = (
        "_authenticate",
        "_bucket",
        "_cluster",
        "_fd",
        "_hub",
        "_latency",
        "_limits",
        "_nursery",
        "_oldest_ms",
        "_partial",
        "_ping_frame",
        "_requested",
        "_rounds",
        "_settings",
        "_stream",
        "_timers",
        "_welcomed",
        "_writing",
        "_ws",
        "bytes_out",
        "closing",
        "expiry",
        "framing",
        "grant",
        "id",
        "key_name",
        "outbox",
        "writes",
    )

    def __init__(
        self,
        stream: trio.abc.Stream | None,
        websocket: ServerWebSocket | None,
        hub: Hub,
        limits: Limits,
        settings: SessionSettings,
        timers: SessionTimers[Session],
        rounds: WriteRounds,
        key_name: str = "",
        latency: LatencyHistogram | None = None,
        grant: Grant | None = None,
        authenticate: Callable[[Session, Auth], None] | None = None,
        cluster: Joiner | None = None,
    ) -> None:
        # 64 random bits, as unguessable as before (an Engine.IO sid is a polling client's
        # only credential), without building a UUID per connection.
        self.id = os.urandom(8).hex()
        self.key_name = key_name
        self.grant = grant
        """The credential this connection was admitted with (or refreshed to)."""
        self._authenticate = authenticate
        """Answers the ``auth`` command (the relay's, which knows the credentials)."""
        self.expiry: trio.CancelScope | None = None
        """For a token's connection: the scope whose deadline is the token's end."""
        self._stream = stream
        """None only for a Socket.IO session while it long-polls (:mod:`relay.server.engine`):
        then HTTP requests carry its packets, and nothing here reads or writes a stream."""
        self._fd = socket_fd(stream)
        self._ws = websocket
        self.framing = PLAIN if websocket is None else websocket.deflate
        """The hub's :attr:`Subscriber.framing`: plain frames, or compressed ones with the
        window size this client agreed to (a Socket.IO session's are its own)."""
        self._hub = hub
        self._cluster = cluster
        """A cluster node's subscribes go through it: some wait for Redis (:class:`Joiner`)."""
        self._limits = limits
        self._settings = settings
        self.outbox = Outbox(settings.max_messages, settings.max_bytes)
        self._timers = timers
        self._rounds = rounds
        self._requested = False
        self._welcomed = False
        """The welcome went out with the handshake's response (:meth:`handshake`)."""
        self._writing = False
        """A writer task owns the socket's write side, from a write the socket did not take
        in full until it has caught up."""
        self._partial = False
        """Part of a frame may be on the wire: nothing but its rest may follow, not even a
        close frame."""
        self._ping_frame: bytes | None = None
        """A heartbeat ping, written at the head of the next batch rather than behind
        everything queued, so a client that lags but reads is not taken for dead."""
        self._nursery: trio.Nursery | None = None
        self._bucket = TokenBucket(settings.rate_limit, settings.rate_burst, trio.current_time())
        self._oldest_ms = 0
        self._latency = latency
        self.closing: Closing | None = None
        self.bytes_out = 0
        self.writes = 0
        """The writes this session made, and their bytes; a write round's flush counts the
        ones it makes whole through :meth:`write_now` (``Hub.round_writes``)."""

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

    def overflow(self) -> None:
        """A slow consumer is usually in the middle of a write. Cutting it now would leave half
        a frame and no close code, so a writer task finishes that write (bounded by the send
        timeout), sends nothing more, and the session closes politely with 4008."""
        if self.closing is None:
            self.closing = Closing(CloseCode.SLOW_CONSUMER, "slow consumer")
        if not self._writing:
            self._end(self.closing)

    def write_now(self, frames: bytes) -> int:
        """Called by the hub in a write round's flush: with nothing queued, waiting or being
        written (``_requested`` says a delivery since the last write is queued), this
        round's frames go out now with the same non-blocking write as :meth:`release`, and
        never pass through the outbox. Otherwise they queue behind what waits.

        It runs once per client per round, so it is written out rather than shared with
        :meth:`release`, and asks nothing of the outbox: an outbox holding anything has
        woken its session (``_requested``) or closed it, whatever put it there
        (:meth:`relay.core.hub.Subscriber.write_now`). A call and a property here were
        a third of the instructions of a round to 1,000 clients (docs/performance.md, "What
        each step bought"). A write made whole is counted and its latency recorded by the
        flush, for many subscribers at once; what the socket does not take goes to the
        writer task, which counts it and records its latency when it is written."""
        fd = self._fd
        if (
            self._requested
            or self._writing
            or self.closing is not None
            or self._ping_frame is not None
            or fd is None
        ):
            return QUEUE
        try:
            sent = os.write(fd, frames)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._end(Closing(CloseCode.LOST, "peer gone", hard=True))
            return TAKEN
        if sent == len(frames):
            return WRITTEN
        self.bytes_out += sent
        self._rest(frames, sent, self._hub.publish_ts)
        return TAKEN

    # Writing -----------------------------------------------------------------------------

    def release(self, now_ms: int = 0) -> None:
        """Called by the write rounds: write what is queued, now.

        The fast path writes the whole batch synchronously with one non-blocking ``send``
        (trio's ``send_all`` costs a task switch and several checkpoints per call; this is
        what lets one round reach a thousand clients in a few milliseconds). A writer task
        starts only for what the socket does not take at once. ``now_ms`` is the wall clock
        for the latency histogram, read by the round once for many writes (a clock read is a
        system call on some virtual machines); 0 to read it here.
        """
        if self._writing or self.closing is not None:
            return  # a writer collects everything once its write is done; a closing one nothing
        data, oldest = self._collect()
        if data is None:
            return
        fd = self._fd
        if fd is None:
            self._write_later(data, oldest)
            return
        if self._write_at_once(fd, data, oldest):
            self._record_latency(oldest, now_ms)

    def _write_at_once(self, fd: int, data: bytes, oldest: int) -> bool:
        """One non-blocking write, True when the socket took all of it; what it does not
        take goes to the writer task, which records the latency against ``oldest`` when the
        rest is written (0: none to record). False too when the write failed: the session
        ends."""
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._end(Closing(CloseCode.LOST, "peer gone", hard=True))
            return False
        self.bytes_out += sent
        if sent == len(data):
            self.writes += 1
            return True
        self._rest(data, sent, oldest)
        return False

    def _rest(self, data: bytes, sent: int, oldest: int) -> None:
        """The socket took ``sent`` bytes of ``data``: part of a frame may be on the wire
        now, the rest must follow before anything else, and if the session ends first the
        connection can only be cut."""
        self._partial = sent > 0
        self._write_later(data[sent:] if sent else data, oldest)

    def _write_later(self, data: bytes, oldest: int) -> None:
        self._writing = True
        assert self._nursery is not None  # set by run() before anything can be queued
        self._nursery.start_soon(self._writer, data, oldest)

    async def _writer(self, backlog: bytes, oldest: int) -> None:
        """The slow path: the backlog, then whatever queued meanwhile, until caught up."""
        data: bytes | None = backlog
        while data is not None:
            if not await self._send(data, oldest):
                return
            if self.closing is not None:
                # An overflow let this write finish: the wire is at a frame boundary, so the
                # session can close politely.
                self._writing = False
                self._end(self.closing)
                return
            data, oldest = self._collect()
        self._writing = False

    async def _send(self, data: bytes, oldest: int) -> bool:
        """Write all of ``data`` within the send timeout; False when the session must end."""
        try:
            # A bare CancelScope: move_on_after's generator showed up in profiles of this path.
            with trio.CancelScope(
                deadline=trio.current_time() + self._settings.send_timeout
            ) as deadline:
                if self._fd is None:
                    assert self._stream is not None  # only a stream's session writes
                    self._partial = True  # a cancelled send_all may have written any part
                    await self._stream.send_all(data)
                    self._partial = False
                    self.bytes_out += len(data)
                else:
                    await self._send_socket(self._fd, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._end(Closing(CloseCode.LOST, "peer gone", hard=True))
            return False
        if deadline.cancelled_caught:
            # Part of a frame may be on the wire: nothing may follow it, not even a close.
            self._end(Closing(CloseCode.SLOW_CONSUMER, "send timed out", hard=self._partial))
            return False
        self.writes += 1
        self._record_latency(oldest)
        return True

    async def _send_socket(self, fd: int, data: bytes) -> None:
        """``send_all`` written out, so that the session knows at every moment whether the
        wire is at a frame boundary: a cancellation can only land in the wait."""
        view = memoryview(data)
        while view:
            await trio.lowlevel.wait_writable(fd)
            # Woken for writability but cancelled before running (the session ended, and may
            # have sent its close frame meanwhile): nothing may be written now.
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                continue
            self.bytes_out += sent
            view = view[sent:]
            self._partial = bool(view)

    def _collect(self) -> tuple[bytes | None, int]:
        """Everything queued, as one buffer, and when its oldest message arrived. The next
        delivery asks for a write round again."""
        self._requested = False
        outbox = self.outbox
        ping = self._ping_frame
        if ping is None:
            # The common case, on every write: queued frames and nothing else.
            taken = outbox.take()
            if taken is not None:
                oldest, self._oldest_ms = self._oldest_ms, 0
                if len(taken) == 1:
                    return taken[0], oldest
                return (b"".join(taken) if taken else None), oldest
        self._ping_frame = None
        if not outbox.pending:
            return ping, 0
        oldest, self._oldest_ms = self._oldest_ms, 0
        frames = self._drained(ping)
        if not frames:
            return None, oldest
        return (b"".join(frames) if len(frames) > 1 else frames[0]), oldest

    def _drained(self, ping: bytes | None) -> list[bytes]:
        """Everything in the outbox, in order, as frames: the heartbeat ping first, then the
        queue, each coalesced channel's fresh snapshot and a ``lagged`` event for each channel
        that dropped messages."""
        hub = self._hub
        framing = self.framing
        # A channel's state moves when a message is published, its frame reaches the outboxes
        # at the next flush: every message the fresh snapshots below reflect must be offered
        # first (held channels take them into their slots), or it would follow its snapshot.
        hub.flush()
        drained = self.outbox.drain()
        frames = drained.frames
        if ping is not None:
            frames.insert(0, ping)
        for channel in drained.resnapshot:
            snapshot = hub.snapshot_frame(hub.channel(channel), framing)
            if snapshot is not None:
                frames.append(snapshot)
        for channel, dropped in drained.lagged.items():
            frames.append(hub.event_frame(framing, "lagged", Lagged(channel, dropped)))
        return frames

    def _record_latency(self, oldest: int, now_ms: int = 0) -> None:
        """A write whose oldest message arrived at ``oldest`` (0: none to record) is done."""
        if oldest and self._latency is not None:
            self._latency.record((now_ms or wall_clock_ms()) - oldest)

    def _queue(self, frame: bytes) -> None:
        """A frame of the relay's own (a reply or a pong), in order with the data: what was
        published before it is offered first."""
        self._hub.flush()
        if self.outbox.offer_control(frame):
            self.wake()
        else:
            self.overflow()

    # Lifecycle ---------------------------------------------------------------------------

    def _end(self, closing: Closing) -> None:
        """First reason wins; later ones are consequences of it."""
        if self.closing is None:
            self.closing = closing
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def run(self, nursery: trio.Nursery) -> None:
        """Serve the client until the connection ends.

        ``nursery`` is the connection's: cancelling it ends everything the connection runs.
        This task is the reader; the writer task exists only while the socket is behind.
        """
        self._nursery = nursery
        if not self._welcomed:
            self._welcome()
        self._timers.add(self, trio.current_time())
        try:
            await self._read()
        finally:
            self._timers.remove(self)
            self._hub.drop(self)
            await self._close()

    def handshake(self, response: bytes) -> bytes:
        """The handshake's ``response`` with this session's welcome after it, for the relay
        to write as one: a client waits for both before it subscribes, so they cost one system
        call here and one read there (in a reconnect storm, ten thousand of each). Called
        before :meth:`run`, which then does not queue the welcome again; the welcome counts
        as this session's first write."""
        frame = self._welcome_frame()
        self._welcomed = True
        self.bytes_out += len(frame)
        self.writes += 1
        return response + frame

    def _welcome(self) -> None:
        self._queue(self._welcome_frame())

    def _welcome_frame(self) -> bytes:
        welcome = Welcome(self.id, self._settings.heartbeat)
        return self._hub.event_frame(self.framing, "welcome", welcome)

    async def _read(self) -> None:
        """Until the session ends: ``_end`` cancels this task (a session that is only marked
        closing, waiting for its writer to finish, goes on reading)."""
        stream, ws = self._stream, self._ws
        assert stream is not None and ws is not None
        early, ws.early = ws.early, []
        await self._on(early)
        self._answer()
        while True:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._end(Closing(CloseCode.LOST, "peer gone", hard=True))
                return
            await self._on(ws.receive(data))
            self._answer()

    def _answer(self) -> None:
        """Write the replies to what was just read now, with whatever was queued before them,
        rather than at the next write round: an answer never waits for other clients' writes,
        and in a reconnect storm, when every scheduler pass carries thousands of handshakes,
        a round can be a pass or two away. (Still in the round's list, this session then
        writes nothing there unless more has been queued.)"""
        if self._requested and not self._writing and self.closing is None:
            self.release()

    async def _on(self, received: list[Received]) -> None:
        """Act on what the client sent; nothing more once the session is closing. A subscribe
        that waits for the cluster's Redis holds back the commands after it, so replies keep
        the order of the commands."""
        for item in received:
            if self.closing is not None:
                return
            if isinstance(item, str | bytes):
                await self._message(item)
            elif isinstance(item, Answer):
                self._queue(item.frame)
            elif isinstance(item, PongReceived):
                self._timers.answered(self)
            elif isinstance(item, Closed):
                if item.by_client:
                    self._end(Closing(item.code, "closed by client"))
                else:
                    self._end(Closing(item.code, item.reason, flush=True))

    async def _message(self, message: str | bytes) -> None:
        """One message from the client: a command of the relay's protocol."""
        await self._wait_for(self._handle(message))

    async def _wait_for(self, waiting: tuple[Any, int] | None) -> None:
        """Until a subscribe that waits for the cluster's Redis is answered (with ``waiting``,
        the join and the subscription count before it, from :meth:`_execute`)."""
        if waiting is not None:
            join, had = waiting
            self._answer()
            assert self._cluster is not None
            await self._cluster.wait(join)
            self._commanded(had, trio.current_time())

    def _farewell(self) -> bytes:
        """What goes out just before the close frame (a Socket.IO session's disconnect)."""
        return b""

    async def _close(self) -> None:
        """Send the close frame when the wire allows it, wait a moment for the client's (unless
        it closed first), then close the TCP connection.

        Shielded: a server shutdown cancels sessions, and that is exactly when clients should
        hear 1001 rather than see a reset. A close for what the client sent (``flush``) first
        writes what is queued, so the replies to the commands accepted before it are not lost;
        not when a writer task holds a backlog (the socket is behind, and what is queued would
        follow a gap).
        """
        if self.closing is None:
            self.closing = Closing(CloseCode.GOING_AWAY, "server shutting down")
        closing = self.closing
        ws, stream = self._ws, self._stream
        if ws is None or stream is None:
            return  # a long-polling Socket.IO session: no connection of its own to close
        with trio.CancelScope(shield=True):
            frame = None
            if not (closing.hard or self._partial):
                frame = ws.close(closing.code, closing.reason)
                if frame is not None:
                    frame = self._farewell() + frame
            if frame is not None:
                queued = None
                if closing.flush and not self._writing:
                    self._hub.flush()
                    queued, _ = self._collect()
                with trio.move_on_after(self._settings.close_timeout):
                    try:
                        if queued is not None:
                            await stream.send_all(queued + frame)
                            self.bytes_out += len(queued)
                        else:
                            await stream.send_all(frame)
                        await self._await_close_frame(stream, ws)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
            await trio.aclose_forcefully(stream)

    async def _await_close_frame(self, stream: trio.abc.Stream, ws: ServerWebSocket) -> None:
        while ws.closing:
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                return
            ws.receive(data)

    # Commands ----------------------------------------------------------------------------

    def _handle(self, message: str | bytes) -> tuple[Any, int] | None:
        """Carry out a command; answers a cluster join to wait for (and the subscription
        count before it) when the subscribe needs Redis. Commands are JSON text frames; a
        binary frame is refused, not executed."""
        now = trio.current_time()
        if self._limited(now, message):
            return None
        command = parse_command(message) if isinstance(message, str) else refuse_binary(message)
        return self._execute(command, now)

    def _limited(self, now: float, message: str | bytes | None) -> bool:
        """Over the command rate: the command is refused with an error (echoing the id in
        ``message``, if any), or the session closes when the client keeps at it."""
        bucket = self._bucket
        if bucket.take(now):
            return False
        if bucket.abusive:
            self._end(Closing(CloseCode.RATE_LIMITED, "rate limited", flush=True))
            return True
        error = ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"at most {bucket.rate:g} commands per second",
            None if message is None else command_id(message),
        )
        self.reply_error(error)
        return True

    def _execute(self, command: Command | ProtocolError, now: float) -> tuple[Any, int] | None:
        had = self._hub.registry.count_of(self)
        match command:
            case Subscribe(channels, request_id, since) if self._cluster is not None:
                join = self._cluster.subscribe(self, channels, request_id, self._limits, since)
                if join is not None:
                    return join, had
            case Subscribe(channels, request_id, since):
                now_ms = wall_clock_ms() if since is not None else 0
                self._hub.subscribe(self, channels, request_id, self._limits, since, now_ms)
            case Unsubscribe(channels, request_id):
                self._hub.unsubscribe(self, channels, request_id)
            case Ping(request_id):
                self.reply("pong", None, request_id)
            case Auth(_, request_id):
                if self._authenticate is None or self.grant is None or not self.grant.is_token:
                    error = ProtocolError(
                        ErrorCode.BAD_REQUEST,
                        "this connection did not authenticate with a token",
                        request_id,
                    )
                    self.reply_error(error)
                else:
                    # The relay applies the new grant through regrant, which restarts the idle
                    # clock itself if it removed every subscription.
                    self._authenticate(self, command)
                    return None
            case ProtocolError():
                self.reply_error(command)
        self._commanded(had, now)
        return None

    def _commanded(self, had: int, now: float) -> None:
        """After a command: a full outbox ends the session; the idle clock runs only while the
        session holds no subscription."""
        if self.outbox.overflowed:
            self.overflow()
            return
        has = self._hub.registry.count_of(self)
        if has and not had:
            self._timers.busy(self)
        elif had and not has:
            self._timers.idle(self, now)

    def reply(self, event: str, data: EventData | None, request_id: RequestId) -> None:
        """Queue a reply (one of the protocol's events), in order with everything else."""
        self._queue(self._hub.event_frame(self.framing, event, data, request_id))

    def reply_error(self, error: ProtocolError) -> None:
        self._queue(self._hub.error_frame(self.framing, error))

    # Credentials changing under a live connection (reload, token refresh) ----------------

    def regrant(self, grant: Grant, settings: SessionSettings, limits: Limits) -> int:
        """Apply a new grant's limits: the command rate and the channels allowed. Every
        subscription no longer allowed is removed with an event saying so; others stay, even
        above a lower ``max_subscriptions`` (it only refuses new ones). Answers how many were
        removed."""
        self._apply(grant, settings, limits)
        hub = self._hub
        held = hub.registry.channels_of(self)
        removed = 0
        for channel in held:
            if not matches_any(channel, limits.channels) and hub.revoke(
                self, channel, f"your credentials no longer allow {channel}"
            ):
                removed += 1
        if held and removed == len(held):
            self._timers.idle(self, trio.current_time())
        return removed

    def _apply(self, grant: Grant, settings: SessionSettings, limits: Limits) -> None:
        self.grant = grant
        self.key_name = grant.name
        self._settings = settings
        self._limits = limits
        self._bucket.rate = settings.rate_limit
        self._bucket.burst = settings.rate_burst

    def revoke(self, reason: str) -> None:
        """Close with 1008: the credentials were revoked or have expired."""
        self._end(Closing(CloseCode.POLICY, reason))

    # Called by the relay's timer task.

    def ping(self, now: float) -> None:
        """Send a ping with the next batch; the timers close the session if no pong comes
        within the timeout."""
        assert self._ws is not None  # a Socket.IO session pings with its own packet
        frame = self._ws.ping(PING_PAYLOAD) if self.closing is None else None
        if frame is not None:
            self._timers.pinged(self, now)
            self._ping_frame = frame
            self.wake()

    def silent(self) -> None:
        self._end(Closing(CloseCode.HEARTBEAT, "heartbeat timeout"))

    def idle_expired(self) -> None:
        self._end(Closing(CloseCode.IDLE, "idle timeout"))
