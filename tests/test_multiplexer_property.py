"""The upstream multiplexer under any interleaving of client churn and upstream faults.

Hypothesis writes the scenario (a list of steps); each runs on trio's MockClock against the fake
upstream. Checked throughout: every new connection subscribes to exactly what clients want at
that moment; a settled healthy connection holds what clients want plus only what is lingering;
in the end the upstream converges to the wanted set; and no task outlives the supervisor.
"""

from __future__ import annotations

import math
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.hub import Limits
from tests.fake_upstream import FakeConnection
from tests.test_upstream_supervisor import Subscriber, make_rig

CHANNELS = [
    "sim:trades:BTC-USD",
    "sim:ticker:BTC-USD",
    "sim:book:BTC-USD",
    "sim:trades:ETH-USD",
    "sim:book:ETH-USD",
]
LINGER = 2.0
LIMITS = Limits(max_subscriptions=100)

clients = st.integers(0, 3)
channels = st.sampled_from(CHANNELS)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("subscribe"), clients, channels),
        st.tuples(st.just("unsubscribe"), clients, channels),
        st.tuples(st.just("disconnect"), clients),
        st.tuples(st.just("drop")),
        st.tuples(st.just("stall"), st.floats(0.5, 4.0)),
        st.tuples(st.just("refuse"), st.floats(0.0, 4.0)),
        st.tuples(st.just("wait"), st.floats(0.0, 3.0)),
    ),
    max_size=25,
)


async def scenario(plan: list[tuple[Any, ...]]) -> None:
    baseline = trio.lowlevel.current_statistics().tasks_living
    rig = make_rig(
        rng=lambda: 0.5,
        linger=LINGER,
        heartbeat_interval=1.0,
        backoff_initial=0.1,
        backoff_cap=1.0,
    )
    hub, supervisor, transport = rig.hub, rig.supervisor, rig.transport
    sessions = [Subscriber() for _ in range(4)]
    wanted_at_connect: dict[int, set[str]] = {}
    stalled_until = -math.inf

    def wanted() -> set[str]:
        return set(hub.registry.wanted("sim"))

    def check(conn: FakeConnection) -> None:
        """A new connection first subscribes to exactly what clients want as it comes up."""
        at_connect = wanted_at_connect[id(conn)]
        if at_connect:
            assert conn.subscribe_batches[0] == at_connect, (conn.subscribe_batches, at_connect)

    transport.on_connect = lambda conn: wanted_at_connect.__setitem__(id(conn), wanted())

    async def upstream_side() -> None:
        """Heartbeats from whichever connection is current, unless stalled."""
        while True:
            conn = transport.current
            if conn is not None and trio.current_time() >= stalled_until:
                conn.heartbeat()
            await trio.sleep(0.25)

    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        nursery.start_soon(upstream_side)
        await trio.sleep(0.01)
        for step in plan:
            match step:
                case ("subscribe", who, channel):
                    hub.subscribe(sessions[who], [channel], None, LIMITS)
                case ("unsubscribe", who, channel):
                    hub.unsubscribe(sessions[who], [channel], None)
                case ("disconnect", who):
                    hub.drop(sessions[who])
                case ("drop",):
                    if transport.current is not None:
                        transport.current.drop()
                case ("stall", seconds):
                    stalled_until = trio.current_time() + seconds
                case ("refuse", seconds):
                    transport.refuse_until = trio.current_time() + seconds
                case ("wait", seconds):
                    await trio.sleep(seconds)
            await trio.testing.wait_all_tasks_blocked()
            conn = transport.current
            if conn is not None:
                check(conn)
                assert wanted() <= conn.subscribed
                extra = conn.subscribed - wanted()
                assert extra <= set(supervisor.plan.lingering), (extra, supervisor.plan.lingering)

        # Heal everything and let the linger run out: the upstream converges.
        stalled_until = -math.inf
        transport.refuse_until = -math.inf
        await trio.sleep(LINGER + 3.0)
        await trio.testing.wait_all_tasks_blocked()
        conn = transport.current
        assert conn is not None
        assert conn.subscribed == wanted()
        for every in transport.connections:
            check(every)
        nursery.cancel_scope.cancel()

    assert trio.lowlevel.current_statistics().tasks_living == baseline


@given(steps)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_multiplexer_follows_clients_through_faults(plan: list[tuple[Any, ...]]) -> None:
    trio.run(scenario, plan, clock=trio.testing.MockClock(autojump_threshold=0))
