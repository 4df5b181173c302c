"""hold_lease on MockClock: three nodes' shells sharing one in-memory store, with the timings of
a takeover after a kill, a partition and a clean release, and any schedule of partitions,
latencies, kills and restarts hypothesis picks."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.cluster.lease import LeaseStoreUnavailable, hold_lease
from relay.core.lease import Lease
from tests.core.test_lease import ModelKey

TTL, RENEW_EVERY, RETRY_EVERY, MARGIN, TIMEOUT = 3.0, 1.0, 1.0, 0.25, 0.5


@attrs.define
class Link:
    """One node's way to the shared key: latency each way, requests or answers lost while cut,
    connections refused while ``refused``."""

    key: ModelKey
    to_store: float = 0.0
    from_store: float = 0.0
    requests_cut: bool = False
    answers_cut: bool = False
    refused: bool = False
    calls: list[tuple[float, str]] = attrs.field(factory=list)
    journal: list[str] = attrs.field(factory=list)
    """Shared by the cluster's links and its record of beliefs: what happened in which order."""

    async def _carry(self, kind: str, token: str, action: Callable[[float], bool]) -> bool:
        self.calls.append((trio.current_time(), kind))
        self.journal.append(f"{token} sends {kind}")
        if self.refused:
            raise LeaseStoreUnavailable("connection refused")
        await trio.sleep(self.to_store)
        if self.requests_cut:
            await trio.sleep_forever()
        answer = action(trio.current_time())
        await trio.sleep(self.from_store)
        if self.answers_cut:
            await trio.sleep_forever()
        return answer

    async def acquire(self, source: str, token: str, ttl_ms: int) -> bool:
        return await self._carry(
            "acquire", token, lambda now: self.key.acquire(token, ttl_ms / 1000, now)
        )

    async def renew(self, source: str, token: str, ttl_ms: int) -> bool:
        return await self._carry(
            "renew", token, lambda now: self.key.renew(token, ttl_ms / 1000, now)
        )

    async def release(self, source: str, token: str) -> None:
        await self._carry("release", token, lambda now: self.key.release(token, now) or False)


@attrs.define
class Cluster:
    """Nodes holding one source's lease; records every change of belief and checks, as each
    happens, that no two nodes believe at once and that a believer's token is in the key."""

    key: ModelKey = attrs.field(factory=ModelKey)
    links: dict[str, Link] = attrs.field(factory=dict)
    believers: set[str] = attrs.field(factory=set)
    changes: list[tuple[float, str, bool]] = attrs.field(factory=list)
    violations: list[str] = attrs.field(factory=list)
    scopes: dict[str, trio.CancelScope] = attrs.field(factory=dict)
    ended: dict[str, float] = attrs.field(factory=dict)
    journal: list[str] = attrs.field(factory=list)

    def on_change(self, token: str) -> Callable[[bool], None]:
        def changed(held: bool) -> None:
            now = trio.current_time()
            self.changes.append((now, token, held))
            self.journal.append(f"{token} {'holds' if held else 'lets go'}")
            if held:
                if self.believers:
                    self.violations.append(f"{token} believes at {now} beside {self.believers}")
                if self.key.owner(now) != token:
                    self.violations.append(f"{token} believes at {now}, the key is not its own")
                self.believers.add(token)
            else:
                self.believers.discard(token)

        return changed

    async def start(
        self,
        nursery: trio.Nursery,
        token: str,
        request_timeout: float = TIMEOUT,
        **latency: float,
    ) -> Link:
        link = self.links[token] = Link(self.key, journal=self.journal, **latency)
        lease = Lease(ttl=TTL, renew_every=RENEW_EVERY, retry_every=RETRY_EVERY, margin=MARGIN)
        scope = self.scopes[token] = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await hold_lease(
                    lease,
                    link,
                    "sim",
                    token,
                    self.on_change(token),
                    request_timeout=request_timeout,
                    task_status=task_status,
                )
            self.ended[token] = trio.current_time()

        await nursery.start(run)
        return link

    def kill(self, token: str) -> None:
        """The process dies: nothing it sends arrives any more (its release included)."""
        self.links[token].requests_cut = True
        self.scopes[token].cancel()


