"""The upstream supervisor on MockClock: watchdog, retry schedule, reset, re-subscription."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import attrs
import pytest
import trio
import trio.testing

from relay.adapters.sim import SimAdapter
from relay.config import SourceConfig
from relay.core.hub import Hub, Limits
from relay.core.outbox import Outbox
from relay.server.upstream import UpstreamState, UpstreamSupervisor
from tests.fake_upstream import FakeTransport

LIMITS = Limits(max_subscriptions=100)


class Subscriber:
    def __init__(self) -> None:
        self.outbox = Outbox(10_000, 1 << 24)

    def wake(self) -> None:
        pass

    def overflow(self) -> None:
        raise AssertionError("no overflow expected")


@attrs.define
class Rig:
    hub: Hub
    supervisor: UpstreamSupervisor
    transport: FakeTransport

    def want(self, who: Subscriber, *channels: str) -> None:
        self.hub.subscribe(who, channels, None, LIMITS)

    def unwant(self, who: Subscriber, *channels: str) -> None:
        self.hub.unsubscribe(who, channels, None)


def make_rig(rng: Callable[[], float] = lambda: 0.5, **settings: float) -> Rig:
    adapter = SimAdapter("sim", ["BTC-USD", "ETH-USD"], heartbeat_interval=1.0)
    hub = Hub({c: adapter.kind(c) for c in adapter.channels()})
    config = SourceConfig(kind="sim", url="ws://upstream.invalid/ws", **settings)  # type: ignore[arg-type]
    transport = FakeTransport(adapter)
    supervisor = UpstreamSupervisor(adapter, config, hub, transport=transport, rng=rng)
    hub.add_source("sim", supervisor)
    return Rig(hub, supervisor, transport)


@pytest.fixture
async def rig(nursery: trio.Nursery) -> AsyncIterator[Rig]:
    """Tests using it must also take ``autojump_clock``: pytest-trio only picks up a clock
    that the test function itself requests."""
    rig = make_rig()
    await nursery.start(rig.supervisor.run)
    yield rig


async def test_watchdog_declares_death_at_one_and_a_half_intervals(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    await trio.testing.wait_all_tasks_blocked()
    first = rig.transport.current
    assert first is not None
    await trio.sleep(1.49)
    assert rig.transport.current is first and rig.supervisor.stats.disconnects == 0
    await trio.sleep(0.02)
    assert first.closed and rig.supervisor.stats.disconnects == 1
    assert rig.supervisor.state is UpstreamState.RECONNECTING


async def test_heartbeats_keep_the_connection_alive(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    await trio.testing.wait_all_tasks_blocked()
    conn = rig.transport.current
    assert conn is not None
    for _ in range(100):
        conn.heartbeat()
        await trio.sleep(1.0)
    assert not conn.closed and rig.supervisor.stats.disconnects == 0


async def test_retry_schedule_is_exponential_and_capped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = make_rig(rng=lambda: 0.75, backoff_initial=1.0, backoff_factor=2.0, backoff_cap=30.0)
    start = trio.current_time()
    rig.transport.refuse_until = start + 1000.0
    await nursery.start(rig.supervisor.run)
    await trio.sleep(200)
    gaps = [b - a for a, b in zip(rig.transport.attempts, rig.transport.attempts[1:], strict=False)]
    expected = [0.75 * min(30.0, 2.0**n) for n in range(len(gaps))]
    assert gaps == pytest.approx(expected)
    assert gaps[-1] == pytest.approx(22.5)  # capped at 30, times the jitter draw


async def test_backoff_resets_after_a_healthy_period(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = make_rig(rng=lambda: 1.0, backoff_reset_after=30.0)
    start = trio.current_time()
    rig.transport.refuse_until = start + 5.0
    await nursery.start(rig.supervisor.run)
    await trio.sleep(7.01)
    assert rig.supervisor.backoff.attempts == 3  # refused at 0, 1 and 3 s; connected at 7 s
    conn = rig.transport.current
    assert conn is not None
    for _ in range(31):
        conn.heartbeat()
        await trio.sleep(1.0)
    conn.drop()
    await trio.testing.wait_all_tasks_blocked()
    dropped_at = trio.current_time()
    await trio.sleep(1.01)
    assert rig.transport.attempts[-1] == pytest.approx(dropped_at + 1.0)


async def test_short_lived_connections_keep_backing_off(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = make_rig(rng=lambda: 1.0, backoff_reset_after=30.0)
    await nursery.start(rig.supervisor.run)
    # Connected but silent: the watchdog kills each attempt after 1.5 s, never healthy long
    # enough to reset, so the delays keep growing.
    await trio.sleep(40)
    attempts = rig.transport.attempts
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[:4] == pytest.approx([1.5 + 1.0, 1.5 + 2.0, 1.5 + 4.0, 1.5 + 8.0])


async def test_reconnect_resubscribes_exactly_what_clients_want(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = Subscriber(), Subscriber()
    rig.want(a, "sim:trades:BTC-USD", "sim:book:ETH-USD")
    rig.want(b, "sim:ticker:BTC-USD")
    await trio.testing.wait_all_tasks_blocked()
    first = rig.transport.current
    assert first is not None
    assert first.subscribed == {"sim:trades:BTC-USD", "sim:book:ETH-USD", "sim:ticker:BTC-USD"}
    first.drop()
    rig.unwant(b, "sim:ticker:BTC-USD")  # leaves during the outage
    await trio.sleep(0.6)
    second = rig.transport.current
    assert second is not None and second is not first
    assert second.subscribe_batches == [{"sim:trades:BTC-USD", "sim:book:ETH-USD"}]


async def test_last_client_out_unsubscribes_after_the_linger(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    a = Subscriber()
    rig.want(a, "sim:trades:BTC-USD")
    await trio.testing.wait_all_tasks_blocked()
    conn = rig.transport.current
    assert conn is not None
    rig.hub.drop(a)

    async def keep_alive() -> None:
        while True:
            conn.heartbeat()
            await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_alive)
        await trio.sleep(4.99)
        assert conn.subscribed == {"sim:trades:BTC-USD"}
        await trio.sleep(0.02)
        assert conn.subscribed == set()
        nursery.cancel_scope.cancel()


async def test_upstream_pings_detect_a_silent_peer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig = make_rig(ping_interval=5.0, heartbeat_interval=100.0)
    await nursery.start(rig.supervisor.run)
    await trio.testing.wait_all_tasks_blocked()
    conn = rig.transport.current
    assert conn is not None
    conn.pong = False
    await trio.sleep(9.99)
    assert not conn.closed
    await trio.sleep(0.02)
    assert conn.closed  # first ping at 5 s, no pong by 10 s


async def test_a_frame_waiting_at_the_deadline_is_not_death(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """A busy loop can leave a frame unread past the deadline: the reader gets its chance
    before the watchdog decides (without the grace ticks this fails about half the time,
    depending on which task trio runs first)."""
    await trio.testing.wait_all_tasks_blocked()
    for _ in range(20):
        conn = rig.transport.current
        assert conn is not None
        await trio.sleep_until(rig.supervisor._last_frame + 1.5)
        conn.heartbeat()  # readable at the very moment the deadline passes
        await trio.testing.wait_all_tasks_blocked()
    assert rig.supervisor.stats.disconnects == 0
