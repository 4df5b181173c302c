"""The sans-IO data path: subscriptions, sequencing, snapshots and fan-out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from relay.core.deflate import CompressionPolicy
from relay.core.history import HistoryBounds
from relay.core.hub import CLOCK_EVERY, QUEUE, TAKEN, WRITTEN, Hub, Limits
from relay.core.latency import LatencyHistogram
from relay.core.model import StreamKind, Update
from relay.core.outbox import Offer, Outbox, Policy
from relay.core.protocol import Since, encode_envelope
from tests.deflate_client import agreed_deflate

CATALOGUE = {
    "sim:trades:A": StreamKind.EVENT,
    "sim:ticker:A": StreamKind.STATE,
    "sim:book:A": StreamKind.BOOK,
    "alt:trades:A": StreamKind.EVENT,
}
OPEN = Limits(max_subscriptions=10)


class FakeSession:
    def __init__(self, max_messages: int = 100, max_bytes: int = 1 << 20) -> None:
        self.outbox = Outbox(max_messages, max_bytes)
        self.framing = 0
        self.wakes = 0
        self.overflows = 0
        self._client = Connection(ConnectionType.CLIENT)

    def wake(self) -> None:
        self.wakes += 1

    def overflow(self) -> None:
        self.overflows += 1

    def messages(self) -> list[dict[str, Any]]:
        drained = self.outbox.drain()
        self._client.receive_data(b"".join(drained.frames))
        return [orjson.loads(e.data) for e in self._client.events() if isinstance(e, TextMessage)]


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.books: dict[str, dict[str, Any]] = {}

    def want(self, channel: str) -> None:
        self.events.append(("want", channel))

    def unwant(self, channel: str) -> None:
        self.events.append(("unwant", channel))

    def channel_state(self, channel: str) -> dict[str, Any] | None:
        return self.books.get(channel)


def make_hub() -> tuple[Hub, Listener]:
    hub = Hub(CATALOGUE.get, lambda c: Policy.COALESCE if ":ticker:" in c else Policy.DROP)
    listener = Listener()
    hub.add_source("sim", listener)
    hub.add_source("alt", listener)
    return hub, listener


def trade(n: int) -> Update:
    return Update("sim:trades:A", {"n": n}, n, False)


def test_subscribe_acks_and_first_subscriber_wants_upstream() -> None:
    hub, listener = make_hub()
    a, b = FakeSession(), FakeSession()
    hub.subscribe(a, ["sim:trades:A"], 1, OPEN)
    hub.subscribe(b, ["sim:trades:A"], 2, OPEN)
    assert listener.events == [("want", "sim:trades:A")]
    assert a.messages() == [
        {
            "event": "subscribed",
            "data": {"channel": "sim:trades:A", "seq": 0, "epoch": hub.epoch},
            "id": 1,
        }
    ]
    assert a.wakes == 1


def test_publish_sequences_and_shares_one_frame() -> None:
    hub, _ = make_hub()
    sessions = [FakeSession() for _ in range(3)]
    for s in sessions:
        hub.subscribe(s, ["sim:trades:A"], None, OPEN)
        s.messages()
    hub.publish(trade(1), ts=1000)
    hub.publish(trade(2), ts=1001)
    frames = [list(s.outbox._queue) for s in sessions]
    assert all(f[0] is frames[0][0] for f in frames)  # the same bytes object, not a copy
    got = sessions[0].messages()
    assert [(m["seq"], m["ts"], m["data"]) for m in got] == [
        (1, 1000, {"n": 1}),
        (2, 1001, {"n": 2}),
    ]
    assert "snapshot" not in got[0]


def test_seq_counts_messages_even_without_subscribers() -> None:
    hub, _ = make_hub()
    hub.publish(trade(1), ts=1)
    a = FakeSession()
    hub.subscribe(a, ["sim:trades:A"], None, OPEN)
    hub.publish(trade(2), ts=2)
    assert a.messages()[-1]["seq"] == 2


def test_state_channel_snapshot_first() -> None:
    hub, _ = make_hub()
    first = FakeSession()
    hub.subscribe(first, ["sim:ticker:A"], None, OPEN)
    hub.publish(Update("sim:ticker:A", {"last": "1"}, 5, True), ts=10)
    hub.publish(Update("sim:ticker:A", {"last": "2"}, 6, True), ts=11)
    late = FakeSession()
    hub.subscribe(late, ["sim:ticker:A"], 7, OPEN)
    ack, snapshot = late.messages()
    assert ack["event"] == "subscribed"
    assert snapshot == {
        "channel": "sim:ticker:A",
        "seq": 2,
        "ts": 11,
        "snapshot": True,
        "data": {"last": "2"},
    }
    hub.publish(Update("sim:ticker:A", {"last": "3"}, 7, True), ts=12)
    assert late.messages()[0]["seq"] == 3


def test_book_snapshot_comes_from_the_source() -> None:
    hub, listener = make_hub()
    a = FakeSession()
    hub.subscribe(a, ["sim:book:A"], None, OPEN)
    assert [m.get("event") for m in a.messages()] == ["subscribed"]
    book = {"bids": [], "asks": []}
    listener.books["sim:book:A"] = book
    hub.unsubscribe(a, ["sim:book:A"], None)
    hub.subscribe(a, ["sim:book:A"], None, OPEN)
    assert a.messages()[-1]["data"] == book


def test_refusals_name_the_channel_and_do_not_affect_others() -> None:
    hub, listener = make_hub()
    a = FakeSession()
    limits = Limits(max_subscriptions=1, channels=("sim:*",))
    hub.subscribe(a, ["nope:x", "alt:trades:A", "sim:trades:A", "sim:ticker:A"], 9, limits)
    replies = a.messages()
    assert [(r["event"], r["data"].get("code"), r["data"]["channel"]) for r in replies] == [
        ("error", "unknown_channel", "nope:x"),
        ("error", "forbidden", "alt:trades:A"),
        ("subscribed", None, "sim:trades:A"),
        ("error", "too_many_subscriptions", "sim:ticker:A"),
    ]
    assert all(r["id"] == 9 for r in replies)
    assert listener.events == [("want", "sim:trades:A")]


def test_resubscribe_is_idempotent() -> None:
    hub, listener = make_hub()
    a = FakeSession()
    hub.subscribe(a, ["sim:trades:A"], 1, OPEN)
    hub.subscribe(a, ["sim:trades:A"], 2, OPEN)
    assert [m["id"] for m in a.messages()] == [1, 2]
    assert hub.registry.refcount("sim:trades:A") == 1
    assert listener.events == [("want", "sim:trades:A")]


def test_unsubscribe_and_drop_release_upstream() -> None:
    hub, listener = make_hub()
    a, b = FakeSession(), FakeSession()
    hub.subscribe(a, ["sim:trades:A", "sim:ticker:A"], None, OPEN)
    hub.subscribe(b, ["sim:trades:A"], None, OPEN)
    hub.unsubscribe(a, ["sim:trades:A", "nope:x"], 3)
    replies = a.messages()[-2:]
    assert replies[0] == {"event": "unsubscribed", "data": {"channel": "sim:trades:A"}, "id": 3}
    assert replies[1]["data"]["code"] == "unknown_channel"
    assert ("unwant", "sim:trades:A") not in listener.events
    hub.drop(a)
    hub.drop(b)
    b.messages()
    assert listener.events[-2:] == [("unwant", "sim:ticker:A"), ("unwant", "sim:trades:A")]
    assert len(hub.registry) == 0
    hub.publish(trade(1), ts=1)
    assert not a.outbox.pending and not b.outbox.pending


def test_never_receives_an_unsubscribed_channel() -> None:
    hub, _ = make_hub()
    a = FakeSession()
    hub.subscribe(a, ["sim:ticker:A"], None, OPEN)
    a.messages()
    hub.publish(trade(1), ts=1)
    assert a.messages() == []


def test_disconnect_policy_overflow_is_reported() -> None:
    hub = Hub(CATALOGUE.get, lambda c: Policy.DISCONNECT)
    hub.add_source("sim", Listener())
    slow = FakeSession(max_messages=2)
    hub.subscribe(slow, ["sim:trades:A"], None, OPEN)
    slow.messages()
    for n in range(3):
        hub.publish(trade(n), ts=n)
    assert slow.overflows == 1


def test_status_goes_to_sessions_of_that_source_only() -> None:
    hub, _ = make_hub()
    sim_client, alt_client = FakeSession(), FakeSession()
    hub.subscribe(sim_client, ["sim:trades:A"], None, OPEN)
    hub.subscribe(alt_client, ["alt:trades:A"], None, OPEN)
    sim_client.messages()
    alt_client.messages()
    hub.status("sim", "reconnecting")
    assert sim_client.messages() == [
        {"event": "status", "data": {"source": "sim", "state": "reconnecting"}}
    ]
    assert alt_client.messages() == []


def test_offer_outcomes_are_counted() -> None:
    hub = Hub(CATALOGUE.get, lambda c: Policy.DROP)
    hub.add_source("sim", Listener())
    roomy, tight = FakeSession(), FakeSession(max_messages=2)
    for s in (roomy, tight):
        hub.subscribe(s, ["sim:trades:A"], None, OPEN)
        s.messages()
    for n in range(5):
        hub.publish(trade(n), ts=n)
    counts = hub.offers()
    assert counts[Offer.QUEUED] == 5 + 2
    assert counts[Offer.DROPPED] == 3
    assert counts[Offer.COALESCED] == counts[Offer.OVERFLOW] == 0
    assert hub.deliveries == 10


# Revoking subscriptions a reload or a token refresh no longer allows -----------------------


def test_revoke_removes_with_an_unsubscribed_event_and_unwants_the_last_holder() -> None:
    hub, listener = make_hub()
    a, b = FakeSession(), FakeSession()
    hub.subscribe(a, ["sim:trades:A", "sim:ticker:A"], 1, OPEN)
    hub.subscribe(b, ["sim:trades:A"], 1, OPEN)
    a.messages()
    hub.publish(trade(1), 1)
    assert hub.revoke(a, "sim:trades:A", "no longer allowed")
    assert not hub.revoke(a, "sim:trades:A", "again")
    revoked = {"channel": "sim:trades:A", "reason": "forbidden", "message": "no longer allowed"}
    # As with an unsubscribe, what was queued before it goes out before the event.
    assert a.messages() == [
        {"channel": "sim:trades:A", "seq": 1, "ts": 1, "data": {"n": 1}},
        {"event": "unsubscribed", "data": revoked},
    ]
    hub.publish(trade(2), 2)
    assert a.messages() == []
    assert ("unwant", "sim:trades:A") not in listener.events  # b still holds it
    assert hub.revoke(b, "sim:trades:A", "x")
    assert listener.events[-1] == ("unwant", "sim:trades:A")
    assert hub.registry.channels_of(a) == ["sim:ticker:A"]


_HOLDINGS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(sorted(CATALOGUE))), max_size=12)


@settings(max_examples=200)
@given(held=_HOLDINGS, revoked=_HOLDINGS)
def test_revoking_keeps_the_registry_and_the_upstream_wants_consistent(
    held: list[tuple[int, str]], revoked: list[tuple[int, str]]
) -> None:
    hub, listener = make_hub()
    sessions = [FakeSession() for _ in range(3)]
    model: set[tuple[int, str]] = set()
    for i, channel in held:
        hub.subscribe(sessions[i], [channel], None, OPEN)
        model.add((i, channel))
    for i, channel in revoked:
        assert hub.revoke(sessions[i], channel, "gone") == ((i, channel) in model)
        model.discard((i, channel))
    for i, session in enumerate(sessions):
        assert sorted(hub.registry.channels_of(session)) == sorted(c for j, c in model if j == i)
    wanted = {c for _, c in model}
    for channel in CATALOGUE:
        # Every want is matched by an unwant exactly when nobody holds the channel now.
        balance = sum(1 if kind == "want" else -1 for kind, c in listener.events if c == channel)
        assert balance == (1 if channel in wanted else 0)


def test_a_channel_no_source_serves_is_a_key_error() -> None:
    hub, _ = make_hub()
    with pytest.raises(KeyError, match="no source serves 'nope:x'"):
        hub.channel("nope:x")
    assert not hub.known("nope:x") and hub.known("sim:trades:A")


def test_the_http_snapshot_of_each_kind_of_channel() -> None:
    hub, listener = make_hub()
    # Asking about a channel nobody subscribed to creates no state for it.
    assert hub.snapshot("sim:ticker:A") is None
    hub.publish(Update("sim:ticker:A", {"last": "1"}, 1, True), ts=10)
    hub.publish(Update("sim:ticker:A", {"last": "2"}, 2, True), ts=11)
    assert hub.snapshot("sim:ticker:A") == (2, 11, {"last": "2"})
    hub.publish(trade(1), ts=12)
    assert hub.snapshot("sim:trades:A") is None  # events have no state
    hub.publish(Update("sim:book:A", {"bids": []}, 1, False), ts=13)
    assert hub.snapshot("sim:book:A") is None  # the source has no consistent book
    listener.books["sim:book:A"] = {"bids": [["1", "1"]], "asks": []}
    assert hub.snapshot("sim:book:A") == (1, 13, {"bids": [["1", "1"]], "asks": []})


def test_forgotten_state_reaches_no_new_subscriber() -> None:
    hub, _ = make_hub()
    hub.publish(Update("sim:ticker:A", {"last": "1"}, 1, True), ts=10)
    hub.forget_state("sim:ticker:A")
    hub.forget_state("sim:trades:A")  # no state kept: nothing to forget
    assert hub.snapshot("sim:ticker:A") is None
    late = FakeSession()
    hub.subscribe(late, ["sim:ticker:A"], None, OPEN)
    assert [m["event"] for m in late.messages()] == ["subscribed"]
    hub.publish(Update("sim:ticker:A", {"last": "2"}, 2, True), ts=11)
    assert late.messages()[0]["seq"] == 2


def test_an_upstream_refusal_reaches_the_channels_subscribers_only() -> None:
    hub, _ = make_hub()
    holder, other = FakeSession(), FakeSession()
    hub.subscribe(holder, ["sim:trades:A"], None, OPEN)
    hub.subscribe(other, ["sim:ticker:A"], None, OPEN)
    holder.messages()
    other.messages()
    wakes = holder.wakes
    hub.upstream_refused("sim:trades:A", "no such market")
    assert holder.messages() == [
        {
            "event": "error",
            "data": {
                "code": "upstream_refused",
                "message": "no such market",
                "channel": "sim:trades:A",
            },
        }
    ]
    assert holder.wakes == wakes + 1 and holder.overflows == 0
    assert other.messages() == [] and hub.registry.refcount("sim:trades:A") == 1


def choked_session() -> FakeSession:
    """A session whose outbox holds twice its byte limit: no room even for control events."""
    session = FakeSession(max_bytes=64)
    assert session.outbox.offer_control(b"x" * 128)
    return session


def test_control_events_a_choked_session_cannot_take_overflow_it() -> None:
    hub, _ = make_hub()
    refused, status = choked_session(), choked_session()
    for session in (refused, status):
        hub.subscribe(session, ["sim:trades:A"], None, OPEN)
    wakes = (refused.wakes, status.wakes)
    hub.upstream_refused("sim:trades:A", "no")
    assert (refused.overflows, status.overflows) == (1, 1)
    hub.status("sim", "reconnecting")
    assert (refused.overflows, status.overflows) == (2, 2)
    assert (refused.wakes, status.wakes) == wakes


class TimedSession(FakeSession):
    """Notes the hub's ``publish_ts`` at each wake, as the latency histogram does."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self.seen: list[int] = []

    def wake(self) -> None:
        super().wake()
        self.seen.append(self.hub.publish_ts)


