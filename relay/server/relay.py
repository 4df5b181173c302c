"""The relay as a Trio program: listener, sessions and upstream supervisors in one nursery.

Embedding it is ``port = await nursery.start(Relay(config).serve)``; ``relay serve`` and
``relay demo`` do nothing more than that.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import attrs
import httpx
import orjson
import trio
from prometheus_client import Histogram

from relay.adapters import make_adapter, request_interval, source_url
from relay.adapters.base import Adapter
from relay.cluster.node import ClusterNode
from relay.cluster.redis import ClusterUnavailable
from relay.config import RelayConfig, TierConfig, TlsConfig
from relay.core import engineio
from relay.core.admission import (
    AddressLimiter,
    AddressLimits,
    RateRefusal,
    RefusalLog,
    origin_allowed,
    origin_set,
)
from relay.core.channels import matches_any, source_of
from relay.core.credentials import Grant
from relay.core.engineio import EngineError
from relay.core.forwarded import TrustedProxies
from relay.core.handshake import accept
from relay.core.hub import Hub, Limits
from relay.core.latency import LatencyHistogram
from relay.core.model import StreamKind
from relay.core.outbox import Policy
from relay.core.protocol import (
    Auth,
    Authenticated,
    ErrorCode,
    ProtocolError,
    Refusal,
)
from relay.core.publish import (
    KEY_PLACEHOLDER,
    Publication,
    PublishedSource,
    parse_publications,
    personal_patterns,
)
from relay.core.timers import SessionTimers
from relay.core.websocket import ServerWebSocket
from relay.issues import ConfigError, Issue
from relay.server.credentials import load_credentials
from relay.server.engine import Refused, SocketIOSession, upgrade
from relay.server.frontdoor import (
    RequestHead,
    error_body,
    error_response,
    read_request_head,
)
from relay.server.listener import Listener
from relay.server.metrics import make_registry, render
from relay.server.nowait import send_by
from relay.server.rounds import WriteRounds
from relay.server.session import CloseCode, Session, SessionSettings
from relay.server.stats import RelayStats, take_stats
from relay.server.status import take_status
from relay.server.transports import HttpTransport, Transport
from relay.server.upstream import UpstreamState, UpstreamSupervisor
from relay.tls import server_context

log = logging.getLogger("relay")

KEY_FILE_POLL = 1.0
"""Seconds between looks at the key file for a change."""

#: Sections a reload cannot apply to a running relay: a change there is logged, not applied.
RESTART_SECTIONS = (
    "server",
    "sources",
    "outbox",
    "backpressure",
    "history",
    "published",
    "compression",
    "cluster",
)


POLL_CONTENT_TYPE = "text/plain; charset=UTF-8"
"""Engine.IO's long-polling answers."""

STATUS_PAGE = (resources.files("relay.server") / "status.html").read_bytes()
"""``/status``: the page that shows ``GET /v1/status`` (a file of the package)."""

_SERVING = (UpstreamState.CONNECTED, UpstreamState.STANDBY)
"""Upstream states of a ready relay: connected, or (in a cluster) held by another node."""


