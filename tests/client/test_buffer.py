"""The consumer's buffer: bounded, in order per channel, and every message it drops announced
by a gap before that channel's next event."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.client.buffer import BufferPolicy, EventBuffer
from relay.client.events import ClientEvent, Data, Gap, Snapshot, Status

CHANNELS = ("a", "b", "c")


def data(channel: str, seq: int) -> Data:
    return Data(channel, seq, 0, {})


def test_block_refuses_data_when_full_but_never_control() -> None:
    buffer = EventBuffer(2, BufferPolicy.BLOCK)
    buffer.put(data("a", 1))
    buffer.put(data("a", 2))
    assert buffer.full
    with pytest.raises(RuntimeError):
        buffer.put(data("a", 3))
    buffer.put(Status("connected"))  # never dropped, never refused
    assert [buffer.take() for _ in range(4)] == [
        data("a", 1),
        data("a", 2),
        Status("connected"),
        None,
    ]


def test_drop_oldest_announces_the_loss_before_the_channels_next_event() -> None:
    buffer = EventBuffer(2, BufferPolicy.DROP_OLDEST)
    for event in (data("a", 1), data("b", 1), data("a", 2)):
        buffer.put(event)
    assert buffer.take() == data("b", 1)
    assert buffer.take() == Gap("a", 1, "buffer")
    assert buffer.take() == data("a", 2)
    assert buffer.take() is None


def test_latest_keeps_one_message_per_channel_but_never_across_a_snapshot() -> None:
    buffer = EventBuffer(10, BufferPolicy.LATEST)
    for event in (
        data("a", 1),
        data("b", 1),
        data("a", 2),
        Snapshot("a", 3, 0, {}),
        data("a", 4),
        data("a", 5),
    ):
        buffer.put(event)
    taken = []
    while (event := buffer.take()) is not None:
        taken.append(event)
    assert taken == [
        Gap("a", 1, "buffer"),
        data("a", 2),
        data("b", 1),
        Snapshot("a", 3, 0, {}),
        Gap("a", 1, "buffer"),
        data("a", 5),
    ]


def test_capacity_is_checked() -> None:
    with pytest.raises(ValueError):
        EventBuffer(0, BufferPolicy.BLOCK)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.sampled_from(CHANNELS)),
        st.tuples(st.just("snapshot"), st.sampled_from(CHANNELS)),
        st.tuples(st.just("status"), st.just("")),
        st.tuples(st.just("take"), st.just("")),
    ),
    max_size=80,
)


@given(
    st.sampled_from([BufferPolicy.DROP_OLDEST, BufferPolicy.LATEST]), st.integers(1, 5), operations
)
def test_nothing_is_lost_unannounced_and_order_holds_per_channel(
    policy: BufferPolicy, capacity: int, ops: list[tuple[str, str]]
) -> None:
    buffer = EventBuffer(capacity, policy)
    seq = dict.fromkeys(CHANNELS, 0)
    put: dict[str, list[int]] = {c: [] for c in CHANNELS}
    got: dict[str, list[int]] = {c: [] for c in CHANNELS}
    lost: dict[str, int] = dict.fromkeys(CHANNELS, 0)
    control = 0

    def take() -> None:
        event = buffer.take()
        if isinstance(event, Gap):
            lost[event.channel] += event.missed or 0
        elif isinstance(event, Data | Snapshot):
            got[event.channel].append(event.seq)

    for op, channel in ops:
        if op == "take":
            take()
            continue
        if op == "status":
            buffer.put(Status("connected"))
            control += 1
            continue
        seq[channel] += 1
        put[channel].append(seq[channel])
        event: ClientEvent = (
            data(channel, seq[channel]) if op == "data" else Snapshot(channel, seq[channel], 0, {})
        )
        if op != "data":
            control += 1
        buffer.put(event)
        # Data never goes past the bound (latest: one per channel); gaps, one per channel at
        # most, and events that are never dropped may.
        # (latest: one per channel since its last snapshot)
        bound = capacity if policy is BufferPolicy.DROP_OLDEST else len(CHANNELS) + control
        # Gaps: at most one per channel between two of its snapshots.
        assert len(buffer) <= bound + control + (len(CHANNELS) + control)
        queued = [s.event for s in buffer._slots]
        assert sum(isinstance(e, Data) for e in queued) <= bound
    while len(buffer):
        take()
    for channel in CHANNELS:
        # In order, each at most once, and everything missing was announced.
        assert got[channel] == sorted(set(got[channel]))
        assert set(got[channel]) <= set(put[channel])
        assert len(put[channel]) - len(got[channel]) == lost[channel]