def test_publish_ts_is_the_messages_time_during_fan_out_only() -> None:
    hub, _ = make_hub()
    assert (hub.publish_ts, hub.messages_in) == (0, 0)
    session = TimedSession(hub)
    hub.subscribe(session, ["sim:trades:A"], None, OPEN)
    hub.publish(trade(1), ts=1234)
    hub.publish(trade(2), ts=1300)
    assert session.seen == [0, 1234, 1300]  # the subscribe's wake is outside any publish
    assert (hub.publish_ts, hub.messages_in, hub.deliveries) == (0, 2, 2)


def test_flags_and_channel_reach_the_envelope() -> None:
    hub, _ = make_hub()
    a = FakeSession()
    hub.subscribe(a, ["sim:ticker:A", "sim:trades:A"], None, OPEN)
    a.messages()
    hub.publish(Update("sim:ticker:A", {"last": "1"}, 1, True), ts=5)
    hub.publish(Update("sim:trades:A", {"n": 1}, 1, False, reorg=True), ts=6)
    assert a.messages() == [
        {"channel": "sim:ticker:A", "seq": 1, "ts": 5, "snapshot": True, "data": {"last": "1"}},
        {"channel": "sim:trades:A", "seq": 1, "ts": 6, "reorg": True, "data": {"n": 1}},
    ]


