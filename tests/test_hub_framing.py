"""The hub's framings on one channel: plain WebSocket, permessage-deflate and Socket.IO (in
WebSocket frames, and bare for long-polling). Each message is framed once per framing in use and
the same bytes shared; plain subscribers get what they got before any other framing existed;
Socket.IO subscribers get the relay's messages and events as Socket.IO packets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from socketio.packet import EVENT, Packet
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from relay.core.cluster_wire import decode_message, encode_message
from relay.core.deflate import CompressionPolicy
from relay.core.framing import PLAIN, SOCKETIO_POLLING, SOCKETIO_WEBSOCKET, is_socketio
from relay.core.history import HistoryBounds
from relay.core.hub import Framer, Hub, Limits
from relay.core.model import StreamKind, Update
from relay.core.outbox import Outbox, Policy
from relay.core.protocol import Lagged, ProtocolError, Since, encode_envelope
from tests.deflate_client import agreed_deflate

TRADES, TICKER, BOOK, OTHER = "sim:trades:A", "sim:ticker:A", "sim:book:A", "alt:trades:A"
CATALOGUE = {
    TRADES: StreamKind.EVENT,
    TICKER: StreamKind.STATE,
    BOOK: StreamKind.BOOK,
    OTHER: StreamKind.EVENT,
}
OPEN = Limits(max_subscriptions=10)
MIN_BYTES = 100
BIG = {"text": "compressible " * 20}
"""Over MIN_BYTES once encoded."""


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def want(self, channel: str) -> None:
        self.events.append(("want", channel))

    def unwant(self, channel: str) -> None:
        self.events.append(("unwant", channel))

    def channel_state(self, channel: str) -> dict[str, Any] | None:
        return None


class Sub:
    """A subscriber with one framing, which reads its frames as its client would."""

    def __init__(self, framing: int, max_messages: int = 100, max_bytes: int = 1 << 20) -> None:
        self.outbox = Outbox(max_messages, max_bytes)
        self.framing = framing
        self.wakes = 0
        self.overflows = 0
        extensions = agreed_deflate(framing) if framing < SOCKETIO_WEBSOCKET else []
        self._client = Connection(ConnectionType.CLIENT, extensions=extensions)

    def wake(self) -> None:
        self.wakes += 1

    def overflow(self) -> None:
        self.overflows += 1

    def queued(self) -> list[bytes]:
        return list(self.outbox._queue)

    def texts(self) -> list[str]:
        """What the client reads: each WebSocket message's text, or each bare packet."""
        frames = self.outbox.drain().frames
        if self.framing == SOCKETIO_POLLING:
            return [frame.decode() for frame in frames]
        self._client.receive_data(b"".join(frames))
        events = list(self._client.events())
        assert all(isinstance(e, TextMessage) for e in events)
        return [e.data for e in events if isinstance(e, TextMessage)]

    def received(self) -> list[Any]:
        """Plain and deflate: the JSON of each message. Socket.IO: each event's [name, arg]."""
        texts = self.texts()
        if not is_socketio(self.framing):
            return [orjson.loads(text) for text in texts]
        events = []
        for text in texts:
            assert text.startswith("42/ws,"), text
            packet = Packet(encoded_packet=text[1:])
            assert (packet.packet_type, packet.namespace, packet.id) == (EVENT, "/ws", None)
            events.append(packet.data)
        return events


def make_hub(**options: Any) -> tuple[Hub, Listener]:
    options.setdefault("compression", CompressionPolicy(min_bytes=MIN_BYTES))
    hub = Hub(
        CATALOGUE.get,
        options.pop("policy_for", lambda _: Policy.DROP),
        epoch="e",
        **options,
    )
    listener = Listener()
    hub.add_source("sim", listener)
    hub.add_source("alt", listener)
    return hub, listener


def subscribed(hub: Hub, *subs: Sub, channel: str = TRADES) -> None:
    for sub in subs:
        hub.subscribe(sub, [channel], None, OPEN)
        sub.outbox.drain()


def trade(n: int, data: dict[str, Any] | None = None) -> Update:
    return Update(TRADES, {**(data or {}), "n": n}, n, False)


