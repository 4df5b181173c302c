"""SessionTimers against a brute-force model: the right sessions at the right moments."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relay.core.timers import SessionTimers

INTERVAL, IDLE, PONG = 15.0, 60.0, 10.0


def test_first_ping_after_one_interval_and_idle_after_the_timeout() -> None:
    timers: SessionTimers[str] = SessionTimers(INTERVAL, IDLE, PONG)
    timers.add("a", now=0.0)
    assert timers.next_deadline() == 15.0
    assert timers.pop_due(14.9) == ([], [], [])
    assert timers.pop_due(15.0) == (["a"], [], [])
    assert timers.pop_due(59.9) == (["a"], [], [])  # due at 30 and 45: pinged once, re-queued
    assert timers.pop_due(60.0) == ([], ["a"], [])
    assert len(timers) == 0 and timers.next_deadline() == math.inf


def test_an_unanswered_ping_makes_the_session_silent_at_the_pong_timeout() -> None:
    timers: SessionTimers[str] = SessionTimers(INTERVAL, IDLE, PONG)
    timers.add("a", now=0.0)
    timers.busy("a")
    assert timers.pop_due(15.0).pings == ["a"]
    timers.pinged("a", 15.0)
    assert timers.awaiting_pong("a") and timers.next_deadline() == 25.0
    assert timers.pop_due(24.9) == ([], [], [])
    assert timers.pop_due(25.0) == ([], [], ["a"])
    assert len(timers) == 0 and timers.next_deadline() == math.inf


def test_an_answered_ping_keeps_the_session_and_a_late_one_is_not_pinged_twice() -> None:
    timers: SessionTimers[str] = SessionTimers(INTERVAL, IDLE, pong_timeout=20.0)
    timers.add("a", now=0.0)
    timers.busy("a")
    timers.pop_due(15.0)
    timers.pinged("a", 15.0)
    # The next beat (30) comes while the pong is outstanding: no second ping.
    assert timers.pop_due(30.0) == ([], [], [])
    timers.answered("a")
    assert not timers.awaiting_pong("a")
    assert timers.pop_due(45.0) == (["a"], [], [])
    assert len(timers) == 1


def test_busy_cancels_idle_and_idle_restarts_the_clock() -> None:
    timers: SessionTimers[str] = SessionTimers(INTERVAL, IDLE, PONG)
    timers.add("a", now=0.0)
    timers.busy("a")
    timers.idle("a", now=100.0)
    assert timers.pop_due(159.0).idle == []
    assert timers.pop_due(160.0).idle == ["a"]


class TimersMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.timers: SessionTimers[int] = SessionTimers(INTERVAL, IDLE, PONG)
        self.now = 0.0
        self.next_key = 0
        self.ping_due: dict[int, float] = {}
        self.idle_due: dict[int, float | None] = {}
        self.pong_due: dict[int, float | None] = {}

    @rule()
    def add(self) -> None:
        key, self.next_key = self.next_key, self.next_key + 1
        self.timers.add(key, self.now)
        self.ping_due[key] = self.now + INTERVAL
        self.idle_due[key] = self.now + IDLE
        self.pong_due[key] = None

    @precondition(lambda self: self.ping_due)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.ping_due)))
        self.timers.remove(key)
        self.forget(key)

    def forget(self, key: int) -> None:
        del self.ping_due[key], self.idle_due[key], self.pong_due[key]

    @precondition(lambda self: any(d is not None for d in self.pong_due.values()))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        waiting = sorted(k for k, d in self.pong_due.items() if d is not None)
        key = data.draw(st.sampled_from(waiting))
        self.timers.answered(key)
        self.pong_due[key] = None

    @precondition(lambda self: self.ping_due)
    @rule(data=st.data(), busy=st.booleans())
    def toggle(self, data: st.DataObject, busy: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.ping_due)))
        if busy:
            self.timers.busy(key)
            self.idle_due[key] = None
        else:
            self.timers.idle(key, self.now)
            self.idle_due[key] = self.now + IDLE

    @rule(dt=st.floats(0, 40))
    def advance(self, dt: float) -> None:
        self.now += dt
        pings, idles, silent = self.timers.pop_due(self.now)
        now = self.now
        expected_silent = {k for k, d in self.pong_due.items() if d is not None and d <= now}
        assert set(silent) == expected_silent and len(silent) == len(set(silent))
        for key in silent:
            self.forget(key)
        expected_idle = {k for k, d in self.idle_due.items() if d is not None and d <= now}
        assert set(idles) == expected_idle and len(idles) == len(set(idles))
        for key in idles:
            self.forget(key)
        beats = {k for k, d in self.ping_due.items() if d <= now}
        expected_pings = {k for k in beats if self.pong_due[k] is None}
        assert set(pings) == expected_pings and len(pings) == len(set(pings))
        for key in beats:
            self.ping_due[key] = now + INTERVAL
        for key in pings:
            self.timers.pinged(key, now)  # as the session does when its ping goes out
            self.pong_due[key] = now + PONG

    @invariant()
    def next_deadline_is_the_earliest(self) -> None:
        dues = list(self.ping_due.values())
        dues += [d for d in self.idle_due.values() if d is not None]
        dues += [d for d in self.pong_due.values() if d is not None]
        assert self.timers.next_deadline() == min(dues, default=math.inf)
        assert len(self.timers) == len(self.ping_due)


TestTimers = TimersMachine.TestCase
TestTimers.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_a_second_ping_does_not_push_the_pong_deadline_later() -> None:
    timers: SessionTimers[str] = SessionTimers(INTERVAL, IDLE, PONG)
    timers.add("a", now=0.0)
    timers.busy("a")
    assert timers.pop_due(15.0).pings == ["a"]  # the next beat is at 30
    timers.pinged("a", 15.0)
    timers.pinged("a", 20.0)  # a ping while one is unanswered: its deadline stands at 25
    assert timers.next_deadline() == 25.0
    assert timers.pop_due(25.0).silent == ["a"]


def test_pings_and_idle_clocks_of_sessions_that_left_are_ignored() -> None:
    timers: SessionTimers[str] = SessionTimers(INTERVAL, IDLE, PONG)
    timers.pinged("gone", 0.0)
    timers.idle("gone", 0.0)
    assert not timers.awaiting_pong("gone")
    assert timers.next_deadline() == math.inf and len(timers) == 0


@pytest.mark.parametrize(
    ("interval", "idle_timeout", "pong_timeout"),
    [(0.0, IDLE, PONG), (-1.0, IDLE, PONG), (INTERVAL, 0.0, PONG), (INTERVAL, IDLE, 0.0)],
)
def test_the_constructor_refuses_a_deadline_that_is_not_positive(
    interval: float, idle_timeout: float, pong_timeout: float
) -> None:
    with pytest.raises(
        ValueError, match=r"^interval, idle_timeout and pong_timeout must be positive$"
    ):
        SessionTimers(interval, idle_timeout, pong_timeout)


def test_the_smallest_positive_deadlines_are_accepted_and_kept() -> None:
    timers: SessionTimers[str] = SessionTimers(1e-9, 2e-9, 3e-9)
    assert (timers.interval, timers.idle_timeout, timers.pong_timeout) == (1e-9, 2e-9, 3e-9)


def test_a_pong_nobody_waits_for_changes_nothing() -> None:
    """A pong may come unasked (clients may send one any time) or twice."""
    timers: SessionTimers[str] = SessionTimers(INTERVAL, IDLE, PONG)
    timers.add("a", now=0.0)
    timers.answered("a")
    timers.answered("stranger")
    timers.pinged("a", 15.0)
    timers.answered("a")
    timers.answered("a")
    assert not timers.awaiting_pong("a") and len(timers) == 1
    assert timers.next_deadline() == 15.0