def coalescing_hub() -> Hub:
    hub = Hub(CATALOGUE.get, lambda c: Policy.COALESCE)
    hub.add_source("sim", Listener())
    return hub


def full_session(hub: Hub, channel: str) -> FakeSession:
    session = FakeSession(max_messages=1)
    hub.subscribe(session, [channel], None, OPEN)
    session.outbox.drain()
    hub.publish(Update("sim:trades:A", {"n": 0}, 0, False), ts=0)  # fills it (one message)
    return session


@pytest.mark.parametrize(
    ("channel", "snapshot", "resnapshot"),
    [
        ("sim:book:A", False, True),  # a book delta: only a fresh snapshot can replace it
        ("sim:ticker:A", False, True),  # a state that extends the last one (blocks)
        ("sim:ticker:A", True, False),  # a whole state: the latest one replaces it
        ("sim:trades:A", False, False),  # an event: the latest is kept
    ],
)
def test_a_coalesced_message_becomes_a_resnapshot_exactly_when_it_is_a_delta(
    channel: str, snapshot: bool, resnapshot: bool
) -> None:
    hub = coalescing_hub()
    session = full_session(hub, "sim:trades:A")
    hub.subscribe(session, [channel], None, OPEN)
    session.outbox.drain()
    hub.publish(Update("sim:trades:A", {"n": 1}, 1, False), ts=1)  # full again
    hub.publish(Update(channel, {"v": 1}, 2, snapshot), ts=2)
    drained = session.outbox.drain()
    assert drained.resnapshot == ([channel] if resnapshot else [])
    # The queued trade, then the coalesced message itself unless a snapshot replaces it.
    assert len(drained.frames) == (1 if resnapshot else 2)