FRAMINGS = (PLAIN, 15, SOCKETIO_WEBSOCKET, SOCKETIO_POLLING)


def one_of_each_twice() -> dict[int, tuple[Sub, Sub]]:
    return {framing: (Sub(framing), Sub(framing)) for framing in FRAMINGS}


def sio_data(payload: bytes) -> bytes:
    return b'42/ws,["data",' + payload + b"]"


# -- data messages -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [BIG, {}], ids=["compressible", "short"])
def test_each_framing_frames_a_message_once_and_shares_it(data: dict[str, Any]) -> None:
    hub, _ = make_hub()
    subs = one_of_each_twice()
    subscribed(hub, *(s for pair in subs.values() for s in pair))
    hub.publish(trade(1, data), ts=5)
    frames = {framing: [s.queued() for s in pair] for framing, pair in subs.items()}
    for framing, (first, second) in frames.items():
        assert len(first) == len(second) == 1, framing
        assert first[0] is second[0], framing  # the same bytes object, not an equal copy
    payload = encode_envelope(TRADES, 1, 5, {**data, "n": 1}, False)
    plain = frames[PLAIN][0][0]
    assert plain == Framer().text(payload)
    assert frames[SOCKETIO_POLLING][0][0] == sio_data(payload)
    assert frames[SOCKETIO_WEBSOCKET][0][0] == Framer().text(sio_data(payload))
    deflated = frames[15][0][0]
    if data:
        assert deflated[0] == 0xC1 and plain[0] == 0x81  # RSV1: compressed
    else:
        assert deflated is plain  # not worth compressing: the plain frame itself
    envelope = {"channel": TRADES, "seq": 1, "ts": 5, "data": {**data, "n": 1}}
    for framing, pair in subs.items():
        for sub in pair:
            if is_socketio(framing):
                assert sub.received() == [["data", envelope]], framing
            else:
                assert sub.received() == [envelope], framing


def test_the_socketio_websocket_frame_is_the_data_event_in_a_text_frame() -> None:
    hub, _ = make_hub()
    sub = Sub(SOCKETIO_WEBSOCKET)
    subscribed(hub, sub)
    hub.publish(trade(7, {"p": "1.5"}), ts=9)
    (frame,) = sub.queued()
    assert frame[0] == 0x81  # FIN, text: never compressed
    payload = encode_envelope(TRADES, 1, 9, {"p": "1.5", "n": 7}, False)
    assert sub.texts() == [sio_data(payload).decode()]


def test_plain_subscribers_get_the_same_frames_as_on_a_hub_without_other_framings() -> None:
    alone, _ = make_hub()
    mixed, _ = make_hub()
    before, after = Sub(PLAIN), Sub(PLAIN)
    subscribed(alone, before)
    subscribed(mixed, after, Sub(15), Sub(SOCKETIO_WEBSOCKET), Sub(SOCKETIO_POLLING))
    for n, data in enumerate([BIG, {}, {"x": "é"}], start=1):
        alone.publish(trade(n, data), ts=n)
        mixed.publish(trade(n, data), ts=n)
    assert after.queued() == before.queued()
    assert len(after.queued()) == 3


def test_frames_are_made_once_per_framing_not_once_per_subscriber() -> None:
    hub, _ = make_hub()
    made: list[bytes] = []
    text = hub.framer.text

    def counting(payload: bytes) -> bytes:
        made.append(payload)
        return text(payload)

    hub.framer.text = counting  # type: ignore[method-assign]
    subs = [Sub(f) for f in FRAMINGS for _ in range(3)]
    subscribed(hub, *subs)
    made.clear()
    hub.publish(trade(1, BIG), ts=1)
    payload = encode_envelope(TRADES, 1, 1, {**BIG, "n": 1}, False)
    assert made == [payload, sio_data(payload)]  # the plain frame, the Socket.IO one
    assert hub.compressions == 1
    assert hub.deliveries == len(subs)


