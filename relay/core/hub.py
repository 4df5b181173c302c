"""Channels, subscribers and the fan-out: the relay's data path without any I/O.

Each channel message is encoded once and framed once. A publish only appends the frame to its
channel's batch; the batch is offered to the subscribers at the next :meth:`Hub.flush`, which
the write rounds call just before they write (a hub without write rounds flushes at every
publish). Each subscriber's outbox then gets the channel's messages since the last round as one
``bytes`` object, joined once and shared by every subscriber: at 500 msg/s to 1,000 clients the
offers per message had taken a quarter of the relay's CPU. Subscribers that take another framing
(a compressed frame, for those that agreed to permessage-deflate; a Socket.IO packet) get that
framing's batch instead, made once per message and framing for all of them
(:mod:`relay.core.framing`), and only when the channel has such a subscriber.

Whatever else changes a channel's subscribers or queues something for them (a subscribe, an
unsubscribe, a revoke, an event to a channel's subscribers; and, in the session, a reply or a
fresh snapshot) flushes first, so a batch goes to exactly the subscribers the channel had when
its messages were published, in order, before anything that followed them. (A session that
ends need not: its share of a batch is simply not offered.) Nothing here awaits, so one slow
client can only ever fill its own outbox, and what happens then is the outbox policy's
decision.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import attrs
import orjson
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from relay.core.channels import matches_any, source_of
from relay.core.cluster_wire import ChannelMessage
from relay.core.deflate import CompressedFramer, CompressionPolicy
from relay.core.engineio import SEPARATOR
from relay.core.framing import PLAIN, SOCKETIO_POLLING, SOCKETIO_WEBSOCKET, is_socketio
from relay.core.history import ChannelHistory, HistoryBounds
from relay.core.latency import LatencyHistogram
from relay.core.model import StreamKind, Update
from relay.core.outbox import Offer, Outbox, Policy
from relay.core.protocol import (
    ChannelAck,
    ChannelRevoked,
    ErrorCode,
    EventData,
    Lagged,
    ProtocolError,
    RequestId,
    Since,
    Status,
    Subscribed,
    encode_envelope,
    encode_event,
)
from relay.core.registry import SubscriptionRegistry
from relay.core.socketio import data_packet, event_packet

_QUEUED = Offer.QUEUED
_STATE = StreamKind.STATE
_OVERFLOW = Offer.OVERFLOW

CLOCK_EVERY = 64
"""Writes per read of the wall clock their latency is recorded against: a round to 1,000
clients takes a few milliseconds, so the figure is off by well under one."""

# What a subscriber answers when a round's flush offers it a batch to write at once
# (:meth:`Subscriber.write_now`).
QUEUE = 0
"""Not taken: something of the subscriber's waits, so the batch queues behind it."""
WRITTEN = 1
"""Written whole, now: the flush counts the write and its bytes, and records its fan-out
latency."""
TAKEN = 2
"""Taken, not all written: the subscriber's writer task has the rest and records the latency
once it is written (or the write failed and the subscriber is gone)."""


class Subscriber(Protocol):
    """What the hub needs of a client session."""

    @property
    def outbox(self) -> Outbox: ...

    @property
    def framing(self) -> int:
        """How it takes frames (:mod:`relay.core.framing`): plain, compressed with a window size,
        or Socket.IO. Whether it is plain must not change while it holds subscriptions (the hub
        counts the others per channel); one non-plain framing may change to another."""
        ...

    def __hash__(self) -> int: ...

    def wake(self) -> None:
        """Something was queued: let the writer run. Inside :meth:`Hub.flush`,
        ``hub.publish_ts`` holds the receive time of the oldest message being offered (0
        elsewhere), for a subscriber that
        measures fan-out latency; it is not an argument, to keep each delivery one call."""

    def overflow(self) -> None:
        """The disconnect policy tripped: close as a slow consumer (must not re-enter the hub)."""

    def write_now(self, frames: bytes) -> int:
        """In a write round's flush (:meth:`Hub.flush_round`): write ``frames`` (a channel's
        messages, framed back to back) at once if nothing of the subscriber's waits, and
        answer :data:`QUEUE`, :data:`WRITTEN` or :data:`TAKEN`. ``hub.publish_ts`` is as for
        :meth:`wake`. Must not re-enter the hub.

        Something of the subscriber's waits whenever its outbox holds anything: every offer
        that leaves something there is followed by :meth:`wake` (or :meth:`overflow`), before
        any flush can run, so a subscriber needs no look into its outbox to answer."""
        ...