def test_dropped_messages_are_counted_under_their_channel_until_it_is_unsubscribed() -> None:
    hub, _ = make_hub()
    tight = FakeSession(max_messages=1)
    hub.subscribe(tight, ["sim:trades:A", "alt:trades:A"], None, OPEN)
    tight.outbox.drain()
    for n in range(3):
        hub.publish(trade(n), ts=n)
    hub.publish(Update("alt:trades:A", {"n": 1}, 1, False), ts=3)
    assert tight.outbox.drain().lagged == {"sim:trades:A": 2, "alt:trades:A": 1}
    for n in range(3, 6):
        hub.publish(trade(n), ts=n)
    hub.unsubscribe(tight, ["sim:trades:A"], None)
    assert tight.outbox.drain().lagged == {}


def test_one_subscriber_overflowing_does_not_stop_the_fan_out() -> None:
    hub = Hub(CATALOGUE.get, lambda c: Policy.DISCONNECT)
    hub.add_source("sim", Listener())
    slow, fine = FakeSession(max_messages=1), FakeSession()
    for s in (slow, fine):
        hub.subscribe(s, ["sim:trades:A"], None, OPEN)
        s.messages()
    hub.publish(trade(1), ts=1)
    hub.publish(trade(2), ts=2)
    assert slow.overflows == 1
    assert [m["seq"] for m in fine.messages()] == [1, 2]


