"""Resuming a channel through the hub: exact replays from history, or the snapshot and
``recovered: false``, and the history kept while nobody listens."""

from __future__ import annotations

from typing import Any

from relay.core.history import HistoryBounds
from relay.core.hub import Hub
from relay.core.model import Update
from relay.core.outbox import Policy
from relay.core.protocol import Since
from tests.test_hub import CATALOGUE, OPEN, FakeSession, Listener


def make_hub(
    max_messages: int = 10, policy: Policy = Policy.DROP, epoch: str = "e1"
) -> tuple[Hub, Listener]:
    hub = Hub(
        CATALOGUE.get,
        lambda _: policy,
        lambda c: HistoryBounds(0 if c.startswith("alt:") else max_messages, 60_000),
        epoch=epoch,
    )
    listener = Listener()
    hub.add_source("sim", listener)
    hub.add_source("alt", listener)
    return hub, listener


def publish(hub: Hub, channel: str, n: int, ts: int = 1000) -> None:
    for i in range(n):
        hub.publish(Update(channel, {"n": i}, ts, channel.startswith("sim:ticker")), ts)


def acks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["data"] for m in messages if m.get("event") == "subscribed"]


def test_subscribed_names_the_seq_and_the_epoch() -> None:
    hub, _ = make_hub()
    a = FakeSession()
    publish(hub, "sim:trades:A", 3)
    hub.subscribe(a, ["sim:trades:A"], 1, OPEN)
    assert a.messages() == [
        {
            "event": "subscribed",
            "data": {"channel": "sim:trades:A", "seq": 3, "epoch": "e1"},
            "id": 1,
        }
    ]


def test_a_client_that_comes_back_gets_exactly_what_it_missed() -> None:
    hub, _ = make_hub()
    a = FakeSession()
    hub.subscribe(a, ["sim:trades:A"], 1, OPEN)
    publish(hub, "sim:trades:A", 2)
    seen = [m["seq"] for m in a.messages() if "seq" in m]
    assert seen == [1, 2]
    hub.drop(a)  # the connection is gone; nobody listens, the history still grows
    publish(hub, "sim:trades:A", 3)
    b = FakeSession()
    hub.subscribe(b, ["sim:trades:A"], 7, OPEN, Since(2, "e1"), 2000)
    messages = b.messages()
    assert messages[0] == {
        "event": "subscribed",
        "data": {"channel": "sim:trades:A", "seq": 5, "epoch": "e1", "recovered": True},
        "id": 7,
    }
    assert [m["seq"] for m in messages[1:]] == [3, 4, 5]
    publish(hub, "sim:trades:A", 1)
    assert [m["seq"] for m in b.messages()] == [6]


def test_nothing_missed_is_recovered_with_nothing_replayed_even_without_history() -> None:
    hub, _ = make_hub()
    publish(hub, "alt:trades:A", 4)  # alt:* keeps no history
    a = FakeSession()
    hub.subscribe(a, ["alt:trades:A"], None, OPEN, Since(4, "e1"))
    assert a.messages() == [
        {
            "event": "subscribed",
            "data": {"channel": "alt:trades:A", "seq": 4, "epoch": "e1", "recovered": True},
        }
    ]


def test_another_epoch_gets_the_snapshot_and_recovered_false() -> None:
    hub, _ = make_hub()
    publish(hub, "sim:ticker:A", 3)
    a = FakeSession()
    hub.subscribe(a, ["sim:ticker:A"], 1, OPEN, Since(2, "an-old-process"))
    messages = a.messages()
    assert messages[0]["data"] == {
        "channel": "sim:ticker:A",
        "seq": 3,
        "epoch": "e1",
        "recovered": False,
    }
    assert messages[1]["snapshot"] is True and messages[1]["seq"] == 3
    assert len(messages) == 2


def test_a_gap_longer_than_the_history_gets_recovered_false() -> None:
    hub, _ = make_hub(max_messages=3)
    publish(hub, "sim:trades:A", 10)
    a = FakeSession()
    hub.subscribe(a, ["sim:trades:A"], 1, OPEN, Since(6, "e1"))
    assert acks(a.messages()) == [
        {"channel": "sim:trades:A", "seq": 10, "epoch": "e1", "recovered": False}
    ]
    b = FakeSession()
    hub.subscribe(b, ["sim:trades:A"], 1, OPEN, Since(7, "e1"))
    assert [m.get("seq") for m in b.messages()] == [None, 8, 9, 10]


def test_a_seq_the_channel_never_reached_is_not_recovered() -> None:
    hub, _ = make_hub()
    publish(hub, "sim:trades:A", 2)
    a = FakeSession()
    hub.subscribe(a, ["sim:trades:A"], 1, OPEN, Since(9, "e1"))
    assert acks(a.messages())[0]["recovered"] is False


def test_resuming_a_channel_already_held_changes_nothing() -> None:
    hub, _ = make_hub()
    a = FakeSession()
    hub.subscribe(a, ["sim:trades:A"], 1, OPEN)
    publish(hub, "sim:trades:A", 3)
    a.messages()
    hub.subscribe(a, ["sim:trades:A"], 2, OPEN, Since(0, "e1"))
    assert a.messages() == [
        {
            "event": "subscribed",
            "data": {"channel": "sim:trades:A", "seq": 3, "epoch": "e1"},
            "id": 2,
        }
    ]


