"""The subscription registry against a plain model, under any sequence of operations."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from relay.core.channels import source_of
from relay.core.registry import SubscriptionRegistry

SESSIONS = st.integers(0, 5)
CHANNELS = st.sampled_from(
    ["sim:trades:A", "sim:trades:B", "sim:book:A", "alt:ticker:A", "alt:blocks"]
)


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry: SubscriptionRegistry[int] = SubscriptionRegistry()
        self.model: dict[int, set[str]] = {}
        self.upstream: set[str] = set()
        """What an upstream following the first/last transitions would be subscribed to."""

    def _union(self) -> set[str]:
        return set().union(*self.model.values()) if self.model else set()

    @rule(session=SESSIONS, channel=CHANNELS)
    def subscribe(self, session: int, channel: str) -> None:
        before = channel in self._union()
        added, first = self.registry.add(session, channel)
        held = channel in self.model.get(session, set())
        assert added is not held
        assert first is (not before)
        self.model.setdefault(session, set()).add(channel)
        if first:
            assert channel not in self.upstream
            self.upstream.add(channel)

    @rule(session=SESSIONS, channel=CHANNELS)
    def unsubscribe(self, session: int, channel: str) -> None:
        removed, last = self.registry.remove(session, channel)
        assert removed is (channel in self.model.get(session, set()))
        self.model.get(session, set()).discard(channel)
        if not self.model.get(session, True):
            del self.model[session]
        assert last is (removed and channel not in self._union())
        if last:
            self.upstream.remove(channel)

    @rule(session=SESSIONS)
    def disconnect(self, session: int) -> None:
        released = self.registry.drop(session)
        self.model.pop(session, None)
        union = self._union()
        for channel in released:
            assert channel not in union
            self.upstream.remove(channel)

    @invariant()
    def wanted_is_the_union(self) -> None:
        union = self._union()
        assert self.upstream == union
        for source in {"sim", "alt"}:
            assert self.registry.wanted(source) == {c for c in union if source_of(c) == source}

    @invariant()
    def refcounts_match(self) -> None:
        for channel in ["sim:trades:A", "sim:trades:B", "sim:book:A", "alt:ticker:A", "alt:blocks"]:
            count = self.registry.refcount(channel)
            assert count >= 0
            assert count == sum(channel in chans for chans in self.model.values())
            assert set(self.registry.subscribers(channel)) == {
                s for s, chans in self.model.items() if channel in chans
            }
        for session in range(6):
            chans = self.model.get(session, set())
            assert set(self.registry.channels_of(session)) == chans
            assert self.registry.count_of(session) == len(chans)
        assert len(self.registry) == sum(len(c) for c in self.model.values())

    @invariant()
    def counts_per_source_and_in_all_match(self) -> None:
        """What the hub's metrics and status events read: channels held, the sessions of each
        source, and the sessions holding anything."""
        union = self._union()
        assert self.registry.channel_count == len(union)
        for source in {"sim", "alt", "none"}:
            assert self.registry.sessions_of_source(source) == {
                s for s, chans in self.model.items() if any(source_of(c) == source for c in chans)
            }
        assert set(self.registry.sessions()) == set(self.model)


TestRegistry = RegistryMachine.TestCase
TestRegistry.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_counts_follow_a_session_in_and_out_of_two_sources() -> None:
    registry: SubscriptionRegistry[str] = SubscriptionRegistry()
    assert (registry.channel_count, len(registry), registry.count_of("a")) == (0, 0, 0)
    registry.add("a", "sim:trades:A")
    registry.add("a", "alt:blocks")
    registry.add("b", "sim:trades:A")
    assert (registry.channel_count, len(registry)) == (2, 3)
    assert (registry.count_of("a"), registry.count_of("b")) == (2, 1)
    assert registry.sessions_of_source("sim") == {"a", "b"}
    assert registry.sessions_of_source("alt") == {"a"}
    assert list(registry.sessions()) == ["a", "b"]
    # The holder map is the live dict-as-set the hub iterates: its values are None.
    assert registry.subscribers("sim:trades:A") == {"a": None, "b": None}
    assert registry.drop("a") == ["alt:blocks"]
    assert (registry.channel_count, len(registry), registry.count_of("a")) == (1, 1, 0)
    assert registry.sessions_of_source("alt") == set()
    assert registry.subscribers("alt:blocks") == {}