def test_a_session_at_its_limit_may_subscribe_again_to_what_it_holds() -> None:
    hub, _ = make_hub()
    a = FakeSession()
    one = Limits(max_subscriptions=1)
    hub.subscribe(a, ["sim:trades:A"], 1, one)
    hub.subscribe(a, ["sim:trades:A"], 2, one)
    assert [(m["event"], m["id"]) for m in a.messages()] == [("subscribed", 1), ("subscribed", 2)]


def test_unsubscribing_an_unknown_channel_is_an_exact_error_and_the_rest_goes_on() -> None:
    hub, listener = make_hub()
    a = FakeSession()
    hub.subscribe(a, ["sim:trades:A"], None, OPEN)
    a.messages()
    hub.unsubscribe(a, ["nope:x", "sim:trades:A"], 4)
    assert a.messages() == [
        {
            "event": "error",
            "data": {
                "code": "unknown_channel",
                "message": "no such channel: nope:x",
                "channel": "nope:x",
            },
            "id": 4,
        },
        {"event": "unsubscribed", "data": {"channel": "sim:trades:A"}, "id": 4},
    ]
    assert listener.events[-1] == ("unwant", "sim:trades:A")


# Compressed fan-out (permessage-deflate subscribers) ----------------------------------------

BIG = {"text": "compressible " * 20}
"""A message over the default min_bytes."""


class DeflateSession(FakeSession):
    """A subscriber that agreed to permessage-deflate with ``bits`` as the server window (0: a
    plain one, which did not)."""

    def __init__(self, bits: int = 15) -> None:
        super().__init__()
        self.framing = bits
        self._client = Connection(ConnectionType.CLIENT, extensions=agreed_deflate(bits))


def compressing_hub(**policy: Any) -> Hub:
    hub = Hub(
        CATALOGUE.get, lambda _: Policy.DROP, compression=CompressionPolicy(**policy), epoch="e"
    )
    hub.add_source("sim", Listener())
    return hub


def big_trade(n: int) -> Update:
    return Update("sim:trades:A", {**BIG, "n": n}, n, False)


def queued(session: FakeSession) -> list[bytes]:
    return list(session.outbox._queue)


def test_deflate_subscribers_share_one_compressed_frame_and_plain_ones_the_plain_frame() -> None:
    hub = compressing_hub()
    plain, deflated, other = FakeSession(), DeflateSession(), DeflateSession()
    for session in (plain, deflated, other):
        hub.subscribe(session, ["sim:trades:A"], None, OPEN)
        session.messages()
    hub.publish(big_trade(1), ts=5)
    (compressed,), (also,), (frame,) = queued(deflated), queued(other), queued(plain)
    assert compressed is also  # compressed once, the same bytes for both
    assert compressed[0] == 0xC1 and frame[0] == 0x81  # RSV1 on the compressed frame only
    assert len(compressed) < len(frame)
    assert hub.compressions == 1 and hub.compressed_deliveries == 2
    expected = {"channel": "sim:trades:A", "seq": 1, "ts": 5, "data": {**BIG, "n": 1}}
    assert deflated.messages() == other.messages() == plain.messages() == [expected]