def test_compressed_deliveries_count_only_compressed_frames() -> None:
    hub, _ = make_hub()
    subs = one_of_each_twice()
    subscribed(hub, *(s for pair in subs.values() for s in pair))
    hub.publish(trade(1, BIG), ts=1)
    assert (hub.compressions, hub.compressed_deliveries) == (1, 2)
    hub.publish(trade(2), ts=2)  # short: nobody gets it compressed
    assert (hub.compressions, hub.compressed_deliveries) == (1, 2)
    hub.publish(trade(3, BIG), ts=3)
    assert (hub.compressions, hub.compressed_deliveries) == (2, 4)
    assert hub.deliveries == 3 * 8


def test_socketio_subscribers_alone_compress_nothing() -> None:
    hub, _ = make_hub()
    subscribed(hub, Sub(SOCKETIO_WEBSOCKET), Sub(SOCKETIO_POLLING), Sub(PLAIN))
    hub.publish(trade(1, BIG), ts=1)
    assert (hub.compressions, hub.compressed_deliveries) == (0, 0)


def test_a_framed_fan_out_applies_the_policy_and_counts_outcomes() -> None:
    hub, _ = make_hub(policy_for=lambda c: Policy.DISCONNECT if c == OTHER else Policy.DROP)
    full = Sub(SOCKETIO_POLLING, max_messages=1)
    roomy = Sub(SOCKETIO_POLLING)
    strict = Sub(SOCKETIO_WEBSOCKET, max_messages=1)
    subscribed(hub, full, roomy)
    subscribed(hub, strict, channel=OTHER)
    hub.publish(trade(1), ts=1)
    hub.publish(trade(2), ts=2)
    assert len(full.queued()) == 1 and len(roomy.queued()) == 2
    assert full.outbox.drain().lagged == {TRADES: 1}
    assert hub.offer_results[1] == 1  # one DROPPED
    hub.publish(Update(OTHER, {"n": 1}, 1, False), ts=3)
    hub.publish(Update(OTHER, {"n": 2}, 2, False), ts=4)
    assert strict.overflows == 1
    assert hub.offer_results[3] == 1  # one OVERFLOW


# -- events ------------------------------------------------------------------------------------


def test_subscribe_and_unsubscribe_answer_socketio_events_without_the_request_id() -> None:
    hub, _ = make_hub()
    for framing in (SOCKETIO_WEBSOCKET, SOCKETIO_POLLING):
        sub = Sub(framing)
        hub.subscribe(sub, [TRADES], 42, OPEN)
        hub.unsubscribe(sub, [TRADES], 43)
        assert sub.received() == [
            ["subscribed", {"channel": TRADES, "seq": 0, "epoch": "e"}],
            ["unsubscribed", {"channel": TRADES}],
        ]
        assert sub.wakes == 2


def test_the_polling_packets_of_events_are_exact() -> None:
    hub, _ = make_hub()
    sub = Sub(SOCKETIO_POLLING)
    hub.subscribe(sub, [TRADES, "nope:x"], 1, OPEN)
    assert sub.texts() == [
        '42/ws,["subscribed",{"channel":"sim:trades:A","seq":0,"epoch":"e"}]',
        '42/ws,["error",{"code":"unknown_channel","message":"no such channel: nope:x",'
        '"channel":"nope:x"}]',
    ]


def test_refusals_are_socketio_error_events_naming_the_channel() -> None:
    hub, _ = make_hub()
    sub = Sub(SOCKETIO_WEBSOCKET)
    limits = Limits(max_subscriptions=1, channels=("sim:*",))
    hub.subscribe(sub, ["nope:x", OTHER, TRADES, TICKER], 9, limits)
    hub.unsubscribe(sub, ["nope:y"], 10)
    assert sub.received() == [
        [
            "error",
            {"code": "unknown_channel", "message": "no such channel: nope:x", "channel": "nope:x"},
        ],
        [
            "error",
            {
                "code": "forbidden",
                "message": f"your tier may not subscribe to {OTHER}",
                "channel": OTHER,
            },
        ],
        ["subscribed", {"channel": TRADES, "seq": 0, "epoch": "e"}],
        [
            "error",
            {
                "code": "too_many_subscriptions",
                "message": "at most 1 subscriptions per connection",
                "channel": TICKER,
            },
        ],
        [
            "error",
            {"code": "unknown_channel", "message": "no such channel: nope:y", "channel": "nope:y"},
        ],
    ]


