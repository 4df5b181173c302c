"""The upstream supervisor on MockClock: watchdog, retry schedule, reset, re-subscription."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import attrs
import orjson
import pytest
import trio
import trio.testing

from relay.adapters.sim import SimAdapter
from relay.config import SourceConfig
from relay.core.hub import Hub, Limits
from relay.core.model import RepairKind, Update, UpstreamEvent
from relay.core.outbox import Outbox
from relay.server.upstream import UpstreamState, UpstreamSupervisor
from tests.fake_upstream import FakeConnection, FakeTransport

LIMITS = Limits(max_subscriptions=100)


class Subscriber:
    def __init__(self) -> None:
        self.outbox = Outbox(10_000, 1 << 24)
        self.framing = 0

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


def make_rig(
    rng: Callable[[], float] = lambda: 0.5,
    adapter: SimAdapter | None = None,
    request_interval: float = 0.0,
    **settings: float,
) -> Rig:
    interval = float(settings.get("heartbeat_interval", 1.0))
    adapter = adapter or SimAdapter("sim", ["BTC-USD", "ETH-USD"], heartbeat_interval=interval)
    hub = Hub(adapter.kind)
    config = SourceConfig(kind="sim", url="ws://upstream.invalid/ws", **settings)  # type: ignore[arg-type]
    transport = FakeTransport(adapter)
    supervisor = UpstreamSupervisor(
        adapter, config, hub, transport=transport, rng=rng, request_interval=request_interval
    )
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


def book_frame(seq: int, snapshot: bool, bid: str = "100") -> str:
    kind = "snapshot" if snapshot else "update"
    body = {"bids": [[bid, "1"]], "asks": [], "time": 1_000_000}
    return orjson.dumps({"topic": "depth.BTC-USD", "seq": seq, "kind": kind, "body": body}).decode()


async def book_rig(nursery: trio.Nursery, adapter: SimAdapter) -> tuple[Rig, FakeConnection]:
    """A running supervisor with one client on sim:book:BTC-USD, and its connection."""
    rig = make_rig(adapter=adapter)
    await nursery.start(rig.supervisor.run)
    rig.want(Subscriber(), "sim:book:BTC-USD")
    await trio.testing.wait_all_tasks_blocked()
    conn = rig.transport.current
    assert conn is not None
    return rig, conn


@pytest.mark.parametrize("exit_exception", [KeyboardInterrupt, SystemExit])
async def test_an_interrupt_inside_an_attempt_stops_the_supervisor(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    exit_exception: type[BaseException],
) -> None:
    """Not a failure of the source: it must leave the supervisor, not be retried."""
    rig = make_rig()

    def interrupt(conn: FakeConnection) -> None:
        conn.raise_on_receive = exit_exception()

    rig.transport.on_connect = interrupt
    with pytest.raises(BaseExceptionGroup) as caught, trio.fail_after(60):
        await rig.supervisor.run()  # without the fix: retried until the deadline
    assert caught.group_contains(exit_exception)
    assert len(rig.transport.attempts) == 1
    assert rig.supervisor.stats.disconnects == 0


class BrokenBookAdapter(SimAdapter):
    """Hands the core a book update without a seq, which the book sync refuses with a
    ValueError: a relay bug, not a malformed upstream frame."""

    def parse(self, frame: str | bytes) -> list[UpstreamEvent]:
        return [
            attrs.evolve(e, seq=None) if isinstance(e, Update) else e for e in super().parse(frame)
        ]


async def test_a_core_error_is_not_counted_as_a_malformed_frame(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig, conn = await book_rig(nursery, BrokenBookAdapter("sim", ["BTC-USD"]))
    conn.push(book_frame(1, snapshot=True))
    await trio.testing.wait_all_tasks_blocked()
    assert rig.supervisor.stats.malformed == 0
    assert rig.supervisor.stats.disconnects == 1  # the attempt ended, to start clean
    assert any("unexpected failure" in r.getMessage() and r.exc_info for r in caplog.records)


class ResubscribingAdapter(SimAdapter):
    """A source whose books are repaired by subscribing again (as Kraken's and Coinbase's)."""

    def repair(self, channel: str) -> RepairKind:
        return RepairKind.RESUBSCRIBE


async def test_a_book_gap_can_be_repaired_by_resubscribing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig, conn = await book_rig(nursery, ResubscribingAdapter("sim", ["BTC-USD"]))
    conn.push(book_frame(1, snapshot=True))
    conn.push(book_frame(2, snapshot=False))
    conn.push(book_frame(5, snapshot=False))  # 3 and 4 are lost
    await trio.testing.wait_all_tasks_blocked()
    assert conn.subscribe_batches == [{"sim:book:BTC-USD"}, {"sim:book:BTC-USD"}]
    assert rig.supervisor.stats.gaps == 1 and rig.supervisor.stats.snapshot_fetches == 0
    assert rig.supervisor.channel_state("sim:book:BTC-USD") is None  # stale until repaired
    conn.push(book_frame(9, snapshot=True, bid="101"))  # what the upstream sends on subscribe
    await trio.testing.wait_all_tasks_blocked()
    assert rig.supervisor.stats.resyncs == 1
    state = rig.supervisor.channel_state("sim:book:BTC-USD")
    assert state is not None and state["bids"] == [["101", "1"]]


async def test_requests_are_paced_for_upstreams_that_limit_them(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Binance disconnects a connection that sends over 5 requests a second: with an interval,
    changes that come meanwhile go out together in the next request."""
    rig = make_rig(request_interval=0.25)
    await nursery.start(rig.supervisor.run)
    await trio.testing.wait_all_tasks_blocked()
    conn = rig.transport.current
    assert conn is not None
    a, b = Subscriber(), Subscriber()
    rig.want(a, "sim:trades:BTC-USD")
    await trio.sleep(0.01)
    rig.want(b, "sim:trades:ETH-USD")
    await trio.sleep(0.01)
    rig.want(b, "sim:ticker:ETH-USD")
    rig.unwant(a, "sim:trades:BTC-USD")
    await trio.sleep(10)
    assert conn.subscribe_batches == [
        {"sim:trades:BTC-USD"},
        {"sim:trades:ETH-USD", "sim:ticker:ETH-USD"},
    ]
    gaps = [later - earlier for earlier, later in itertools.pairwise(conn.request_times)]
    assert gaps and min(gaps) >= 0.25


