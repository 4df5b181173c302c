"""Load generator for the relay benchmark: many WebSocket clients in one process.

It runs as a separate process from the server under test, so that the server's
event loop is measured and not the client's, and it is driven by the harness
(``benchmarks/run.py``) over stdin/stdout, one JSON object per line each way.

Why it looks the way it does:

* picows clients (Cython framing, a compiled listener, no coroutine per
  message) are the cheapest WebSocket receivers available in Python; on a
  2-core machine the load generator shares the CPU with the server, so every
  microsecond it spends per frame is stolen from the server being measured.
* Data frames are only counted, in C: the listener is a compiled ``cdef class``
  (``counting.pyx``), the way picows's own benchmark clients are written, because a
  Python callback per frame capped the load generator below what the relay sends
  (docs/performance.md, "A load generator that keeps up"). Burst completion is
  detected by comparing the count to a target in the same callback, so no per-frame
  clock read is needed. Only a sample of clients (every ``sample``-th one) parses its
  frames with orjson to compute latency = receipt ``time.time()*1000`` minus the
  envelope's ``ts``; the sample is spread evenly over connection order, because
  fan-out loops serve early clients before late ones.
* Server events (``{"event": ...}``) are recognized by their prefix and parsed,
  so ``lagged`` notices are reported and never counted as deliveries.
* "Stalled" clients are raw sockets that complete the handshake and subscribe,
  then never read again. Before connecting they shrink their receive buffer
  and their MSS (like a client on a slow, small-window link): otherwise the
  server's kernel autotunes its send buffer to 4 MB per socket on loopback and
  backpressure would reach the server after minutes instead of after about
  130 KB.
* ``--protocol socketio`` makes every client a Socket.IO client over the
  websocket transport (``SioClient``: Engine.IO v4, Socket.IO v5, namespace
  ``/ws``), for the relay's Socket.IO endpoint and the socket.io peer; the
  same counting and sampling, with the data frames told by their fixed prefix
  ``42/ws,["data",``. Stalled clients speak the plain protocol only.

Commands (all carry ``"cmd"``; most take a ``"group"`` name):
``open`` (n, channel or null, sample), ``storm`` (n, channel, limit), ``open_stalled``
(n, channels), ``arm``
(target), ``wait`` (limit, stall), ``measure`` (seconds), ``status``,
``close``, ``exit``. Every command gets one reply line with ``"ok"``; the first
line the process prints (``"ready"``) says it is listening for commands.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import resource
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
from command_loop import run, serve_commands  # sibling module: the harness runs this as a script

try:
    from counting import CountingListener  # benchmarks/counting.pyx, compiled
except ImportError as exc:  # pragma: no cover - the message is the point
    raise SystemExit(
        f"benchmarks/counting.pyx is not built ({exc}): `nox -s bench` builds it, or run "
        "`cythonize -i -3 benchmarks/counting.pyx` in the environment with the bench extra"
    ) from exc
from picows import WSFrame, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
EVENT_PREFIX = b'{"event"'
SIO_NAMESPACE = b"/ws"
SIO_EVENT = b"42" + SIO_NAMESPACE + b","
"""A Socket.IO EVENT packet in the namespace (Engine.IO message ``4``, Socket.IO event ``2``):
``42/ws,["name",{...}]``."""
SIO_DATA_PREFIX = SIO_EVENT + b'["data",'
SIO_CONNECT = b"40" + SIO_NAMESPACE + b","
SIO_CONNECT_ERROR = b"44" + SIO_NAMESPACE + b","
SIO_DISCONNECT = b"41" + SIO_NAMESPACE + b","
CONNECT_CONCURRENCY = 64  # stays under the smallest listen backlog among the peers (100)
HANDSHAKE_TIMEOUT = 15.0


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit: 10,000+ sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def storm_timeline(times: dict[str, list[float]]) -> dict[str, Any]:
    """For each storm milestone, from the clients' sorted times: the last and percentiles."""
    return {
        name: {
            "last": values[-1] if values else None,
            "p50": percentile(values, 50),
            "p90": percentile(values, 90),
            "p99": percentile(values, 99),
        }
        for name, values in times.items()
    }


