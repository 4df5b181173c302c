"""The cluster lease's core: every transition by example, then a state machine of three nodes
sharing one key over a network that delays, reorders and loses messages."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from relay.core.lease import Lease, LeaseRequest, RequestKind

ACQUIRE, RENEW = RequestKind.ACQUIRE, RequestKind.RENEW


def make(
    ttl: float = 3.0, renew_every: float = 1.0, retry_every: float = 0.75, margin: float = 0.25
) -> Lease:
    return Lease(ttl=ttl, renew_every=renew_every, retry_every=retry_every, margin=margin)


def sent(lease: Lease, now: float) -> LeaseRequest:
    request = lease.start_request(now)
    assert request is not None
    return request


def held_since(now: float, lease: Lease | None = None) -> Lease:
    """A lease whose acquisition, sent at ``now``, was granted."""
    lease = lease or make()
    lease.answered(sent(lease, now), granted=True)
    return lease


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ttl", "renew_every", "retry_every", "margin"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_settings_must_be_finite_and_positive(name: str, value: float) -> None:
    settings_ = {"ttl": 3.0, "renew_every": 1.0, "retry_every": 1.0, "margin": 0.25}
    settings_[name] = value
    with pytest.raises(ValueError, match=f"^Lease {name} must be a finite number > 0 seconds"):
        Lease(**settings_)


def test_margin_must_be_under_the_ttl() -> None:
    with pytest.raises(ValueError, match=r"^Lease margin \(3\.0\) must be < ttl \(3\.0\)$"):
        make(margin=3.0)
    make(ttl=3.0, renew_every=0.25, margin=2.5)


def test_renewal_must_go_out_while_still_held() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Lease renew_every \(2\.75\) must be < ttl - margin \(2\.75\): a renewal",
    ):
        make(renew_every=2.75)
    assert make(renew_every=2.5).renew_every == 2.5


def test_ttl_ms_rounds_up_to_whole_milliseconds() -> None:
    assert make().ttl_ms == 3000
    assert make(ttl=2.0001, renew_every=1.0, margin=0.25).ttl_ms == 2001
    assert make(ttl=1.5, renew_every=1.0, margin=0.25).ttl_ms == 1500


# -- acquiring -------------------------------------------------------------------------------


def test_a_new_lease_asks_at_once_and_holds_nothing() -> None:
    lease = make()
    assert not lease.holds(0.0)
    assert lease.held_until == -math.inf
    assert lease.next_wakeup(5.0) == -math.inf
    request = sent(lease, 5.0)
    assert (request.kind, request.sent_at) == (ACQUIRE, 5.0)
    assert lease.in_flight is request


def test_one_request_at_a_time() -> None:
    lease = make()
    sent(lease, 0.0)
    assert lease.start_request(0.0) is None
    assert lease.start_request(100.0) is None
    assert lease.next_wakeup(100.0) == math.inf


def test_a_grant_holds_until_sent_at_plus_ttl_minus_margin() -> None:
    lease = make()
    request = sent(lease, 10.0)
    lease.answered(request, granted=True)
    assert lease.held_until == 12.75
    assert lease.in_flight is None
    assert lease.holds(10.0)
    assert lease.holds(12.5)
    assert not lease.holds(12.75)


def test_a_late_grant_counts_from_when_it_was_sent() -> None:
    lease = make()
    request = sent(lease, 10.0)
    lease.answered(request, granted=True)  # answered at 12.5, say: still held until 12.75
    assert lease.holds(12.5)
    assert not lease.holds(12.75)


def test_a_grant_answered_past_its_bound_holds_nothing_and_asks_again_at_once() -> None:
    lease = make()
    lease.answered(sent(lease, 10.0), granted=True)  # answered at 13.0
    assert not lease.holds(13.0)
    assert lease.next_wakeup(13.0) == 11.0
    request = sent(lease, 13.0)
    assert (request.kind, request.sent_at) == (ACQUIRE, 13.0)


def test_a_refused_acquisition_tries_again_after_retry_every() -> None:
    lease = make()
    lease.answered(sent(lease, 10.0), granted=False)
    assert not lease.holds(10.0)
    assert lease.held_until == -math.inf
    assert lease.next_wakeup(10.5) == 10.75
    assert lease.start_request(10.5) is None
    assert sent(lease, 10.75).kind is ACQUIRE


def test_a_failed_acquisition_tries_again_on_the_same_schedule() -> None:
    lease = make()
    request = sent(lease, 10.0)
    lease.failed(request)
    assert lease.in_flight is None
    assert not lease.holds(10.5)
    assert lease.next_wakeup(10.5) == 10.75
    assert lease.start_request(10.7) is None
    assert sent(lease, 10.75).kind is ACQUIRE


def test_a_timeout_longer_than_retry_every_retries_at_once() -> None:
    lease = make()
    lease.failed(sent(lease, 10.0))  # given up on at 12.0
    assert sent(lease, 12.0).sent_at == 12.0


# -- renewing --------------------------------------------------------------------------------


def test_renewal_is_due_renew_every_after_the_granted_request_went_out() -> None:
    lease = held_since(10.0)
    assert lease.next_wakeup(10.5) == 11.0
    assert lease.start_request(10.99) is None
    request = sent(lease, 11.0)
    assert (request.kind, request.sent_at) == (RENEW, 11.0)


def test_a_granted_renewal_extends_from_its_own_send() -> None:
    lease = held_since(10.0)
    request = sent(lease, 11.5)
    lease.answered(request, granted=True)
    assert lease.held_until == 14.25
    assert lease.next_wakeup(12.0) == 12.5
    assert sent(lease, 12.5).kind is RENEW


def test_a_refused_renewal_ends_the_belief_at_once() -> None:
    lease = held_since(10.0)
    request = sent(lease, 11.0)
    lease.answered(request, granted=False)
    assert not lease.holds(11.0)
    assert lease.held_until == -math.inf
    assert lease.next_wakeup(11.0) == 11.75
    assert lease.start_request(11.5) is None
    assert sent(lease, 11.75).kind is ACQUIRE


def test_a_failed_renewal_keeps_the_belief_and_renews_again_renew_every_later() -> None:
    lease = held_since(10.0)
    request = sent(lease, 11.0)
    lease.failed(request)
    assert lease.held_until == 12.75
    assert lease.holds(11.5)
    assert lease.next_wakeup(11.5) == 12.0
    assert sent(lease, 12.0).kind is RENEW


def test_while_a_renewal_hangs_the_wakeup_is_the_end_of_the_belief() -> None:
    lease = held_since(10.0)
    sent(lease, 11.0)
    assert lease.next_wakeup(11.0) == 12.75
    assert lease.holds(12.7)
    assert not lease.holds(12.75)
    assert lease.next_wakeup(12.75) == math.inf


def test_a_belief_that_lapsed_unrenewed_acquires_at_once() -> None:
    lease = held_since(10.0)
    assert lease.next_wakeup(13.0) == 11.0
    request = sent(lease, 13.0)
    assert (request.kind, request.sent_at) == (ACQUIRE, 13.0)


def test_while_held_the_wakeup_is_the_renewal_before_the_end() -> None:
    lease = held_since(10.0, make(renew_every=2.5))
    assert lease.next_wakeup(10.0) == 12.5
    lease = held_since(10.0, make(ttl=3.0, renew_every=2.5, margin=0.25))
    lease.failed(sent(lease, 12.5))
    assert lease.next_wakeup(12.5) == 12.75


# -- stale answers ---------------------------------------------------------------------------


def test_an_answer_to_a_request_given_up_on_is_ignored() -> None:
    lease = make()
    request = sent(lease, 10.0)
    lease.failed(request)
    lease.answered(request, granted=True)
    assert not lease.holds(10.5)
    assert lease.next_wakeup(10.5) == 10.75


def test_an_answer_to_an_older_request_leaves_the_one_in_flight_alone() -> None:
    lease = held_since(10.0)
    old = sent(lease, 11.0)
    lease.failed(old)
    current = sent(lease, 12.0)
    lease.answered(old, granted=False)
    assert lease.holds(12.0)
    assert lease.in_flight is current
    lease.failed(old)
    assert lease.in_flight is current
    lease.answered(current, granted=True)
    assert lease.held_until == 14.75


# -- releasing -------------------------------------------------------------------------------


def test_release_ends_everything() -> None:
    lease = held_since(10.0)
    request = sent(lease, 11.0)
    assert lease.release() is True
    assert not lease.holds(11.0)
    assert lease.held_until == -math.inf
    assert lease.in_flight is None
    assert lease.start_request(20.0) is None
    assert lease.next_wakeup(11.0) == math.inf
    lease.answered(request, granted=True)
    assert not lease.holds(11.0)


def test_release_asks_the_store_once_anything_was_sent() -> None:
    assert make().release() is False
    lease = make()
    lease.answered(sent(lease, 0.0), granted=False)
    assert lease.release() is True
    lease = make()
    lease.failed(sent(lease, 0.0))
    assert lease.release() is True


# -- three nodes, one key --------------------------------------------------------------------


@attrs.define
class ModelKey:
    """The store's key for one source, as the Lua scripts of ``RedisLeaseStore`` treat it;
    ``now`` is the instant the store carries a request out."""

    token: str | None = None
    expires_at: float = -math.inf

    def owner(self, now: float) -> str | None:
        return self.token if now < self.expires_at else None

    def acquire(self, token: str, ttl: float, now: float) -> bool:
        if self.owner(now) not in (None, token):
            return False
        self.token, self.expires_at = token, now + ttl
        return True

    def renew(self, token: str, ttl: float, now: float) -> bool:
        if self.owner(now) != token:
            return False
        self.expires_at = now + ttl
        return True

    def release(self, token: str, now: float) -> None:
        if self.owner(now) == token:
            self.token, self.expires_at = None, -math.inf

    def carry_out(self, kind: RequestKind | None, token: str, ttl: float, now: float) -> bool:
        """A request as the store receives it (``None``: a release)."""
        if kind is RequestKind.ACQUIRE:
            return self.acquire(token, ttl, now)
        if kind is RequestKind.RENEW:
            return self.renew(token, ttl, now)
        self.release(token, now)
        return False


@attrs.define
class Node:
    token: str
    lease: Lease | None
    """None once crashed."""
    released: bool = False


@attrs.define(frozen=True)
class Message:
    token: str
    request: LeaseRequest | None  # None: a release
    granted: bool = False


# Quarter seconds: exact in binary floating point, so equal instants are equal.
quarters = st.integers(0, 24).map(lambda q: q / 4)
NODES = 3


class LeaseMachine(RuleBasedStateMachine):
    """Three nodes, one key, a network that delays every message as long as hypothesis likes,
    delivers them in any order or loses them, and nodes that give up, restart or release.

    Between two steps no answer arrives, so a belief can only end (``now < held_until`` is
    monotone in ``now``): checking after every step checks every instant.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.key = ModelKey()
        self.requests: list[Message] = []
        self.answers: list[Message] = []
        self.tokens = 0
        self.nodes: list[Node] = []

    @initialize(
        ttl=st.integers(4, 20).map(lambda q: q / 4),
        margin_share=st.integers(1, 3),
        renew_share=st.integers(1, 3),
        retry_every=st.integers(1, 12).map(lambda q: q / 4),
    )
    def configure(
        self, ttl: float, margin_share: int, renew_share: int, retry_every: float
    ) -> None:
        self.settings = {
            "ttl": ttl,
            "margin": ttl * margin_share / 8,
            "renew_every": ttl * (8 - margin_share) / 8 * renew_share / 4,
            "retry_every": retry_every,
        }
        self.nodes = [self.fresh_node() for _ in range(NODES)]

    def fresh_node(self) -> Node:
        self.tokens += 1
        return Node(f"node-{self.tokens}", Lease(**self.settings))

    def ttl(self) -> float:
        return Lease(**self.settings).ttl_ms / 1000

    @rule(dt=quarters)
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(node=st.integers(0, NODES - 1))
    def send(self, node: int) -> None:
        lease = self.nodes[node].lease
        request = lease.start_request(self.now) if lease else None
        if request is not None:
            self.requests.append(Message(self.nodes[node].token, request))

    @precondition(lambda self: self.requests)
    @rule(pick=st.integers(0))
    def store_receives(self, pick: int) -> None:
        message = self.requests.pop(pick % len(self.requests))
        kind = message.request.kind if message.request else None
        granted = self.key.carry_out(kind, message.token, self.ttl(), self.now)
        if message.request is not None:
            self.answers.append(attrs.evolve(message, granted=granted))

    @precondition(lambda self: self.answers)
    @rule(pick=st.integers(0))
    def node_receives(self, pick: int) -> None:
        message = self.answers.pop(pick % len(self.answers))
        for node in self.nodes:
            if node.token == message.token and node.lease and message.request:
                node.lease.answered(message.request, message.granted)

    @precondition(lambda self: self.requests or self.answers)
    @rule(pick=st.integers(0), answer=st.booleans())
    def network_loses(self, pick: int, answer: bool) -> None:
        messages = self.answers if answer and self.answers else self.requests or self.answers
        messages.pop(pick % len(messages))

    @rule(node=st.integers(0, NODES - 1))
    def node_gives_up(self, node: int) -> None:
        lease = self.nodes[node].lease
        if lease and lease.in_flight:
            lease.failed(lease.in_flight)

    @rule(node=st.integers(0, NODES - 1))
    def node_restarts(self, node: int) -> None:
        """A crash and a new process: memory and token gone, the key left as it was."""
        self.nodes[node] = self.fresh_node()

    @rule(node=st.integers(0, NODES - 1))
    def node_releases(self, node: int) -> None:
        lease = self.nodes[node].lease
        if lease and lease.release():
            self.requests.append(Message(self.nodes[node].token, None))
        self.nodes[node].released = True  # answers still reach it, and must change nothing

    @rule(node=st.integers(0, NODES - 1))
    def one_node_left_on_a_quiet_network(self, node: int) -> None:
        """Liveness: the others crash, the network drops what it carries and loses nothing more;
        the survivor holds within ``retry_every + ttl``, however the key was left."""
        for other in range(NODES):
            if other != node:
                self.nodes[other].lease = None
        self.requests.clear()
        self.answers.clear()
        survivor = self.nodes[node]
        if survivor.lease is None or survivor.released:
            survivor = self.nodes[node] = self.fresh_node()
        lease = survivor.lease
        assert lease is not None
        if lease.in_flight:
            lease.failed(lease.in_flight)
        start = self.now
        while not lease.holds(self.now):
            assert self.now <= start + self.settings["retry_every"] + self.ttl()
            request = lease.start_request(self.now)
            if request is None:
                self.now = lease.next_wakeup(self.now)
                continue
            granted = self.key.carry_out(request.kind, survivor.token, self.ttl(), self.now)
            lease.answered(request, granted)

    @invariant()
    def at_most_one_node_believes(self) -> None:
        believers = [n.token for n in self.nodes if n.lease and n.lease.holds(self.now)]
        assert len(believers) <= 1, believers
        if believers:
            assert self.key.owner(self.now) == believers[0]


LeaseMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60)
TestLeaseMachine = LeaseMachine.TestCase
