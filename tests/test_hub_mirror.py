"""The hub of a cluster node (``mirror=True``): it relays what a source's holder sequenced and
encoded, keeps the state that came with it, and completes joins answered by Redis."""

from __future__ import annotations

import orjson

from relay.core.cluster_wire import ChannelMessage, decode_message, encode_message
from relay.core.history import HistoryBounds
from relay.core.hub import Hub, Limits
from relay.core.outbox import Policy
from relay.core.protocol import encode_envelope
from tests.test_hub import CATALOGUE, OPEN, FakeSession, Listener

TRADES, TICKER, BOOK = "sim:trades:A", "sim:ticker:A", "sim:book:A"


def make_hub(policy: Policy = Policy.DROP) -> tuple[Hub, Listener]:
    hub = Hub(
        CATALOGUE.get,
        lambda _: policy,
        lambda _: HistoryBounds(100, 60_000),
        epoch="cluster",
        mirror=True,
    )
    listener = Listener()
    hub.add_source("sim", listener)
    return hub, listener


def message(channel: str, seq: int, data: dict[str, object], state: bool = False) -> ChannelMessage:
    payload = encode_envelope(channel, seq, 1000 + seq, data, False)
    snapshot = encode_envelope(channel, seq, 1000 + seq, {"whole": seq}, True) if state else None
    header, tail = encode_message(seq, 1000 + seq, payload, False, snapshot)
    return decode_message(header + payload + tail)


def test_a_node_relays_the_holders_bytes_and_keeps_no_history_of_its_own() -> None:
    hub, _ = make_hub()
    a, b = FakeSession(), FakeSession()
    hub.subscribe(a, [TRADES], None, OPEN)
    hub.subscribe(b, [TRADES], None, OPEN)
    a.messages(), b.messages()
    relayed = message(TRADES, 7, {"price": "1"})
    hub.relay(TRADES, 7, 1007, relayed)
    expected = orjson.loads(relayed.payload)
    assert a.messages() == b.messages() == [expected]
    state = hub.channel(TRADES)
    assert (state.seq, state.ts, state.history) == (7, 1007, None)
    assert (hub.messages_in, hub.deliveries) == (1, 2)
    assert a.wakes == 2


def test_relaying_to_nobody_still_moves_the_channel_on() -> None:
    hub, _ = make_hub()
    hub.relay(TICKER, 3, 1003, message(TICKER, 3, {"last": "2"}, state=True))
    state = hub.channel(TICKER)
    assert (state.seq, state.ts) == (3, 1003)
    assert state.mirrored is not None and orjson.loads(state.mirrored)["data"] == {"whole": 3}
    assert hub.deliveries == 0 and hub.messages_in == 1


def test_a_new_subscriber_gets_the_state_that_came_with_the_last_message() -> None:
    hub, listener = make_hub()
    hub.relay(BOOK, 5, 1005, message(BOOK, 5, {"bids": []}, state=True))
    sub = FakeSession()
    hub.subscribe(sub, [BOOK], 1, OPEN)
    ack, snapshot = sub.messages()
    assert ack["event"] == "subscribed" and ack["data"]["seq"] == 5
    assert snapshot == {
        "channel": BOOK,
        "seq": 5,
        "ts": 1005,
        "snapshot": True,
        "data": {"whole": 5},
    }
    # The node's state, not a book of the listener's.
    assert listener.events == [("want", BOOK)]
    assert hub.snapshot(BOOK) == (5, 1005, {"whole": 5})


def test_a_message_without_state_keeps_the_last_state() -> None:
    hub, _ = make_hub()
    hub.relay(BOOK, 1, 1001, message(BOOK, 1, {}, state=True))
    hub.relay(BOOK, 2, 1002, message(BOOK, 2, {}))
    assert orjson.loads(hub.channel(BOOK).mirrored or b"")["seq"] == 1


def test_forgotten_state_is_not_sent() -> None:
    hub, _ = make_hub()
    hub.relay(TICKER, 1, 1001, message(TICKER, 1, {}, state=True))
    hub.forget_state(TICKER)
    sub = FakeSession()
    hub.subscribe(sub, [TICKER], None, OPEN)
    assert [m.get("event") for m in sub.messages()] == ["subscribed"]
    assert hub.snapshot(TICKER) is None


