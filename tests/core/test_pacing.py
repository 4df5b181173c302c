"""When the write rounds write (relay/core/pacing.py): settle while the ingest keeps
publishing, write at once when it stops, rest only in proportion to a real backlog."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.pacing import RoundPacer


def settle_ticks(
    pacer: RoundPacer, counts: list[int], start: int = 0, tick_seconds: float = 0.001
) -> int:
    """How many ticks the pacer settles, the ingest's count being ``counts[i]`` after tick i
    (the last count repeats when the list runs out), each tick lasting ``tick_seconds``."""
    now = 0.0
    pacer.settle(start, now)
    tick = 0
    while True:
        count = counts[min(tick, len(counts) - 1)] if counts else start
        tick += 1
        if pacer.tick(count, now + tick * tick_seconds):
            return tick


def test_a_lone_message_is_released_after_the_quiet_ticks() -> None:
    assert settle_ticks(RoundPacer(), [5], start=5) == 2
    assert settle_ticks(RoundPacer(quiet_ticks=1), [5], start=5) == 1
    assert settle_ticks(RoundPacer(quiet_ticks=3), [5], start=5) == 3


def test_a_burst_still_arriving_is_waited_for() -> None:
    # Published a message in each of the first four ticks, then nothing.
    assert settle_ticks(RoundPacer(), [1, 2, 3, 4], start=0) == 6


def test_a_never_ending_stream_is_cut_at_the_bound_in_time() -> None:
    counts = list(range(1, 1000))
    assert settle_ticks(RoundPacer(max_settle=0.010), counts, tick_seconds=0.001) == 10
    assert settle_ticks(RoundPacer(max_settle=0.050), counts, tick_seconds=0.001) == 50
    assert settle_ticks(RoundPacer(max_settle=0.050), counts, tick_seconds=0.0002) == 250


def test_slow_ticks_reach_the_bound_in_fewer_of_them() -> None:
    """In a reconnect storm one tick runs thousands of handshake steps: a message in each of
    them must not hold the round back for hundreds of such ticks."""
    counts = list(range(1, 1000))
    assert settle_ticks(RoundPacer(max_settle=0.050), counts, tick_seconds=0.5) == 1
    assert settle_ticks(RoundPacer(max_settle=0.050), counts, tick_seconds=0.02) == 3


def test_each_settle_starts_afresh() -> None:
    pacer = RoundPacer(quiet_ticks=2, max_settle=0.005)
    assert settle_ticks(pacer, [1, 2, 3, 4, 5, 6]) == 5
    assert settle_ticks(pacer, [6], start=6) == 2
    assert settle_ticks(pacer, [7, 8, 9, 10, 11, 12], start=6) == 5


@given(
    quiet=st.integers(1, 4),
    bound=st.integers(1, 30),
    changes=st.lists(st.booleans(), max_size=40),
)
def test_settling_ends_at_the_first_quiet_run_or_the_bound(
    quiet: int, bound: int, changes: list[bool]
) -> None:
    """Against a direct reading of the rule: the round starts at the first tick that ends
    ``quiet`` unchanged ticks in a row, or at the tick that reaches the bound (``bound``
    ticks of 1 ms each), whichever comes first."""
    counts, count = [], 0
    for changed in changes:
        count += changed
        counts.append(count)
    pacer = RoundPacer(quiet_ticks=quiet, max_settle=bound / 1000 - 1e-9)
    got = settle_ticks(pacer, counts)
    run, expected = 0, None
    for tick in range(1, bound + 1):
        same = tick > len(changes) or not changes[tick - 1]
        run = run + 1 if same else 0
        if run >= quiet or tick >= bound:
            expected = tick
            break
    assert got == expected


def test_release_counts_the_messages_since_the_previous_round() -> None:
    pacer = RoundPacer()
    assert pacer.release(1) == 1
    assert pacer.release(1) == 0  # a round of replies alone
    assert pacer.release(9) == 8


def test_no_rest_after_a_round_of_one_message_or_none() -> None:
    pacer = RoundPacer(pacing=0.5, full_batch=4)
    assert pacer.rest(0.010, 1) == 0.0
    assert pacer.rest(0.010, 0) == 0.0
    assert pacer.rest(0.0, 10) == 0.0
    assert pacer.rest(-0.001, 10) == 0.0  # a clock that stepped back is no cost


def test_the_rest_grows_with_the_backlog_up_to_the_pacing() -> None:
    pacer = RoundPacer(pacing=0.5, full_batch=4)
    assert pacer.rest(0.012, 2) == pytest.approx(0.012 * 0.5 / 3)
    assert pacer.rest(0.012, 3) == pytest.approx(0.012 * 0.5 * 2 / 3)
    assert pacer.rest(0.012, 4) == pytest.approx(0.006)
    assert pacer.rest(0.012, 400) == pytest.approx(0.006)
    assert RoundPacer(pacing=1.0, full_batch=2).rest(0.01, 2) == pytest.approx(0.01)


@given(
    cost=st.floats(-1, 1, allow_nan=False),
    batch=st.integers(0, 100),
    more=st.integers(0, 100),
    pacing=st.floats(0, 2, allow_nan=False),
    full=st.integers(2, 20),
)
def test_the_rest_is_bounded_and_never_shrinks_as_the_backlog_grows(
    cost: float, batch: int, more: int, pacing: float, full: int
) -> None:
    pacer = RoundPacer(pacing=pacing, full_batch=full)
    rest = pacer.rest(cost, batch)
    assert 0.0 <= rest <= max(cost, 0.0) * pacing
    assert pacer.rest(cost, batch + more) >= rest
    if batch >= full:
        assert rest == pytest.approx(max(cost, 0.0) * pacing)


@pytest.mark.parametrize(
    "kwargs",
    [{"quiet_ticks": 0}, {"max_settle": 0}, {"pacing": -0.1}, {"full_batch": 1}],
)
def test_settings_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RoundPacer(**kwargs)  # type: ignore[arg-type]
