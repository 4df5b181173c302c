"""Publish bodies are checked whole, and ``{key}`` patterns give each key its own channels."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.channels import matches_any
from relay.core.protocol import Refusal
from relay.core.publish import MAX_PUBLICATIONS, Publication, parse_publications, personal_patterns


def test_one_message_or_a_list() -> None:
    assert parse_publications(b'{"channel":"app:a","data":{"x":1}}') == [
        Publication("app:a", {"x": 1})
    ]
    assert parse_publications(b'[{"channel":"app:a","data":{}},{"channel":"app:b","data":{}}]') == [
        Publication("app:a", {}),
        Publication("app:b", {}),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "nothing to publish"),
        (b"5", 'expected {"channel": ..., "data": {...}}'),
        (b'{"data":{}}', "'channel' must be a non-empty string"),
        (b'{"channel":"","data":{}}', "'channel' must be a non-empty string"),
        (b'{"channel":"app:a","data":[1]}', "'data' must be a JSON object"),
        (b'{"channel":"app:a"}', "'data' must be a JSON object"),
        (b'[{"channel":"app:a","data":{}}, {"channel":7,"data":{}}]', "item 1: 'channel'"),
        (b'{"channel":"' + b"a" * 201 + b'","data":{}}', "at most 200 characters"),
    ],
)
def test_a_bad_body_is_refused_whole(body: bytes, message: str) -> None:
    with pytest.raises(Refusal) as refused:
        parse_publications(body)
    assert (refused.value.status, refused.value.code) == (400, "bad_request")
    assert message in refused.value.message


def test_a_batch_is_bounded() -> None:
    items = [{"channel": "app:a", "data": {}}] * (MAX_PUBLICATIONS + 1)
    with pytest.raises(Refusal, match="at most 1000 messages"):
        parse_publications(orjson.dumps(items))
    assert len(parse_publications(orjson.dumps(items[:MAX_PUBLICATIONS]))) == MAX_PUBLICATIONS


def test_key_placeholders_are_replaced() -> None:
    assert personal_patterns(["user:{key}:*", "sim:*"], "alice") == ("user:alice:*", "sim:*")


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


@given(names, names, st.text(max_size=8))
def test_a_key_reads_its_own_channels_and_no_one_elses(me: str, other: str, rest: str) -> None:
    mine = personal_patterns(["user:{key}:*"], me)
    if ":" in me:
        assert mine == ()
        return
    assert matches_any(f"user:{me}:{rest}", mine)
    if other != me and ":" not in other:
        # Whatever the names hold (*, ?, [), one key's pattern never matches the channels of
        # another key that has private channels.
        assert not matches_any(f"user:{other}:{rest}", mine)
