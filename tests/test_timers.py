"""SessionTimers against a brute-force model: the right sessions at the right moments."""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relay.core.timers import SessionTimers

INTERVAL, IDLE = 15.0, 60.0


def test_first_ping_after_one_interval_and_idle_after_the_timeout() -> None:
    timers: SessionTimers[str] = SessionTimers(INTERVAL, IDLE)
    timers.add("a", now=0.0)
    assert timers.next_deadline() == 15.0
    assert timers.pop_due(14.9) == ([], [])
    assert timers.pop_due(15.0) == (["a"], [])
    assert timers.pop_due(59.9) == (["a"], [])  # due at 30 and 45: pinged once, re-queued
    assert timers.pop_due(60.0) == ([], ["a"])
    assert len(timers) == 0 and timers.next_deadline() == math.inf


def test_busy_cancels_idle_and_idle_restarts_the_clock() -> None:
    timers: SessionTimers[str] = SessionTimers(INTERVAL, IDLE)
    timers.add("a", now=0.0)
    timers.busy("a")
    timers.idle("a", now=100.0)
    _, idles = timers.pop_due(159.0)
    assert idles == []
    assert timers.pop_due(160.0)[1] == ["a"]


class TimersMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.timers: SessionTimers[int] = SessionTimers(INTERVAL, IDLE)
        self.now = 0.0
        self.next_key = 0
        self.ping_due: dict[int, float] = {}
        self.idle_due: dict[int, float | None] = {}

    @rule()
    def add(self) -> None:
        key, self.next_key = self.next_key, self.next_key + 1
        self.timers.add(key, self.now)
        self.ping_due[key] = self.now + INTERVAL
        self.idle_due[key] = self.now + IDLE

    @precondition(lambda self: self.ping_due)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.ping_due)))
        self.timers.remove(key)
        del self.ping_due[key], self.idle_due[key]

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
        pings, idles = self.timers.pop_due(self.now)
        expected_idle = {k for k, d in self.idle_due.items() if d is not None and d <= self.now}
        assert set(idles) == expected_idle and len(idles) == len(set(idles))
        for key in idles:
            del self.ping_due[key], self.idle_due[key]
        expected_pings = {k for k, d in self.ping_due.items() if d <= self.now}
        assert set(pings) == expected_pings and len(pings) == len(set(pings))
        for key in pings:
            self.ping_due[key] = self.now + INTERVAL

    @invariant()
    def next_deadline_is_the_earliest(self) -> None:
        dues = list(self.ping_due.values()) + [d for d in self.idle_due.values() if d is not None]
        assert self.timers.next_deadline() == min(dues, default=math.inf)
        assert len(self.timers) == len(self.ping_due)


TestTimers = TimersMachine.TestCase
TestTimers.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