class Relay:
    """Owns the hub, one supervisor per source, the listener and every session."""

    def __init__(
        self,
        config: RelayConfig,
        *,
        adapters: Mapping[str, Adapter] | None = None,
        transport: Transport | None = None,
        wall_clock: Callable[[], float] = time.time,
        reuse_port: bool = False,
    ) -> None:
        """Raises :class:`ConfigError` when the key file or a JWT key file is missing or bad.

        ``reuse_port``: listen with SO_REUSEPORT, beside the other workers of ``relay serve
        --workers`` on the same port (the kernel spreads connections over them).

        ``wall_clock`` (seconds since the epoch) is what tokens' ``exp`` is compared with; the
        deadlines themselves run on Trio's clock, so tests replace both."""
        self.config = config
        self._wall_clock = wall_clock
        self._reuse_port = reuse_port
        self.credentials = load_credentials(config)
        self.adapters = (
            dict(adapters)
            if adapters is not None
            else {name: make_adapter(name, source) for name, source in config.sources.items()}
        )
        self.hub = Hub(
            self._kind_of,
            lambda channel: Policy(config.policy_for(channel)),
            config.history.bounds_for,
            compression=config.compression.policy if config.compression.enabled else None,
            mirror=config.cluster.enabled,
        )
        self.upstreams = {
            name: UpstreamSupervisor(
                adapter,
                config.sources[name],
                self.hub,
                transport,
                url=source_url(config.sources[name]),
                request_interval=request_interval(config.sources[name]),
            )
            for name, adapter in self.adapters.items()
        }
        self.cluster: ClusterNode | None = None
        """In cluster mode: this process as a node of the cluster (the supervisors then run only
        while it holds their sources' leases)."""
        if config.cluster.enabled:
            self.cluster = ClusterNode(
                config.cluster,
                self.hub,
                self.upstreams,
                self._kind_of,
                config.history.bounds_for,
                published=config.published,
            )
            for name in (*self.upstreams, *config.published):
                self.hub.add_source(name, self.cluster.listener(name))
        else:
            for name, supervisor in self.upstreams.items():
                self.hub.add_source(name, supervisor)
        self.published = {
            name: PublishedSource(name, source.state) for name, source in config.published.items()
        }
        if self.cluster is None:
            for name, published in self.published.items():
                self.hub.add_source(name, published)
        self._per_tier = {
            name: _session_settings(config, tier) for name, tier in config.tiers.items()
        }
        self.sessions: set[Session] = set()
        self._engine_sessions: dict[str, SocketIOSession] = {}
        """Socket.IO sessions by id, for their polls, posts and upgrade."""
        self._unconnected, _ = _session_settings(config, TierConfig())
        """A Socket.IO session's settings until its connect is admitted (the default tier's
        command rate; the rest is the server's)."""
        self._per_identity: Counter[str] = Counter()
        server = config.server
        self.addresses = AddressLimiter(
            AddressLimits(
                server.max_connections_per_address,
                server.connection_rate_per_address,
                server.connection_burst_per_address,
            )
        )
        self._origins = origin_set(server.allowed_origins)
        self.proxies = TrustedProxies.parse(server.trusted_proxies, server.forwarded_header)
        self._tls = None if server.tls is None else _tls_context(server.tls)
        self.refusal_log = RefusalLog(interval=1.0)
        self.accepted = 0
        self.rejected: Counter[int] = Counter()
        self.close_codes: Counter[int] = Counter()
        self.bytes_out = 0
        self.writes = 0
        """The writes of the sessions that have ended, and their bytes (see :meth:`written`)."""
        self.timers: SessionTimers[Session] = SessionTimers(
            config.server.heartbeat, config.server.idle_timeout, config.server.heartbeat_timeout
        )
        self._timers_changed = trio.lowlevel.ParkingLot()
        self._key_file_configured = trio.lowlevel.ParkingLot()
        self.fanout_latency = LatencyHistogram()
        """Upstream receipt to socket write, for the oldest message of each write."""
        self.rounds = WriteRounds(self.hub, latency=self.fanout_latency)
        self.hub.flush_before_writing(self.rounds.published)
        self.metrics = make_registry(self)
        self.tcp_connections = 0
        """TCP connections open: sessions, and those still in the front door."""
        self.handshakes: Counter[str] = Counter()
        """Upgrade requests by outcome: completed (101 written), refused, abandoned (the 101
        could not be written before the handshake deadline)."""
        self.deflate_sessions = 0
        """Sessions accepted with permessage-deflate."""
        self.handshake_seconds = Histogram(
            "relay_handshake_seconds",
            "TCP accept to the 101 response written (TLS handshake included), per accepted client",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5),
            registry=self.metrics,
        )
        self.port: int | None = None
        self.listener: Listener | None = None

    def _kind_of(self, channel: str) -> StreamKind | None:
        source = source_of(channel)
        adapter = self.adapters.get(source)
        if adapter is not None:
            return adapter.kind(channel)
        published = self.published.get(source)
        return None if published is None else published.kind(channel)

    def stats(self) -> RelayStats:
        """The counters, all taken at once (the same snapshot ``/metrics`` exports)."""
        return take_stats(self)

    def written(self) -> tuple[int, int]:
        """Writes to clients so far, and their bytes: the ended sessions', those the write
        rounds' flushes made whole (``Hub.round_writes``) and the live sessions' own."""
        hub, live = self.hub, self.sessions
        return (
            self.writes + hub.round_writes + sum(s.writes for s in live),
            self.bytes_out + hub.round_bytes + sum(s.bytes_out for s in live),
        )

    def publish(self, channel: str, data: dict[str, Any]) -> int:
        """Publish one message on a channel of a ``[published.NAME]`` source: sequenced, kept
        in history (and as state for state channels) and fanned out like an upstream's.
        Answers its seq; ValueError for a channel no published source has."""
        published = self.published.get(source_of(channel))
        if published is None:
            raise ValueError(f"{channel!r} is not a channel of a [published] source")
        update = published.update(Publication(channel, data))
        self.hub.publish(update, int(self._wall_clock() * 1000))
        return self.hub.channel(channel).seq

    async def publish_message(self, channel: str, data: dict[str, Any]) -> int:
        """:meth:`publish` for callers that can wait, and the only way in a cluster, where
        Redis numbers the message and every node's subscribers get it. Raises
        ClusterUnavailable when Redis does not confirm it."""
        if self.cluster is None:
            seq = self.publish(channel, data)
            await trio.lowlevel.checkpoint()
            return seq
        published = self.published.get(source_of(channel))
        if published is None:
            raise ValueError(f"{channel!r} is not a channel of a [published] source")
        update = published.update(Publication(channel, data))
        ts = int(self._wall_clock() * 1000)
        return await self.cluster.publish(channel, update.data, ts, update.snapshot)

    def channels(self) -> list[str]:
        """Every channel the sources list (open families, such as one per contract address,
        are served but cannot be listed)."""
        return sorted(c for adapter in self.adapters.values() for c in adapter.channels())

    # Running -----------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``task_status.started`` reports the bound port."""
        server = self.config.server
        async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
            if self.cluster is not None:
                await nursery.start(self.cluster.run, HttpTransport(http))
            else:
                for supervisor in self.upstreams.values():
                    await nursery.start(supervisor.run, HttpTransport(http))
            nursery.start_soon(self.run_timers)
            nursery.start_soon(self.rounds.run)
            self.listener = Listener(
                server.host, server.port, server.listen_backlog, reuse_port=self._reuse_port
            )
            nursery.start_soon(self.listener.serve, self._handle_tcp)
            self.port = self.listener.port
            scheme = "ws" if self._tls is None else "wss"
            log.info("relay listening on %s://%s:%d/ws", scheme, server.host, self.port)
            nursery.start_soon(self.watch_key_file)
            task_status.started(self.port)

    async def run_timers(self) -> None:
        """Every client's heartbeat and idle deadline, from one task (see SessionTimers).

        New deadlines are always later than the ones queued, so this task only needs waking
        when it was waiting with nothing queued."""
        timers = self.timers
        while True:
            with trio.move_on_at(timers.next_deadline()):
                await self._timers_changed.park()
            now = trio.current_time()
            due = timers.pop_due(now)
            for session in due.pings:
                session.ping(now)
            for session in due.silent:
                session.silent()
            for session in due.idle:
                session.idle_expired()

    @property
    def ready(self) -> bool:
        if self.cluster is not None and not self.cluster.ready:
            return False
        return all(u.state in _SERVING for u in self.upstreams.values())

    def reload_tls(self, tls: TlsConfig) -> None:
        """Read the certificate and key files again: connections from now on are served with
        them, open ones keep the context they were accepted with.

        Raises :class:`ConfigError` (issues under ``server.tls``) for a file that does not load,
        or for a relay serving plain ``ws://``, whose clients could not follow a switch to TLS
        on the same port; the context in use then stays."""
        if self._tls is None:
            raise ConfigError(
                [Issue("server.tls", "this relay serves without TLS; restart it to turn TLS on")]
            )
        self._tls = _tls_context(tls)
        log.info("TLS certificate reloaded from %s", tls.certificate)

    # The front door ----------------------------------------------------------------------

    async def _handle_tcp(self, stream: trio.abc.Stream) -> None:
        """Everything one connection does; its failures stay here."""
        # One deadline for the whole handshake, TLS included: a client that sends nothing, or
        # a byte a second, is cut off when it passes, however it spreads its bytes.
        accepted_at = trio.current_time()
        deadline = accepted_at + self.config.server.handshake_timeout
        peer = _peer_address(stream)
        if self._tls is not None:
            # The context in use now: a reload affects connections accepted after it.
            stream = trio.SSLStream(stream, self._tls, server_side=True, https_compatible=True)
        self.tcp_connections += 1
        try:
            if isinstance(stream, trio.SSLStream) and not await _tls_handshake(
                stream, peer, deadline
            ):
                return
            await self._handle(stream, peer, accepted_at)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:  # one connection's bug must not take the listener down
            log.exception("connection failed")
        finally:
            self.tcp_connections -= 1
            await trio.aclose_forcefully(stream)

    async def _handle(self, stream: trio.abc.Stream, peer: str, accepted_at: float) -> None:
        """The request head, then HTTP or the WebSocket upgrade.

        Until the head is read the connection is known only by its TCP peer (a refused head is
        logged with it); from the head on, by its client address (the peer, or the address a
        trusted proxy forwards: :class:`TrustedProxies`), which the per-address limits count
        and every log line names."""
        server = self.config.server
        deadline = accepted_at + server.handshake_timeout
        try:
            head = await read_request_head(stream, server.max_head_bytes, deadline)
        except Refusal as refused:
            self.rejected[refused.status] += 1
            self._log_refusal(peer, refused)
            await send_by(stream, error_response(refused), deadline)
            return
        if head is None:
            return
        address = self.proxies.client_address(peer, head.headers)
        if head.path == engineio.PATH:
            await self._socketio(stream, head, address, deadline)
            return
        if not head.is_upgrade:
            snapshot = head.path.startswith("/v1/snapshot/") and head.method in ("GET", "HEAD")
            if self.cluster is not None and snapshot:
                # A node that does not relay the channel reads its state in Redis.
                response = None
                with trio.move_on_at(deadline):
                    response = await self._cluster_snapshot(head, address)
                if response is not None:
                    await stream.send_all(response)
                return
            if head.path == "/v1/publish" and head.method == "POST":
                response = None
                with trio.move_on_at(deadline):
                    response = await self._publish_request(stream, head, address)
                if response is not None:
                    await stream.send_all(response)
                return
            await stream.send_all(self._http(head, address))
            return
        admitted = self._admit(head, address)
        if isinstance(admitted, bytes):
            self.handshakes["refused"] += 1
            await stream.send_all(admitted)
            return
        over = await self._cluster_refusal(admitted)
        if over is not None:
            self.handshakes["refused"] += 1
            self.addresses.release(address)
            await stream.send_all(self._refusal(head, over, address))
            return
        # Admitted: counted as open for its address (and in a cluster, for its key) from here
        # until the connection ends.
        try:
            try:
                response, websocket = accept(
                    head.method,
                    head.headers,
                    head.trailing,
                    server.max_message_size,
                    self.config.compression.enabled,
                )
            except Refusal as refused:
                self.handshakes["refused"] += 1
                await stream.send_all(self._refusal(head, refused, address))
                return
            # The parsed head (and its parser) must not live as long as the connection, nor
            # the response (this frame lives as long as the session).
            del head
            session = self._session(stream, websocket, admitted)
            sent = await send_by(stream, session.handshake(response), deadline)
            del response
            if not sent:
                self.handshakes["abandoned"] += 1
                return
            self.handshakes["completed"] += 1
            self.handshake_seconds.observe(trio.current_time() - accepted_at)
            self.deflate_sessions += websocket.deflate != 0
            await self._run_session(session, address)
        finally:
            self.addresses.release(address)
            if self.cluster is not None:
                self.cluster.released(admitted.identity)

    def _refusal(self, head: RequestHead, refused: Refusal, address: str) -> bytes:
        self.rejected[refused.status] += 1
        self._log_refusal(address, refused)
        headers = list(refused.headers)
        if isinstance(refused, RateRefusal):
            headers.append(("retry-after", str(refused.retry_after)))
        return head.response(
            refused.status, error_body(refused.code, refused.message), headers=headers
        )

    def _log_refusal(self, address: str, refused: Refusal) -> None:
        """One info line per refusal, but at most one per address per second: the others are
        counted and the count is reported by the address's next line."""
        now = trio.current_time()
        suppressed = self.refusal_log.record(address, now)
        for other, count in self.refusal_log.sweep(now):
            log.info(
                "%d more refusals from %s not logged",
                count,
                other,
                extra={"address": other, "suppressed": count},
            )
        if suppressed is None:
            return
        more = f" ({suppressed} more from this address not logged)" if suppressed else ""
        log.info(
            "refused %s: %d %s: %s%s",
            address,
            refused.status,
            refused.code,
            refused.message,
            more,
            extra={
                "address": address,
                "status": refused.status,
                "reason": refused.code,
                "suppressed": suppressed,
            },
        )

    def _identity(self, head: RequestHead) -> Grant:
        """The grant for the request's credentials, or raises Refusal."""
        token = None
        authorization = head.headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if not token:
            token = head.query_value("api_key")
        return self.credentials.resolve(token, self._wall_clock())

    def _admit(self, head: RequestHead, address: str) -> Grant | bytes:
        """The connection's identity and tier, or the response that refuses it.

        On admission the connection counts as open for its address: the caller releases it.
        The address is checked before the credentials, so guessing keys costs connections."""
        if head.path != "/ws":
            return self._refusal(
                head, Refusal(404, "not_found", "the WebSocket endpoint is /ws"), address
            )
        try:
            self._check_client(head, address)
            grant = self._identity(head)
            self._check_key_limit(grant)
        except Refusal as refused:
            return self._refusal(head, refused, address)
        self.addresses.opened(address)
        return grant

    def _check_client(self, head: RequestHead, address: str) -> None:
        """Raises :class:`Refusal` for a connection from an origin or an address that may not
        open one now, or when the server is full."""
        if not origin_allowed(head.headers.get("origin"), self._origins):
            raise Refusal(403, "forbidden_origin", "this origin may not connect")
        self.addresses.check(address, trio.current_time())
        if len(self.sessions) >= self.config.server.max_connections:
            raise Refusal(429, "server_full", "the server is at its connection limit")

    async def _cluster_refusal(self, grant: Grant) -> Refusal | None:
        """In a cluster, the key's connection counted across the nodes, or the refusal when it
        is at its tier's limit there (released with ``cluster.released`` at the end)."""
        if self.cluster is None:
            return None
        limit = self.config.tiers[grant.tier].max_connections
        if await self.cluster.admit(grant.identity, limit):
            return None
        message = f"at most {limit} connections for this key, across the cluster"
        return Refusal(429, "too_many_connections", message)

    def _check_key_limit(self, grant: Grant) -> None:
        tier = self.config.tiers[grant.tier]
        if self._per_identity[grant.identity] >= tier.max_connections:
            raise Refusal(
                429,
                "too_many_connections",
                f"at most {tier.max_connections} connections for this key",
            )

    def _session(
        self, stream: trio.abc.Stream, websocket: ServerWebSocket, grant: Grant
    ) -> Session:
        settings, limits = self._limits_for(grant)
        return Session(
            stream,
            websocket,
            self.hub,
            limits,
            settings,
            self.timers,
            self.rounds,
            grant.name,
            self.fanout_latency,
            grant,
            self._authenticate,
            self.cluster,
        )

    async def _run_session(self, session: Session, address: str) -> None:
        """A session from start to end, counted where the relay counts sessions.

        One nursery per connection, for the writer task a session starts when its socket is
        behind (and a token's expiry); the session's reader is this task. A Socket.IO session
        may start without its grant: :meth:`_granted` is then called at its connect."""
        async with trio.open_nursery() as nursery:
            self._timers_changed.unpark_all()
            self.sessions.add(session)
            self.accepted += 1
            if session.grant is not None:
                self._granted(session, session.grant, nursery, address)
            try:
                await session.run(nursery)
            finally:
                self.sessions.discard(session)
                grant = session.grant
                if grant is not None:
                    identity = grant.identity
                    self._per_identity[identity] -= 1
                    if not self._per_identity[identity]:
                        del self._per_identity[identity]
                self.bytes_out += session.bytes_out
                self.writes += session.writes
                if session.closing is not None:
                    self.close_codes[session.closing.code] += 1
                closing = session.closing
                code = None if closing is None else closing.code
                log.info(
                    "client %s (%s) from %s closed: %s",
                    session.id,
                    session.key_name,
                    address,
                    "connection lost" if closing is None else f"{closing.code} {closing.reason}",
                    extra={
                        "session": session.id,
                        "key": session.key_name,
                        "address": address,
                        "code": code,
                    },
                )
                nursery.cancel_scope.cancel()

    def _granted(self, session: Session, grant: Grant, nursery: trio.Nursery, address: str) -> None:
        """The session counts against its key from now on (until :meth:`_run_session` ends),
        and a token's connection is closed when the token expires."""
        self._per_identity[grant.identity] += 1
        if grant.valid_until is not None:
            session.expiry = trio.CancelScope(deadline=self._deadline(grant.valid_until))
            nursery.start_soon(self._expire, session, session.expiry)
        log.info(
            "client %s (%s) connected from %s",
            session.id,
            session.key_name,
            address,
            extra={"session": session.id, "key": session.key_name, "address": address},
        )

    # Socket.IO -----------------------------------------------------------------------------

    async def _socketio(
        self, stream: trio.abc.Stream, head: RequestHead, address: str, deadline: float
    ) -> None:
        """An Engine.IO request: a new session's handshake (long-polling, or a WebSocket
        straight away), a poll or a post of a polling session, or its upgrade."""
        try:
            request = engineio.read_query(head.query)
        except EngineError as refused:
            await stream.send_all(self._engine_refusal(head, refused))
            return
        if request.sid is None:
            await self._open_socketio(stream, head, address, deadline, request.transport)
            return
        session = self._engine_sessions.get(request.sid)
        if session is None:
            await stream.send_all(self._engine_refusal(head, engineio.UNKNOWN_SID))
            return
        if request.transport == engineio.WEBSOCKET:
            await self._upgrade_socketio(stream, head, session, deadline)
            return
        if head.is_upgrade:
            await stream.send_all(self._engine_refusal(head, engineio.BAD_REQUEST))
            return
        headers = self._cors(head)
        if head.method == "GET":
            body = await session.poll()
            answer = (
                head.response(200, body, POLL_CONTENT_TYPE, headers)
                if body is not None
                else self._engine_refusal(head, engineio.BAD_REQUEST)
            )
            with trio.move_on_after(self.config.server.send_timeout):
                await stream.send_all(answer)
        elif head.method == "POST":
            body = None
            with trio.move_on_at(deadline):
                try:
                    body = await head.read_body(stream, self.config.server.max_message_size)
                except Refusal as refused:
                    await stream.send_all(self._refusal(head, refused, address))
                    return
            if body is None:
                return
            error = await session.post(body)
            answer = (
                head.response(200, b"ok", "text/html", headers)
                if error is None
                else self._engine_refusal(head, error)
            )
            await stream.send_all(answer)
        else:
            await stream.send_all(self._engine_refusal(head, engineio.BAD_METHOD))

    async def _open_socketio(
        self,
        stream: trio.abc.Stream,
        head: RequestHead,
        address: str,
        deadline: float,
        transport: str,
    ) -> None:
        """A new Engine.IO session, admitted by origin and address (its credentials come with
        its Socket.IO connect); this task holds it until it ends."""
        server = self.config.server
        if transport == engineio.POLLING and (head.is_upgrade or head.method != "GET"):
            await stream.send_all(self._engine_refusal(head, engineio.BAD_METHOD))
            return
        if transport == engineio.WEBSOCKET and not head.is_upgrade:
            await stream.send_all(self._engine_refusal(head, engineio.BAD_REQUEST))
            return
        try:
            self._check_client(head, address)
            websocket = None
            if transport == engineio.WEBSOCKET:
                response, websocket = accept(
                    head.method, head.headers, head.trailing, server.max_message_size, False
                )
        except Refusal as refused:
            await stream.send_all(self._refusal(head, refused, address))
            return
        self.addresses.opened(address)
        connectionless = False
        try:
            if websocket is None:
                session = self._socketio_session(None, None, address)
                answer = head.response(
                    200, session.open_packet(upgrades=True), POLL_CONTENT_TYPE, self._cors(head)
                )
                del head
                if not await send_by(stream, answer, deadline):
                    return  # the client never had its session's id
                # The handshake's connection is done with; this task goes on holding the session,
                # which has no connection of its own (its polls' and its upgrade's are counted
                # by their own tasks).
                await trio.aclose_forcefully(stream)
                self.tcp_connections -= 1
                connectionless = True
            else:
                del head
                if not await send_by(stream, response, deadline):
                    self.handshakes["abandoned"] += 1
                    return
                self.handshakes["completed"] += 1
                session = self._socketio_session(stream, websocket, address)
            self._engine_sessions[session.id] = session
            try:
                await self._run_session(session, address)
                if session.polling:
                    # Its close reaches a long-polling client only with its next poll.
                    with trio.move_on_after(self.config.server.close_timeout):
                        await session.farewell_taken.wait()
            finally:
                del self._engine_sessions[session.id]
                if session.grant is not None and self.cluster is not None:
                    self.cluster.released(session.grant.identity)
        finally:
            self.addresses.release(address)
            if connectionless:
                self.tcp_connections += 1  # _handle_tcp takes it off as this task ends

    def _socketio_session(
        self, stream: trio.abc.Stream | None, websocket: ServerWebSocket | None, address: str
    ) -> SocketIOSession:
        async def connect(session: SocketIOSession, credential: str | None) -> Refused | None:
            return await self._connect_socketio(session, credential, address)

        return SocketIOSession(
            stream,
            websocket,
            self.hub,
            self._unconnected,
            self.timers,
            self.rounds,
            connect,
            self.config.server.max_message_size,
            self.fanout_latency,
            self.cluster,
        )

    async def _connect_socketio(
        self, session: SocketIOSession, credential: str | None, address: str
    ) -> Refused | None:
        """A Socket.IO connect: its credential checked and counted as a WebSocket's are."""
        try:
            grant = self.credentials.resolve(credential, self._wall_clock())
            self._check_key_limit(grant)
        except Refusal as refused:
            self.rejected[refused.status] += 1
            self._log_refusal(address, refused)
            return refused.code, refused.message
        over = await self._cluster_refusal(grant)
        if over is not None:
            return over.code, over.message
        if self.cluster is not None and session.closing is not None:
            # Ended while Redis counted it (a post's connect is not the session's task).
            self.cluster.released(grant.identity)
            return "unavailable", "the connection ended"
        settings, limits = self._limits_for(grant)
        session.admit(grant, settings, limits)
        assert session.nursery is not None  # the connect is read inside the session's run
        self._granted(session, grant, session.nursery, address)
        return None

    async def _upgrade_socketio(
        self, stream: trio.abc.Stream, head: RequestHead, session: SocketIOSession, deadline: float
    ) -> None:
        """A polling session's WebSocket: the probe, then the upgrade packet, then its stream
        is the session's (this task waits while the session's own task reads it)."""
        if not head.is_upgrade:
            await stream.send_all(self._engine_refusal(head, engineio.BAD_REQUEST))
            return
        try:
            response, websocket = accept(
                head.method, head.headers, head.trailing, self.config.server.max_message_size, False
            )
        except Refusal:
            await stream.send_all(self._engine_refusal(head, engineio.BAD_REQUEST))
            return
        del head
        if not await send_by(stream, response, deadline):
            return
        upgraded = False
        # The probe and the upgrade within the handshake's deadline: the client sends both at
        # once when the probe is answered (its waiting poll is released for it).
        with trio.move_on_at(deadline):
            upgraded = await upgrade(stream, websocket, session, self.hub.framer.text)
        if not upgraded:
            with trio.move_on_after(self.config.server.close_timeout):
                frame = websocket.close(CloseCode.POLICY, "upgrade failed")
                if frame is not None:
                    await stream.send_all(frame)
            return
        await session.ended.wait()

    def _engine_refusal(self, head: RequestHead, refused: EngineError) -> bytes:
        self.rejected[400] += 1
        return head.response(400, refused.body(), headers=self._cors(head))

    def _cors(self, head: RequestHead) -> list[tuple[str, str]]:
        """Long-polling from a page of an allowed origin (every origin when none is listed)
        needs the browser's permission to read the answers."""
        origin = head.headers.get("origin")
        if origin is None or not origin_allowed(origin, self._origins):
            return []
        return [("access-control-allow-origin", origin), ("vary", "origin")]

    # Plain HTTP --------------------------------------------------------------------------

    def _http(self, head: RequestHead, address: str) -> bytes:
        if head.method not in ("GET", "HEAD"):
            return head.response(
                405,
                error_body("method_not_allowed", "only GET is served (and POST /v1/publish)"),
            )
        path = head.path
        if path == "/ws":
            return head.response(
                426,
                error_body("upgrade_required", "connect with a WebSocket client"),
                headers=[("upgrade", "websocket")],
            )
        if path == "/healthz":
            return head.response(200, b'{"status":"ok"}')
        if path == "/readyz":
            states = {name: u.state.value for name, u in self.upstreams.items()}
            now = trio.current_time()
            retry_in = {
                name: round(max(0.0, u.next_retry - now), 3)
                for name, u in self.upstreams.items()
                if u.next_retry is not None
            }
            ready: dict[str, Any] = {"ready": self.ready, "upstreams": states, "retry_in": retry_in}
            if self.cluster is not None:
                ready["cluster"] = {
                    "node": self.cluster.id,
                    "redis": self.cluster.redis_error or "ok",
                    "holding": sorted(self.cluster.holding),
                }
            body = orjson.dumps(ready)
            return head.response(200 if self.ready else 503, body)
        if path == "/status":
            return head.response(200, STATUS_PAGE, "text/html; charset=utf-8")
        if path == "/v1/status":
            return self._status(head, address)
        if path == "/metrics":
            return head.response(
                200, render(self.metrics), "text/plain; version=0.0.4; charset=utf-8"
            )
        if path.startswith("/v1/snapshot/"):
            return self._snapshot(head, path.removeprefix("/v1/snapshot/"), address)
        return head.response(404, error_body("not_found", f"no route for {path}"))

    async def _publish_request(
        self, stream: trio.abc.Stream, head: RequestHead, address: str
    ) -> bytes:
        """``POST /v1/publish``: the credentials first (the body is not read for a client
        that may not publish), then the whole body checked before anything is published."""
        try:
            grant = self._identity(head)
            allowed = personal_patterns(self.config.tiers[grant.tier].publish, grant.owner)
            if not allowed:
                raise Refusal(403, "forbidden", "your key may not publish")
            publications = parse_publications(
                await head.read_body(stream, self.config.server.max_publish_bytes)
            )
            for publication in publications:
                channel = publication.channel
                if not matches_any(channel, allowed):
                    raise Refusal(403, "forbidden", f"your key may not publish to {channel}")
                source = self.published.get(source_of(channel))
                if source is None or source.kind(channel) is None:
                    raise Refusal(
                        403, "forbidden", f"{channel} is not a channel of a [published] source"
                    )
        except Refusal as refused:
            return self._refusal(head, refused, address)
        published: list[dict[str, Any]] = []
        for p in publications:
            try:
                seq = await self.publish_message(p.channel, p.data)
            except ClusterUnavailable as exc:
                # What went out before stays out; the answer says how far it got.
                message = f"{exc}; published {len(published)} of {len(publications)}"
                return self._refusal(head, Refusal(503, "unavailable", message), address)
            published.append({"channel": p.channel, "seq": seq})
        return head.response(200, orjson.dumps({"published": published}))

    def _status(self, head: RequestHead, address: str) -> bytes:
        """``GET /v1/status``, for a key whose tier is ``admin``: the page's data."""
        try:
            grant = self._identity(head)
            if not self.config.tiers[grant.tier].admin:
                raise Refusal(403, "forbidden", "your key may not read the status")
        except Refusal as refused:
            return self._refusal(head, refused, address)
        status = take_status(self, int(self._wall_clock() * 1000))
        return head.response(200, orjson.dumps(status))

    def _snapshot(self, head: RequestHead, channel: str, address: str) -> bytes:
        refused = self._snapshot_refusal(head, channel, address)
        if refused is not None:
            return refused
        return self._snapshot_response(head, channel, self.hub.snapshot(channel))

    async def _cluster_snapshot(self, head: RequestHead, address: str) -> bytes:
        assert self.cluster is not None
        channel = head.path.removeprefix("/v1/snapshot/")
        refused = self._snapshot_refusal(head, channel, address)
        if refused is not None:
            return refused
        try:
            snapshot = await self.cluster.snapshot(channel)
        except ClusterUnavailable as exc:
            return self._refusal(head, Refusal(503, "unavailable", str(exc)), address)
        return self._snapshot_response(head, channel, snapshot)

    def _snapshot_refusal(self, head: RequestHead, channel: str, address: str) -> bytes | None:
        try:
            grant = self._identity(head)
        except Refusal as refused:
            return self._refusal(head, refused, address)
        _, limits = self._limits_for(grant)
        if not matches_any(channel, limits.channels) and self.hub.known(channel):
            return head.response(403, error_body("forbidden", f"your tier may not read {channel}"))
        return None

    def _snapshot_response(
        self, head: RequestHead, channel: str, snapshot: tuple[int, int, dict[str, Any]] | None
    ) -> bytes:
        if snapshot is None:
            return head.response(404, error_body("not_found", f"no state for channel {channel!r}"))
        seq, ts, data = snapshot
        body: dict[str, Any] = {"channel": channel, "seq": seq, "ts": ts, "data": data}
        return head.response(200, orjson.dumps(body))

    # Credentials over a connection's life ------------------------------------------------

    def _limits_for(self, grant: Grant) -> tuple[SessionSettings, Limits]:
        """The tier's shared settings; the connection's own channel patterns only when it
        has some (``{key}`` in the tier's, a token's extra channels), so that 10k connections
        of a plain tier share one :class:`Limits`."""
        settings, limits = self._per_tier[grant.tier]
        channels = limits.channels
        if any(KEY_PLACEHOLDER in pattern for pattern in channels):
            channels = personal_patterns(channels, grant.owner)
        channels += grant.channels
        if channels != limits.channels:
            limits = Limits(limits.max_subscriptions, channels)
        return settings, limits

    def _deadline(self, valid_until: float) -> float:
        """A wall-clock instant on Trio's clock, where every deadline lives."""
        return trio.current_time() + (valid_until - self._wall_clock())

    async def _expire(self, session: Session, expiry: trio.CancelScope) -> None:
        """Close a token's connection with 1008 when the token ends; a refresh moves the
        scope's deadline. Runs in the connection's nursery, so it ends with the session."""
        with expiry:
            await trio.sleep_forever()
        session.revoke("token expired")

    def _authenticate(self, session: Session, command: Auth) -> None:
        """The ``auth`` command: a valid token for the same subject replaces the connection's
        in place; anything else is an error that changes nothing."""
        current = session.grant
        assert current is not None and current.is_token  # the session checks before calling
        try:
            grant = self.credentials.resolve(command.token, self._wall_clock())
            if not grant.is_token:
                raise Refusal(401, ErrorCode.INVALID_CREDENTIALS, "the auth command takes a JWT")
            if grant.identity != current.identity:
                raise Refusal(401, ErrorCode.INVALID_CREDENTIALS, "another subject's token")
        except Refusal as refused:
            error = ProtocolError(ErrorCode.INVALID_CREDENTIALS, refused.message, command.id)
            session.reply_error(error)
            return
        assert grant.expires is not None
        session.reply("authenticated", Authenticated(grant.expires), command.id)
        self._regrant(session, grant)

    def _regrant(self, session: Session, grant: Grant) -> int:
        """Apply a (renewed) grant to a live session; answers the subscriptions removed."""
        settings, limits = self._limits_for(grant)
        if session.expiry is not None and grant.valid_until is not None:
            session.expiry.deadline = self._deadline(grant.valid_until)
        return session.regrant(grant, settings, limits)

    # Reload ------------------------------------------------------------------------------

    def reload(self, config: RelayConfig) -> bool:
        """Apply what can change while clients stay connected: keys (inline and the key
        file), tiers, ``[auth]`` and its JWT settings. A session whose credential no longer
        resolves is closed with 1008; one whose tier or token changed gets the new limits,
        losing (with an event) each subscription they no longer allow. Changes to sections
        that need a restart are logged, not applied. A bad configuration or key file is
        logged with its issues and changes nothing: answers False then."""
        old = self.config
        try:
            credentials = load_credentials(config)
            # The certificate is read again too (renewed files under the same names): a TLS
            # relay's new connections get it. Turning TLS on or off needs a restart.
            tls = None
            if self._tls is not None and config.server.tls is not None:
                tls = _tls_context(config.server.tls)
        except ConfigError as exc:
            log.error("reload refused, nothing changed:\n%s", exc, extra={"issues": str(exc)})
            return False
        restart = _restart_sections(old, config)
        if restart:
            log.warning(
                "reload: changes to %s need a restart; not applied",
                ", ".join(f"[{s}]" for s in restart),
                extra={"restart_sections": restart},
            )
        before = set(self.credentials.keys)
        after = set(credentials.keys)
        tiers_changed = sorted(
            name
            for name in old.tiers.keys() | config.tiers.keys()
            if old.tiers.get(name) != config.tiers.get(name)
        )
        self.config = attrs.evolve(old, auth=config.auth, tiers=config.tiers, keys=config.keys)
        if tls is not None and config.server.tls is not None:
            self._tls = tls
            self.config = attrs.evolve(
                self.config, server=attrs.evolve(old.server, tls=config.server.tls)
            )
            log.info("TLS certificate reloaded from %s", config.server.tls.certificate)
        if config.auth.key_file is not None:
            self._key_file_configured.unpark_all()
        self.credentials = credentials
        self._per_tier = {
            name: _session_settings(self.config, tier) for name, tier in config.tiers.items()
        }
        closed = removed = 0
        now = self._wall_clock()
        for session in list(self.sessions):
            if session.grant is None or session.closing is not None:
                continue
            try:
                grant = credentials.renew(session.grant, now)
            except Refusal as refused:
                session.revoke("credentials revoked")
                log.info(
                    "client %s (%s) closed by reload: %s",
                    session.id,
                    session.key_name,
                    refused.message,
                    extra={"session": session.id, "key": session.key_name},
                )
                closed += 1
                continue
            removed += self._regrant(session, grant)
        log.info(
            "reloaded: %d keys added, %d removed; tiers changed: %s; %d sessions closed, "
            "%d subscriptions removed",
            len(after - before),
            len(before - after),
            ", ".join(tiers_changed) or "none",
            closed,
            removed,
            extra={
                "keys_added": len(after - before),
                "keys_removed": len(before - after),
                "tiers_changed": tiers_changed,
                "sessions_closed": closed,
                "subscriptions_removed": removed,
            },
        )
        return True

    async def watch_key_file(self) -> None:
        """Reload the keys when the key file changes (its mtime, size or inode: an atomic
        replace by ``relay keys`` changes the inode even within one mtime tick). Looks every
        :data:`KEY_FILE_POLL` seconds; sleeps without a deadline while no key file is
        configured, until a reload configures one."""
        seen = _file_signature(self.config.auth.key_file)
        while True:
            if self.config.auth.key_file is None:
                await self._key_file_configured.park()
                seen = _file_signature(self.config.auth.key_file)
                continue
            await trio.sleep(KEY_FILE_POLL)
            path = self.config.auth.key_file
            signature = _file_signature(path)
            if signature != seen:
                seen = signature
                if path is not None:
                    log.info("key file %s changed: reloading keys", path, extra={"path": path})
                    self.reload(self.config)