def test_a_revoked_channel_is_a_socketio_unsubscribed_with_its_reason() -> None:
    hub, _ = make_hub()
    sub = Sub(SOCKETIO_POLLING)
    subscribed(hub, sub)
    assert hub.revoke(sub, TRADES, "key revoked")
    assert sub.received() == [
        ["unsubscribed", {"channel": TRADES, "reason": "forbidden", "message": "key revoked"}]
    ]


def test_status_and_upstream_refusals_are_framed_once_per_framing() -> None:
    hub, _ = make_hub()
    subs = one_of_each_twice()
    everyone = [s for pair in subs.values() for s in pair]
    subscribed(hub, *everyone)
    hub.status("sim", "connected")
    hub.upstream_refused(TRADES, "no such market")
    for framing, (first, second) in subs.items():
        assert len(first.queued()) == 2
        assert all(a is b for a, b in zip(first.queued(), second.queued(), strict=True)), framing
    # Events are never compressed: a deflate subscriber's are the plain ones.
    assert subs[15][0].queued() == subs[PLAIN][0].queued()
    status = {"source": "sim", "state": "connected"}
    refused = {"code": "upstream_refused", "message": "no such market", "channel": TRADES}
    for framing in (SOCKETIO_WEBSOCKET, SOCKETIO_POLLING):
        assert subs[framing][0].received() == [["status", status], ["error", refused]]
    assert subs[PLAIN][0].received() == [
        {"event": "status", "data": status},
        {"event": "error", "data": refused},
    ]


@pytest.mark.parametrize("framing", [SOCKETIO_WEBSOCKET, SOCKETIO_POLLING])
def test_event_frames_of_each_event(framing: int) -> None:
    hub, _ = make_hub()
    sub = Sub(framing)
    for frame in (
        hub.event_frame(framing, "lagged", Lagged(TRADES, 3)),
        hub.event_frame(framing, "status", None, 5),
        hub.error_frame(framing, ProtocolError("bad_request", "no", 7)),
    ):
        sub.outbox.offer_control(frame)
    assert sub.received() == [
        ["lagged", {"channel": TRADES, "dropped": 3}],
        ["status"],
        ["error", {"code": "bad_request", "message": "no"}],
    ]
    plain = hub.error_frame(PLAIN, ProtocolError("bad_request", "no", 7))
    assert plain == Framer().text(
        b'{"event":"error","data":{"code":"bad_request","message":"no"},"id":7}'
    )
    assert hub.event_frame(15, "status", None) == Framer().text(b'{"event":"status"}')


# -- counting the framed subscribers -----------------------------------------------------------


def test_framed_counts_follow_subscribe_unsubscribe_revoke_and_drop() -> None:
    hub, _ = make_hub()
    plain, sio, deflated, polling = (
        Sub(PLAIN),
        Sub(SOCKETIO_WEBSOCKET),
        Sub(15),
        Sub(SOCKETIO_POLLING),
    )
    subscribed(hub, plain)
    assert hub._framed == {}
    subscribed(hub, sio, deflated)
    assert hub._framed == {TRADES: 2}
    subscribed(hub, sio)  # again: nothing new
    assert hub._framed == {TRADES: 2}
    hub.subscribe(polling, [TRADES, TICKER], None, OPEN)
    assert hub._framed == {TRADES: 3, TICKER: 1}
    hub.unsubscribe(sio, [TRADES], None)
    assert hub._framed == {TRADES: 2, TICKER: 1}
    hub.unsubscribe(sio, [TRADES], None)  # not held: nothing changes
    hub.unsubscribe(sio, ["nope:x"], None)
    assert hub._framed == {TRADES: 2, TICKER: 1}
    assert hub.revoke(deflated, TRADES, "gone")
    assert not hub.revoke(deflated, TRADES, "gone")
    assert hub._framed == {TRADES: 1, TICKER: 1}
    hub.drop(polling)
    assert hub._framed == {}
    hub.drop(plain)
    hub.drop(sio)
    assert hub._framed == {}
    assert len(hub.registry) == 0


