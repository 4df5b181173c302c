"""The field readers every adapter shares (relay/adapters/wire.py): what each accepts, and the
exact error it gives for what it refuses, since that text is all the log says of a bad frame."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.adapters.wire import (
    describe,
    field_decimal,
    field_int,
    field_levels,
    field_object,
    load_object,
    source_name,
)
from relay.core.model import UpstreamFormatError


def error_of(read: Any, *args: Any) -> str:
    with pytest.raises(UpstreamFormatError) as caught:
        read(*args)
    return str(caught.value)


# describe ----------------------------------------------------------------------------------------


@given(st.one_of(st.text(max_size=200), st.integers(), st.lists(st.integers(), max_size=40)))
def test_describe_is_the_repr_up_to_80_characters_and_a_cut_one_beyond(value: object) -> None:
    text = repr(value)
    if len(text) <= 80:
        assert describe(value) == text
    else:
        assert describe(value) == text[:77] + "..."


def test_describe_keeps_exactly_80_and_cuts_81() -> None:
    eighty = "x" * 78  # its repr has the two quotes: 80 characters
    assert describe(eighty) == repr(eighty)
    eighty_one = "x" * 79
    assert describe(eighty_one) == "'" + "x" * 76 + "..."
    assert len(describe(eighty_one)) == 80


# load_object -------------------------------------------------------------------------------------


def test_load_object_reads_an_object_from_text_or_bytes() -> None:
    assert load_object('{"a": [1, "2"]}') == {"a": [1, "2"]}
    assert load_object(b'{"a": null}') == {"a": None}


def test_load_object_names_json_that_does_not_parse() -> None:
    assert error_of(load_object, "{nope").startswith("not JSON: ")


@pytest.mark.parametrize("frame", ["[1]", '"text"', "3", "null"])
def test_load_object_refuses_json_that_is_not_an_object(frame: str) -> None:
    assert error_of(load_object, frame) == "not a JSON object"


# field readers -----------------------------------------------------------------------------------


def test_field_int_accepts_zero_and_names_the_key_and_value_it_refuses() -> None:
    assert field_int({"seq": 0}, "seq") == 0
    assert error_of(field_int, {"seq": -1}, "seq") == "'seq' must be a non-negative integer, got -1"
    assert error_of(field_int, {"seq": True}, "seq") == (
        "'seq' must be a non-negative integer, got True"
    )
    assert error_of(field_int, {}, "id") == "'id' must be a non-negative integer, got None"


def test_field_decimal_keeps_the_text_and_names_what_it_refuses() -> None:
    assert field_decimal({"px": "0.10"}, "px") == "0.10"
    assert error_of(field_decimal, {"px": "1e5"}, "px") == (
        "'px' must be a decimal string, got '1e5'"
    )
    assert error_of(field_decimal, {"px": 1.5}, "px") == "'px' must be a decimal string, got 1.5"


def test_field_object_names_the_key_and_value_it_refuses() -> None:
    assert field_object({"body": {}}, "body") == {}
    assert error_of(field_object, {"body": [1]}, "body") == "'body' must be an object, got [1]"


def test_field_levels_reads_price_size_pairs() -> None:
    assert field_levels({"bids": [["1.5", "0"], ["2", "3.25"]]}, "bids") == [
        ["1.5", "0"],
        ["2", "3.25"],
    ]
    assert field_levels({"bids": []}, "bids") == []


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ({"a": 1}, "'bids' must be a list of [price, size]"),
        ([["1", "2", "3"]], "'bids': a level must be [price, size]"),
        (["1"], "'bids': a level must be [price, size]"),
        ([[1, "2"]], "'bids': bad price 1"),
        ([["-1", "2"]], "'bids': bad price '-1'"),
        ([["1", None]], "'bids': bad size None"),
        ([["1", "2."]], "'bids': bad size '2.'"),
    ],
)
def test_field_levels_names_the_bad_level(levels: object, message: str) -> None:
    assert error_of(field_levels, {"bids": levels}, "bids") == message


def test_source_name_refuses_a_colon() -> None:
    assert source_name("sim") == "sim"
    with pytest.raises(ValueError, match=r"^source name must not contain ':': 'a:b'$"):
        source_name("a:b")
