"""ClusterNode: a relay process as one node of a cluster on Redis.

What it adds to a relay (see docs/scaling.md for the whole picture):

- **Sources are claimed.** Every node contends for every source's lease; the holder runs the
  source's upstream supervisor with a :class:`RedisOutlet`, so the source still has exactly one
  upstream connection in the whole cluster, subscribed to the union of what the clients of every
  node want (each node writes its wanted channels to Redis).
- **Every node relays.** A node follows, on Pub/Sub, the channels its own clients hold, and its
  hub fans out the holder's payload bytes: identical envelopes and seqs on every node.
- **Subscribes are answered at a known point of the stream.** A subscribe to a channel the node
  does not yet follow, and every resume, runs the join script, whose answer Redis publishes on
  the node's own channel: the node's Pub/Sub connection delivers it between the same two
  messages of the channel as the instant the script read the channel's state and history, so
  the snapshot or replay meets the live messages with no gap and no duplicate.

Decisions are the core's (:class:`ChannelMirrors`, :class:`Lease`); this module does the I/O.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import coredis
import orjson
import trio

from relay.cluster.connections import ConnectionCounts
from relay.cluster.lease import RedisLeaseStore, hold_lease
from relay.cluster.outlet import RedisOutlet
from relay.cluster.redis import (
    FAILURES,
    REDIS_DOWN,
    ClusterUnavailable,
    answered_within,
    for_a_client,
)
from relay.cluster.scripts import JOIN, PUBLISH_APP
from relay.cluster.wants import NodeWants, SourceInterest
from relay.config import ClusterConfig
from relay.core.backoff import Backoff
from relay.core.channels import source_of
from relay.core.cluster_wire import (
    ClusterKeys,
    JoinAnswer,
    decode_join_answer,
    decode_message,
    envelope_parts,
)
from relay.core.history import HistoryBounds
from relay.core.hub import Hub, Limits, Subscriber
from relay.core.lease import Lease
from relay.core.mirror import ChannelMirrors, Verdict
from relay.core.model import StreamKind
from relay.core.protocol import ErrorCode, ProtocolError, RequestId, Since
from relay.server.upstream import leaf_exceptions

log = logging.getLogger("relay.cluster")

STOP_GRACE = 3
"""A stopping node's tasks (releasing its leases) and its Redis client get this many
``request_timeout`` to end before they are cancelled."""


@attrs.define(eq=False)
class _Join:
    """A client's subscribe waiting for Redis, or (``sub`` None) a channel resynchronizing."""

    id: str
    sub: Subscriber | None
    channels: list[str]
    request_id: RequestId
    limits: Limits | None
    since: Since | None
    after: int | None
    """The seq to replay after: the client's ``since`` when its epoch is the cluster's, or the
    node's last relayed seq for a resynchronization; None for no replay."""
    done: trio.Event = attrs.Factory(trio.Event)
    abandoned: bool = False