async def test_a_resubscribe_whose_snapshot_is_lost_is_sent_again(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    rig, conn = await book_rig(nursery, ResubscribingAdapter("sim", ["BTC-USD"]))

    async def keep_alive() -> None:
        while True:
            conn.heartbeat()
            await trio.sleep(0.5)

    nursery.start_soon(keep_alive)
    conn.push(book_frame(1, snapshot=True))
    conn.push(book_frame(3, snapshot=False))  # 2 is lost: subscribe again
    await trio.testing.wait_all_tasks_blocked()
    assert len(conn.subscribe_batches) == 2
    await trio.sleep(9.99)  # the snapshot never comes (answer_timeout is 10 s)
    assert len(conn.subscribe_batches) == 2
    await trio.sleep(0.02)
    assert len(conn.subscribe_batches) == 3  # asked again
    conn.push(book_frame(9, snapshot=True, bid="101"))
    await trio.sleep(60)
    assert len(conn.subscribe_batches) == 3  # live again: no more
    assert rig.supervisor.stats.resubscribes == 2 and rig.supervisor.stats.resyncs == 1
    assert rig.supervisor.stats.disconnects == 0


async def test_a_reconnect_is_one_log_line_with_a_rounded_delay(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = make_rig(rng=lambda: 0.123456789)
    await nursery.start(rig.supervisor.run)
    await trio.testing.wait_all_tasks_blocked()
    caplog.clear()
    conn = rig.transport.current
    assert conn is not None
    conn.drop()
    await trio.testing.wait_all_tasks_blocked()
    lines = [r for r in caplog.records if r.name == "relay.upstream"]
    assert [r.getMessage() for r in lines] == [
        "upstream sim: connection closed (1006, dropped); retry 1 in 0.1s"
    ]
    assert lines[0].__dict__["retry_in"] == 0.123 and lines[0].__dict__["state"] == "reconnecting"
