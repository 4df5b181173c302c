"""Channel names: the source part, and the shell-style patterns of tiers and backpressure rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.channels import matches_any, source_of


@pytest.mark.parametrize(
    ("channel", "source"),
    [
        ("sim:trades:BTC-USD", "sim"),
        ("eth:blocks", "eth"),
        ("kraken:book:XBT/USD:extra", "kraken"),
        ("nocolon", "nocolon"),
        (":trades", ""),
    ],
)
def test_the_source_is_everything_before_the_first_colon(channel: str, source: str) -> None:
    assert source_of(channel) == source


@given(st.text(alphabet=st.characters(blacklist_characters=":")), st.text())
def test_any_source_comes_back_from_its_channel(source: str, rest: str) -> None:
    assert source_of(f"{source}:{rest}") == source


@pytest.mark.parametrize(
    ("channel", "patterns", "expected"),
    [
        ("sim:trades:BTC-USD", ["sim:*"], True),
        ("sim:trades:BTC-USD", ("*:ticker:*", "sim:trades:*"), True),
        ("sim:trades:BTC-USD", ["*:ticker:*"], False),
        ("sim:trades:BTC-USD", [], False),
        ("SIM:trades:BTC-USD", ["sim:*"], False),  # case matters, on every platform
        ("sim:trades:BTC-USD", ["sim:trades:BTC-USD"], True),
        ("sim:trades:BTC-USD", ["sim:trades:BTC-US?"], True),
        ("sim:trades:BTC-USD", ["sim:trades"], False),
    ],
)
def test_a_channel_matches_when_any_pattern_does(
    channel: str, patterns: list[str] | tuple[str, ...], expected: bool
) -> None:
    assert matches_any(channel, patterns) is expected
