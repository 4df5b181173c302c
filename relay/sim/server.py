"""The synthetic market's Trio shell: WebSocket stream, REST snapshots and fault control.

The relay's hard paths (gaps, resyncs, silent upstreams, refused reconnects, slow snapshots) only
run when an upstream misbehaves, and real exchanges do not misbehave on demand. This server runs
:class:`relay.sim.market.MarketModel` on a timer, serves it in an exchange-like wire format
(docs/simulator.md) and lets tests and benchmarks inject each failure through ``/control/...``.

It reuses the relay's own front door (one port, the request head read under a deadline, upgrades
handed to trio-websocket with the consumed bytes replayed), so the simulator never needs a
second port or a second HTTP stack. It is not the product's hot path: one ``send_message`` per
message is fine, but the market loop never awaits a connection; each connection has a bounded
queue and is dropped when it overflows.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import attrs
import orjson
import trio
import trio_websocket

from relay.core.protocol import Refusal
from relay.server.frontdoor import (
    RequestHead,
    error_body,
    error_response,
    read_request_head,
)
from relay.server.nowait import send_by
from relay.sim.market import MarketModel

log = logging.getLogger(__name__)

DEFAULT_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")

GARBAGE = '{"topic": "trade.BTC-USD", "seq": <garbage>'
"""What ``/control/garbage`` sends: a text frame that starts like a market message but is not
JSON, so an adapter's parser fails on the JSON step, not on a schema check."""

_MAX_HEAD_BYTES = 16384
_MAX_CATCH_UP = 1.0
"""Seconds of missed market ticks the loop replays back to back; older ones are skipped so a
long scheduler stall (or a rate change) does not turn into a burst of thousands of events."""
_HTTP_LINGER = 1.0
"""After an HTTP answer, how long to wait for the client to close before closing ourselves:
closing a socket with unread request bytes sends a RST that can destroy the answer in flight."""
_BURST_CHECKPOINT = 256
"""Messages a burst emits between checkpoints, so writers drain while a large burst runs."""
_MAX_SECONDS = 3600.0
_MAX_BURST = 1_000_000
N = TypeVar("N", int, float)
_MAX_RATE = 100_000.0


def _now_us() -> int:
    return time.time_ns() // 1000


def _encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


class _Signal:
    """Wakes every current waiter once; a fresh event per firing so it can fire again."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


@attrs.define
class SimStats:
    """Counters served by ``GET /control/stats``.

    Fault counters (``drops`` ... ``snapshot_faults``, ``resets``, ``bursts``) count control
    requests; the ``connections_*``, ``slow_consumers`` and ``snapshot_failures`` counters count
    what those faults did.
    """

    connections_total: int = 0
    subscribes: int = 0
    """One per topic per accepted subscribe request (a re-subscribe counts again)."""
    unsubscribes: int = 0
    """One per topic per accepted unsubscribe request."""
    snapshot_requests: int = 0
    """REST snapshots served with 200."""
    messages_sent: int = 0
    """WebSocket messages written, of every kind (acks, data, heartbeats, garbage)."""
    market_events: int = 0
    """Model steps (each one trade, one ticker and one depth message)."""
    heartbeats: int = 0
    """Heartbeat rounds (one heartbeat to every connection not stalled)."""
    bad_requests: int = 0
    """WebSocket requests answered with an error or a refused ack."""
    drops: int = 0
    stalls: int = 0
    skips: int = 0
    garbage: int = 0
    refusals: int = 0
    snapshot_faults: int = 0
    resets: int = 0
    bursts: int = 0
    connections_dropped: int = 0
    connections_refused: int = 0
    slow_consumers: int = 0
    snapshot_failures: int = 0


@attrs.define(eq=False)
class _Conn:
    """One WebSocket connection's server-side state (identity-hashed: lives in topic sets)."""

    id: int
    send: trio.MemorySendChannel[str]
    receive: trio.MemoryReceiveChannel[str]
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    """Cancelling it ends the connection; the handler then closes the TCP stream."""
    topics: set[str] = attrs.field(factory=set)
    stalled_until: float = 0.0
    """Trio time until which nothing may be written to this connection."""