class SourceListener(Protocol):
    """The upstream side of a source: told when a channel gains its first or loses its last
    subscriber, and asked for the state of the channels whose state it owns (books)."""

    def want(self, channel: str) -> None: ...

    def unwant(self, channel: str) -> None: ...

    def channel_state(self, channel: str) -> dict[str, Any] | None:
        """The channel's full state, for channels whose messages are not the state themselves
        (a book's deltas); None when there is none or it is stale."""
        ...


class Outlet(Protocol):
    """Where an upstream supervisor sends what its source produces: the hub itself, or (in a
    cluster node holding the source) Redis, from which every node's hub relays it."""

    def publish(self, update: Update, ts: int) -> None: ...

    def status(self, source: str, state: str) -> None: ...

    def forget_state(self, channel: str) -> None: ...

    def upstream_refused(self, channel: str, message: str) -> None: ...

    def wanted(self, source: str) -> Iterable[str]:
        """The source's channels some client holds."""
        ...


@attrs.frozen
class Limits:
    """What one session may subscribe to (from its tier)."""

    max_subscriptions: int
    channels: tuple[str, ...] = ("*",)


class Framer:
    """Builds server WebSocket frames. Server frames are unmasked, so one frame serves every
    client; wsproto builds it so that no framing code is hand-written here."""

    def __init__(self) -> None:
        self._ws = Connection(ConnectionType.SERVER)

    def text(self, payload: bytes) -> bytes:
        return self._ws.send(TextMessage(data=payload.decode()))

    @staticmethod
    def payload_of(frame: bytes) -> bytes:
        """The payload of a frame :meth:`text` built (final, unmasked, uncompressed), for a
        replay from the history to a client of another framing: the header is 2, 4 or 10
        bytes, as its length field says (RFC 6455, section 5.2)."""
        length = frame[1] & 0x7F
        return frame[2 if length < 126 else 4 if length == 126 else 10 :]


class _Framed(NamedTuple):
    """A batch in one framing: each message's frame, all of them joined as one outbox entry,
    and how many of them were compressed."""

    each: list[bytes]
    joined: bytes
    compressed: int


def _joined(frames: list[bytes], separator: bytes = b"") -> bytes:
    """A batch's frames as one outbox entry (a lone frame as it is: no copy)."""
    return frames[0] if len(frames) == 1 else separator.join(frames)


class _Batch:
    """A channel's messages since the last flush: their plain frames, whether each is a delta
    (what coalescing does with it, should the outbox not take them all), and when the first
    arrived."""

    __slots__ = ("deltas", "frames", "state", "ts")

    def __init__(self, state: ChannelState, frame: bytes, delta: bool, ts: int) -> None:
        self.state = state
        self.frames = [frame]
        self.deltas = [delta]
        self.ts = ts


@attrs.define(slots=True, eq=False)
class ChannelState:
    name: str
    kind: StreamKind
    policy: Policy
    delta: bool
    seq: int = 0
    ts: int = 0
    latest: dict[str, Any] | None = None
    """The full state, for STATE channels (the last message is the state)."""
    history: ChannelHistory | None = None
    """The channel's recent frames, for clients resuming with ``since``; None when off."""
    compress: bool = False
    """Messages of this channel may go out compressed (compression on, channel not excluded)."""
    mirrored: bytes | None = None
    """In a cluster node, the channel's whole state as the holder encoded it (a snapshot
    payload), at ``seq``: what the node's subscribers get as their snapshot."""