def _session_settings(config: RelayConfig, tier: TierConfig) -> tuple[SessionSettings, Limits]:
    """Shared by every session of a tier: per-connection copies would cost memory at 10k."""
    server = config.server
    settings = SessionSettings(
        heartbeat=server.heartbeat,
        heartbeat_timeout=server.heartbeat_timeout,
        idle_timeout=server.idle_timeout,
        send_timeout=server.send_timeout,
        close_timeout=server.close_timeout,
        max_messages=config.outbox.max_messages,
        max_bytes=config.outbox.max_bytes,
        rate_limit=tier.rate_limit,
        rate_burst=tier.rate_burst,
    )
    return settings, Limits(tier.max_subscriptions, tuple(tier.channels))


async def _tls_handshake(
    stream: trio.SSLStream[trio.abc.Stream], peer: str, deadline: float
) -> bool:
    """The TLS handshake under the connection's handshake deadline; False when it failed or
    did not finish in time (logged at debug, without a traceback: scanners, plain-text
    clients and clients that do not trust the certificate are routine)."""
    with trio.move_on_at(deadline):
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            log.debug(
                "TLS handshake with %s failed: %s",
                peer,
                cause if cause is not None else "connection closed",
                extra={"address": peer},
            )
            return False
        return True
    log.debug("TLS handshake with %s not done in time", peer, extra={"address": peer})
    return False