class _GatedStream(trio.abc.Stream):
    """The socket as trio-websocket sees it: reads first replay the bytes the front door
    consumed, and writes wait while the connection is stalled.

    Gating the stream rather than the message queue also holds back what trio-websocket writes
    by itself (pongs, close frames), so a stalled connection is truly silent.
    """

    def __init__(
        self,
        inner: trio.abc.Stream,
        prefix: bytes,
        gate: Callable[[], Awaitable[None]],
    ) -> None:
        self._inner = inner
        self._prefix = prefix
        self._gate = gate

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return await self._inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._gate()
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()


class SimServer:
    """The synthetic market on one port: ``/ws``, ``/api/snapshot`` and ``/control/...``."""

    def __init__(
        self,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        rate: float = 10.0,
        seed: int = 1,
        heartbeat_interval: float = 1.0,
        *,
        queue_size: int = 10_000,
        handshake_timeout: float = 5.0,
    ) -> None:
        """``rate`` is market events (each a trade, a ticker and a depth update) per second per
        symbol. ``queue_size`` bounds each connection's outgoing queue; a connection whose queue
        overflows is dropped. ``handshake_timeout`` bounds reading a request head and the
        WebSocket handshake."""
        if not 0 < rate <= _MAX_RATE:
            raise ValueError(f"rate must be in (0, {_MAX_RATE}]")
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self.model = MarketModel(symbols, seed)
        self.stats = SimStats()
        self._rate = rate
        self._heartbeat_interval = heartbeat_interval
        self._queue_size = queue_size
        self._handshake_timeout = handshake_timeout
        self._ids = itertools.count(1)
        self._conns: dict[int, _Conn] = {}
        self._subs: dict[str, set[_Conn]] = {}
        self._paused = False
        self._refuse_until = 0.0
        self._snapshot_delay = 0.0
        self._snapshot_status: int | None = None
        self._control_changed = _Signal()
        """Fired on pause, resume and rate changes: the market loop re-plans its next tick."""
        self._faults_cleared = _Signal()
        """Fired on reset: stalled writers re-check their deadline."""
        self._routes: dict[str, tuple[str, Callable[[RequestHead], Awaitable[dict[str, Any]]]]]
        self._routes = {
            "/api/snapshot": ("GET", self._rest_snapshot),
            "/control/stats": ("GET", self._control_stats),
            "/control/drop": ("POST", self._control_drop),
            "/control/stall": ("POST", self._control_stall),
            "/control/skip": ("POST", self._control_skip),
            "/control/garbage": ("POST", self._control_garbage),
            "/control/refuse": ("POST", self._control_refuse),
            "/control/snapshot": ("POST", self._control_snapshot),
            "/control/reset": ("POST", self._control_reset),
            "/control/pause": ("POST", self._control_pause),
            "/control/resume": ("POST", self._control_resume),
            "/control/burst": ("POST", self._control_burst),
            "/control/rate": ("POST", self._control_rate),
        }

    @property
    def connections_open(self) -> int:
        return len(self._conns)

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen, run the market and heartbeats, and serve until cancelled.

        Reports the bound port through ``task_status`` (``port = await nursery.start(...)``).
        Every connection and loop runs inside this call's nursery, so nothing outlives it.
        """
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self._handle_tcp, port, host=host)
            )
            bound = int(listeners[0].socket.getsockname()[1])
            nursery.start_soon(self._market_loop)
            nursery.start_soon(self._heartbeat_loop)
            task_status.started(bound)

    # -- loops ---------------------------------------------------------------------------------

    async def _market_loop(self) -> None:
        """Step every symbol once per tick, ``rate`` ticks per second.

        The next tick is due one interval after the previous one was *due*, not after it ran,
        so the rate does not drift with processing time; ticks missed by more than
        ``_MAX_CATCH_UP`` seconds are dropped instead of replayed.
        """
        scheduled = trio.current_time()
        while True:
            if self._paused:
                await self._control_changed.wait()
                scheduled = trio.current_time()
                continue
            due = scheduled + 1.0 / self._rate
            now = trio.current_time()
            if now < due:
                with trio.move_on_at(due):
                    await self._control_changed.wait()
                continue
            scheduled = due if now - due <= _MAX_CATCH_UP else now
            now_us = _now_us()
            for symbol in self.model.symbols:
                for message in self.model.step(symbol, now_us):
                    self._publish(message)
            self.stats.market_events += len(self.model.symbols)
            await trio.lowlevel.checkpoint()

    async def _heartbeat_loop(self) -> None:
        """A heartbeat to every connection each interval, also while the market is paused, so
        an idle-but-healthy market never trips a client's watchdog."""
        due = trio.current_time()
        while True:
            due += self._heartbeat_interval
            if due < trio.current_time():
                # Fell behind (a long scheduler stall): one heartbeat now, not a burst of them.
                due = trio.current_time()
            await trio.sleep_until(due)
            text = _encode({"op": "heartbeat", "time": _now_us()})
            now = trio.current_time()
            for conn in list(self._conns.values()):
                if conn.stalled_until <= now:
                    self._send_to(conn, text)
            self.stats.heartbeats += 1

    # -- fan-out -------------------------------------------------------------------------------

    def _publish(self, message: dict[str, Any]) -> None:
        """Queue one market message for every subscriber; never awaits.

        Stalled connections miss it for good: after the stall they see the seq jump.
        """
        subscribers = self._subs.get(message["topic"])
        if not subscribers:
            return
        text = _encode(message)
        now = trio.current_time()
        for conn in list(subscribers):
            if conn.stalled_until <= now:
                self._send_to(conn, text)

    def _send_to(self, conn: _Conn, text: str) -> None:
        try:
            conn.send.send_nowait(text)
        except trio.WouldBlock:
            self.stats.slow_consumers += 1
            log.info("sim: dropping connection %d: its queue is full", conn.id)
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        """End a connection now: no more messages, and its handler closes the TCP stream."""
        self._unregister(conn)
        conn.scope.cancel()

    def _register(self, conn: _Conn) -> None:
        self._conns[conn.id] = conn
        self.stats.connections_total += 1

    def _unregister(self, conn: _Conn) -> None:
        self._conns.pop(conn.id, None)
        for topic in conn.topics:
            self._subs[topic].discard(conn)
        conn.topics.clear()

    # -- connections ---------------------------------------------------------------------------

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        """One accepted TCP connection; its failures stay here."""
        try:
            await self._dispatch(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("sim: connection lost: %r", exc)
        except Exception:
            log.exception("sim: connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _dispatch(self, stream: trio.SocketStream) -> None:
        deadline = trio.current_time() + self._handshake_timeout
        try:
            head = await read_request_head(stream, _MAX_HEAD_BYTES, deadline)
        except Refusal as refused:
            await send_by(stream, error_response(refused), deadline)
            return
        if head is None:
            return
        if head.is_upgrade:
            if head.path == "/ws":
                await self._websocket(stream, head)
            else:
                await self._answer(stream, head, 404, error_body("not_found", "upgrade on /ws"))
        elif head.path == "/ws":
            body = error_body("upgrade_required", "/ws is a WebSocket endpoint")
            await self._answer(stream, head, 426, body, [("upgrade", "websocket")])
        else:
            await self._http(stream, head)

    async def _answer(
        self,
        stream: trio.SocketStream,
        head: RequestHead,
        status: int,
        body: bytes,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        await stream.send_all(head.response(status, body, headers=headers))
        with trio.move_on_after(_HTTP_LINGER):
            await stream.send_eof()
            while await stream.receive_some(4096):
                pass

    async def _websocket(self, stream: trio.SocketStream, head: RequestHead) -> None:
        remaining = self._refuse_until - trio.current_time()
        if remaining > 0:
            self.stats.connections_refused += 1
            body = error_body("refused", "the market refuses new connections for now")
            retry = [("retry-after", str(math.ceil(remaining)))]
            await self._answer(stream, head, 503, body, retry)
            return
        send, receive = trio.open_memory_channel[str](self._queue_size)
        conn = _Conn(next(self._ids), send, receive)
        gated = _GatedStream(stream, head.head + head.trailing, partial(self._wait_unstalled, conn))
        with conn.scope:
            async with trio.open_nursery() as nursery:
                ws = None
                with trio.move_on_after(self._handshake_timeout):
                    request = await trio_websocket.wrap_server_stream(nursery, gated)
                    ws = await request.accept()
                if ws is not None:
                    self._register(conn)
                    try:
                        await self._session(ws, conn)
                    finally:
                        self._unregister(conn)
                # trio-websocket's reader task lives in this nursery; the session is over.
                nursery.cancel_scope.cancel()

    async def _wait_unstalled(self, conn: _Conn) -> None:
        while (remaining := conn.stalled_until - trio.current_time()) > 0:
            with trio.move_on_after(remaining):
                await self._faults_cleared.wait()

    async def _session(self, ws: trio_websocket.WebSocketConnection, conn: _Conn) -> None:
        """Reader and writer; whichever ends first (the peer left) ends the other."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, ws, conn, nursery.cancel_scope)
            await self._reader(ws, conn)
            nursery.cancel_scope.cancel()

    async def _reader(self, ws: trio_websocket.WebSocketConnection, conn: _Conn) -> None:
        """Drain every request, always: trio-websocket stops reading the socket (and answering
        pings and close frames) when its one-message queue is full."""
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            self._on_request(conn, message)

    async def _writer(
        self, ws: trio_websocket.WebSocketConnection, conn: _Conn, done: trio.CancelScope
    ) -> None:
        async for text in conn.receive:
            try:
                await ws.send_message(text)
            except trio_websocket.ConnectionClosed:
                done.cancel()
                return
            self.stats.messages_sent += 1

    def _on_request(self, conn: _Conn, message: str | bytes) -> None:
        """Answer one client request synchronously, so the acks and snapshots of a subscribe are
        queued before any market message for those topics can reach this connection."""
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            self._reject(conn, {"op": "error", "error": "bad_json"})
            return
        if not isinstance(request, dict):
            self._reject(conn, {"op": "error", "error": "bad_request"})
            return
        echo = {"req": request["req"]} if "req" in request else {}
        op = request.get("op")
        if op == "ping":
            self._send_to(conn, _encode({"op": "pong", **echo}))
        elif op in ("subscribe", "unsubscribe"):
            self._on_subscription(conn, op, request.get("args"), echo)
        else:
            self._reject(conn, {"op": "error", "error": "unknown_op", **echo})

    def _on_subscription(self, conn: _Conn, op: str, args: object, echo: dict[str, Any]) -> None:
        """(Un)subscribe all of ``args`` or none: an unknown topic refuses the whole request."""
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            self._reject(conn, {"op": op, **echo, "ok": False, "error": "bad_args"})
            return
        unknown = [topic for topic in args if not self.model.has_topic(topic)]
        if unknown:
            reply = {"op": op, **echo, "ok": False, "args": args, "error": "unknown_topic"}
            self._reject(conn, {**reply, "unknown": unknown})
            return
        topics = list(dict.fromkeys(args))
        self._send_to(conn, _encode({"op": op, **echo, "ok": True, "args": args}))
        if op == "unsubscribe":
            for topic in topics:
                conn.topics.discard(topic)
                self._subs.get(topic, set()).discard(conn)
            self.stats.unsubscribes += len(topics)
            return
        now_us = _now_us()
        for topic in topics:
            conn.topics.add(topic)
            self._subs.setdefault(topic, set()).add(conn)
            snapshot = self.model.snapshot(topic, now_us)
            if snapshot is not None:
                self._send_to(conn, _encode(snapshot))
        self.stats.subscribes += len(topics)

    def _reject(self, conn: _Conn, reply: dict[str, Any]) -> None:
        self.stats.bad_requests += 1
        self._send_to(conn, _encode(reply))

    # -- HTTP ----------------------------------------------------------------------------------

    async def _http(self, stream: trio.SocketStream, head: RequestHead) -> None:
        route = self._routes.get(head.path)
        headers: list[tuple[str, str]] = []
        if route is None:
            status, body = 404, error_body("not_found", f"no such path: {head.path}")
        elif head.method != route[0]:
            status, body = 405, error_body("method_not_allowed", f"use {route[0]}")
            headers.append(("allow", route[0]))
        else:
            try:
                status, body = 200, orjson.dumps(await route[1](head))
            except Refusal as exc:
                status, body = exc.status, error_body(exc.code, exc.message)
        await self._answer(stream, head, status, body, headers)

    async def _rest_snapshot(self, head: RequestHead) -> dict[str, Any]:
        """``GET /api/snapshot?topic=...``; injected faults apply as they were on arrival."""
        topic = head.query_value("topic")
        if topic is None:
            raise Refusal(400, "bad_request", "missing topic")
        if not self.model.has_topic(topic) or topic.startswith("trade."):
            raise Refusal(404, "no_snapshot", f"no snapshot for {topic!r}")
        delay, status = self._snapshot_delay, self._snapshot_status
        if delay:
            await trio.sleep(delay)
        if status is not None:
            self.stats.snapshot_failures += 1
            raise Refusal(status, "injected_fault", "snapshot failure injected by /control")
        snapshot = self.model.snapshot(topic, _now_us())
        assert snapshot is not None  # ticker and depth topics always have one
        self.stats.snapshot_requests += 1
        return snapshot

    async def _control_stats(self, head: RequestHead) -> dict[str, Any]:
        return {
            "connections_open": self.connections_open,
            **attrs.asdict(self.stats),
            "paused": self._paused,
            "rate": self._rate,
        }

    async def _control_drop(self, head: RequestHead) -> dict[str, Any]:
        conns = list(self._conns.values())
        for conn in conns:
            self._close(conn)
        self.stats.drops += 1
        self.stats.connections_dropped += len(conns)
        return {"ok": True, "dropped": len(conns)}

    async def _control_stall(self, head: RequestHead) -> dict[str, Any]:
        """Silence the connections open now; later connections are not affected, so a client
        that gives up on a stalled connection can reconnect at once."""
        seconds = _float_param(head, "seconds", low=0.0, high=_MAX_SECONDS)
        until = trio.current_time() + seconds
        conns = list(self._conns.values())
        for conn in conns:
            conn.stalled_until = max(conn.stalled_until, until)
        self.stats.stalls += 1
        return {"ok": True, "stalled": len(conns), "seconds": seconds}

    async def _control_skip(self, head: RequestHead) -> dict[str, Any]:
        n = _int_param(head, "n", low=1, high=_MAX_BURST)
        topic = head.query_value("stream")
        if topic is None:
            topics = [t for t in self.model.topics() if t.startswith("depth.")]
        elif topic.startswith("depth.") and self.model.has_topic(topic):
            topics = [topic]
        else:
            raise Refusal(400, "bad_request", f"not a depth topic: {topic!r}")
        now_us = _now_us()
        for t in topics:
            self.model.skip(t, n, now_us)
        self.stats.skips += 1
        return {"ok": True, "n": n, "seqs": {t: self.model.seq(t) for t in topics}}

    async def _control_garbage(self, head: RequestHead) -> dict[str, Any]:
        conns = list(self._conns.values())
        for conn in conns:
            self._send_to(conn, GARBAGE)
        self.stats.garbage += 1
        return {"ok": True, "sent": len(conns)}

    async def _control_refuse(self, head: RequestHead) -> dict[str, Any]:
        """Answer WebSocket upgrades with 503 for a while. Plain HTTP keeps working, so the
        control endpoint can still lift the fault."""
        seconds = _float_param(head, "seconds", low=0.0, high=_MAX_SECONDS)
        self._refuse_until = trio.current_time() + seconds
        self.stats.refusals += 1
        return {"ok": True, "seconds": seconds}

    async def _control_snapshot(self, head: RequestHead) -> dict[str, Any]:
        delay = status = None
        if head.query_value("delay") is not None:
            delay = _float_param(head, "delay", low=0.0, high=_MAX_SECONDS)
        if head.query_value("status") is not None:
            status = _int_param(head, "status", low=400, high=599)
        if delay is None and status is None:
            raise Refusal(400, "bad_request", "give delay=SECONDS and/or status=CODE")
        if delay is not None:
            self._snapshot_delay = delay
        if status is not None:
            self._snapshot_status = status
        self.stats.snapshot_faults += 1
        return {"ok": True, "delay": self._snapshot_delay, "status": self._snapshot_status}

    async def _control_reset(self, head: RequestHead) -> dict[str, Any]:
        """Clear stalls, refusals and snapshot faults. Pause and rate are settings, not faults,
        and stay as they are."""
        for conn in self._conns.values():
            conn.stalled_until = 0.0
        self._refuse_until = 0.0
        self._snapshot_delay = 0.0
        self._snapshot_status = None
        self._faults_cleared.fire()
        self.stats.resets += 1
        return {"ok": True}

    async def _control_pause(self, head: RequestHead) -> dict[str, Any]:
        self._paused = True
        self._control_changed.fire()
        return {"ok": True, "paused": True}

    async def _control_resume(self, head: RequestHead) -> dict[str, Any]:
        self._paused = False
        self._control_changed.fire()
        return {"ok": True, "paused": False}

    async def _control_burst(self, head: RequestHead) -> dict[str, Any]:
        n = _int_param(head, "n", low=1, high=_MAX_BURST)
        topic = head.query_value("topic") or f"trade.{self.model.symbols[0]}"
        if not (topic.startswith("trade.") and self.model.has_topic(topic)):
            raise Refusal(400, "bad_request", f"not a trade topic: {topic!r}")
        symbol = topic.removeprefix("trade.")
        first = self.model.seq(topic) + 1
        for i in range(n):
            self._publish(self.model.trade(symbol, _now_us()))
            if i % _BURST_CHECKPOINT == _BURST_CHECKPOINT - 1:
                await trio.lowlevel.checkpoint()
        self.stats.bursts += 1
        return {"ok": True, "n": n, "topic": topic, "first_seq": first, "last_seq": first + n - 1}

    async def _control_rate(self, head: RequestHead) -> dict[str, Any]:
        rate = _float_param(head, "per_second", low=0.0, high=_MAX_RATE)
        if rate == 0:
            raise Refusal(400, "bad_request", "per_second must be positive; use /control/pause")
        self._rate = rate
        self._control_changed.fire()
        return {"ok": True, "rate": rate}


def _float_param(head: RequestHead, name: str, *, low: float, high: float) -> float:
    return _param(head, name, float, "a number", low, high)


def _int_param(head: RequestHead, name: str, *, low: int, high: int) -> int:
    return _param(head, name, int, "an integer", low, high)


def _param(head: RequestHead, name: str, kind: Callable[[str], N], what: str, low: N, high: N) -> N:
    raw = head.query_value(name)
    if raw is None:
        raise Refusal(400, "bad_request", f"missing {name}")
    try:
        value = kind(raw)
    except ValueError:
        raise Refusal(400, "bad_request", f"{name} must be {what}") from None
    if not low <= value <= high:  # also rejects nan
        raise Refusal(400, "bad_request", f"{name} must be in [{low}, {high}]")
    return value


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_simulator(
    host: str = "127.0.0.1",
    port: int = 8765,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    rate: float = 10.0,
    seed: int = 1,
) -> None:
    """Serve the simulator until cancelled (Ctrl-C); prints the URL once listening."""
    server = SimServer(symbols=symbols, rate=rate, seed=seed)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(server.serve, host, port))
        base = f"{_display_host(host)}:{bound}"
        print(
            f"relay simulator listening on ws://{base}/ws "
            f"(snapshots http://{base}/api/snapshot, control http://{base}/control/stats)",
            flush=True,
        )
