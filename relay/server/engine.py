"""Socket.IO clients: the relay's session spoken as Socket.IO events over Engine.IO.

A :class:`SocketIOSession` is a :class:`~relay.server.session.Session` with the same outbox,
backpressure, limits, heartbeats and write path; what differs is the framing of what it queues
(Socket.IO packets, made once per message for every Socket.IO client by the hub), how it reads
(Engine.IO and Socket.IO packets, decoded in :mod:`relay.core.engineio` and
:mod:`relay.core.socketio`), and that it may start on HTTP long-polling.

Whose task a session is: the one of the request that opened it, as for a WebSocket session.
A long-polling session is opened by the handshake's ``GET``; that task answers it, closes its
own connection, and then holds the session until it ends or its upgrade to a WebSocket
arrives, whose request task hands its stream over and waits. Polls and posts lend their
requests' tasks to it meanwhile: a poll waits for packets, a post carries commands out. So
however a session ends, one task's ``finally`` releases everything it held.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio

from relay.core import engineio, socketio
from relay.core.credentials import Grant
from relay.core.engineio import EngineError, EngineState
from relay.core.framing import SOCKETIO_POLLING, SOCKETIO_WEBSOCKET
from relay.core.hub import Hub, Limits
from relay.core.latency import LatencyHistogram
from relay.core.protocol import Command, ErrorCode, ProtocolError
from relay.core.timers import SessionTimers
from relay.core.websocket import Answer, Closed, ServerWebSocket
from relay.server.rounds import WriteRounds
from relay.server.session import (
    RECEIVE_BYTES,
    CloseCode,
    Closing,
    Joiner,
    Session,
    SessionSettings,
    socket_fd,
)

Refused = tuple[str, str]
"""A connect refused: the protocol's error code and a message."""

Connector = Callable[["SocketIOSession", str | None], Awaitable[Refused | None]]
"""The relay's admission of a Socket.IO connect, from its credential: None when admitted
(having called :meth:`SocketIOSession.admit`), else why not."""

NORMAL_CLOSURE: Final = 1000


