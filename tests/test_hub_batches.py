"""The hub's batches: with write rounds, a publish only appends to its channel's batch, and
the round's :meth:`Hub.flush` offers each subscriber the channel's messages since the last round
as one outbox entry, joined once and shared. What every client reads, channel by channel, must
be exactly what a hub that offers each message at once gives it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from relay.core.cluster_wire import decode_message, encode_message
from relay.core.deflate import CompressionPolicy
from relay.core.engineio import SEPARATOR
from relay.core.framing import SOCKETIO_POLLING
from relay.core.hub import Hub
from relay.core.model import Update
from relay.core.outbox import Offer, Outbox, Policy
from relay.core.protocol import encode_envelope
from tests.deflate_client import agreed_deflate
from tests.test_hub_framing import BOOK, CATALOGUE, OPEN, OTHER, TICKER, TRADES

CHANNELS = [TRADES, TICKER, BOOK, OTHER]


class Sub:
    def __init__(
        self, max_messages: int = 10_000, framing: int = 0, max_bytes: int = 1 << 24
    ) -> None:
        self.outbox = Outbox(max_messages, max_bytes)
        self.framing = framing
        self.wakes = 0
        self.woken_at: list[int] = []
        self.overflows = 0
        self.read: list[dict[str, Any]] = []
        extensions = agreed_deflate(framing) if framing < 64 else []
        self._client = Connection(ConnectionType.CLIENT, extensions=extensions)
        self.hub: Hub | None = None

    def wake(self) -> None:
        self.wakes += 1
        if self.hub is not None:
            self.woken_at.append(self.hub.publish_ts)

    def overflow(self) -> None:
        self.overflows += 1

    def write(self) -> None:
        """What a write does: take everything queued, and the client reads it, then (as the
        session writes them) a fresh snapshot where one is due and what was dropped."""
        drained = self.outbox.drain()
        self._client.receive_data(b"".join(drained.frames))
        for event in self._client.events():
            assert isinstance(event, TextMessage)
            self.read.append(orjson.loads(event.data))
        for channel in drained.resnapshot:
            self.read.append({"event": "resnapshot", "data": {"channel": channel}})
        for channel, dropped in drained.lagged.items():
            self.read.append({"event": "lagged", "data": {"channel": channel, "dropped": dropped}})

    def by_channel(self) -> dict[str, list[dict[str, Any]]]:
        """What the client read, channel by channel: data, and the events naming a channel."""
        out: dict[str, list[dict[str, Any]]] = {}
        for message in self.read:
            channel = message.get("channel") or message["data"]["channel"]
            out.setdefault(channel, []).append(message)
        return out


class Listener:
    def want(self, channel: str) -> None:
        pass

    def unwant(self, channel: str) -> None:
        pass

    def channel_state(self, channel: str) -> dict[str, Any] | None:
        return {"bids": [], "asks": []}


def make_hub(rounds: list[int] | None = None, **options: Any) -> Hub:
    """A hub; with ``rounds``, one whose batches wait for :meth:`Hub.flush`, counting in
    ``rounds`` each time it wants a write round."""
    hub = Hub(
        CATALOGUE.get,
        lambda c: Policy.DROP if ":trades:" in c else Policy.COALESCE,
        epoch="e",
        **options,
    )
    hub.add_source("sim", Listener())
    hub.add_source("alt", Listener())
    if rounds is not None:
        hub.flush_before_writing(lambda: rounds.append(1))
    return hub


def trade(n: int, channel: str = TRADES) -> Update:
    return Update(channel, {"n": n}, n, False)


def test_a_round_offers_each_subscriber_the_batch_as_one_shared_entry() -> None:
    rounds: list[int] = []
    hub = make_hub(rounds)
    subs = [Sub() for _ in range(3)]
    for sub in subs:
        hub.subscribe(sub, [TRADES], None, OPEN)
        sub.write()
    for n in range(1, 6):
        hub.publish(trade(n), 100 + n)
    assert rounds == [1]  # wanted once, when the batch started
    assert all(len(sub.outbox) == 0 for sub in subs)  # nothing offered before the round
    assert hub.deliveries == 0  # counted when offered
    hub.flush()
    assert hub.deliveries == 15
    entries = [sub.outbox._queue for sub in subs]
    assert all(len(entry) == 1 for entry in entries)
    assert entries[0][0] is entries[1][0] is entries[2][0]
    assert all(len(sub.outbox) == 5 for sub in subs)
    for sub in subs:
        sub.write()
        assert [m["seq"] for m in sub.read[1:]] == [1, 2, 3, 4, 5]
    hub.publish(trade(6), 106)
    assert rounds == [1, 1]  # a new batch after the flush wants a new round


def test_a_flush_wakes_each_subscriber_once_with_the_oldest_messages_time() -> None:
    hub = make_hub([])
    sub = Sub()
    sub.hub = hub
    hub.subscribe(sub, [TRADES, OTHER], None, OPEN)
    sub.write()
    wakes = sub.wakes
    hub.publish(trade(1), 101)
    hub.publish(trade(1, OTHER), 102)
    hub.publish(trade(2), 103)
    assert sub.wakes == wakes
    hub.flush()
    # One wake per channel batch (the session asks for a round at the first only), each with
    # the receipt time of the batch's first message; outside the flush there is none.
    assert sub.woken_at[-2:] == [101, 102]
    assert hub.publish_ts == 0


def test_a_batch_a_resync_replay_started_takes_the_receipt_time_of_its_first_live_message() -> None:
    hub = Hub(CATALOGUE.get, lambda _: Policy.DROP, epoch="e", mirror=True)
    hub.add_source("sim", Listener())
    hub.flush_before_writing(lambda: None)
    sub = Sub()
    sub.hub = hub
    hub.join(sub, TRADES, None, OPEN, False, None)
    sub.write()
    hub.resynced(TRADES, [encode_envelope(TRADES, 1, 1, {"n": 1}, False)], 0, None)
    payload = encode_envelope(TRADES, 2, 500, {"n": 2}, False)
    header, tail = encode_message(2, 500, payload, False, None)
    hub.relay(TRADES, 2, 500, decode_message(header + payload + tail))
    hub.flush()
    assert sub.woken_at[-1] == 500  # the replay has no receipt time to measure from
    sub.write()
    assert [m["seq"] for m in sub.read[1:]] == [1, 2]


def test_a_batch_larger_than_the_room_left_is_offered_message_by_message() -> None:
    hub = make_hub([])
    fast, slow = Sub(), Sub(max_messages=3)
    for sub in (fast, slow):
        hub.subscribe(sub, [TRADES], None, OPEN)
        sub.write()
    for n in range(1, 6):
        hub.publish(trade(n), n)
    hub.flush()
    fast.write()
    slow.write()
    assert [m["seq"] for m in fast.read[1:]] == [1, 2, 3, 4, 5]
    assert [m.get("seq") for m in slow.read[1:]] == [1, 2, 3, None]
    assert slow.read[-1] == {"event": "lagged", "data": {"channel": TRADES, "dropped": 2}}
    assert hub.offers()[Offer.DROPPED] == 2
    assert hub.offers()[Offer.QUEUED] == 8


def test_each_message_of_a_batch_is_coalesced_as_what_it_is_a_delta_or_a_whole_state() -> None:
    """Room for one: the delta is queued, and the whole state after it is kept as it is (not
    turned into a request for a fresh snapshot, as the delta before it would have been)."""
    hub = make_hub([])
    sub = Sub(max_messages=1)
    hub.subscribe(sub, [TICKER], None, OPEN)
    sub.write()
    hub.publish(Update(TICKER, {"n": 1}, 1, False), 1)
    hub.publish(Update(TICKER, {"n": 2}, 2, True), 2)
    hub.flush()
    sub.write()
    assert [(m["seq"], m.get("snapshot", False)) for m in sub.read[1:]] == [(1, False), (2, True)]


def test_a_batch_of_book_deltas_that_does_not_fit_asks_for_one_fresh_snapshot() -> None:
    hub = make_hub([])
    sub = Sub(max_messages=1)
    hub.subscribe(sub, [BOOK], None, OPEN)
    sub.write()
    for n in range(1, 4):
        hub.publish(Update(BOOK, {"bids": [], "asks": [], "n": n}, n, False), n)
    hub.flush()
    sub.write()
    assert [m.get("seq") for m in sub.read[2:]] == [1, None]
    assert sub.read[-1] == {"event": "resnapshot", "data": {"channel": BOOK}}


@pytest.mark.parametrize("framing", [0, 15])
def test_a_held_channels_batch_is_never_queued_whole_past_its_held_message(framing: int) -> None:
    """A message too big for the bytes left is coalesced (held); the short batch after it
    would fit, but going ahead of the held message it must not. (Also for a subscriber that
    took permessage-deflate, whose channel is then flushed framing by framing; these messages
    are too short to be compressed.)"""
    hub = make_hub([], compression=CompressionPolicy(min_bytes=10_000))
    # 74 bytes queued: room for the 148-byte batch, not for the 203-byte message.
    sub = Sub(max_bytes=250, framing=framing)
    hub.subscribe(sub, [TICKER], None, OPEN)
    sub.write()
    hub.publish(Update(TICKER, {"n": 1}, 1, True), 1)
    hub.flush()
    hub.publish(Update(TICKER, {"n": 2, "pad": "x" * 120}, 2, True), 2)
    hub.flush()
    hub.publish(Update(TICKER, {"n": 3}, 3, True), 3)
    hub.publish(Update(TICKER, {"n": 4}, 4, True), 4)
    hub.flush()
    sub.write()
    assert [m["seq"] for m in sub.read[1:]] == [1, 4]  # the latest state, coalesced


def test_a_batch_that_overflows_part_way_wakes_for_what_was_queued_and_overflows() -> None:
    hub = Hub(CATALOGUE.get, lambda _: Policy.DISCONNECT, epoch="e")
    hub.add_source("sim", Listener())
    hub.flush_before_writing(lambda: None)
    sub = Sub(max_messages=2)
    hub.subscribe(sub, [TRADES], None, OPEN)
    sub.write()
    wakes = sub.wakes
    for n in range(1, 5):
        hub.publish(trade(n), n)
    hub.flush()
    assert (sub.wakes, sub.overflows) == (wakes + 1, 2)
    sub.write()
    assert [m["seq"] for m in sub.read[1:]] == [1, 2]


def test_a_subscribe_between_publish_and_round_gets_none_of_the_earlier_messages() -> None:
    hub = make_hub([])
    early, late = Sub(), Sub()
    hub.subscribe(early, [TRADES], None, OPEN)
    hub.publish(trade(1), 1)
    hub.publish(trade(2), 2)
    hub.subscribe(late, [TRADES], None, OPEN)
    hub.publish(trade(3), 3)
    hub.flush()
    early.write()
    late.write()
    assert [m.get("seq") for m in early.read] == [None, 1, 2, 3]
    assert late.read[0]["event"] == "subscribed" and late.read[0]["data"]["seq"] == 2
    assert [m["seq"] for m in late.read[1:]] == [3]


def test_an_unsubscribe_between_publish_and_round_comes_after_the_earlier_messages() -> None:
    hub = make_hub([])
    sub = Sub()
    hub.subscribe(sub, [TRADES], None, OPEN)
    hub.publish(trade(1), 1)
    hub.publish(trade(2), 2)
    hub.unsubscribe(sub, [TRADES], 7)
    hub.publish(trade(3), 3)
    hub.flush()
    sub.write()
    assert [m.get("seq") for m in sub.read[1:3]] == [1, 2]
    assert sub.read[3] == {"event": "unsubscribed", "data": {"channel": TRADES}, "id": 7}
    assert len(sub.read) == 4


def test_a_revoke_between_publish_and_round_comes_after_the_earlier_messages() -> None:
    hub = make_hub([])
    sub = Sub()
    hub.subscribe(sub, [TRADES], None, OPEN)
    hub.publish(trade(1), 1)
    assert hub.revoke(sub, TRADES, "key revoked")
    hub.publish(trade(2), 2)
    hub.flush()
    sub.write()
    assert [m.get("seq", m.get("event")) for m in sub.read] == ["subscribed", 1, "unsubscribed"]


def test_a_cluster_join_between_relay_and_round_gets_none_of_the_earlier_messages() -> None:
    hub = Hub(CATALOGUE.get, lambda _: Policy.DROP, epoch="e", mirror=True)
    hub.add_source("sim", Listener())
    hub.flush_before_writing(lambda: None)
    early, late = Sub(), Sub()
    hub.join(early, TRADES, None, OPEN, False, None)

    def relayed(seq: int) -> None:
        payload = encode_envelope(TRADES, seq, seq, {"n": seq}, False)
        header, tail = encode_message(seq, seq, payload, False, None)
        hub.relay(TRADES, seq, seq, decode_message(header + payload + tail))

    relayed(1)
    hub.join(late, TRADES, None, OPEN, False, None)
    relayed(2)
    hub.flush()
    early.write()
    late.write()
    assert [m.get("seq") for m in early.read] == [None, 1, 2]
    assert [m.get("seq") for m in late.read] == [None, 2]


def test_events_to_a_channels_subscribers_follow_the_messages_before_them() -> None:
    hub = make_hub([])
    sub = Sub()
    hub.subscribe(sub, [TRADES], None, OPEN)
    hub.publish(trade(1), 1)
    hub.upstream_refused(TRADES, "no")
    hub.publish(trade(2), 2)
    hub.flush()
    sub.write()
    assert [m.get("seq", m.get("event")) for m in sub.read] == ["subscribed", 1, "error", 2]


def test_a_session_that_ends_between_publish_and_round_leaves_the_others_their_batch() -> None:
    hub = make_hub([])
    stays, leaves = Sub(), Sub()
    for sub in (stays, leaves):
        hub.subscribe(sub, [TRADES], None, OPEN)
    hub.publish(trade(1), 1)
    hub.drop(leaves)
    hub.publish(trade(2), 2)
    hub.flush()
    stays.write()
    assert [m.get("seq") for m in stays.read] == [None, 1, 2]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_framed_batches_join_as_their_framing_joins_messages(count: int) -> None:
    hub = make_hub([], compression=CompressionPolicy(min_bytes=10))
    polling, deflate, plain = Sub(framing=SOCKETIO_POLLING), Sub(framing=15), Sub()
    for sub in (polling, deflate, plain):
        hub.subscribe(sub, [TRADES, OTHER], None, OPEN)
        sub.outbox.drain()
    seqs = list(range(1, count + 1))
    for n in seqs:
        hub.publish(Update(TRADES, {"text": "compressible " * 4, "n": n}, n, False), n)
    hub.publish(Update(OTHER, {"n": 0}, 0, False), 0)  # a second channel in the same round
    compressions = hub.compressions
    hub.flush()
    packets, other = polling.outbox.drain().frames
    parts = packets.split(SEPARATOR)
    assert [orjson.loads(p[len(b'42/ws,["data",') : -1])["seq"] for p in parts] == seqs
    assert orjson.loads(other[len(b'42/ws,["data",') : -1])["channel"] == OTHER
    deflate.write()
    plain.write()
    for sub in (deflate, plain):
        assert [(m["channel"], m["seq"]) for m in sub.read] == [
            *((TRADES, n) for n in seqs),
            (OTHER, 1),
        ]
    # Each message compressed once, for the one window size (the other channel's too).
    assert hub.compressions == compressions + count + 1
    assert hub.compressed_deliveries == count + 1


def test_a_framed_batch_that_does_not_fit_is_offered_one_by_one_in_each_framing() -> None:
    hub = make_hub([], compression=CompressionPolicy(min_bytes=10))
    deflate, plain = Sub(max_messages=2, framing=15), Sub(max_messages=2)
    for sub in (deflate, plain):
        hub.subscribe(sub, [TRADES], None, OPEN)
        sub.write()
    for n in range(1, 5):
        hub.publish(Update(TRADES, {"text": "compressible " * 4, "n": n}, n, False), n)
    hub.flush()
    for sub in (deflate, plain):
        sub.write()
        assert [m.get("seq") for m in sub.read[1:]] == [1, 2, None]
        assert sub.read[-1]["data"] == {"channel": TRADES, "dropped": 2}
    assert hub.offers()[Offer.DROPPED] == 4


def test_without_write_rounds_every_publish_is_offered_at_once() -> None:
    hub = make_hub()
    sub = Sub()
    hub.subscribe(sub, [TRADES], None, OPEN)
    sub.write()
    hub.publish(trade(1), 1)
    hub.publish(trade(2), 2)
    assert len(sub.outbox._queue) == 2  # one entry each, offered as they came


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(CHANNELS)),
        st.tuples(st.just("subscribe"), st.integers(0, 2), st.sampled_from(CHANNELS)),
        st.tuples(st.just("unsubscribe"), st.integers(0, 2), st.sampled_from(CHANNELS)),
        st.tuples(st.just("write"), st.integers(0, 2)),
        st.tuples(st.just("round"), st.just(0)),
        st.tuples(st.just("refused"), st.sampled_from(CHANNELS)),
        st.tuples(st.just("drop"), st.integers(0, 2)),
    ),
    max_size=60,
)


def replay(ops: list[tuple[Any, ...]], batched: bool, max_messages: int) -> list[Sub]:
    """Run ``ops`` on a hub, batched (a round flushes, then every session writes) or not; a
    ``write`` alone is a session writing its replies without a round."""
    hub = make_hub([] if batched else None)
    subs = [Sub(max_messages) for _ in range(3)]
    n = 0
    for op in ops:
        kind = op[0]
        if kind == "publish":
            n += 1
            channel = op[1]
            # Every third message a whole state: coalescing keeps those, and asks for a
            # fresh snapshot after a delta.
            hub.publish(Update(channel, {"n": n}, n, channel == TICKER and n % 3 == 0), n)
        elif kind == "subscribe":
            hub.subscribe(subs[op[1]], [op[2]], None, OPEN)
        elif kind == "unsubscribe":
            hub.unsubscribe(subs[op[1]], [op[2]], None)
        elif kind == "write":
            subs[op[1]].write()
        elif kind == "round":
            hub.flush()
            for sub in subs:
                sub.write()
        elif kind == "refused":
            hub.upstream_refused(op[1], "refused")
        else:
            hub.drop(subs[op[1]])
            subs[op[1]].write()
            subs[op[1]] = Sub(max_messages)
    hub.flush()
    for sub in subs:
        sub.write()
    return subs


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_every_client_reads_what_it_would_read_with_every_message_offered_at_once(
    ops: list[tuple[Any, ...]],
) -> None:
    """Room for everything: each client's messages and events, channel by channel, are
    those a hub without batches gives it, whenever its replies are written meanwhile."""
    at_once = replay(ops, batched=False, max_messages=10_000)
    batched = replay(ops, batched=True, max_messages=10_000)
    assert [s.by_channel() for s in batched] == [s.by_channel() for s in at_once]


@settings(max_examples=300, deadline=None)
@given(ops=OPS.map(lambda ops: [op for op in ops if op[0] != "write"]))
def test_the_policies_treat_a_batch_as_they_treat_its_messages_one_by_one(
    ops: list[tuple[Any, ...]],
) -> None:
    """Outboxes of three messages, filled by the rounds: what is queued, dropped (and told in
    ``lagged``) or coalesced is the same as with every message offered at once, for clients
    whose writes come in write rounds."""
    at_once = replay(ops, batched=False, max_messages=3)
    batched = replay(ops, batched=True, max_messages=3)
    assert [s.by_channel() for s in batched] == [s.by_channel() for s in at_once]