def test_mirrored_sets_seq_ts_and_state_read_in_redis() -> None:
    hub, _ = make_hub()
    hub.mirrored(TICKER, 9, 1009, b'{"data":{"x":1}}')
    state = hub.channel(TICKER)
    assert (state.seq, state.ts, state.mirrored) == (9, 1009, b'{"data":{"x":1}}')
    hub.mirrored(TICKER, 10, 1010, None)
    assert hub.snapshot(TICKER) is None


def test_a_join_replays_what_a_resuming_client_missed() -> None:
    hub, listener = make_hub()
    hub.mirrored(TRADES, 4, 1004, None)
    sub = FakeSession()
    missed = [encode_envelope(TRADES, seq, 0, {"n": seq}, False) for seq in (3, 4)]
    hub.join(sub, TRADES, "r", OPEN, True, missed)
    ack, *replayed = sub.messages()
    assert ack == {
        "event": "subscribed",
        "id": "r",
        "data": {"channel": TRADES, "seq": 4, "epoch": "cluster", "recovered": True},
    }
    assert [m["seq"] for m in replayed] == [3, 4]
    assert listener.events == [("want", TRADES)]
    assert sub.wakes >= 1


def test_a_join_that_cannot_replay_says_so_and_sends_the_state() -> None:
    hub, _ = make_hub()
    snapshot = encode_envelope(TICKER, 6, 1006, {"s": 1}, True)
    hub.mirrored(TICKER, 6, 1006, snapshot)
    sub = FakeSession()
    hub.join(sub, TICKER, None, OPEN, True, None)
    ack, sent = sub.messages()
    assert ack["data"]["recovered"] is False
    assert sent == orjson.loads(snapshot)


def test_a_plain_join_has_no_recovered_field() -> None:
    hub, _ = make_hub()
    sub = FakeSession()
    hub.join(sub, TRADES, None, OPEN, False, None)
    (ack,) = sub.messages()
    assert "recovered" not in ack["data"]


def test_a_join_is_refused_like_a_subscribe() -> None:
    hub, listener = make_hub()
    sub = FakeSession()
    hub.join(sub, TRADES, "x", Limits(max_subscriptions=0), False, None)
    (error,) = sub.messages()
    assert error["event"] == "error" and error["data"]["code"] == "too_many_subscriptions"
    assert listener.events == [] and sub.wakes == 1
    assert hub.refuse(sub, "nope:x", None, OPEN) is True


def test_a_resynchronized_channel_replays_what_was_lost() -> None:
    hub, _ = make_hub()
    sub = FakeSession()
    hub.subscribe(sub, [TRADES], None, OPEN)
    sub.messages()
    missed = [encode_envelope(TRADES, seq, 0, {"n": seq}, False) for seq in (5, 6)]
    hub.resynced(TRADES, missed, 0, None)
    assert [m["seq"] for m in sub.messages()] == [5, 6]


def test_a_resynchronized_channel_without_history_sends_state_and_lagged() -> None:
    hub, _ = make_hub()
    sub = FakeSession()
    hub.subscribe(sub, [TICKER], None, OPEN)
    sub.messages()
    wakes = sub.wakes
    snapshot = encode_envelope(TICKER, 9, 1009, {"s": 2}, True)
    hub.resynced(TICKER, None, 3, snapshot)
    assert sub.messages() == [
        orjson.loads(snapshot),
        {"event": "lagged", "data": {"channel": TICKER, "dropped": 3}},
    ]
    assert sub.wakes == wakes + 1
    hub.resynced(TICKER, None, 0, None)
    assert sub.messages() == []


def test_a_resync_that_overflows_a_full_outbox_ends_the_client() -> None:
    hub, _ = make_hub()
    sub = FakeSession(max_bytes=60)
    hub.subscribe(sub, [TICKER], None, OPEN)
    hub.resynced(TICKER, None, 2, encode_envelope(TICKER, 1, 1, {"pad": "x" * 100}, True))
    assert sub.overflows == 1
    assert sub.wakes == 1


def test_a_resync_of_a_channel_nobody_holds_does_nothing() -> None:
    hub, _ = make_hub()
    hub.resynced(TRADES, [b"{}"], 0, None)
    assert hub.deliveries == 0