def _tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The server context from the files ``tls`` names; ConfigError under ``server.tls``."""
    try:
        return server_context(tls.certificate, tls.private_key)
    except ConfigError as exc:
        raise ConfigError(
            Issue(f"server.tls.{issue.path}", issue.message) for issue in exc.issues
        ) from None


def _restart_sections(old: RelayConfig, new: RelayConfig) -> list[str]:
    """The sections whose changes a reload cannot apply. ``[server.tls]`` can change (new
    files) as long as TLS stays on or off."""
    restart = [s for s in RESTART_SECTIONS if getattr(new, s) != getattr(old, s)]
    same_tls_mode = (old.server.tls is None) == (new.server.tls is None)
    if (
        "server" in restart
        and same_tls_mode
        and attrs.evolve(old.server, tls=new.server.tls) == new.server
    ):
        restart.remove("server")
    return restart


def _file_signature(path: str | None) -> tuple[int, int, int] | None:
    """What tells a changed file: None for no file (or none configured)."""
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size, status.st_ino


def _peer_address(stream: trio.abc.Stream) -> str:
    """The TCP peer's IP address (``"unknown"`` for a stream that is not a socket, as in tests
    over memory streams: they then share one address's limits)."""
    socket = getattr(stream, "socket", None)
    if socket is None:
        return "unknown"
    try:
        peer = socket.getpeername()
    except OSError:
        return "unknown"
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return "unknown"