def test_a_channel_whose_framed_subscribers_left_fans_out_plain_again() -> None:
    hub, _ = make_hub()
    plain, sio = Sub(PLAIN), Sub(SOCKETIO_POLLING)
    subscribed(hub, plain, sio)
    hub.drop(sio)
    hub.publish(trade(1), ts=1)
    (frame,) = plain.queued()
    assert frame == Framer().text(encode_envelope(TRADES, 1, 1, {"n": 1}, False))
    assert not sio.outbox.pending


def test_a_polling_subscriber_that_upgrades_gets_websocket_frames_and_still_counts_once() -> None:
    hub, _ = make_hub()
    sub, other = Sub(SOCKETIO_POLLING), Sub(SOCKETIO_POLLING)
    subscribed(hub, sub, other)
    hub.publish(trade(1), ts=1)
    sub.outbox.drain()
    sub.framing = SOCKETIO_WEBSOCKET  # the upgrade: a non-plain framing may change to another
    hub.publish(trade(2), ts=2)
    assert hub._framed == {TRADES: 2}
    payload = encode_envelope(TRADES, 2, 2, {"n": 2}, False)
    assert sub.queued() == [Framer().text(sio_data(payload))]
    assert other.queued()[-1] == sio_data(payload)
    hub.drop(sub)
    hub.drop(other)
    assert hub._framed == {}


# -- snapshots and the resume replay ----------------------------------------------------------


@pytest.mark.parametrize("data", [BIG, {"last": "1"}], ids=["compressible", "short"])
def test_a_snapshot_is_framed_for_each_subscribers_framing(data: dict[str, Any]) -> None:
    hub, _ = make_hub()
    hub.publish(Update(TICKER, data, 1, True), ts=10)
    payload = encode_envelope(TICKER, 1, 10, data, True)
    state = hub.channel(TICKER)
    assert hub.snapshot_frame(state) == hub.snapshot_frame(state, PLAIN) == Framer().text(payload)
    assert hub.snapshot_frame(state, SOCKETIO_POLLING) == sio_data(payload)
    assert hub.snapshot_frame(state, SOCKETIO_WEBSOCKET) == Framer().text(sio_data(payload))
    before = hub.compressed_deliveries
    deflated = hub.snapshot_frame(state, 15)
    assert deflated is not None
    assert (deflated[0] == 0xC1) == bool(data is BIG)
    assert hub.compressed_deliveries == before + (data is BIG)
    snapshot = {"channel": TICKER, "seq": 1, "ts": 10, "snapshot": True, "data": data}
    for framing in FRAMINGS:
        sub = Sub(framing)
        hub.subscribe(sub, [TICKER], 3, OPEN)
        if is_socketio(framing):
            assert sub.received() == [
                ["subscribed", {"channel": TICKER, "seq": 1, "epoch": "e"}],
                ["data", snapshot],
            ]
        else:
            assert sub.received() == [
                {
                    "event": "subscribed",
                    "data": {"channel": TICKER, "seq": 1, "epoch": "e"},
                    "id": 3,
                },
                snapshot,
            ]


def test_no_state_no_snapshot_frame() -> None:
    hub, _ = make_hub()
    assert hub.snapshot_frame(hub.channel(TICKER), SOCKETIO_POLLING) is None


def history_hub() -> Hub:
    hub, _ = make_hub(history_for=lambda _: HistoryBounds(100, 60_000))
    return hub