def test_each_window_size_is_compressed_once() -> None:
    hub = compressing_hub()
    sessions = [DeflateSession(15), DeflateSession(10), DeflateSession(15), DeflateSession(10)]
    for session in sessions:
        hub.subscribe(session, ["sim:trades:A"], None, OPEN)
        session.messages()
    hub.publish(big_trade(1), ts=5)
    assert hub.compressions == 2
    assert queued(sessions[0])[0] is queued(sessions[2])[0]
    assert queued(sessions[1])[0] is queued(sessions[3])[0]
    assert all(s.messages()[0]["data"]["n"] == 1 for s in sessions)


def test_nothing_is_compressed_for_a_channel_without_deflate_subscribers() -> None:
    hub = compressing_hub()
    plain, deflated = FakeSession(), DeflateSession()
    hub.subscribe(plain, ["sim:trades:A"], None, OPEN)
    hub.subscribe(deflated, ["sim:ticker:A"], None, OPEN)
    hub.publish(big_trade(1), ts=5)
    assert hub.compressions == 0
    hub.subscribe(deflated, ["sim:trades:A"], None, OPEN)
    hub.publish(big_trade(2), ts=6)
    assert hub.compressions == 1
    hub.unsubscribe(deflated, ["sim:trades:A"], None)
    hub.publish(big_trade(3), ts=7)
    assert hub.compressions == 1
    hub.subscribe(deflated, ["sim:trades:A"], None, OPEN)
    hub.revoke(deflated, "sim:trades:A", "gone")
    hub.publish(big_trade(4), ts=8)
    assert hub.compressions == 1
    hub.subscribe(deflated, ["sim:trades:A"], None, OPEN)
    hub.drop(deflated)
    hub.publish(big_trade(5), ts=9)
    assert hub.compressions == 1
    assert hub._framed == {}


def test_short_messages_and_excluded_channels_go_out_plain() -> None:
    hub = compressing_hub(min_bytes=200, exclude=("sim:ticker:*",))
    deflated = DeflateSession()
    hub.subscribe(deflated, ["sim:trades:A", "sim:ticker:A"], None, OPEN)
    deflated.messages()
    hub.publish(trade(1), ts=1)  # short
    hub.publish(Update("sim:ticker:A", BIG, 1, True), ts=2)  # excluded
    hub.publish(big_trade(2), ts=3)
    first, second, third = queued(deflated)
    assert (first[0], second[0], third[0]) == (0x81, 0x81, 0xC1)
    assert [m["seq"] for m in deflated.messages()] == [1, 1, 2]


def test_a_deflate_subscriber_gets_its_snapshot_compressed_and_a_plain_one_plain() -> None:
    hub = compressing_hub()
    hub.publish(Update("sim:ticker:A", BIG, 1, True), ts=2)
    plain, deflated = FakeSession(), DeflateSession()
    hub.subscribe(plain, ["sim:ticker:A"], None, OPEN)
    hub.subscribe(deflated, ["sim:ticker:A"], None, OPEN)
    assert [f[0] for f in queued(plain)] == [0x81, 0x81]
    assert [f[0] for f in queued(deflated)] == [0x81, 0xC1]  # the ack plain, the snapshot not
    assert plain.messages() == deflated.messages()


def test_a_deflate_subscriber_resuming_gets_the_historys_plain_frames() -> None:
    hub = Hub(
        CATALOGUE.get,
        lambda _: Policy.DROP,
        lambda _: HistoryBounds(100, 60_000),
        compression=CompressionPolicy(),
        epoch="e",
    )
    hub.add_source("sim", Listener())
    for n in range(1, 4):
        hub.publish(big_trade(n), ts=n)
    deflated = DeflateSession()
    hub.subscribe(deflated, ["sim:trades:A"], None, OPEN, Since(1, "e"), now=4)
    ack, *replayed = deflated.messages()
    assert ack["data"]["recovered"] is True
    assert [m["seq"] for m in replayed] == [2, 3]


class DirectSession(DeflateSession):
    """Takes a round's frames itself when ``idle``, as a session with nothing waiting does;
    plain, or compressed with ``bits`` as the server window."""

    def __init__(self, hub: Hub, idle: bool, bits: int = 0, answer: int = WRITTEN) -> None:
        super().__init__(bits)
        self.hub = hub
        self.idle = idle
        self.answer = answer
        """What it answers when idle: written whole, or taken with the rest left to write."""
        self.written: list[list[int]] = []
        self.raw: list[bytes] = []

    def write_now(self, frames: bytes) -> int:
        if not self.idle:
            return QUEUE
        self.raw.append(frames)
        self._client.receive_data(frames)
        self.written.append([orjson.loads(e.data)["seq"] for e in self._client.events()])
        return self.answer