class SocketIOSession(Session):
    """One Socket.IO client, in namespace ``/ws``."""

    __slots__ = (
        "_connect",
        "_connecting",
        "_handed_over",
        "_max_payload",
        "_poll_ready",
        "_posts",
        "connected",
        "ended",
        "engine",
        "farewell_taken",
    )

    def __init__(
        self,
        stream: trio.abc.Stream | None,
        websocket: ServerWebSocket | None,
        hub: Hub,
        settings: SessionSettings,
        timers: SessionTimers[Session],
        rounds: WriteRounds,
        connect: Connector,
        max_payload: int,
        latency: LatencyHistogram | None = None,
        cluster: Joiner | None = None,
    ) -> None:
        # No grant and no channels until the connect is admitted.
        super().__init__(
            stream,
            websocket,
            hub,
            Limits(0, ()),
            settings,
            timers,
            rounds,
            "",
            latency,
            None,
            None,
            cluster,
        )
        self.framing = SOCKETIO_POLLING if websocket is None else SOCKETIO_WEBSOCKET
        self.engine = EngineState(websocket=websocket is not None)
        self.connected = False
        """The client's connect to ``/ws`` was admitted."""
        self._connect = connect
        self._max_payload = max_payload
        self._poll_ready = trio.Event()
        """Set when a waiting poll should answer (something queued, a ping, the end)."""
        self._handed_over = trio.Event()
        """Set when the session's transport is a WebSocket, or the session has ended."""
        self.ended = trio.Event()
        """Set when everything the session held is released."""
        self._posts: set[trio.CancelScope] = set()
        """The scopes of the posts being carried out."""
        self._connecting = False
        """A connect is waiting for the relay's admission (a cluster's count in Redis)."""
        self.farewell_taken = trio.Event()
        """Set when a poll has taken the session's last payload (its close), so a long-polling
        client learns why it ended (a refused connect's ``connect_error``, say)."""

    def __repr__(self) -> str:
        return f"<SocketIOSession {self.id}>"

    @property
    def nursery(self) -> trio.Nursery | None:
        """The connection's nursery, once the session runs (a token's expiry runs in it)."""
        return self._nursery

    @property
    def polling(self) -> bool:
        return self._ws is None

    def _frame(self, packet: bytes) -> bytes:
        return self._hub.socketio_frame(self.framing, packet)

    # Credentials ------------------------------------------------------------------------

    def admit(self, grant: Grant, settings: SessionSettings, limits: Limits) -> None:
        """The relay admitted the connect with this grant: its tier's limits apply from now."""
        self._apply(grant, settings, limits)

    # The session's life -----------------------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """Hold the session: while it long-polls, until its upgrade (HTTP requests carry its
        packets meanwhile); on a WebSocket, as the reader of that WebSocket."""
        self._nursery = nursery
        self._welcome()
        self._timers.add(self, trio.current_time())
        try:
            if self.polling:
                await self._handed_over.wait()
            if self.closing is None:
                await self._read()
        finally:
            self._timers.remove(self)
            self._hub.drop(self)
            self.engine.close()
            self._poll_ready.set()
            await self._close()
            self.ended.set()

    def _welcome(self) -> None:
        """A WebSocket opened without polling first gets the Engine.IO handshake as its first
        message (a polling session got it as the handshake's answer)."""
        if not self.polling:
            self._queue(self._frame(self.open_packet(upgrades=False)))

    def open_packet(self, upgrades: bool) -> bytes:
        settings = self._settings
        return engineio.open_packet(
            self.id, upgrades, settings.heartbeat, settings.heartbeat_timeout, self._max_payload
        )

    def _end(self, closing: Closing) -> None:
        super()._end(closing)
        self._poll_ready.set()
        self._handed_over.set()
        for scope in self._posts:
            scope.cancel()

    def _farewell(self) -> bytes:
        """A server-side close tells the namespace first, so the client knows it was not the
        network (socket.io-client: ``io server disconnect``, and it does not reconnect)."""
        closing = self.closing
        if not self.connected or closing is None or closing.code == NORMAL_CLOSURE:
            return b""
        return self._frame(socketio.DISCONNECT_PACKET)

    def release(self, now_ms: int = 0) -> None:
        if self.polling:
            self._poll_ready.set()  # the waiting poll writes; without one the next poll will
            return
        super().release(now_ms)

    def ping(self, now: float) -> None:
        """Engine.IO's ping, a packet of its own (the client answers it with a packet too)."""
        if self.closing is None:
            self._timers.pinged(self, now)
            self._ping_frame = self._frame(engineio.PING_PACKET)
            self.wake()

    # Long-polling -----------------------------------------------------------------------

    async def poll(self) -> bytes | None:
        """A poll's answer: everything queued as one payload, once there is something (a
        heartbeat ping comes within the ping interval at the latest); None for a poll that
        Engine.IO does not allow now (after the upgrade; or a second one at once, which ends
        the session)."""
        if self.closing is not None:
            # Ended between polls: this poll takes the farewell, or else the close.
            return engineio.CLOSE_PACKET if self.farewell_taken.is_set() else self._take_payload()
        engine = self.engine
        if not engine.poll():
            if engine.closed:
                self._end(Closing(CloseCode.POLICY, "overlapping polls"))
            return None
        try:
            while not (
                self._requested
                or self._ping_frame is not None
                or self.closing is not None
                or not self.polling
            ):
                self._poll_ready = trio.Event()
                await self._poll_ready.wait()
        finally:
            self.engine.polled()
        if not self.polling:
            return engineio.NOOP_PACKET  # upgraded meanwhile: the WebSocket carries the rest
        return self._take_payload()

    def _take_payload(self) -> bytes:
        self._requested = False
        ping, self._ping_frame = self._ping_frame, None
        packets = self._drained(ping)
        if self.closing is not None:
            # The end: what was queued if the close is for what the client sent, then
            # Socket.IO's disconnect when the server ends it. Engine.IO's close only when there
            # is nothing else, never after them in one payload: socket.io-client handles a
            # payload's close at once and its packets a tick later, so a connect_error or a
            # disconnect before a close would be lost.
            closing = self.closing
            packets = packets if closing.flush else []
            farewell = self._farewell()
            packets += [farewell] if farewell else []
            if not packets:
                packets = [engineio.CLOSE_PACKET]
            self.farewell_taken.set()
        body = engineio.SEPARATOR.join(packets) if packets else engineio.NOOP_PACKET
        self.bytes_out += len(body)
        self.writes += 1
        return body

    async def post(self, body: bytes) -> EngineError | None:
        """A post's packets, carried out in order; the error that refuses it, if any. Once
        the session has ended, what a client posts (its own close, say) is taken and ignored."""
        if self.closing is not None:
            return None
        if not self.engine.post():
            return engineio.BAD_REQUEST
        try:
            packets = engineio.decode_payload(body)
        except EngineError as refused:
            return refused
        # The post's task is not the session's: the session's end cancels what it carries out
        # (a connect or a subscribe waiting for the cluster), as it cancels its own reader.
        with trio.CancelScope() as scope:
            self._posts.add(scope)
            try:
                for packet in packets:
                    if self.closing is not None:
                        break
                    await self._engine_packet(packet)
            finally:
                self._posts.discard(scope)
        return None

    # The upgrade ------------------------------------------------------------------------

    def probed(self) -> bool:
        """A WebSocket with this session's id sent the probe: a waiting poll answers now (with
        a noop if nothing else), so the client can pause polling and upgrade."""
        if not self.engine.probe():
            return False
        self._poll_ready.set()
        if not self._requested and self._ping_frame is None:
            self._ping_frame = engineio.NOOP_PACKET
        return True

    def upgraded(self, stream: trio.abc.Stream, websocket: ServerWebSocket) -> bool:
        """The probing WebSocket sent the upgrade: it is this session's transport from now
        on. What was queued for polls goes out on it first, framed for it."""
        if not self.engine.upgrade() or self.closing is not None:
            return False
        ping, self._ping_frame = self._ping_frame, None
        queued = self._drained(ping if ping != engineio.NOOP_PACKET else None)
        self._stream = stream
        self._fd = socket_fd(stream)
        self._ws = websocket
        self.framing = SOCKETIO_WEBSOCKET
        self._requested = False
        for entry in queued:
            # An entry may be a write round's batch of packets, joined as a poll answer joins
            # them; a WebSocket carries one packet per frame. (No packet holds the separator:
            # JSON escapes control characters.)
            for packet in entry.split(engineio.SEPARATOR):
                self._queue(self._frame(packet))
        self._handed_over.set()
        self._poll_ready.set()
        return True

    def probe_failed(self) -> None:
        self.engine.probe_failed()

    # Reading ----------------------------------------------------------------------------
    # Everything a client sends counts against its command rate, as on the WebSocket endpoint,
    # except what keeps the connection alive or ends it (pongs, closes, disconnects).

    async def _message(self, message: str | bytes) -> None:
        try:
            packet = engineio.decode(message) if isinstance(message, str) else None
        except EngineError:
            packet = None
        if packet is None:
            if not self._limited(trio.current_time(), None):
                error = ProtocolError(ErrorCode.BAD_REQUEST, "not an Engine.IO text packet")
                self.reply_error(error)
            return
        await self._engine_packet(packet)

    async def _engine_packet(self, packet: engineio.Received) -> None:
        kind = packet.type
        if kind == engineio.PONG:
            self._timers.answered(self)
        elif kind == engineio.CLOSE:
            self._end(Closing(NORMAL_CLOSURE, "closed by client"))
        elif kind == engineio.MESSAGE:
            received = socketio.read(packet.data)
            if not isinstance(received, socketio.Disconnect) and self._limited(
                trio.current_time(), None
            ):
                if isinstance(received, socketio.Request) and received.ack is not None:
                    limited = ProtocolError(ErrorCode.RATE_LIMITED, "over the command rate")
                    self._acknowledge(received.ack, limited)
            else:
                await self._socketio(received)
        elif self._limited(trio.current_time(), None):
            return
        elif kind == engineio.PING:
            self._queue(self._frame(b"3" + packet.data.encode()))
        # UPGRADE and NOOP carry nothing once the transport is settled.

    async def _socketio(self, packet: socketio.ClientPacket) -> None:
        if isinstance(packet, socketio.Connect):
            if self.connected or self._connecting:
                return  # a second connect to the same namespace changes nothing
            self._connecting = True
            try:
                refused = await self._connect(self, packet.credential)
            finally:
                self._connecting = False
            if refused is None:
                self.connected = True
                self._queue(self._frame(socketio.connected_packet(self.id)))
            else:
                code, message = refused
                self._queue(self._frame(socketio.connect_error_packet(code, message)))
                self._end(Closing(CloseCode.POLICY, code, flush=True))
        elif isinstance(packet, socketio.Refused):
            error = socketio.connect_error_packet(packet.code, packet.message, packet.namespace)
            self._queue(self._frame(error))
        elif isinstance(packet, socketio.Disconnect):
            self._end(Closing(NORMAL_CLOSURE, "closed by client"))
        elif not self.connected:
            self.reply_error(ProtocolError(ErrorCode.BAD_REQUEST, "connect to /ws first"))
        else:
            await self._request(packet)

    async def _request(self, request: socketio.Request) -> None:
        await self._wait_for(self._execute(request.command, trio.current_time()))
        if request.ack is not None:
            self._acknowledge(request.ack, request.command)

    def _acknowledge(self, ack: int, command: Command | ProtocolError) -> None:
        if self.closing is None:
            result = socketio.ack_result(command, self._holds, self._hub.known)
            self._queue(self._frame(socketio.ack_packet(ack, result)))

    def _holds(self, channel: str) -> bool:
        return self in self._hub.registry.subscribers(channel)


async def upgrade(
    stream: trio.abc.Stream,
    websocket: ServerWebSocket,
    session: SocketIOSession,
    text: Callable[[bytes], bytes],
) -> bool:
    """The probe on a polling session's new WebSocket (``2probe``, answered ``3probe``), then
    the client's upgrade packet (``5``); True once the session has taken the WebSocket over,
    with whatever followed the upgrade packet still to read. ``text`` frames a packet."""
    probed = False
    upgraded = False
    try:
        pending = websocket.early
        websocket.early = []
        while True:
            while pending:
                item = pending.pop(0)
                if isinstance(item, Answer):
                    await stream.send_all(item.frame)
                elif isinstance(item, Closed | bytes):
                    return False
                elif not isinstance(item, str):
                    continue  # a pong to nothing
                elif not probed:
                    if item != "2" + engineio.PROBE or not session.probed():
                        return False
                    probed = True
                    await stream.send_all(text(engineio.PROBE_ANSWER))
                elif item == "5":
                    websocket.early = pending
                    upgraded = session.upgraded(stream, websocket)
                    return upgraded
                else:
                    return False
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                return False
            pending = websocket.receive(data)
    finally:
        if probed and not upgraded:
            session.probe_failed()  # this WebSocket's probe only: polling goes on
