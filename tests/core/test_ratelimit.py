"""The per-connection token bucket, directly: refill over time, the threshold, strikes and
``abusive``, and the constructor's checks; and against an exact model of it."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.ratelimit import TokenBucket


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0.0, 1), (-1.0, 1), (1.0, 0), (1.0, -3), (0.0, 0)],
)
def test_the_constructor_refuses_a_rate_that_is_not_positive_or_a_burst_under_one(
    rate: float, burst: int
) -> None:
    with pytest.raises(ValueError, match=r"^rate must be > 0 and burst >= 1$"):
        TokenBucket(rate, burst, now=0.0)


def test_the_smallest_valid_bucket_is_accepted_and_keeps_its_settings() -> None:
    bucket = TokenBucket(1e-9, 1, now=5.0)
    assert (bucket.rate, bucket.burst, bucket.strikes) == (1e-9, 1, 0)
    assert not bucket.abusive


@pytest.mark.parametrize("burst", [1, 2, 7])
def test_a_new_bucket_is_full_a_burst_passes_at_once_and_the_next_is_refused(burst: int) -> None:
    bucket = TokenBucket(1.0, burst, now=100.0)
    assert all(bucket.take(100.0) for _ in range(burst))
    assert not bucket.take(100.0)
    assert bucket.strikes == 1


def test_one_token_comes_back_every_one_over_rate_seconds() -> None:
    bucket = TokenBucket(4.0, 2, now=0.0)  # a token every 0.25 s (exact in binary)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.125)  # half a token
    assert bucket.take(0.25)  # exactly one token: the threshold is >= 1
    assert not bucket.take(0.25)
    assert bucket.take(0.5)


def test_refused_takes_keep_the_time_already_accrued() -> None:
    """A refusal takes no token, and the fraction accrued before it still counts."""
    bucket = TokenBucket(1.0, 1, now=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(0.5)
    assert not bucket.take(0.75)
    assert bucket.take(1.0)  # 0.5 + 0.25 + 0.25: neither lost nor counted twice
    assert not bucket.take(1.5)
    assert not bucket.take(1.5)
    assert bucket.take(2.0)


def test_an_idle_bucket_refills_only_up_to_its_burst() -> None:
    bucket = TokenBucket(10.0, 3, now=0.0)
    assert all(bucket.take(0.0) for _ in range(3))
    # An hour idle is worth 36,000 tokens at this rate; the bucket holds three.
    assert [bucket.take(3600.0) for _ in range(4)] == [True, True, True, False]


def test_a_clock_that_goes_back_neither_adds_nor_removes_tokens() -> None:
    bucket = TokenBucket(1.0, 2, now=10.0)
    assert bucket.take(10.0)
    assert bucket.take(4.0)  # one token left: a step back must not take it away
    assert not bucket.take(4.0)  # nor give one


def test_strikes_count_refusals_in_a_row_and_abusive_is_burst_of_them() -> None:
    bucket = TokenBucket(1.0, 3, now=0.0)
    assert all(bucket.take(0.0) for _ in range(3))
    for strikes in (1, 2):
        assert not bucket.take(0.0)
        assert (bucket.strikes, bucket.abusive) == (strikes, False)
    assert not bucket.take(0.0)
    assert (bucket.strikes, bucket.abusive) == (3, True)
    assert not bucket.take(0.0)
    assert (bucket.strikes, bucket.abusive) == (4, True)


def test_an_accepted_command_forgives_the_strikes() -> None:
    bucket = TokenBucket(1.0, 2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert bucket.strikes == 1
    assert bucket.take(1.0)
    assert (bucket.strikes, bucket.abusive) == (0, False)
    assert not bucket.take(1.0) and not bucket.take(1.0)
    assert bucket.abusive


def test_a_burst_of_one_is_abusive_at_the_first_refusal() -> None:
    bucket = TokenBucket(1.0, 1, now=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(0.0)
    assert bucket.abusive


class Model:
    """The bucket's definition in exact arithmetic."""

    def __init__(self, rate: Fraction, burst: int, now: Fraction) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = Fraction(burst)
        self.stamp = now
        self.strikes = 0

    def take(self, now: Fraction) -> bool:
        elapsed = now - self.stamp
        self.stamp = now
        self.tokens = min(Fraction(self.burst), self.tokens + elapsed * self.rate)
        if self.tokens >= 1:
            self.tokens -= 1
            self.strikes = 0
            return True
        self.strikes += 1
        return False


@settings(max_examples=300, deadline=None)
@given(
    rate_exp=st.integers(-3, 4),
    burst=st.integers(1, 8),
    steps=st.lists(st.integers(0, 40), max_size=60),
)
def test_the_bucket_matches_its_exact_model(rate_exp: int, burst: int, steps: list[int]) -> None:
    """Rates are powers of two and times multiples of 1/16, so float arithmetic is exact and
    the float bucket must agree with the model on every take, strike and verdict. Steps of zero
    are commands in the same instant."""
    rate = Fraction(2) ** rate_exp
    now = Fraction(1000)
    bucket = TokenBucket(float(rate), burst, float(now))
    model = Model(rate, burst, now)
    for step in steps:
        now += Fraction(step, 16)
        assert bucket.take(float(now)) == model.take(now)
        assert bucket.strikes == model.strikes
        assert bucket.abusive == (model.strikes >= burst)


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(0.1, 50.0), burst=st.integers(2, 50), seconds=st.integers(1, 30))
def test_over_a_long_run_a_hammering_client_gets_its_burst_and_then_the_rate(
    rate: float, burst: int, seconds: int
) -> None:
    """A command every 10 ms: the burst, then the sustained rate, within one token either way
    (float rounding). At most half a token accrues per step and a burst of two or more holds
    it, so no refill is lost to the cap while it hammers (a bucket of one would lose the
    overshoot each time it fills between two commands, as a bucket should)."""
    bucket = TokenBucket(rate, burst, now=0.0)
    accepted = sum(bucket.take(step / 100) for step in range(seconds * 100 + 1))
    ideal = burst + rate * seconds
    assert ideal - 1 <= accepted <= ideal