def latency_of(sessions: list[DirectSession], reads: list[int], ts: int) -> LatencyHistogram:
    """What a flush records for the idle ``sessions``: the clock read once per chunk of
    ``CLOCK_EVERY``, each chunk's writes against its reading and ``ts``."""
    expected = LatencyHistogram()
    for i, session in enumerate(sessions):
        if session.idle:
            expected.record(reads[i // CLOCK_EVERY] - ts)
    return expected


def subscribed_quietly(hub: Hub, sessions: list[DirectSession]) -> None:
    """Subscribed to sim:trades:A, with the confirmation taken and its wake-up forgotten."""
    for session in sessions:
        hub.subscribe(session, ["sim:trades:A"], None, OPEN)
        session.outbox.drain()
        session.wakes = 0


def test_a_round_flush_hands_each_batch_to_the_subscribers_that_write_it_at_once() -> None:
    hub, _ = make_hub()
    hub.flush_before_writing(lambda: None)
    sessions = [DirectSession(hub, idle=i % 3 != 0) for i in range(2 * CLOCK_EVERY + 2)]
    subscribed_quietly(hub, sessions)
    hub.publish(trade(1), 1000)
    hub.publish(trade(2), 1001)
    reads = iter([1003, 1010, 1030, 9999])
    latency = LatencyHistogram()
    hub.flush_round(lambda: next(reads), latency)
    for session in sessions:
        if session.idle:
            assert session.written == [[1, 2]]  # both messages in one write
            assert not session.outbox.pending and session.wakes == 0
        else:
            assert session.written == [] and session.wakes == 1
            assert [m["seq"] for m in session.messages()] == [1, 2]
    assert next(reads) == 9999  # one read per chunk of CLOCK_EVERY subscribers
    # Each write against the clock as read for its chunk and the oldest message's receipt
    # (3, 10 and 30 ms: three buckets), recorded once per chunk.
    expected = latency_of(sessions, [1003, 1010, 1030], 1000)
    assert (latency.counts, latency.sum_ms) == (expected.counts, expected.sum_ms)
    assert latency.count == sum(s.idle for s in sessions)
    assert hub.deliveries == 2 * len(sessions) and hub.publish_ts == 0


def test_a_round_flush_records_no_latency_for_a_replay_without_receipt_time() -> None:
    """A cluster node's replay of what it missed has no receipt time to measure from: it is
    written like any batch, and recorded nowhere."""
    hub, _ = make_hub()
    hub.flush_before_writing(lambda: None)
    session = DirectSession(hub, idle=True)
    subscribed_quietly(hub, [session])
    missed = [encode_envelope("sim:trades:A", 1, 1, {"n": 1}, False)]
    hub.resynced("sim:trades:A", missed, 0, None)
    latency = LatencyHistogram()
    hub.flush_round(lambda: 5000, latency)
    assert session.written == [[1]] and latency.count == 0


def test_a_round_flush_records_a_write_before_its_messages_receipt_time_as_no_wait() -> None:
    """A receipt time from another clock (a cluster node's holder) can be a little ahead of
    this one: the write counts as not having waited, never as a negative wait."""
    hub, _ = make_hub()
    hub.flush_before_writing(lambda: None)
    session = DirectSession(hub, idle=True)
    subscribed_quietly(hub, [session])
    latency = LatencyHistogram((0.5, 1, 2))
    reads = iter([990, 1001, 1002])  # one per flush: one subscriber
    for n in (1, 2, 3):
        hub.publish(trade(n), 1000)
        hub.flush_round(lambda: next(reads), latency)
    assert latency.counts == [1, 1, 1, 0] and latency.sum_ms == 0 + 1 + 2
    assert session.written == [[1], [2], [3]]


@pytest.mark.parametrize("bits", [0, 15])
def test_a_write_taken_but_not_finished_is_neither_queued_nor_recorded_by_the_flush(
    bits: int,
) -> None:
    """A socket that took part of a batch (or none, or failed): the subscriber has it, and
    its writer records the latency when the rest is written, so the flush does not; the
    next subscriber is written as ever. Plain, and compressed (the framed flush)."""
    hub = compressing_hub(min_bytes=0)
    hub.flush_before_writing(lambda: None)
    taken = DirectSession(hub, idle=True, bits=bits, answer=TAKEN)
    whole = DirectSession(hub, idle=True, bits=bits)
    subscribed_quietly(hub, [taken, whole])
    hub.publish(trade(1), 1000)
    latency = LatencyHistogram()
    hub.flush_round(lambda: 1003, latency)
    assert taken.written == whole.written == [[1]]
    assert not taken.outbox.pending and taken.wakes == 0
    assert latency.count == 1 and latency.sum_ms == 3


def test_a_round_flush_writes_each_framing_its_own_batch_at_once() -> None:
    """Compressed subscribers with nothing waiting are written in the flush too, the frames
    compressed once for all of them; one with something waiting queues the same frames."""
    hub = compressing_hub()
    hub.flush_before_writing(lambda: None)
    plain = DirectSession(hub, idle=True)
    deflated = [DirectSession(hub, idle=True, bits=15) for _ in range(CLOCK_EVERY + 1)]
    behind = DirectSession(hub, idle=False, bits=15)
    sessions = [plain, *deflated, behind]
    subscribed_quietly(hub, sessions)
    hub.publish(big_trade(1), 1000)
    hub.publish(big_trade(2), 1001)
    # Each framing's subscribers are written together, the clock read once per chunk of
    # CLOCK_EVERY of them: the plain one at 1003, the first CLOCK_EVERY compressed ones at
    # 1030, the last compressed one (and the one behind, which queues) at 1040.
    reads = iter([1003, 1030, 1040, 9999])
    latency = LatencyHistogram()
    hub.flush_round(lambda: next(reads), latency)
    assert plain.written == [[1, 2]] and plain.raw[0][0] == 0x81
    for session in deflated:
        assert session.written == [[1, 2]]
        assert session.raw[0] is deflated[0].raw[0]  # one compressed batch, shared
        assert not session.outbox.pending and session.wakes == 0
    assert deflated[0].raw[0][0] == 0xC1  # RSV1: compressed
    assert behind.written == [] and behind.wakes == 1
    assert queued(behind) == deflated[0].raw
    assert [m["seq"] for m in behind.messages()] == [1, 2]
    assert next(reads) == 9999
    expected = LatencyHistogram()
    expected.record(1003 - 1000)
    for i in range(len(deflated)):
        expected.record((1030 if i < CLOCK_EVERY else 1040) - 1000)
    assert (latency.counts, latency.sum_ms) == (expected.counts, expected.sum_ms)
    assert latency.count == len(sessions) - 1  # every write but the one that queued
    assert hub.round_writes == len(sessions) - 1
    assert hub.round_bytes == len(plain.raw[0]) + len(deflated) * len(deflated[0].raw[0])
    assert hub.compressions == 2  # once per message, not per subscriber
    assert hub.compressed_deliveries == 2 * (len(deflated) + 1)
    assert hub.deliveries == 2 * len(sessions) and hub.publish_ts == 0


def test_in_a_round_flush_no_batch_passes_a_message_held_in_its_channels_slot() -> None:
    """A message too big for the outbox waits in its channel's coalescing slot; a later, small
    one of the same channel would fit the queue but may not overtake it: it replaces it."""
    hub, _ = make_hub()
    hub.flush_before_writing(lambda: None)
    session = DirectSession(hub, idle=False)
    session.outbox = Outbox(max_messages=10, max_bytes=400)
    hub.subscribe(session, ["sim:ticker:A"], None, OPEN)
    session.outbox.drain()
    hub.publish(Update("sim:ticker:A", {"p": 1, "pad": "x" * 500}, 1, True), 1000)
    hub.flush_round(lambda: 5000)
    hub.publish(Update("sim:ticker:A", {"p": 2}, 2, True), 1000)
    hub.flush_round(lambda: 5000)
    assert [m["data"]["p"] for m in session.messages()] == [2]


def test_a_plain_flush_never_writes_directly() -> None:
    hub, _ = make_hub()
    hub.flush_before_writing(lambda: None)
    session = DirectSession(hub, idle=True)
    hub.subscribe(session, ["sim:trades:A"], None, OPEN)
    session.outbox.drain()
    hub.publish(trade(1), 1000)
    hub.flush()  # a reply's or a subscribe's flush: in order, through the outbox
    assert session.written == []
    assert [m["seq"] for m in session.messages()] == [1]


def test_in_a_round_flush_a_batch_that_does_not_fit_is_offered_message_by_message() -> None:
    hub, _ = make_hub()
    hub.flush_before_writing(lambda: None)
    session = DirectSession(hub, idle=False)
    session.outbox = Outbox(max_messages=2, max_bytes=1 << 20)
    hub.subscribe(session, ["sim:trades:A", "sim:ticker:A"], None, OPEN)
    session.outbox.drain()
    for n in (1, 2, 3):
        hub.publish(trade(n), 1000)
    hub.flush_round(lambda: 5000)
    drained = session.outbox.drain()
    assert len(drained.frames) == 2 and drained.lagged == {"sim:trades:A": 1}  # DROP
    hub.publish(Update("sim:ticker:A", {"p": 1}, 1, True), 1000)
    hub.publish(Update("sim:ticker:A", {"p": 2}, 2, True), 1000)
    hub.publish(Update("sim:ticker:A", {"p": 3}, 3, True), 1000)
    hub.flush_round(lambda: 5000)
    # Two fit; the third waits in the channel's coalescing slot (COALESCE), nothing overflows.
    assert [m["data"]["p"] for m in session.messages()] == [1, 2, 3]
    assert session.overflows == 0
