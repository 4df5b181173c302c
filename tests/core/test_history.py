"""A channel's history: bounded by count and age, and exact about what it can replay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relay.core.history import ChannelHistory, HistoryBounds


def frame(seq: int) -> bytes:
    return b"m%d" % seq


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        HistoryBounds(-1, 1000)
    with pytest.raises(ValueError):
        HistoryBounds(1, 0)
    with pytest.raises(ValueError, match=r"^a history needs max_messages >= 1$"):
        ChannelHistory(HistoryBounds(0, 1000))
    assert not HistoryBounds(0, 1).enabled
    assert HistoryBounds(1, 1).enabled


def test_replays_exactly_what_was_missed() -> None:
    history = ChannelHistory(HistoryBounds(3, 10_000))
    for seq in range(1, 6):
        history.append(seq, 1000 + seq, frame(seq))
    assert history.seqs() == [3, 4, 5]
    assert history.after(2, 5, 1006) == [frame(3), frame(4), frame(5)]
    assert history.after(4, 5, 1006) == [frame(5)]
    assert history.after(5, 5, 1006) == []
    assert history.after(1, 5, 1006) is None  # 2 is gone
    assert history.after(6, 5, 1006) is None  # a seq this channel never reached
    assert history.after(-1, 5, 1006) is None


def test_age_is_measured_on_receive_times() -> None:
    history = ChannelHistory(HistoryBounds(100, 1000))
    history.append(1, 0, frame(1))
    history.append(2, 999, frame(2))
    assert history.seqs() == [1, 2]
    history.append(3, 1000, frame(3))  # 1 is exactly max_age old now: gone
    assert history.seqs() == [2, 3]
    # Reading ages it too: at 1999 message 2 is gone, so resuming after 1 cannot be exact.
    assert history.after(1, 3, 1999) is None
    assert history.after(2, 3, 1999) == [frame(3)]
    assert history.seqs() == [3]


def test_a_history_that_missed_the_latest_message_replays_nothing() -> None:
    # The hub appends every message; if the latest were missing the replay would have a hole.
    history = ChannelHistory(HistoryBounds(10, 10_000))
    history.append(1, 0, frame(1))
    history.append(2, 0, frame(2))
    assert history.after(1, 3, 0) is None


@given(
    max_messages=st.integers(1, 20),
    max_age=st.integers(1, 50),
    steps=st.lists(st.integers(0, 30), min_size=1, max_size=120),
    resume_from=st.integers(0, 130),
)
def test_never_over_its_bounds_and_replays_are_exact_suffixes(
    max_messages: int, max_age: int, steps: list[int], resume_from: int
) -> None:
    history = ChannelHistory(HistoryBounds(max_messages, max_age))
    ts = 0
    for seq, step in enumerate(steps, start=1):
        ts += step
        history.append(seq, ts, frame(seq))
        assert len(history) <= max_messages
        assert all(t > ts - max_age for t in history.times())
        assert history.seqs() == list(range(seq - len(history) + 1, seq + 1))
    last = len(steps)
    replay = history.after(resume_from, last, ts)
    held = history.seqs()
    if resume_from == last:
        assert replay == []
    elif resume_from > last or not held or held[0] > resume_from + 1:
        assert replay is None
    else:
        assert replay == [frame(s) for s in range(resume_from + 1, last + 1)]


class HistoryMachine(RuleBasedStateMachine):
    """Appends and resumes interleaved with time passing: after every step the history holds
    only what its bounds allow, and every replay it offers is complete and in order."""

    def __init__(self) -> None:
        super().__init__()
        self.bounds = HistoryBounds(5, 100)
        self.history = ChannelHistory(self.bounds)
        self.seq = 0
        self.now = 0
        self.sent: dict[int, int] = {}  # seq -> ts

    @rule(dt=st.integers(0, 60))
    def publish(self, dt: int) -> None:
        self.now += dt
        self.seq += 1
        self.sent[self.seq] = self.now
        self.history.append(self.seq, self.now, frame(self.seq))

    @rule(dt=st.integers(0, 200))
    def time_passes(self, dt: int) -> None:
        self.now += dt

    @precondition(lambda self: self.seq > 0)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        since = data.draw(st.integers(0, self.seq))
        replay = self.history.after(since, self.seq, self.now)
        missed = range(since + 1, self.seq + 1)
        exact = all(
            s > self.seq - self.bounds.max_messages
            and self.sent[s] > self.now - self.bounds.max_age_ms
            for s in missed
        )
        if exact:
            assert replay == [frame(s) for s in missed]
        else:
            assert replay is None

    @invariant()
    def bounded(self) -> None:
        assert len(self.history) <= self.bounds.max_messages
        assert all(t <= self.now for t in self.history.times())


TestHistoryMachine = HistoryMachine.TestCase