class Hub:
    """Subscriptions, channel state and fan-out for all sources."""

    def __init__(
        self,
        kind_of: Callable[[str], StreamKind | None],
        policy_for: Callable[[str], Policy] = lambda _: Policy.DROP,
        history_for: Callable[[str], HistoryBounds | None] = lambda _: None,
        epoch: str | None = None,
        compression: CompressionPolicy | None = None,
        mirror: bool = False,
    ) -> None:
        """``mirror``: a cluster node, which relays what each source's holder sequenced and
        encoded (:meth:`relay`) instead of sequencing updates itself (:meth:`publish`); its
        state comes with the messages, and history is Redis's, not this hub's."""
        self._kind_of = kind_of
        """A channel's stream kind, or None for a channel no source serves (asked once per
        channel name that a client tries, so families such as ``eth:logs:<address>`` that
        cannot be listed are served all the same)."""
        self._policy_for = policy_for
        self._history_for = history_for
        self.mirror = mirror
        self.epoch = epoch if epoch is not None else secrets.token_hex(8)
        """Names this hub's numbering: every channel's seq starts at 1 in a new hub (a new
        process), so a client's ``since`` is only meaningful with the epoch it came with."""
        self._channels: dict[str, ChannelState] = {}
        self._listeners: dict[str, SourceListener] = {}
        self.registry: SubscriptionRegistry[Subscriber] = SubscriptionRegistry()
        self.framer = Framer()
        self._compression = compression
        self._compressed = CompressedFramer(0 if compression is None else compression.level)
        self._framed: dict[str, int] = {}
        """Per channel, its subscribers that take another framing than plain (only channels
        with some): the fan-out of every other channel stays the plain loop."""
        self.compressions = 0
        """Messages compressed (once per message and window size, never per client)."""
        self.compressed_deliveries = 0
        self.messages_in = 0
        self.deliveries = 0
        self.round_writes = 0
        self.round_bytes = 0
        """The writes :meth:`flush_round` made whole (:data:`WRITTEN`), and their bytes: the
        subscribers count only the writes they make themselves."""
        self.offer_results = [0, 0, 0, 0]
        """Counts per :class:`Offer` value except QUEUED (see :meth:`offers`): counting the
        common case would cost an increment per delivery."""
        self.publish_ts = 0
        """Receipt time (ms) of the oldest message being offered, 0 outside :meth:`flush`:
        lets a session note when its oldest queued message arrived, for the latency
        histogram."""
        self._pending: dict[str, _Batch] = {}
        """Channels with messages not yet offered, in the order their first one came."""
        self._round: Callable[[], None] | None = None

    def flush_before_writing(self, round_wanted: Callable[[], None]) -> None:
        """Let batches grow until the next write round, which calls :meth:`flush`;
        ``round_wanted`` is called when a batch starts while none is waiting."""
        self._round = round_wanted

    # Wiring --------------------------------------------------------------------------------

    def add_source(self, source: str, listener: SourceListener) -> None:
        self._listeners[source] = listener

    def known(self, channel: str) -> bool:
        return channel in self._channels or self._kind_of(channel) is not None

    def channel(self, name: str) -> ChannelState:
        """The state of a channel a source serves (KeyError for one it does not)."""
        state = self._channels.get(name)
        if state is None:
            kind = self._kind_of(name)
            if kind is None:
                raise KeyError(f"no source serves {name!r}")
            state = ChannelState(name, kind, self._policy_for(name), kind is StreamKind.BOOK)
            compression = self._compression
            state.compress = compression is not None and compression.compresses(name)
            bounds = None if self.mirror else self._history_for(name)
            if bounds is not None and bounds.enabled:
                state.history = ChannelHistory(bounds)
            self._channels[name] = state
        return state

    # Subscriptions -------------------------------------------------------------------------

    def subscribe(
        self,
        sub: Subscriber,
        channels: Iterable[str],
        request_id: RequestId,
        limits: Limits,
        since: Since | None = None,
        now: int = 0,
    ) -> None:
        """Each channel gets its own answer: subscribed (then a snapshot when there is state),
        or an error naming the channel. A refused channel never affects the others.

        With ``since`` (one channel; the parser sees to that) the client is resuming: when the
        epoch is this hub's and the history holds every message after ``since.seq``, those
        are replayed in order instead of the snapshot (``recovered`` true); otherwise it gets
        the snapshot as usual and ``recovered`` false. ``now`` (ms) ages the history."""
        self.flush()
        for name in channels:
            if self.refuse(sub, name, request_id, limits):
                continue
            state = self.channel(name)
            missed = None if since is None else self._missed(state, since, now)
            self._add(sub, state, request_id, since is not None, missed)
        sub.wake()

    def refuse(self, sub: Subscriber, name: str, request_id: RequestId, limits: Limits) -> bool:
        """Answer the error when the client may not subscribe to ``name``; True if it was."""
        error = self._refusal(sub, name, limits)
        if error is None:
            return False
        sub.outbox.offer_control(
            self.error_frame(sub.framing, ProtocolError(*error, request_id, name))
        )
        return True

    def join(
        self,
        sub: Subscriber,
        name: str,
        request_id: RequestId,
        limits: Limits,
        resuming: bool,
        missed: list[bytes] | None,
    ) -> None:
        """A cluster node's subscribe, completed at the point of its Pub/Sub stream where it
        read the channel in Redis (:meth:`mirrored` has been called with that answer), so the
        snapshot or the replay ``missed`` (payloads, from Redis's history) joins the live
        messages without a gap or a duplicate."""
        self.flush()
        if not self.refuse(sub, name, request_id, limits):
            missed_frames = None if missed is None else [self.framer.text(p) for p in missed]
            self._add(sub, self.channel(name), request_id, resuming, missed_frames)
        sub.wake()

    def _add(
        self,
        sub: Subscriber,
        state: ChannelState,
        request_id: RequestId,
        resuming: bool,
        missed: list[bytes] | None,
    ) -> None:
        """``missed``: the frames to replay (plain, as the history keeps them), or None for
        the snapshot."""
        outbox = sub.outbox
        name = state.name
        framing = sub.framing
        added, first = self.registry.add(sub, name)
        if added and framing:
            self._framed[name] = self._framed.get(name, 0) + 1
        if not added:
            # Already live on this channel: nothing to replay, nothing changes.
            outbox.offer_control(self._subscribed(framing, state, request_id, None))
            return
        recovered = missed is not None if resuming else None
        outbox.offer_control(self._subscribed(framing, state, request_id, recovered))
        if missed is not None:
            # Data, not control: the channel's policy bounds a long replay like live data.
            delta = state.delta or state.kind is _STATE
            for replayed in missed:
                frame = replayed
                if framing != PLAIN:
                    frame = self.message_frame(framing, state, Framer.payload_of(replayed))
                if outbox.offer(name, frame, state.policy, delta) is _OVERFLOW:
                    sub.overflow()
                    break
        else:
            snapshot = self._snapshot_payload(state)
            if snapshot is not None:
                outbox.offer_control(self.message_frame(framing, state, snapshot))
        if first:
            self._listeners[source_of(name)].want(name)

    def _missed(self, state: ChannelState, since: Since, now: int) -> list[bytes] | None:
        """The frames a resuming client missed, or None when they cannot all be replayed."""
        if since.epoch != self.epoch:
            return None
        if since.seq == state.seq:
            return []
        history = state.history
        return None if history is None else history.after(since.seq, state.seq, now)

    def _subscribed(
        self, framing: int, state: ChannelState, request_id: RequestId, recovered: bool | None
    ) -> bytes:
        data = Subscribed(state.name, state.seq, self.epoch, recovered)
        return self.event_frame(framing, "subscribed", data, request_id)

    def _refusal(self, sub: Subscriber, name: str, limits: Limits) -> tuple[str, str] | None:
        if not self.known(name):
            return ErrorCode.UNKNOWN_CHANNEL, f"no such channel: {name}"
        if not matches_any(name, limits.channels):
            return ErrorCode.FORBIDDEN, f"your tier may not subscribe to {name}"
        if sub not in self.registry.subscribers(name) and (
            self.registry.count_of(sub) >= limits.max_subscriptions
        ):
            return (
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {limits.max_subscriptions} subscriptions per connection",
            )
        return None

    def unsubscribe(self, sub: Subscriber, channels: Iterable[str], request_id: RequestId) -> None:
        """Unsubscribing from a channel one does not hold is answered like any other: the
        client asked for a state it is now in. Unknown channels are errors."""
        self.flush()
        outbox = sub.outbox
        framing = sub.framing
        for name in channels:
            if not self.known(name):
                error = ProtocolError(
                    ErrorCode.UNKNOWN_CHANNEL, f"no such channel: {name}", request_id, name
                )
                outbox.offer_control(self.error_frame(framing, error))
                continue
            removed, last = self._remove(sub, name)
            if removed:
                outbox.discard(name)
            ack = self.event_frame(framing, "unsubscribed", ChannelAck(name), request_id)
            outbox.offer_control(ack)
            if last:
                self._listeners[source_of(name)].unwant(name)
        sub.wake()

    def revoke(self, sub: Subscriber, channel: str, message: str) -> bool:
        """Remove a subscription the client's credentials no longer allow, telling it why with
        an ``unsubscribed`` event carrying ``reason: forbidden`` (and no id: nobody asked).
        False when it did not hold the channel."""
        self.flush()
        removed, last = self._remove(sub, channel)
        if not removed:
            return False
        outbox = sub.outbox
        outbox.discard(channel)
        revoked = ChannelRevoked(channel, ErrorCode.FORBIDDEN, message)
        if outbox.offer_control(self.event_frame(sub.framing, "unsubscribed", revoked)):
            sub.wake()
        else:
            sub.overflow()
        if last:
            self._listeners[source_of(channel)].unwant(channel)
        return True

    def _remove(self, sub: Subscriber, channel: str) -> tuple[bool, bool]:
        removed, last = self.registry.remove(sub, channel)
        if removed and sub.framing:
            self._uncount_framed(channel)
        return removed, last

    def _uncount_framed(self, channel: str) -> None:
        left = self._framed[channel] - 1
        if left:
            self._framed[channel] = left
        else:
            del self._framed[channel]

    def drop(self, sub: Subscriber) -> None:
        """A session ended: release everything it held (what waits in a batch goes to the
        channels' other subscribers, as it would have without it)."""
        if sub.framing:
            for name in self.registry.channels_of(sub):
                self._uncount_framed(name)
        for name in self.registry.drop(sub):
            self._listeners[source_of(name)].unwant(name)

    def event_frame(
        self, framing: int, event: str, data: EventData | None = None, request_id: RequestId = None
    ) -> bytes:
        """One of the relay's events, framed for one framing: the WebSocket protocol's JSON
        event, or a Socket.IO event (which has no request id: its acknowledgement is the
        session's)."""
        if is_socketio(framing):
            return self.socketio_frame(framing, event_packet(event, data))
        return self.framer.text(encode_event(event, data, request_id))

    def socketio_frame(self, framing: int, packet: bytes) -> bytes:
        """A Socket.IO packet as a Socket.IO framing takes it: in a WebSocket frame, or bare
        (for a long-polling answer)."""
        return self.framer.text(packet) if framing == SOCKETIO_WEBSOCKET else packet

    def error_frame(self, framing: int, error: ProtocolError) -> bytes:
        return self.event_frame(framing, "error", error.data, error.id)

    def _shared_event(self, subscribers: Iterable[Subscriber], event: str, data: EventData) -> None:
        """One event to many subscribers, framed once per framing among them."""
        self._offer_shared(subscribers, lambda framing: [self.event_frame(framing, event, data)])

    def _offer_shared(
        self, subscribers: Iterable[Subscriber], frames_for: Callable[[int], list[bytes]]
    ) -> None:
        """Control frames to many subscribers, made once per framing among them: a subscriber
        whose outbox takes them all is woken; one whose outbox is full overflows."""
        self.flush()
        made: dict[int, list[bytes]] = {}
        for sub in subscribers:
            framing = sub.framing
            frames = made.get(framing)
            if frames is None:
                frames = made[framing] = frames_for(framing)
            for frame in frames:
                if not sub.outbox.offer_control(frame):
                    sub.overflow()
                    break
            else:
                sub.wake()

    # Data ----------------------------------------------------------------------------------

    def publish(self, update: Update, ts: int) -> None:
        """Sequence, encode, frame once; the frame joins its channel's batch, which the next
        :meth:`flush` offers to every subscriber."""
        state = self.channel(update.channel)
        state.seq += 1
        state.ts = ts
        if state.kind is StreamKind.STATE:
            state.latest = update.data
        self.messages_in += 1
        subscribers = self.registry.subscribers(update.channel)
        history = state.history
        if not subscribers and history is None:
            return
        payload = encode_envelope(
            update.channel, state.seq, ts, update.data, update.snapshot, update.reorg
        )
        frame = self.framer.text(payload)
        if history is not None:
            # Kept while nobody listens too: the client that just dropped resumes from it.
            history.append(state.seq, ts, frame)
            if not subscribers:
                return
        self._fan_out(state, frame, update.snapshot, ts)

    def _fan_out(self, state: ChannelState, frame: bytes, snapshot: bool, ts: int) -> None:
        """Add a message of a channel with subscribers to its batch (they stay its subscribers
        until the batch is flushed: whatever changes them flushes first)."""
        # A state channel whose messages are not each a snapshot (blocks: each extends the
        # last) must coalesce into a fresh snapshot too, never into its latest message alone.
        delta = state.delta or (not snapshot and state.kind is _STATE)
        pending = self._pending
        batch = pending.get(state.name)
        if batch is not None:
            batch.frames.append(frame)
            batch.deltas.append(delta)
            if not batch.ts:
                batch.ts = ts  # a resync's replay has no receipt time; live messages do
            return
        pending[state.name] = _Batch(state, frame, delta, ts)
        if self._round is None:
            self.flush()
        elif len(pending) == 1:
            self._round()

    def flush(self) -> None:
        """Offer every channel's batch to its subscribers: the channel's messages since the
        last flush, joined once per framing, as one outbox entry each."""
        self.flush_round(None)

    def flush_round(
        self, clock_ms: Callable[[], int] | None, latency: LatencyHistogram | None = None
    ) -> None:
        """:meth:`flush`, for a write round (``clock_ms`` gives the wall clock in
        milliseconds): a batch goes straight to each subscriber that can write it at once
        (:meth:`Subscriber.write_now`), in the subscriber's framing, and only the others
        queue it.

        At light load nearly every subscriber has nothing waiting, and the outbox entry, the
        wake-up, the round's release and the take that would follow touch several objects
        per client for nothing: written here, a round to 1,000 clients is shorter by about a
        millisecond (docs/performance.md, "What each step bought")."""
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        for name, batch in pending.items():
            frames = batch.frames
            self.publish_ts = batch.ts
            subscribers = self.registry.subscribers(name)
            self.deliveries += len(subscribers) * len(frames)
            if name not in self._framed:
                self._deliver(list(subscribers), batch, _joined(frames), frames, clock_ms, latency)
                continue
            # Each framing's batch is made once, for all of its subscribers: a browser's
            # compressed frames wait no longer than plain ones, and cost one compression.
            groups: dict[int, list[Subscriber]] = {}
            for sub in subscribers:
                group = groups.get(sub.framing)
                if group is None:
                    groups[sub.framing] = [sub]
                else:
                    group.append(sub)
            for framing, group in groups.items():
                if framing == PLAIN:
                    framed = _Framed(frames, _joined(frames), 0)
                else:
                    framed = self._framed_batch(framing, batch.state, frames)
                self.compressed_deliveries += framed.compressed * len(group)
                self._deliver(group, batch, framed.joined, framed.each, clock_ms, latency)
        self.publish_ts = 0

    def _deliver(
        self,
        subscribers: list[Subscriber],
        batch: _Batch,
        joined: bytes,
        each: list[bytes],
        clock_ms: Callable[[], int] | None,
        latency: LatencyHistogram | None,
    ) -> None:
        """A batch, in one framing (``joined``, and ``each`` message's frame), to
        subscribers that take that framing: in a write round straight to each one with
        nothing waiting, else into its outbox.

        The loop is the relay's hottest: every instruction in it runs once per client per
        round. So ``clock_ms`` is read once per ``CLOCK_EVERY`` subscribers and the fan-out
        latency of the writes made between two readings goes into ``latency`` as one record
        with their count (they share the reading and the batch's receipt time); and the
        writes made whole, and their bytes, are counted here per ``CLOCK_EVERY`` rather than
        by each subscriber (an ``int`` made per write). Measured per client of a round to
        1,000 (``benchmarks/write_round.py --instructions``), in docs/performance.md."""
        state = batch.state
        name, policy, count = state.name, state.policy, len(each)
        if clock_ms is None:
            for sub in subscribers:
                if sub.outbox.offer_all(name, joined, count):
                    sub.wake()
                else:
                    self._offer_each(sub, name, each, policy, batch.deltas)
            return
        ts = batch.ts
        for start in range(0, len(subscribers), CLOCK_EVERY):
            now_ms = clock_ms()
            written = 0
            for sub in subscribers[start : start + CLOCK_EVERY]:
                took = sub.write_now(joined)
                if took == WRITTEN:
                    written += 1
                elif not took:
                    if sub.outbox.offer_all(name, joined, count):
                        sub.wake()
                    else:
                        self._offer_each(sub, name, each, policy, batch.deltas)
            if written:
                self.round_writes += written
                self.round_bytes += written * len(joined)
                if ts and latency is not None:
                    # ts is 0 for a resync's replay, which has no receipt time.
                    latency.record(now_ms - ts, written)

    def _offer_each(
        self, sub: Subscriber, name: str, frames: list[bytes], policy: Policy, deltas: list[bool]
    ) -> None:
        """A batch that does not all fit in a subscriber's outbox: each message offered on its
        own, so the policy treats every one exactly as it would have one at a time."""
        outbox = sub.outbox
        queued = False
        for frame, delta in zip(frames, deltas, strict=True):
            result = outbox.offer(name, frame, policy, delta)
            if result is _QUEUED:
                queued = True
            else:
                self._not_queued(sub, result)
        if queued:
            sub.wake()

    def relay(self, channel: str, seq: int, ts: int, message: ChannelMessage) -> None:
        """A cluster node's fan-out of a message its source's holder sequenced and encoded:
        the holder's payload bytes, framed once here, to every local subscriber."""
        state = self.channel(channel)
        state.seq = seq
        state.ts = ts
        if message.state is not None:
            state.mirrored = message.state
        self.messages_in += 1
        subscribers = self.registry.subscribers(channel)
        if subscribers:
            payload = message.payload
            self._fan_out(state, self.framer.text(payload), message.snapshot, ts)

    def mirrored(self, channel: str, seq: int, ts: int, snapshot: bytes | None) -> None:
        """A cluster node read a channel's seq and state in Redis (a join's answer)."""
        state = self.channel(channel)
        state.seq = seq
        state.ts = ts
        state.mirrored = snapshot

    def resynced(
        self, channel: str, missed: list[bytes] | None, lost: int, snapshot: bytes | None
    ) -> None:
        """A cluster node's channel lost messages on the way from Redis and is consistent again
        (:meth:`mirrored` was called with its answer): its subscribers get what they missed, or
        else the fresh state and a ``lagged`` event counting what they will never see."""
        state = self.channel(channel)
        subscribers = self.registry.subscribers(channel)
        if not subscribers:
            return
        if missed is not None:
            for payload in missed:
                self._fan_out(state, self.framer.text(payload), False, 0)
            return

        def frames_for(framing: int) -> list[bytes]:
            frames = [] if snapshot is None else [self.message_frame(framing, state, snapshot)]
            if lost:
                frames.append(self.event_frame(framing, "lagged", Lagged(channel, lost)))
            return frames

        self._offer_shared(subscribers, frames_for)

    def _not_queued(self, sub: Subscriber, result: Offer) -> None:
        """The rare outcomes of an offer, counted here (counting the common case would cost an
        increment per delivery)."""
        self.offer_results[result] += 1
        if result is _OVERFLOW:
            sub.overflow()
        else:
            sub.wake()

    def _compressible(self, state: ChannelState, payload: bytes) -> bool:
        compression = self._compression
        return state.compress and compression is not None and len(payload) >= compression.min_bytes

    def _framed_batch(self, framing: int, state: ChannelState, frames: list[bytes]) -> _Framed:
        """A batch of plain frames in another framing: each message's frame for it, joined as
        that framing joins messages (bare Socket.IO packets take Engine.IO's separator)."""
        made = [self._framed_message(framing, state, Framer.payload_of(f), f) for f in frames]
        compressed = 0
        if framing < SOCKETIO_WEBSOCKET:
            compressed = sum(m is not f for m, f in zip(made, frames, strict=True))
        separator = SEPARATOR if framing == SOCKETIO_POLLING else b""
        return _Framed(made, _joined(made, separator), compressed)

    def _framed_message(
        self, framing: int, state: ChannelState, payload: bytes, frame: bytes
    ) -> bytes:
        """A message's frame for a framing other than plain; ``frame`` is its plain one (what a
        compressing subscriber gets when the message is not worth compressing)."""
        if is_socketio(framing):
            return self.socketio_frame(framing, data_packet(payload))
        if self._compressible(state, payload):
            self.compressions += 1
            return self._compressed.text(payload, framing)
        return frame

    def message_frame(self, framing: int, state: ChannelState, payload: bytes) -> bytes:
        """One subscriber's frame of a message of its own (a snapshot, a replayed message)."""
        if is_socketio(framing):
            return self.socketio_frame(framing, data_packet(payload))
        frame = self.framer.text(payload)
        if framing == PLAIN:
            return frame
        chosen = self._framed_message(framing, state, payload, frame)
        self.compressed_deliveries += chosen is not frame
        return chosen

    def offers(self) -> dict[Offer, int]:
        """Deliveries by outcome, for metrics."""
        counts = {outcome: self.offer_results[outcome] for outcome in Offer}
        counts[Offer.QUEUED] = self.deliveries - sum(counts.values())
        return counts

    def snapshot_frame(self, state: ChannelState, framing: int = PLAIN) -> bytes | None:
        """The channel's full latest state as a snapshot message, or None without state.

        It carries the seq of the last message it reflects, so the next message continues at
        seq + 1 for a client that starts from it."""
        payload = self._snapshot_payload(state)
        return None if payload is None else self.message_frame(framing, state, payload)

    def _snapshot_payload(self, state: ChannelState) -> bytes | None:
        if self.mirror:
            return state.mirrored
        data = self._state_data(state)
        if data is None:
            return None
        return encode_envelope(state.name, state.seq, state.ts, data, True)

    def snapshot(self, name: str) -> tuple[int, int, dict[str, Any]] | None:
        """(seq, ts, data) of a channel's latest state, for the HTTP snapshot endpoint."""
        state = self._channels.get(name)
        if state is None:
            # No client ever subscribed, so there is no state; and asking must not create any
            # (an open family such as eth:logs:<address> has no end of names).
            return None
        data = self._state_data(state)
        return None if data is None else (state.seq, state.ts, data)

    def _state_data(self, state: ChannelState) -> dict[str, Any] | None:
        if self.mirror:
            mirrored = state.mirrored
            return None if mirrored is None else orjson.loads(mirrored)["data"]
        if state.kind is StreamKind.BOOK:
            return self._listeners[source_of(state.name)].channel_state(state.name)
        return state.latest

    def wanted(self, source: str) -> Iterable[str]:
        return self.registry.wanted(source)

    def forget_state(self, channel: str) -> None:
        """The upstream no longer feeds this channel; stale state must not reach new clients."""
        state = self._channels.get(channel)
        if state is not None:
            state.latest = None
            state.mirrored = None

    def upstream_refused(self, channel: str, message: str) -> None:
        """The upstream refused to serve a channel: its subscribers hear it rather than wait
        for data that will not come. They stay subscribed; the next connection asks again."""
        error = ProtocolError(ErrorCode.UPSTREAM_REFUSED, message, None, channel)
        self._shared_event(self.registry.subscribers(channel), "error", error.data)

    def status(self, source: str, state: str) -> None:
        self._shared_event(
            self.registry.sessions_of_source(source), "status", Status(source, state)
        )