@pytest.mark.parametrize("framing", [SOCKETIO_WEBSOCKET, SOCKETIO_POLLING])
def test_a_socketio_subscriber_resuming_gets_the_historys_payloads_as_data_events(
    framing: int,
) -> None:
    hub = history_hub()
    for n in range(1, 5):
        hub.publish(trade(n, BIG if n % 2 else {}), ts=n)
    history = hub.channel(TRADES).history
    assert history is not None
    kept = history.after(1, 4, now=5)
    assert kept is not None and len(kept) == 3
    payloads = [Framer.payload_of(frame) for frame in kept]  # the history keeps plain frames
    sub = Sub(framing)
    hub.subscribe(sub, [TRADES], 8, OPEN, Since(1, "e"), now=5)
    frames = sub.queued()[1:]
    if framing == SOCKETIO_POLLING:
        assert frames == [sio_data(p) for p in payloads]
    else:
        assert frames == [Framer().text(sio_data(p)) for p in payloads]
    ack, *replayed = sub.received()
    assert ack == ["subscribed", {"channel": TRADES, "seq": 4, "epoch": "e", "recovered": True}]
    assert [(name, m["seq"]) for name, m in replayed] == [("data", 2), ("data", 3), ("data", 4)]
    assert hub.compressed_deliveries == 0


def test_plain_and_deflate_subscribers_resume_in_their_framing_from_the_same_history() -> None:
    hub = history_hub()
    for n in range(1, 4):
        hub.publish(trade(n, BIG), ts=n)
    plain, deflated = Sub(PLAIN), Sub(15)
    hub.subscribe(plain, [TRADES], None, OPEN, Since(0, "e"), now=4)
    hub.subscribe(deflated, [TRADES], None, OPEN, Since(0, "e"), now=4)
    assert [f[0] for f in plain.queued()] == [0x81, 0x81, 0x81, 0x81]
    assert [f[0] for f in deflated.queued()] == [0x81, 0xC1, 0xC1, 0xC1]
    assert hub.compressed_deliveries == 3
    assert plain.received() == deflated.received()


def test_a_socketio_subscriber_that_cannot_resume_gets_recovered_false() -> None:
    hub = history_hub()
    hub.publish(trade(1), ts=1)
    sub = Sub(SOCKETIO_POLLING)
    hub.subscribe(sub, [TRADES], None, OPEN, Since(1, "other epoch"), now=2)
    assert sub.received() == [
        ["subscribed", {"channel": TRADES, "seq": 1, "epoch": "e", "recovered": False}]
    ]


def test_a_replay_that_overflows_a_socketio_subscriber_stops() -> None:
    hub, _ = make_hub(
        history_for=lambda _: HistoryBounds(100, 60_000), policy_for=lambda _: Policy.DISCONNECT
    )
    for n in range(1, 6):
        hub.publish(trade(n), ts=n)
    sub = Sub(SOCKETIO_POLLING, max_messages=2)
    hub.subscribe(sub, [TRADES], None, OPEN, Since(0, "e"), now=6)
    assert sub.overflows == 1
    assert len(sub.queued()) == 2  # the ack, one message


# -- a cluster node (mirror) -------------------------------------------------------------------


def mirror_hub() -> Hub:
    hub, _ = make_hub(mirror=True)
    return hub


def test_a_mirror_relays_the_holders_payload_to_socketio_subscribers() -> None:
    hub = mirror_hub()
    sio, plain = Sub(SOCKETIO_POLLING), Sub(PLAIN)
    subscribed(hub, sio, plain)
    payload = encode_envelope(TRADES, 7, 1007, {"p": "1"}, False)
    header, tail = encode_message(7, 1007, payload, False, None)
    hub.relay(TRADES, 7, 1007, decode_message(header + payload + tail))
    assert sio.queued() == [sio_data(payload)]
    assert plain.queued() == [Framer().text(payload)]


def test_a_resynced_mirror_sends_each_framing_its_snapshot_and_lagged() -> None:
    hub = mirror_hub()
    subs = one_of_each_twice()
    subscribed(hub, *(s for pair in subs.values() for s in pair), channel=TICKER)
    snapshot = encode_envelope(TICKER, 9, 1009, {"last": "9"}, True)
    hub.mirrored(TICKER, 9, 1009, snapshot)
    hub.resynced(TICKER, None, 4, snapshot)
    for framing, (first, second) in subs.items():
        assert len(first.queued()) == 2
        assert all(a is b for a, b in zip(first.queued(), second.queued(), strict=True)), framing
        assert first.wakes == second.wakes == 2
    envelope = orjson.loads(snapshot)
    lagged = {"channel": TICKER, "dropped": 4}
    assert subs[SOCKETIO_POLLING][0].queued() == [
        sio_data(snapshot),
        b'42/ws,["lagged",{"channel":"sim:ticker:A","dropped":4}]',
    ]
    assert subs[SOCKETIO_WEBSOCKET][0].received() == [["data", envelope], ["lagged", lagged]]
    assert subs[PLAIN][0].received() == [envelope, {"event": "lagged", "data": lagged}]


