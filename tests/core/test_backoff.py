"""Property tests for the reconnect schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from relay.core.backoff import Backoff

# Times and durations are multiples of a quarter second: exact in binary floating point, so
# "up for exactly reset_after seconds" means the same thing to the test and to the code.
quarters = st.integers(0, 400).map(lambda q: q / 4)
unit = st.floats(0.0, 1.0, exclude_max=True)


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, float]:
    initial = draw(st.integers(1, 40)) / 4
    return {
        "initial": initial,
        "factor": draw(st.floats(1.0, 4.0)),
        "cap": initial + draw(quarters),
        "reset_after": draw(quarters),
    }


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def bound(params: dict[str, float], failures: int) -> float:
    """The spec's ceiling for the delay after ``failures`` earlier consecutive failures."""
    return min(params["cap"], params["initial"] * params["factor"] ** failures)


@given(schedules(), st.lists(unit, max_size=80))
def test_each_delay_is_full_jitter_under_the_ceiling(
    params: dict[str, float], draws: list[float]
) -> None:
    backoff = Backoff(**params)
    for n, r in enumerate(draws):
        delay = backoff.next_delay(constant(r))
        assert 0.0 <= delay <= bound(params, n) <= params["cap"]
        assert delay == r * bound(params, n)


@given(schedules())
def test_the_ceiling_reaches_the_cap_and_stays(params: dict[str, float]) -> None:
    backoff = Backoff(**params)
    ceilings = []
    for _ in range(200):
        ceilings.append(backoff.ceiling())
        backoff.next_delay(lambda: 0.5)
    assert ceilings == sorted(ceilings)
    if params["factor"] > 1.05:
        assert ceilings[-1] == params["cap"]


def test_huge_attempt_counts_do_not_overflow() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, cap=30.0)
    backoff.attempts = 100_000
    assert backoff.ceiling() == 30.0
    assert backoff.next_delay(lambda: 0.5) == 15.0


def test_defaults() -> None:
    backoff = Backoff()
    assert (backoff.initial, backoff.factor, backoff.cap, backoff.reset_after) == (1, 2, 30, 30)
    assert [backoff.next_delay(lambda: 0.999) // 1 for _ in range(7)] == [0, 1, 3, 7, 15, 29, 29]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": 0.0}, "initial must be > 0"),
        ({"initial": -1.0}, "initial must be > 0"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"initial": 5.0, "cap": 4.0}, "cap .* must be >= Backoff.initial"),
        ({"reset_after": -0.1}, "reset_after must be >= 0"),
        ({"cap": float("inf")}, "cap must be a finite number"),
        ({"initial": float("nan")}, "initial must be a finite number"),
    ],
)
def test_rejects_nonsense(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


def test_disconnect_without_connect_keeps_backing_off() -> None:
    backoff = Backoff()
    backoff.next_delay(lambda: 0.0)
    backoff.next_delay(lambda: 0.0)
    backoff.disconnected(1_000.0)
    assert backoff.ceiling() == 4.0


class BackoffMachine(RuleBasedStateMachine):
    """A supervisor's life: failed attempts, connections that last long enough to count as
    healthy and ones that do not, against a model that only counts failures."""

    backoff: Backoff
    params: dict[str, float]

    @initialize(params=schedules())
    def setup(self, params: dict[str, float]) -> None:
        self.params = params
        self.backoff = Backoff(**params)
        self.now = 0.0
        self.failures = 0
        self.up_since: float | None = None

    @precondition(lambda self: self.up_since is None)
    @rule(r=unit, sleep=quarters)
    def attempt_fails(self, r: float, sleep: float) -> None:
        delay = self.backoff.next_delay(lambda: r)
        assert 0.0 <= delay <= bound(self.params, self.failures)
        self.failures += 1
        self.now += sleep

    @precondition(lambda self: self.up_since is None)
    @rule()
    def connects(self) -> None:
        self.backoff.connected(self.now)
        self.up_since = self.now

    @precondition(lambda self: self.up_since is not None)
    @rule(extra=quarters)
    def drops_after_a_healthy_period(self, extra: float) -> None:
        assert self.up_since is not None
        self.now = self.up_since + self.params["reset_after"] + extra
        self.backoff.disconnected(self.now)
        self.up_since = None
        self.failures = 0
        assert self.backoff.ceiling() == self.params["initial"]

    @precondition(lambda self: self.up_since is not None and self.params["reset_after"] > 0)
    @rule(data=st.data())
    def drops_too_early(self, data: st.DataObject) -> None:
        assert self.up_since is not None
        quarters_up = data.draw(st.integers(0, int(self.params["reset_after"] * 4) - 1))
        before = self.backoff.ceiling()
        self.now = self.up_since + quarters_up / 4
        self.backoff.disconnected(self.now)
        self.up_since = None
        assert self.backoff.ceiling() == before

    @invariant()
    def ceiling_follows_the_failure_count(self) -> None:
        assert self.backoff.ceiling() == bound(self.params, self.failures)
        assert (self.backoff.connected_at is None) == (self.up_since is None)


BackoffMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
test_backoff_machine = BackoffMachine.TestCase