def test_a_replay_is_bounded_by_the_outbox_like_live_data() -> None:
    hub, _ = make_hub(max_messages=10)
    publish(hub, "sim:trades:A", 8)
    small = FakeSession(max_messages=3)
    hub.subscribe(small, ["sim:trades:A"], 1, OPEN, Since(0, "e1"))
    drained = small.outbox.drain()
    # The ack (control) and the first two replayed messages fit; the rest were dropped and
    # will be reported as lagged, exactly as for live data.
    assert len(drained.frames) == 3
    assert drained.lagged == {"sim:trades:A": 6}


def test_a_replay_that_overflows_a_disconnect_channel_closes_the_client() -> None:
    hub, _ = make_hub(max_messages=10, policy=Policy.DISCONNECT)
    publish(hub, "sim:trades:A", 8)
    small = FakeSession(max_messages=3)
    hub.subscribe(small, ["sim:trades:A"], 1, OPEN, Since(0, "e1"))
    assert small.overflows == 1


def test_history_is_not_encoded_for_channels_without_it_or_without_subscribers() -> None:
    hub, _ = make_hub()
    publish(hub, "alt:trades:A", 3)  # no history, no subscriber: nothing kept
    assert hub.channel("alt:trades:A").history is None
    publish(hub, "sim:trades:A", 3)
    history = hub.channel("sim:trades:A").history
    assert history is not None and history.seqs() == [1, 2, 3]


def test_each_hub_has_its_own_epoch() -> None:
    assert Hub(CATALOGUE.get).epoch != Hub(CATALOGUE.get).epoch


def test_an_epoch_is_sixteen_hex_digits() -> None:
    epoch = Hub(CATALOGUE.get).epoch
    assert len(epoch) == 16 and int(epoch, 16) >= 0


def test_a_resume_on_a_channel_without_history_is_not_recovered() -> None:
    hub, _ = make_hub()
    publish(hub, "alt:trades:A", 4)  # alt:* keeps no history
    a = FakeSession()
    hub.subscribe(a, ["alt:trades:A"], 1, OPEN, Since(2, "e1"))
    assert acks(a.messages())[0]["recovered"] is False


def test_a_channel_already_held_does_not_stop_the_others_in_the_command() -> None:
    hub, _ = make_hub()
    a = FakeSession()
    hub.subscribe(a, ["sim:trades:A"], 1, OPEN)
    hub.subscribe(a, ["sim:trades:A", "sim:ticker:A"], 2, OPEN)
    assert [d["channel"] for d in acks(a.messages())] == [
        "sim:trades:A",
        "sim:trades:A",
        "sim:ticker:A",
    ]
    assert hub.registry.channels_of(a) == ["sim:trades:A", "sim:ticker:A"]


def test_a_coalescing_replay_of_a_state_channel_asks_for_a_fresh_snapshot() -> None:
    # A state channel's replayed messages may be deltas on each other (blocks), so a replay
    # that does not fit coalesces into a resnapshot mark, never into its latest message alone.
    hub, _ = make_hub(policy=Policy.COALESCE)
    publish(hub, "sim:ticker:A", 8)
    small = FakeSession(max_messages=3)
    hub.subscribe(small, ["sim:ticker:A"], 1, OPEN, Since(0, "e1"))
    drained = small.outbox.drain()
    assert drained.resnapshot == ["sim:ticker:A"]
    assert len(drained.frames) == 3


def test_an_overflowing_replay_still_wants_the_channel_and_wakes_the_session() -> None:
    hub, listener = make_hub(policy=Policy.DISCONNECT)
    publish(hub, "sim:trades:A", 8)
    small = FakeSession(max_messages=3)
    hub.subscribe(small, ["sim:trades:A", "sim:ticker:A"], 1, OPEN, Since(0, "e1"))
    assert small.overflows == 1 and small.wakes == 1
    assert ("want", "sim:trades:A") in listener.events
    assert ("want", "sim:ticker:A") in listener.events


def test_revoking_a_channel_forgets_what_was_dropped_on_it() -> None:
    hub, _ = make_hub()
    small = FakeSession(max_messages=2)
    hub.subscribe(small, ["sim:trades:A"], 1, OPEN)
    publish(hub, "sim:trades:A", 5)  # the queue holds the ack and one message; 4 dropped
    hub.revoke(small, "sim:trades:A", "gone")
    assert small.outbox.drain().lagged == {}


def test_without_a_time_the_history_is_aged_at_time_zero() -> None:
    hub = Hub(CATALOGUE.get, lambda _: Policy.DROP, lambda _: HistoryBounds(10, 1), epoch="e1")
    hub.add_source("sim", Listener())
    for n in range(3):
        hub.publish(Update("sim:trades:A", {"n": n}, n, False), 0)
    a = FakeSession()
    hub.subscribe(a, ["sim:trades:A"], 1, OPEN, Since(1, "e1"))  # at time 0: all still young
    assert acks(a.messages())[0]["recovered"] is True
    b = FakeSession()
    hub.subscribe(b, ["sim:trades:A"], 1, OPEN, Since(1, "e1"), now=1)  # 1 ms: too old
    assert acks(b.messages())[0]["recovered"] is False