def latency_figures(latencies: list[float], e2e: list[float], sampled_bytes: int) -> dict[str, Any]:
    """The measurement's latency columns, from the sorted samples."""
    return {
        "samples": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "p999_ms": percentile(latencies, 99.9),
        "max_ms": latencies[-1] if latencies else None,
        "avg_frame_bytes": sampled_bytes / len(latencies) if latencies else None,
        "e2e_p50_ms": percentile(e2e, 50),
        "e2e_p99_ms": percentile(e2e, 99),
    }


class Group:
    """A named set of clients that the harness arms, waits on and measures together."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.clients: list[Client] = []
        self.stalled: list[socket.socket] = []
        self.target = 0
        self.pending = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.rusage_armed = self.rusage_last = resource.getrusage(resource.RUSAGE_SELF)
        """This process's CPU time when the group was armed, and when its last client got the
        last frame: what reading a burst cost the load generator, in user and kernel time (the
        kernel's share is the TCP receive path, which moves from burst to burst)."""
        self.done = asyncio.Event()
        self.latencies: list[float] = []
        self.e2e: list[float] = []
        self.sampled_bytes = 0
        self.lagged_events = 0
        self.lagged_dropped = 0
        self.other_events = 0
        self.closed_by_server = 0

    def arm(self, target: int) -> None:
        """Reset counters and expect ``target`` data frames per open client (a burst).

        A burst is counted, not sampled: its latencies are never read, and a sampling client
        that parsed each of its frames in Python (orjson, the clock, two appends) cost about
        as much as all the other clients' counting together. During the relay's bursts that
        filled the load generator's core while the relay's was a fifth to two fifths idle,
        so the relay's figure was this process's ceiling. Sampling resumes with the next
        :meth:`sample`."""
        self.target = target
        self.t_first = 0.0
        self.t_last = 0.0
        self.rusage_armed = self.rusage_last = resource.getrusage(resource.RUSAGE_SELF)
        self.done.clear()
        self.pending = 0
        for client in self.clients:
            client.count = 0
            client.target = target
            client.sample = False
            if not client.closed:
                self.pending += 1
        if self.pending == 0:
            self.done.set()

    def sample(self) -> None:
        """Latencies from now on: every sampling client parses its data frames again."""
        for client in self.clients:
            client.sample = client.in_sample

    def total(self) -> int:
        return sum(c.count for c in self.clients)


class Client(CountingListener):
    """One picows client. Its data frames are counted in C (``counting.pyx``); Python runs for
    the few that matter (:meth:`on_data`) and for everything else (:meth:`on_other`)."""

    DATA_PREFIX = b"{"
    """Every data frame starts with it (and no event, ``{"event"...``, counts as data)."""

    def __init__(self, group: Group, sample: bool) -> None:
        super().__init__(self.DATA_PREFIX, EVENT_PREFIX, sample, group.target)
        loop = asyncio.get_running_loop()
        self.group = group
        self.in_sample = sample
        """One of the clients whose frames give the latency figures (``sample`` is whether it
        parses them now: not during a burst)."""
        self.closed = False
        self.welcomed: asyncio.Future[None] = loop.create_future()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.first_data: asyncio.Future[None] = loop.create_future()
        self.transport: WSTransport | None = None
        # When the 101 arrived, the subscription was confirmed and the first data frame came
        # (monotonic seconds, 0.0 until then): the storm's timeline, client by client.
        self.t_connected = 0.0
        self.t_subscribed = 0.0
        self.t_data = 0.0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.t_connected = time.monotonic()

    def on_data(self, transport: WSTransport, frame: WSFrame) -> None:
        """A data frame that is the first since arming, the target-th, or sampled."""
        group = self.group
        if self.count == 1:
            self.on_first_data()
        if self.count == self.target:
            group.t_last = time.monotonic()
            group.rusage_last = resource.getrusage(resource.RUSAGE_SELF)
            group.pending -= 1
            if group.pending == 0:
                group.done.set()
        if self.sample:
            payload = frame.get_payload_as_bytes()
            now = time.time() * 1000.0
            envelope = self.envelope(payload)
            group.latencies.append(now - envelope["ts"])
            group.sampled_bytes += len(payload)
            group.e2e.append(now - envelope["data"]["ts"])

    @staticmethod
    def envelope(payload: bytes) -> dict[str, Any]:
        """The envelope of a data frame (sampling clients only)."""
        envelope: dict[str, Any] = orjson.loads(payload)
        return envelope

    @staticmethod
    def subscribe_message(channel: str) -> bytes:
        return orjson.dumps({"action": "subscribe", "channel": channel, "id": 1})

    def on_first_data(self) -> None:
        """The first data frame since the group was armed (and, once, since connecting)."""
        now = time.monotonic()
        if not self.group.t_first:
            self.group.t_first = now
        if not self.t_data:
            self.t_data = now
            self.first_data.set_result(None)

    def on_other(self, transport: WSTransport, frame: WSFrame, payload: bytes) -> None:
        """Everything but data: close frames, pongs, and server events."""
        msg_type = frame.msg_type
        if msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif msg_type == TEXT:
            self.on_event(orjson.loads(payload))

    def on_event(self, event: dict[str, Any]) -> None:
        """Control events: handshake progress and loss notices; never counted as data."""
        kind = event.get("event")
        if kind == "welcome":
            if not self.welcomed.done():
                self.welcomed.set_result(None)
        elif kind == "subscribed":
            if not self.subscribed.done():
                self.t_subscribed = time.monotonic()
                self.subscribed.set_result(None)
        elif kind == "lagged":
            self.group.lagged_events += 1
            self.group.lagged_dropped += int(event.get("data", {}).get("dropped", 0))
        elif kind == "error" and not self.subscribed.done():
            self.subscribed.set_exception(RuntimeError(f"subscribe failed: {event}"))
        else:
            self.group.other_events += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed:
            self.closed = True
            self.group.closed_by_server += 1
        for fut in (self.welcomed, self.subscribed, self.first_data):
            if not fut.done():
                fut.set_exception(ConnectionError("disconnected during setup"))
            # Mark the exception retrieved so asyncio does not log it at exit.
            if fut.done() and not fut.cancelled():
                fut.exception()


class SioClient(Client):
    """A Socket.IO client on the websocket transport, connected straight to
    ``/socket.io/?EIO=4&transport=websocket`` (no polling handshake): the Engine.IO open
    packet ``0{...}`` comes first, the client answers with a CONNECT to ``/ws`` carrying
    ``{"token": KEY}``, and the server's ``40/ws,{...}`` is the welcome. Events are
    ``42/ws,["name",{body}]``, with the WebSocket event's ``data`` as the body, and go to
    :meth:`Client.on_event` as ``{"event": name, "data": body}``; Engine.IO pings ``2`` are
    answered with ``3``. A data frame is ``42/ws,["data",{envelope}]``: counted by its prefix,
    and for a sampling client parsed without the prefix and the closing bracket."""

    DATA_PREFIX = SIO_DATA_PREFIX

    def __init__(self, group: Group, sample: bool, token: str | None) -> None:
        super().__init__(group, sample)
        self.connect_packet = SIO_CONNECT + (orjson.dumps({"token": token}) if token else b"")

    @staticmethod
    def envelope(payload: bytes) -> dict[str, Any]:
        envelope: dict[str, Any] = orjson.loads(payload[len(SIO_DATA_PREFIX) : -1])
        return envelope

    @staticmethod
    def subscribe_message(channel: str) -> bytes:
        return SIO_EVENT + orjson.dumps(["subscribe", {"channel": channel}])

    def on_other(self, transport: WSTransport, frame: WSFrame, payload: bytes) -> None:
        if frame.msg_type != TEXT:
            super().on_other(transport, frame, payload)
        elif payload == b"2":  # Engine.IO ping
            transport.send(TEXT, b"3")
        elif payload.startswith(SIO_EVENT):
            name, *args = orjson.loads(payload[len(SIO_EVENT) :])
            self.on_event({"event": name, "data": args[0] if args else None})
        elif payload.startswith(b"0"):  # Engine.IO open: connect to the namespace
            transport.send(TEXT, self.connect_packet)
        elif payload.startswith(SIO_CONNECT):
            if not self.welcomed.done():
                self.welcomed.set_result(None)
        elif payload.startswith(SIO_CONNECT_ERROR):
            if not self.welcomed.done():
                refusal = payload[len(SIO_CONNECT_ERROR) :].decode(errors="replace")
                self.welcomed.set_exception(ConnectionError(f"connect refused: {refusal}"))
            transport.disconnect()
        elif payload.startswith(SIO_DISCONNECT) or payload == b"1":  # namespace or Engine.IO
            transport.disconnect()
        else:  # acks, Engine.IO noop
            self.group.other_events += 1


def failure_kind(exc: BaseException) -> str:
    """How a storm client failed, in the words of the report."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionError):
        return "closed"
    return "other"


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame (clients must mask; RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    head = b"\x81" + length
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


async def stalled_connect(host: str, port: int, path: str, channels: list[str]) -> socket.socket:
    """Handshake and subscribe over a raw socket, then leave it unread forever.

    Done on the event loop (non-blocking socket), not in a thread: a thread would fight the
    loop, busy with every other client's frames, for the GIL at each step.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.setblocking(False)
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await loop.sock_connect(sock, (host, port))
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    raise ConnectionError("closed during handshake")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(f"upgrade refused: {head[:64]!r}")
            subscribe = orjson.dumps({"action": "subscribe", "channels": channels, "id": 1})
            await loop.sock_sendall(sock, masked_text_frame(subscribe))
    except BaseException:
        sock.close()
        raise
    return sock


class LoadGen:
    """Owns the groups and executes the harness's commands."""

    def __init__(self, url: str, protocol: str = "ws", token: str | None = None) -> None:
        self.url = url
        self.protocol = protocol
        self.token = token
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.groups: dict[str, Group] = {}

    def group(self, name: str) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name)
        return self.groups[name]

    def new_client(self, group: Group, sample: bool) -> Client:
        if self.protocol == "socketio":
            return SioClient(group, sample, self.token)
        return Client(group, sample)

    async def _open_one(
        self,
        group: Group,
        channel: str | None,
        sample: bool,
        *,
        limit: float = HANDSHAKE_TIMEOUT,
        first_data: bool = False,
    ) -> Client:
        """Connect, wait for the welcome, subscribe to ``channel`` (if any) and, for
        ``first_data``, wait for the first data frame; the client is closed on any failure."""
        client = self.new_client(group, sample)
        transport, _ = await ws_connect(
            lambda: client,
            self.url,
            websocket_handshake_timeout=limit,
            read_buffer_init_size=65536 if channel is not None and not first_data else 1024,
        )
        try:
            async with asyncio.timeout(limit):
                await client.welcomed
                if channel is not None:
                    transport.send(TEXT, client.subscribe_message(channel))
                    await client.subscribed
                    if first_data:
                        await client.first_data
        except BaseException:
            transport.disconnect(graceful=False)
            raise
        return client

    async def cmd_open(
        self, group: Group, n: int, channel: str | None, sample: int
    ) -> dict[str, Any]:
        start = time.monotonic()
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        base = len(group.clients)

        async def one(i: int) -> Client:
            async with sem:
                return await self._open_one(group, channel, sample > 0 and (base + i) % sample == 0)

        results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        clients, errors = self._adopt(group, results)
        return {
            "opened": len(clients),
            "failed": n - len(clients),
            "errors": errors,
            "seconds": time.monotonic() - start,
        }

    @staticmethod
    def _adopt(
        group: Group, results: list[Client | BaseException]
    ) -> tuple[list[Client], dict[str, int]]:
        """Add the clients that made it to ``group``; count the others' errors by message."""
        clients = [r for r in results if isinstance(r, Client)]
        group.clients.extend(clients)
        errors: dict[str, int] = {}
        for result in results:
            if not isinstance(result, Client):
                key = type(result).__name__ + ": " + str(result)[:80]
                errors[key] = errors.get(key, 0) + 1
        return clients, errors

    async def cmd_storm(
        self,
        group: Group,
        n: int,
        channel: str,
        limit: float,
        origin: float | None = None,
        raw: bool = False,
    ) -> dict[str, Any]:
        """Open ``n`` clients all at once (no concurrency limit), each subscribing to
        ``channel`` and waiting for its first data frame, all within ``limit`` seconds.

        Reports, relative to the start (``origin``, a ``time.monotonic()`` of the harness's,
        when several load generators storm together), when the last client got its 101, its
        subscription confirmed and its first data frame, the percentiles of each, and how
        many failed and why (refused, reset, timed out); ``raw`` adds every client's times,
        for the harness to merge.
        """
        start = time.monotonic() if origin is None else origin
        cpu0 = time.process_time()
        deadline = asyncio.get_running_loop().time() + limit

        async def one() -> Client:
            async with asyncio.timeout_at(deadline):
                return await self._open_one(group, channel, False, limit=limit, first_data=True)

        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        elapsed = time.monotonic() - start
        clients, errors = self._adopt(group, results)
        failures: dict[str, int] = {}
        for result in results:
            if not isinstance(result, Client):
                kind = failure_kind(result)
                failures[kind] = failures.get(kind, 0) + 1
        times = {
            name: sorted(getattr(c, name) - start for c in clients)
            for name in ("t_connected", "t_subscribed", "t_data")
        }
        extra: dict[str, Any] = {"times": times} if raw else {}
        return {
            **extra,
            "clients": n,
            "succeeded": len(clients),
            "failed": n - len(clients),
            "failures": failures,
            "errors": errors,
            "seconds": elapsed,
            "timeline": storm_timeline(times),
            "loadgen_cpu": (time.process_time() - cpu0) / elapsed,
        }

    async def cmd_open_stalled(self, group: Group, n: int, channels: list[str]) -> dict[str, Any]:
        if self.protocol != "ws":
            raise ValueError("stalled clients speak the plain WebSocket protocol only")
        start = time.monotonic()
        errors: dict[str, int] = {}
        for _ in range(n):
            try:
                sock = await stalled_connect(self.host, self.port, self.path, channels)
            except (OSError, TimeoutError) as exc:
                key = type(exc).__name__ + ": " + str(exc)[:80]
                errors[key] = errors.get(key, 0) + 1
                continue
            group.stalled.append(sock)
        return {
            "opened": n - sum(errors.values()),
            "errors": errors,
            "seconds": time.monotonic() - start,
        }

    async def cmd_wait(self, group: Group, limit: float, stall: float) -> dict[str, Any]:
        """Wait for every client to reach the target, or give up after no progress.

        ``t_progress`` (when the total last changed, to 0.25 s) stands in for the last
        delivery when the burst never completes.
        """
        deadline = time.monotonic() + limit
        last_total = -1
        last_change = time.monotonic()
        while not group.done.is_set():
            now = time.monotonic()
            if now >= deadline or now - last_change >= stall:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await group.done.wait()
            total = group.total()
            if total != last_total:
                last_total, last_change = total, time.monotonic()
        counts = [c.count for c in group.clients if not c.closed]
        user_s = group.rusage_last.ru_utime - group.rusage_armed.ru_utime
        sys_s = group.rusage_last.ru_stime - group.rusage_armed.ru_stime
        target = group.target
        return {
            "complete": group.done.is_set(),
            "clients": len(counts),
            "clients_complete": sum(c >= target for c in counts),
            "received": sum(counts),
            "lost": sum(max(0, target - c) for c in counts),
            "min": min(counts, default=0),
            "max": max(counts, default=0),
            "t_first": group.t_first,
            "t_last": group.t_last,
            "t_progress": last_change,
            "cpu_s": user_s + sys_s,
            "user_s": user_s,
            "sys_s": sys_s,
            "closed_by_server": group.closed_by_server,
            "lagged_events": group.lagged_events,
        }

    async def cmd_measure(self, group: Group, seconds: float, raw: bool = False) -> dict[str, Any]:
        """Count deliveries and collect sampled latencies over a fixed window (``raw``: with
        every sample, for the harness to merge several load generators')."""
        group.sample()
        group.latencies = []
        group.e2e = []
        group.sampled_bytes = 0
        group.lagged_events = group.lagged_dropped = 0
        closed_before = group.closed_by_server
        cpu0 = time.process_time()
        t0 = time.monotonic()
        before = group.total()
        await asyncio.sleep(seconds)
        after = group.total()
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        lat = sorted(group.latencies)
        e2e = sorted(group.e2e)
        extra: dict[str, Any] = (
            {"latencies": lat, "e2e": e2e, "sampled_bytes": group.sampled_bytes} if raw else {}
        )
        return {
            **extra,
            "seconds": elapsed,
            "deliveries": after - before,
            "deliveries_per_s": (after - before) / elapsed,
            "clients": sum(not c.closed for c in group.clients),
            **latency_figures(lat, e2e, group.sampled_bytes),
            "lagged_events": group.lagged_events,
            "lagged_dropped": group.lagged_dropped,
            "closed_by_server": group.closed_by_server - closed_before,
            "loadgen_cpu": cpu / elapsed,
        }

    def cmd_status(self, group: Group) -> dict[str, Any]:
        return {
            "clients": len(group.clients),
            "open": sum(not c.closed for c in group.clients),
            "stalled": len(group.stalled),
            "closed_by_server": group.closed_by_server,
        }

    def cmd_close(self, group: Group) -> dict[str, Any]:
        for client in group.clients:
            client.closed = True
            if client.transport is not None:
                client.transport.disconnect(graceful=False)
        for sock in group.stalled:
            sock.close()
        closed = len(group.clients) + len(group.stalled)
        del self.groups[group.name]
        return {"closed": closed}

    async def dispatch(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        group = self.group(cmd.get("group", "default"))
        if name == "open":
            return await self.cmd_open(group, cmd["n"], cmd.get("channel"), cmd.get("sample", 0))
        if name == "storm":
            return await self.cmd_storm(
                group,
                cmd["n"],
                cmd["channel"],
                cmd["limit"],
                cmd.get("origin"),
                cmd.get("raw", False),
            )
        if name == "open_stalled":
            return await self.cmd_open_stalled(group, cmd["n"], cmd["channels"])
        if name == "arm":
            group.arm(cmd["target"])
            return {"armed": group.pending}
        if name == "wait":
            return await self.cmd_wait(group, cmd.get("limit", 60.0), cmd.get("stall", 5.0))
        if name == "measure":
            return await self.cmd_measure(group, cmd["seconds"], cmd.get("raw", False))
        if name == "status":
            return self.cmd_status(group)
        if name == "close":
            return self.cmd_close(group)
        raise ValueError(f"unknown command {name!r}")


async def main(url: str, protocol: str, token: str | None) -> None:
    """Answer the harness's commands until ``exit`` or end of input, then close every client."""
    gen = LoadGen(url, protocol, token)
    await serve_commands(gen.dispatch, {"pid": os.getpid(), "nofile": raise_nofile_limit()})
    for name in list(gen.groups):
        gen.cmd_close(gen.groups[name])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="relay benchmark load generator")
    parser.add_argument(
        "--url", required=True, help="ws://127.0.0.1:PORT/ws (socketio: the websocket transport's)"
    )
    parser.add_argument(
        "--protocol",
        choices=("ws", "socketio"),
        default="ws",
        help="the relay's WebSocket protocol, or Socket.IO on namespace /ws",
    )
    parser.add_argument("--token", help="socketio: the CONNECT's auth token (API key)")
    args = parser.parse_args()
    run(main(args.url, args.protocol, args.token))