def became(cluster: Cluster, token: str) -> list[tuple[float, bool]]:
    return [(at, held) for at, who, held in cluster.changes if who == token]


async def a_holds_b_waits(nursery: trio.Nursery) -> tuple[Cluster, Link, Link]:
    """Node a holding since 0.0, node b trying since 0.5; returns at 10.2."""
    cluster = Cluster()
    a = await cluster.start(nursery, "a")
    await trio.sleep(0.5)
    b = await cluster.start(nursery, "b")
    await trio.sleep(9.7)
    return cluster, a, b


async def test_a_lone_node_holds_at_once_and_renews_every_second(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    cluster = Cluster()
    link = await cluster.start(nursery, "a")
    await trio.sleep(3.5)
    assert became(cluster, "a") == [(0.0, True)]
    assert link.calls == [(0.0, "acquire"), (1.0, "renew"), (2.0, "renew"), (3.0, "renew")]
    assert cluster.key.expires_at == 6.0


async def test_takeover_after_a_kill_comes_when_the_key_expires(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    cluster, _, b = await a_holds_b_waits(nursery)  # a renewed last at 10.0: key until 13.0
    cluster.kill("a")
    await trio.sleep(5)
    assert became(cluster, "a") == [(0.0, True), (10.2, False)]
    assert cluster.ended["a"] == 10.2 + TIMEOUT  # its release never arrived
    assert became(cluster, "b") == [(13.5, True)]  # b's attempts: 10.5, 11.5, 12.5, 13.5
    assert b.calls[-3:] == [(12.5, "acquire"), (13.5, "acquire"), (14.5, "renew")]
    assert cluster.violations == []


async def test_a_clean_release_hands_over_at_the_next_attempt(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    cluster, a, _ = await a_holds_b_waits(nursery)
    cluster.scopes["a"].cancel()
    await trio.sleep(2)
    assert cluster.journal[-5:] == [
        "a lets go",
        "a sends release",
        "b sends acquire",
        "b holds",
        "b sends renew",
    ]
    assert a.calls[-2:] == [(10.0, "renew"), (10.2, "release")]
    assert cluster.ended["a"] == 10.2
    assert became(cluster, "a") == [(0.0, True), (10.2, False)]
    assert became(cluster, "b") == [(10.5, True)]
    assert cluster.violations == []


async def test_a_partitioned_holder_lets_go_at_held_until_and_another_takes_over(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    cluster, a, _ = await a_holds_b_waits(nursery)
    a.requests_cut = True  # renewals at 11.0 and 12.0 hang; the belief of 10.0 ends at 12.75
    await trio.sleep(9.8)
    a.requests_cut = False  # 20.0: a's next attempts are refused
    await trio.sleep(3)
    assert became(cluster, "a") == [(0.0, True), (12.75, False)]
    assert became(cluster, "b") == [(13.5, True)]
    assert [call for call in a.calls if 9.5 < call[0] < 22.5] == [
        (10.0, "renew"),
        (11.0, "renew"),
        (12.0, "renew"),
        *((float(at), "acquire") for at in range(13, 23)),
    ]
    assert cluster.violations == []


async def test_a_renewal_hanging_past_the_end_of_the_belief_does_not_stretch_it(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    cluster = Cluster()
    a = await cluster.start(nursery, "a", request_timeout=2.5)
    await trio.sleep(10.2)
    a.requests_cut = True  # the renewal sent at 11.0 hangs until 13.5
    await trio.sleep(3.5)
    assert became(cluster, "a") == [(0.0, True), (12.75, False)]
    assert a.calls[-2:] == [(11.0, "renew"), (13.5, "acquire")]


async def test_lost_answers_leave_the_key_to_its_holder_who_takes_it_back_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """The renewals arrive, their answers do not: the key stays a's, so nobody holds from the
    end of a's belief until a hears back, and then a's acquisition of its own key succeeds."""
    cluster, a, _ = await a_holds_b_waits(nursery)
    a.answers_cut = True
    await trio.sleep(5.0)  # 15.2; a's acquisition sent at 15.0 hangs until 15.5
    a.answers_cut = False
    await trio.sleep(3)
    assert became(cluster, "a") == [(0.0, True), (12.75, False), (16.0, True)]
    assert became(cluster, "b") == []
    assert cluster.violations == []


async def test_a_store_refusing_connections_is_retried_on_schedule_not_in_a_loop(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    cluster = Cluster()
    a = await cluster.start(nursery, "a")
    await trio.sleep(0.5)
    a.refused = True
    await trio.sleep(3.75)
    # Held since 0.0: renewals at 1.0 and 2.0 fail at once, the belief ends at 2.75, and the
    # next request goes out renew_every after the last one.
    assert a.calls == [
        (0.0, "acquire"),
        (1.0, "renew"),
        (2.0, "renew"),
        (3.0, "acquire"),
        (4.0, "acquire"),
    ]
    assert became(cluster, "a") == [(0.0, True), (2.75, False)]


async def test_request_timeout_must_be_positive() -> None:
    lease = Lease(ttl=TTL, renew_every=RENEW_EVERY, retry_every=RETRY_EVERY, margin=MARGIN)
    with pytest.raises(ValueError, match=r"^request_timeout must be > 0 seconds, got 0\.0$"):
        await hold_lease(lease, Link(ModelKey()), "sim", "a", print, request_timeout=0.0)


# -- any schedule ----------------------------------------------------------------------------

ACTIONS = ("cut_requests", "cut_answers", "refuse", "heal", "latency", "kill", "stop", "restart")


@st.composite
def schedules(draw: st.DrawFn) -> list[tuple[float, int, str, float, float]]:
    events = draw(
        st.lists(
            st.tuples(
                st.integers(0, 160).map(lambda q: q / 4),
                st.integers(0, 2),
                st.sampled_from(ACTIONS),
                st.integers(0, 8).map(lambda q: q / 8),
                st.integers(0, 8).map(lambda q: q / 8),
            ),
            max_size=14,
        )
    )
    return sorted(events)


@settings(max_examples=60, deadline=None)
@given(schedules(), st.sampled_from([TIMEOUT, 2.5]))
def test_no_two_nodes_believe_at_once_under_any_schedule(
    schedule: list[tuple[float, int, str, float, float]], timeout: float
) -> None:
    """A timeout of 2.5 outlasts a belief's last 1.75 seconds: the end of the belief must not
    wait for a hanging request."""
    cluster = Cluster()
    generation = [0, 0, 0]

    def token(node: int) -> str:
        return f"node{node}-{generation[node]}"

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for node in range(3):
                await cluster.start(nursery, token(node), timeout)
            for at, node, action, to_store, from_store in schedule:
                await trio.sleep_until(at)
                link, scope = cluster.links[token(node)], cluster.scopes[token(node)]
                if action == "cut_requests":
                    link.requests_cut = True
                elif action == "cut_answers":
                    link.answers_cut = True
                elif action == "refuse":
                    link.refused = True
                elif action == "heal":
                    link.requests_cut = link.answers_cut = link.refused = False
                elif action == "latency":
                    link.to_store, link.from_store = to_store, from_store
                elif action == "kill":
                    cluster.kill(token(node))
                elif action == "stop":
                    scope.cancel()
                elif scope.cancel_called:  # restart: a new process, a new token
                    generation[node] += 1
                    await cluster.start(nursery, token(node), timeout, to_store=to_store)
            # Liveness: heal the live nodes' links. Requests in transit reach the key within
            # 1.0, so it is free by 1.0 + TTL; a live node's next attempt goes out within the
            # timeout, then one every RETRY_EVERY.
            await trio.sleep_until(40.25)
            live = [t for t, scope in cluster.scopes.items() if not scope.cancel_called]
            for live_token in live:
                link = cluster.links[live_token]
                link.requests_cut = link.answers_cut = link.refused = False
                link.to_store = link.from_store = 0.0
            await trio.sleep(max(timeout, 1.0 + TTL) + RETRY_EVERY)
            if live:
                assert len(cluster.believers) == 1
                assert cluster.believers <= set(live)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert cluster.violations == []
    assert cluster.believers == set()
