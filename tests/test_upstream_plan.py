"""Upstream subscriptions with linger, against a model, under any sequence of events."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relay.core.upstream_plan import UpstreamPlan

CHANNELS = st.sampled_from(["a", "b", "c", "d"])
LINGER = 5.0


def test_linger_then_unsubscribe() -> None:
    plan = UpstreamPlan(linger=LINGER)
    plan.want("a")
    assert plan.plan(0.0).subscribe == ["a"]
    plan.unwant("a", now=1.0)
    assert not plan.plan(5.9)
    assert plan.next_deadline() == 6.0
    assert plan.plan(6.0).unsubscribe == ["a"]
    assert plan.next_deadline() is None


def test_returning_client_cancels_linger() -> None:
    plan = UpstreamPlan(linger=LINGER)
    plan.want("a")
    plan.plan(0.0)
    plan.unwant("a", now=1.0)
    plan.want("a")
    assert not plan.plan(100.0)


def test_reconnect_subscribes_exactly_what_is_wanted() -> None:
    plan = UpstreamPlan(linger=LINGER)
    plan.want("a")
    plan.want("b")
    plan.plan(0.0)
    plan.unwant("b", now=1.0)
    plan.connection_lost()
    assert plan.plan(2.0).subscribe == ["a"]


def test_a_plan_is_true_when_it_has_anything_to_send() -> None:
    plan = UpstreamPlan(linger=LINGER)
    assert not plan.plan(0.0)
    plan.want("a")
    only_subscribe = plan.plan(0.0)
    assert only_subscribe and not only_subscribe.unsubscribe
    plan.unwant("a", now=0.0)
    only_unsubscribe = plan.plan(LINGER)
    assert only_unsubscribe and not only_unsubscribe.subscribe


def test_a_request_is_overdue_at_exactly_the_timeout() -> None:
    plan = UpstreamPlan(linger=LINGER)
    plan.want("a")
    plan.plan(10.0)
    assert plan.answer_deadline(3.0) == 13.0
    assert plan.overdue(12.9, 3.0) == []
    assert plan.overdue(13.0, 3.0) == ["a"]


def test_answers_nobody_waits_for_change_nothing() -> None:
    plan = UpstreamPlan(linger=LINGER)
    plan.want("a")
    plan.plan(0.0)
    plan.answered(("a", "never-asked"))
    plan.answered(("a",))
    assert plan.answer_deadline(3.0) is None and plan.overdue(100.0, 3.0) == []


class PlanMachine(RuleBasedStateMachine):
    """The upstream, as the sent plans leave it, converges to what clients want."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = UpstreamPlan(LINGER)
        self.now = 0.0
        self.upstream: set[str] = set()
        self.wanted: set[str] = set()
        self.sent_at: dict[str, float] = {}
        """Subscribe requests the model upstream has not answered, with when they were sent."""

    @rule(channel=CHANNELS)
    def want(self, channel: str) -> None:
        self.plan.want(channel)
        self.wanted.add(channel)

    @precondition(lambda self: self.wanted)
    @rule(data=st.data())
    def unwant(self, data: st.DataObject) -> None:
        channel = data.draw(st.sampled_from(sorted(self.wanted)))
        self.plan.unwant(channel, self.now)
        self.wanted.discard(channel)

    @rule(dt=st.floats(0, 10))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def send(self) -> None:
        step = self.plan.plan(self.now)
        assert not set(step.subscribe) & self.upstream
        assert set(step.unsubscribe) <= self.upstream
        assert not set(step.unsubscribe) & self.wanted
        self.upstream |= set(step.subscribe)
        self.upstream -= set(step.unsubscribe)
        assert self.wanted <= self.upstream
        self.sent_at.update(dict.fromkeys(step.subscribe, self.now))
        for channel in step.unsubscribe:
            self.sent_at.pop(channel, None)

    @precondition(lambda self: self.sent_at)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        channels = data.draw(st.lists(st.sampled_from(sorted(self.sent_at)), unique=True))
        self.plan.answered(tuple(channels))
        for channel in channels:
            del self.sent_at[channel]

    @rule()
    def reconnect(self) -> None:
        self.plan.connection_lost()
        self.upstream = set()
        step = self.plan.plan(self.now)
        assert set(step.subscribe) == self.wanted
        self.upstream = set(step.subscribe)
        self.sent_at = dict.fromkeys(step.subscribe, self.now)

    @invariant()
    def lingering_is_subscribed_and_unwanted(self) -> None:
        assert set(self.plan.lingering) <= self.plan.active
        assert not set(self.plan.lingering) & self.wanted
        assert self.plan.wanted == self.wanted

    @invariant()
    def nothing_unwanted_outlives_its_linger(self) -> None:
        deadline = self.plan.next_deadline()
        extra = self.plan.active - self.wanted
        assert (deadline is None) == (not extra)

    @invariant()
    def unanswered_requests_are_overdue_exactly_after_the_timeout(self) -> None:
        timeout = 3.0
        assert self.plan.unanswered == self.sent_at
        expected = min(self.sent_at.values(), default=None)
        deadline = self.plan.answer_deadline(timeout)
        assert deadline == (None if expected is None else expected + timeout)
        overdue = {c for c, sent in self.sent_at.items() if sent + timeout <= self.now}
        assert set(self.plan.overdue(self.now, timeout)) == overdue


TestPlan = PlanMachine.TestCase
TestPlan.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
