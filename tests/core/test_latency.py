"""The fan-out latency counts (relay/core/latency.py) export as a Prometheus histogram."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.latency import BOUNDS_MS, LatencyHistogram


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    latency = LatencyHistogram((1, 5, 10))
    for ms in (0, 1, 2, 5, 6, 10, 11, 5000):
        latency.record(ms)
    assert latency.counts == [2, 2, 2, 2]
    assert latency.cumulative() == [(1, 2), (5, 4), (10, 6), (float("inf"), 8)]
    assert latency.sum_ms == 0 + 1 + 2 + 5 + 6 + 10 + 11 + 5000
    assert latency.count == 8


def test_a_negative_wait_counts_as_none() -> None:
    latency = LatencyHistogram((0.5, 1))
    latency.record(-10, 2)
    assert latency.counts == [2, 0, 0] and latency.sum_ms == 0


@given(st.integers(0, 10_000), st.integers(0, 100))
def test_one_record_of_many_writes_is_that_many_records_of_one(ms: int, count: int) -> None:
    """A write round records every write made with the same clock reading at once."""
    many, each = LatencyHistogram(), LatencyHistogram()
    many.record(ms, count)
    for _ in range(count):
        each.record(ms)
    assert (many.counts, many.sum_ms) == (each.counts, each.sum_ms)


@given(st.lists(st.integers(0, 10_000)))
def test_cumulative_counts_are_what_each_bound_covers(values: list[int]) -> None:
    latency = LatencyHistogram()
    for ms in values:
        latency.record(ms)
    expected = [(bound, sum(v <= bound for v in values)) for bound in BOUNDS_MS]
    assert latency.cumulative() == [*expected, (float("inf"), len(values))]
    assert latency.sum_ms == sum(values)


@pytest.mark.parametrize("bounds", [(), (5, 1), (1, 1, 2)])
def test_bounds_must_be_distinct_and_increasing(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match=r"^bounds must be distinct and increasing$"):
        LatencyHistogram(bounds)


def test_quantiles_are_the_upper_bounds_of_their_buckets() -> None:
    histogram = LatencyHistogram((1, 5, 10))
    assert histogram.quantile(0.5) is None
    for ms in (0, 1, 3, 4, 7, 9, 9, 9, 20, 30):
        histogram.record(ms)
    # Cumulative: <=1: 2, <=5: 4, <=10: 8, above: 10.
    assert histogram.quantile(0.2) == 1
    assert histogram.quantile(0.21) == 5
    assert histogram.quantile(0.4) == 5
    assert histogram.quantile(0.5) == 10
    assert histogram.quantile(0.8) == 10
    assert histogram.quantile(0.81) == math.inf
    assert histogram.quantile(1) == math.inf


@pytest.mark.parametrize("q", [0, -0.1, 1.01])
def test_a_quantile_is_a_fraction(q: float) -> None:
    with pytest.raises(ValueError, match=f"a quantile is in \\(0, 1\\], got {q!r}"):
        LatencyHistogram().quantile(q)