class ClusterNode:
    def __init__(
        self,
        config: ClusterConfig,
        hub: Hub,
        supervisors: Mapping[str, Any],
        kind_of: Callable[[str], StreamKind | None],
        history_for: Callable[[str], HistoryBounds],
        published: Iterable[str] = (),
        node_id: str | None = None,
    ) -> None:
        """``supervisors``: each upstream source's :class:`UpstreamSupervisor`, run only while
        this node holds the source's lease. ``published``: the ``[published]`` sources, whose
        messages any node numbers through Redis (:meth:`publish`)."""
        assert config.redis_url is not None
        self.config = config
        self.hub = hub
        self.keys = ClusterKeys(config.prefix)
        self.id = node_id or secrets.token_hex(8)
        """Also the node's lease token: unique to this process."""
        self.supervisors = dict(supervisors)
        for supervisor in self.supervisors.values():
            supervisor.stand_by()
        self._kind_of = kind_of
        self._history_for = history_for
        self.mirrors = ChannelMirrors()
        self.wants = NodeWants(
            self.keys,
            self.id,
            (*supervisors, *published),
            int(config.lease_ttl * 3000),
            config.request_timeout,
            self._interest_changed,
        )
        self.connections = ConnectionCounts(self.keys, self.id, config.request_timeout)
        self.holding: dict[str, RedisOutlet] = {}
        self._joins: dict[str, _Join] = {}
        self._join_queue: list[_Join] = []
        self._joins_queued = trio.lowlevel.ParkingLot()
        self._follows: dict[str, bool] = {}
        """Pub/Sub changes to make: channel -> follow (True) or not."""
        self._follows_changed = trio.lowlevel.ParkingLot()
        self._union_changed: dict[str, trio.lowlevel.ParkingLot] = {
            source: trio.lowlevel.ParkingLot() for source in supervisors
        }
        self.redis_error: str | None = "not connected yet"
        """Why Redis is unreachable, None while it answers: /readyz reports it."""
        self._client: Any = None
        self._publish_app: Any = None
        self._pubsub: Any = None
        self._answers_followed = False
        self.joins_answered = 0
        self.resyncs = 0
        self.relayed = 0

    # Hub wiring ------------------------------------------------------------------------------

    def listener(self, source: str) -> SourceInterest:
        return self.wants.interests[source]

    def _interest_changed(self, channel: str, wanted: bool) -> None:
        """The channel's first local subscriber came (it is followed already: its join did
        that) or its last one left: stop following it unless a join still waits for it."""
        if not wanted:
            self._unfollow_unwanted([channel])

    def _follow(self, channel: str, follow: bool) -> None:
        self._follows[channel] = follow
        self._follows_changed.unpark_all()

    # Sessions --------------------------------------------------------------------------------

    def subscribe(
        self,
        sub: Subscriber,
        channels: Iterable[str],
        request_id: RequestId,
        limits: Limits,
        since: Since | None,
    ) -> _Join | None:
        """A client's subscribe: answered now for the channels this node relays live (from its
        own state), or a join the session waits for (:meth:`wait`)."""
        hub = self.hub
        remote = []
        for name in channels:
            if hub.refuse(sub, name, request_id, limits):
                continue
            if since is None and self.mirrors.live(name):
                hub.subscribe(sub, [name], request_id, limits)
            else:
                remote.append(name)
        sub.wake()
        if not remote:
            return None
        after = since.seq if since is not None and since.epoch == hub.epoch else None
        return self._queue_join(sub, remote, request_id, limits, since, after)

    async def wait(self, join: _Join) -> None:
        """Until the join is answered, or for at most ``join_timeout``: then the client gets
        an ``unavailable`` error for each channel not answered. A session that ends while
        waiting abandons its join (the answer then adds nobody)."""
        try:
            with trio.move_on_after(self.config.join_timeout):
                await join.done.wait()
        finally:
            if not join.done.is_set():
                join.abandoned = True
                self._joins.pop(join.id, None)
                self._unfollow_unwanted(join.channels)
        if join.done.is_set() or join.sub is None:
            return
        for channel in join.channels:
            error = ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the relay could not reach its cluster's Redis; try again",
                join.request_id,
                channel,
            )
            join.sub.outbox.offer_control(self.hub.error_frame(join.sub.framing, error))
        join.sub.wake()

    def _unfollow_unwanted(self, channels: Iterable[str]) -> None:
        for channel in channels:
            if not self.hub.registry.subscribers(channel) and not any(
                channel in j.channels for j in self._joins.values()
            ):
                self.mirrors.unfollow(channel)
                self._follow(channel, False)

    def _queue_join(
        self,
        sub: Subscriber | None,
        channels: list[str],
        request_id: RequestId,
        limits: Limits | None,
        since: Since | None,
        after: int | None,
    ) -> _Join:
        join = _Join(secrets.token_hex(6), sub, channels, request_id, limits, since, after)
        self._joins[join.id] = join
        for channel in channels:
            if self.mirrors.follow(channel):
                self._follow(channel, True)
        self._join_queue.append(join)
        self._joins_queued.unpark_all()
        return join

    async def publish(self, channel: str, data: dict[str, Any], ts: int, snapshot: bool) -> int:
        """An application's message on a ``[published]`` channel: Redis numbers it, keeps it
        (history, and state for a state channel) and publishes it to every node, in one
        script, so messages published from different nodes keep one order. Answers its seq;
        ClusterUnavailable when Redis does not answer within ``request_timeout``."""
        script = self._publish_app
        if script is None or self.redis_error is not None:
            raise ClusterUnavailable(self.redis_error or "Redis not connected yet")
        head, tail = envelope_parts(channel, ts, orjson.dumps(data), snapshot)
        bounds = self._history_for(channel)
        keep = bounds.max_messages if bounds.enabled else 0
        args = [self.keys.prefix, source_of(channel), channel, head, tail, str(ts)]
        args += ["1" if snapshot else "0", str(keep)]
        with for_a_client(self.config.request_timeout):
            seq = await script(keys=[], args=args)
        return int(seq)

    async def snapshot(self, channel: str) -> tuple[int, int, dict[str, Any]] | None:
        """(seq, ts, data) of a channel's state: this node's own while it relays the channel,
        else what Redis holds (the holder writes it with every message). ClusterUnavailable
        when Redis does not answer in time."""
        if self.mirrors.live(channel):
            return self.hub.snapshot(channel)
        client = self._client
        if client is None or self.redis_error is not None:
            raise ClusterUnavailable(self.redis_error or "Redis not connected yet")
        with for_a_client(self.config.request_timeout):
            seq, ts, snap = await client.hmget(self.keys.state(channel), ["seq", "ts", "snap"])
        if snap is None:
            return None
        return int(seq), int(ts), orjson.loads(snap)["data"]

    async def admit(self, identity: str, limit: int) -> bool:
        """Whether one more connection of ``identity`` keeps it within ``limit`` across the
        cluster (:class:`ConnectionCounts`)."""
        return await self.connections.admit(identity, limit)

    def released(self, identity: str) -> None:
        self.connections.released(identity)

    # Running ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.redis_error is None

    async def run(
        self, http: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Until cancelled; then the node stops in order: its tasks first (releasing the
        leases it holds, so another node takes its sources at once rather than at expiry),
        then its Redis connections."""
        stopping = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._run_until, stopping, http)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                stopping.set()

    async def _run_until(
        self,
        stopping: trio.Event,
        http: Any,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Redis sessions, one after the other: a session ends when Redis stops answering, and
        the next starts after a backoff, with a new client (a client whose connections failed
        is not trusted to recover by itself). Shielded: a cancellation would reach the Redis
        client's own tasks at the same time as the node's, and the leases could not be
        released; ``stopping`` ends it in order instead, within a bound (:data:`STOP_GRACE`
        requests' time): a Redis that is gone must not keep the process from exiting."""
        backoff = Backoff(initial=0.1, factor=2.0, cap=self.config.lease_retry * 2, reset_after=5.0)
        started = False
        with trio.CancelScope(shield=True) as shielded:
            async with trio.open_nursery() as guard:

                async def bound_the_stop() -> None:
                    await stopping.wait()
                    shielded.deadline = (
                        trio.current_time() + STOP_GRACE * self.config.request_timeout
                    )

                guard.start_soon(bound_the_stop)
                while not stopping.is_set():
                    if not started:
                        task_status.started()
                        started = True
                    backoff.connected(trio.current_time())
                    reason = await self._session(stopping, http)
                    if reason is None:
                        break
                    backoff.disconnected(trio.current_time())
                    self.redis_error = f"Redis unreachable: {reason}"
                    delay = backoff.next_delay(random.random)
                    log.warning("cluster: %s; connecting again in %.1fs", self.redis_error, delay)
                    with trio.move_on_after(delay):
                        await stopping.wait()
                guard.cancel_scope.cancel()

    async def _session(self, stopping: trio.Event, http: Any) -> str | None:
        """One Redis client's life; answers why Redis failed, or None once stopping."""
        url = self.config.redis_url
        assert url is not None
        client = coredis.Redis.from_url(url, decode_responses=False)
        self._client = client
        self._publish_app = client.register_script(PUBLISH_APP)
        self.connections.connected(client)
        self._pubsub = None
        self._answers_followed = False
        # What the last session followed is followed again; what was live has missed messages.
        for channel in self.mirrors.followed():
            self._follows[channel] = True
            if self.mirrors.interrupted(channel):
                self._resync(channel)
        self._join_queue = [j for j in self._joins.values() if not j.abandoned]
        failure = None
        try:
            async with client, trio.open_nursery() as nursery:
                await self._adopt_epoch()
                nursery.start_soon(self._read_pubsub, client)
                nursery.start_soon(self._send_joins, client)
                nursery.start_soon(self._apply_follows)
                # Also the node's heartbeat on Redis: its failure ends the session.
                nursery.start_soon(
                    self.wants.keep,
                    client,
                    self.supervisors,
                    self.config.lease_renew,
                    self._redis_answers,
                )
                nursery.start_soon(self.connections.write, client)
                for source in self.supervisors:
                    nursery.start_soon(self._contend, client, source, http)
                await stopping.wait()
                nursery.cancel_scope.cancel()
        except* FAILURES as group:
            failure = "; ".join(
                sorted({str(e) or type(e).__name__ for e in leaf_exceptions(group)})
            )
        finally:
            # Until the next session answers, admissions count on this node only, at once.
            self.connections.disconnected()
        return failure

    async def _adopt_epoch(self) -> None:
        """The cluster's numbering is one epoch for every node: the first node's, kept in
        Redis. A node that cannot reach Redis at start keeps its own until it can."""
        with trio.move_on_after(self.config.request_timeout):
            try:
                await self._client.set(
                    self.keys.epoch, self.hub.epoch, condition=coredis.PureToken.NX
                )
                epoch = await self._client.get(self.keys.epoch)
                if epoch is not None:
                    self.hub.epoch = epoch.decode()
            except REDIS_DOWN as exc:
                log.warning("cluster: Redis unreachable at start: %s", exc)

    # Pub/Sub ---------------------------------------------------------------------------------

    async def _read_pubsub(self, client: Any) -> None:
        keys = self.keys
        answers = keys.node(self.id).encode()
        control = keys.control.encode()
        wants = keys.wants_changed.encode()
        prefix = keys.message_prefix().encode()
        skip = len(prefix)
        async with client.pubsub(channels=[answers, control, wants]) as pubsub:
            self._pubsub = pubsub
            self._follows_changed.unpark_all()
            async for message in pubsub:
                kind = message["type"]
                name = message["channel"]
                if kind == "message":
                    data = message["data"]
                    if name.startswith(prefix):
                        self._on_message(name[skip:].decode(), data)
                    elif name == answers:
                        self._on_answer(data)
                    elif name == control:
                        self._on_control(data)
                    elif name == wants:
                        self._on_wants_changed(data.decode())
                elif kind == "subscribe":
                    self._on_subscribed(name, answers, prefix)

    def _on_subscribed(self, name: bytes, answers: bytes, prefix: bytes) -> None:
        """Redis confirmed a subscription. For a channel already live, or the node's own
        answer channel, that means the connection was replaced and messages may be lost."""
        if name == answers:
            self.redis_error = None
            if self._answers_followed:
                # Joins sent before the reconnection may have had their answers lost.
                pending = [j for j in self._joins.values() if not j.abandoned]
                self._join_queue.extend(j for j in pending if j not in self._join_queue)
                self._joins_queued.unpark_all()
            self._answers_followed = True
        elif name.startswith(prefix):
            channel = name[len(prefix) :].decode()
            if self.mirrors.interrupted(channel):
                self._resync(channel)

    def _on_message(self, channel: str, data: bytes) -> None:
        try:
            message = decode_message(data)
        except ValueError as exc:
            log.warning("cluster: a malformed message on %s skipped: %s", channel, exc)
            return
        verdict = self.mirrors.message(channel, message.seq)
        if verdict is Verdict.RELAY:
            self.relayed += 1
            self.hub.relay(channel, message.seq, message.ts, message)
        elif verdict is Verdict.RESYNC:
            self._resync(channel)

    def _resync(self, channel: str) -> None:
        self.resyncs += 1
        log.warning("cluster: messages of %s lost on the way from Redis; resynchronizing", channel)
        self._queue_join(None, [channel], None, None, None, self.mirrors.resync_from(channel))

    def _on_answer(self, data: bytes) -> None:
        try:
            answer = decode_join_answer(data)
        except ValueError as exc:
            log.warning("cluster: a malformed join answer skipped: %s", exc)
            return
        join = self._joins.get(answer.join)
        if join is None:
            return
        self._complete(join, answer)

    def _complete(self, join: _Join, answer: JoinAnswer) -> None:
        hub = self.hub
        again = []
        for joined in answer.channels:
            channel = joined.channel
            if join.sub is None:
                resynced = self.mirrors.resynced(channel, joined.seq, joined.missed)
                if resynced is not None:
                    hub.mirrored(channel, joined.seq, joined.ts, joined.state)
                    hub.resynced(channel, resynced.missed, resynced.lost, joined.state)
                continue
            if not self.mirrors.joined(channel, joined.seq):
                again.append(channel)
                continue
            hub.mirrored(channel, joined.seq, joined.ts, joined.state)
            assert join.limits is not None
            hub.join(
                join.sub,
                channel,
                join.request_id,
                join.limits,
                join.since is not None,
                joined.missed,
            )
        self.joins_answered += 1
        if again:
            # The channel started resynchronizing meanwhile: ask again once it is live.
            join.channels = again
            self._join_queue.append(join)
            self._joins_queued.unpark_all()
            return
        del self._joins[join.id]
        join.done.set()

    def _on_control(self, data: bytes) -> None:
        try:
            event = orjson.loads(data)
            kind = event["kind"]
            if kind == "status":
                self.hub.status(event["source"], event["state"])
            elif kind == "refused":
                self.hub.upstream_refused(event["channel"], event["message"])
            elif kind == "forget":
                self.hub.forget_state(event["channel"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("cluster: a malformed control message skipped: %s", exc)

    def _on_wants_changed(self, source: str) -> None:
        lot = self._union_changed.get(source)
        if lot is not None:
            lot.unpark_all()

    async def _apply_follows(self) -> None:
        """Subscribe and unsubscribe on Pub/Sub as the channels followed change."""
        prefix = self.keys.message_prefix()
        while True:
            if not self._follows or self._pubsub is None:
                await self._follows_changed.park()
                continue
            changes, self._follows = self._follows, {}
            follow = [prefix + c for c, on in changes.items() if on]
            unfollow = [prefix + c for c, on in changes.items() if not on]
            if unfollow:
                await self._pubsub.unsubscribe(*unfollow)
            if follow:
                await self._pubsub.subscribe(*follow)
            # Joins waiting for these subscriptions may go now.
            self._joins_queued.unpark_all()

    async def _send_joins(self, client: Any) -> None:
        script = client.register_script(JOIN)
        answers = self.keys.node(self.id)
        while True:
            ready = [
                j
                for j in self._join_queue
                if not any(c in self._follows for c in j.channels) and self._pubsub is not None
            ]
            if not ready:
                await self._joins_queued.park()
                continue
            for join in ready:
                self._join_queue.remove(join)
            oldest = int(time.time() * 1000)
            with answered_within(self.config.request_timeout):
                for join in ready:
                    if join.abandoned:
                        continue
                    args: list[str] = [
                        self.keys.prefix,
                        answers,
                        join.id,
                        str(self._oldest(join, oldest)),
                    ]
                    after = "" if join.after is None else str(join.after)
                    for channel in join.channels:
                        args += [channel, after]
                    await script(keys=[], args=args)

    def _oldest(self, join: _Join, now_ms: int) -> int:
        if join.after is None or not join.channels:
            return 0
        bounds = self._history_for(join.channels[0])
        return now_ms - bounds.max_age_ms

    # Wants -----------------------------------------------------------------------------------

    def _redis_answers(self) -> None:
        self.redis_error = None

    # Holding sources -------------------------------------------------------------------------

    async def _contend(self, client: Any, source: str, http: Any) -> None:
        config = self.config
        lease = Lease(
            ttl=config.lease_ttl,
            renew_every=config.lease_renew,
            retry_every=config.lease_retry,
            margin=config.lease_ttl * 0.1,
        )
        store = RedisLeaseStore(client, config.prefix)
        holding: trio.CancelScope | None = None

        async with trio.open_nursery() as nursery:

            def changed(held: bool) -> None:
                nonlocal holding
                if held:
                    holding = trio.CancelScope()
                    nursery.start_soon(self._hold, client, source, http, holding)
                elif holding is not None:
                    holding.cancel()
                    holding = None

            await hold_lease(
                lease, store, source, self.id, changed, request_timeout=config.request_timeout
            )

    async def _hold(self, client: Any, source: str, http: Any, scope: trio.CancelScope) -> None:
        """Run the source's upstream while the lease is ours; the scope is cancelled the
        instant the lease core says it is not."""
        supervisor = self.supervisors[source]
        with scope:
            try:
                with answered_within(self.config.request_timeout):
                    stored = await client.hgetall(self.keys.seqs(source))
            except FAILURES as exc:
                log.warning("cluster: %s's seqs unreadable, not taking it yet: %s", source, exc)
                return
            seqs = {k.decode(): int(v) for k, v in stored.items()}
            for channel in self.wants.of(source):
                seqs[channel] = max(seqs.get(channel, 0), self.mirrors.seq(channel))
            wanted: set[str] = set()
            outlet = RedisOutlet(
                source,
                self.keys,
                self.id,
                seqs,
                self._kind_of,
                supervisor.channel_state,
                self._history_for,
                lambda: list(wanted),
            )
            self.holding[source] = outlet
            log.info("cluster: this node holds %s", source, extra={"source": source})
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        outlet.run, client, self.config.lease_retry, (*REDIS_DOWN, TimeoutError)
                    )
                    await nursery.start(supervisor.run, http, outlet)
                    nursery.start_soon(self._track_union, client, source, supervisor, wanted)
            finally:
                del self.holding[source]
                supervisor.stand_by()
                log.info("cluster: this node no longer holds %s", source, extra={"source": source})

    async def _track_union(
        self, client: Any, source: str, supervisor: Any, wanted: set[str]
    ) -> None:
        """Keep the upstream subscribed to the union of every node's wants for the source."""
        lot = self._union_changed[source]
        while True:
            union = await self.wants.union(client, source)
            for channel in union - wanted:
                supervisor.want(channel)
            for channel in wanted - union:
                supervisor.unwant(channel)
            wanted.clear()
            wanted.update(union)
            with trio.move_on_after(self.config.lease_renew):
                await lot.park()