def test_a_resynced_mirror_replays_what_was_missed_in_each_framing() -> None:
    hub = mirror_hub()
    sio, plain = Sub(SOCKETIO_WEBSOCKET), Sub(PLAIN)
    subscribed(hub, sio, plain)
    missed = [encode_envelope(TRADES, n, n, {"n": n}, False) for n in (3, 4)]
    hub.resynced(TRADES, missed, 0, None)
    assert sio.queued() == [Framer().text(sio_data(p)) for p in missed]
    assert plain.queued() == [Framer().text(p) for p in missed]


# -- policies, boundaries and receive times on framed channels ---------------------------------


def test_a_framed_book_delta_coalesces_into_a_resnapshot() -> None:
    hub, _ = make_hub(policy_for=lambda _: Policy.COALESCE)
    sub = Sub(SOCKETIO_POLLING, max_messages=1)
    subscribed(hub, sub, channel=BOOK)
    for n in range(1, 4):
        hub.publish(Update(BOOK, {"n": n}, n, False), ts=n)
    drained = sub.outbox.drain()
    assert len(drained.frames) == 1
    assert drained.resnapshot == [BOOK]  # a delta's latest alone would not be the book


def test_a_framed_ticker_snapshot_coalesces_into_its_latest_message() -> None:
    hub, _ = make_hub(policy_for=lambda _: Policy.COALESCE)
    sub = Sub(SOCKETIO_POLLING, max_messages=1)
    subscribed(hub, sub, channel=TICKER)
    for n in range(1, 4):
        hub.publish(Update(TICKER, {"n": n}, n, True), ts=n)
    drained = sub.outbox.drain()
    assert drained.resnapshot == []
    assert drained.frames[-1] == sio_data(encode_envelope(TICKER, 3, 3, {"n": 3}, True))


@pytest.mark.parametrize(("extra", "compressed"), [(0, True), (1, False)])
def test_a_message_of_exactly_min_bytes_is_compressed(extra: int, compressed: bool) -> None:
    payload = encode_envelope(TRADES, 1, 1, {**BIG, "n": 1}, False)
    hub, _ = make_hub(compression=CompressionPolicy(min_bytes=len(payload) + extra))
    deflated, sio = Sub(15), Sub(SOCKETIO_POLLING)
    subscribed(hub, deflated, sio)
    hub.publish(trade(1, BIG), ts=1)
    assert (deflated.queued()[0][0] == 0xC1) is compressed
    assert hub.compressed_deliveries == int(compressed)
    assert sio.queued() == [sio_data(payload)]


class TimedSub(Sub):
    """Notes the hub's ``publish_ts`` at each wake (the receive time it measures from)."""

    def __init__(self, hub: Hub, framing: int, **outbox: int) -> None:
        super().__init__(framing, **outbox)
        self.hub = hub
        self.times: list[int] = []

    def wake(self) -> None:
        super().wake()
        self.times.append(self.hub.publish_ts)


def relayed(channel: str, seq: int, data: dict[str, Any], snapshot: bool = False) -> Any:
    payload = encode_envelope(channel, seq, 1000 + seq, data, snapshot)
    header, tail = encode_message(seq, 1000 + seq, payload, snapshot, payload if snapshot else None)
    return decode_message(header + payload + tail)


def test_a_mirror_counts_relayed_messages_and_times_their_framed_fan_out() -> None:
    hub = mirror_hub()
    sub = TimedSub(hub, SOCKETIO_WEBSOCKET)
    subscribed(hub, sub)
    sub.times.clear()
    hub.relay(TRADES, 1, 1001, relayed(TRADES, 1, {"n": 1}))
    hub.relay(TRADES, 2, 1002, relayed(TRADES, 2, {"n": 2}))
    assert sub.times == [1001, 1002]
    assert hub.publish_ts == 0
    assert hub.messages_in == 2
    assert hub.wanted("sim") == {TRADES}


def test_a_mirror_coalesces_relayed_snapshots_of_a_state_channel_into_the_latest() -> None:
    hub, _ = make_hub(mirror=True, policy_for=lambda _: Policy.COALESCE)
    sub = Sub(SOCKETIO_POLLING, max_messages=1)
    subscribed(hub, sub, channel=TICKER)
    for seq in range(1, 4):
        hub.relay(TICKER, seq, 1000 + seq, relayed(TICKER, seq, {"n": seq}, snapshot=True))
    drained = sub.outbox.drain()
    assert drained.resnapshot == []
    assert drained.frames[-1] == sio_data(encode_envelope(TICKER, 3, 1003, {"n": 3}, True))


def test_a_resynced_replay_of_a_state_channel_coalesces_into_a_resnapshot_at_no_time() -> None:
    hub, _ = make_hub(mirror=True, policy_for=lambda _: Policy.COALESCE)
    sub = TimedSub(hub, SOCKETIO_POLLING, max_messages=1)
    subscribed(hub, sub, channel=TICKER)
    sub.times.clear()
    missed = [encode_envelope(TICKER, n, n, {"n": n}, False) for n in (1, 2, 3)]
    hub.resynced(TICKER, missed, 0, None)
    assert sub.times == [0, 0, 0]  # a replay has no receive time to measure from
    assert sub.outbox.drain().resnapshot == [TICKER]


def test_a_resync_overflowing_one_subscriber_still_reaches_the_next() -> None:
    hub = mirror_hub()
    choked = Sub(SOCKETIO_POLLING, max_bytes=8)
    fine = Sub(SOCKETIO_POLLING)
    subscribed(hub, choked, fine, channel=TICKER)
    snapshot = encode_envelope(TICKER, 9, 1009, {"last": "9"}, True)
    hub.mirrored(TICKER, 9, 1009, snapshot)
    hub.resynced(TICKER, None, 2, snapshot)
    assert choked.overflows == 1
    assert fine.queued() == [
        sio_data(snapshot),
        b'42/ws,["lagged",{"channel":"sim:ticker:A","dropped":2}]',
    ]
    assert fine.wakes == 2


def test_a_mirrors_refused_join_is_an_error_in_each_framing() -> None:
    hub = mirror_hub()
    plain, sio = Sub(PLAIN), Sub(SOCKETIO_POLLING)
    for sub in (plain, sio):
        hub.join(sub, "nope:x", 5, OPEN, False, None)
    error = {"code": "unknown_channel", "message": "no such channel: nope:x", "channel": "nope:x"}
    assert plain.received() == [{"event": "error", "data": error, "id": 5}]
    assert sio.received() == [["error", error]]
    assert plain.wakes == sio.wakes == 1


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_payload_of_reads_back_every_header_length_the_framer_writes(size: int) -> None:
    payload = b'{"x":"' + b"a" * size + b'"}'
    assert Framer.payload_of(Framer().text(payload)) == payload


def test_a_replay_shares_the_historys_frames_with_plain_clients() -> None:
    hub, _ = make_hub(history_for=lambda _: HistoryBounds(100, 60_000))
    for n in range(1, 4):
        hub.publish(Update(TRADES, {"n": n}, n, False), ts=n)
    one, two, sio = Sub(PLAIN), Sub(PLAIN), Sub(SOCKETIO_WEBSOCKET)
    for sub in (one, two, sio):
        hub.subscribe(sub, [TRADES], None, OPEN, Since(1, "e"), now=3)
    replay_one, replay_two = one.queued(), two.queued()
    # The subscribed event, then seq 2 and 3: the very same bytes objects for both clients.
    assert len(replay_one) == 3
    assert all(a is b for a, b in zip(replay_one[1:], replay_two[1:], strict=True))
    assert [event[1]["data"] for event in sio.received()[1:]] == [{"n": 2}, {"n": 3}]
