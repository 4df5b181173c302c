"""Publish bodies are checked whole, and ``{key}`` patterns give each key its own channels."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.channels import matches_any
from relay.core.model import StreamKind, Update
from relay.core.protocol import MAX_CHANNEL_NAME, Refusal
from relay.core.publish import (
    MAX_PUBLICATIONS,
    Publication,
    PublishedSource,
    parse_publications,
    personal_patterns,
)


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


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "nothing to publish"),
        (b"5", 'expected {"channel": ..., "data": {...}}'),
        (b"[5]", 'item 0: expected {"channel": ..., "data": {...}}'),
        (b'{"channel":"","data":{}}', "'channel' must be a non-empty string"),
        (b'[{"channel":7,"data":{}}]', "item 0: 'channel' must be a non-empty string"),
        (
            b'{"channel":"' + b"a" * 201 + b'","data":{}}',
            "channel names are at most 200 characters",
        ),
        (
            b'[{"channel":"a","data":{}},{"channel":"' + b"a" * 201 + b'","data":{}}]',
            "item 1: channel names are at most 200 characters",
        ),
        (b'{"channel":"app:a","data":"x"}', "'data' must be a JSON object"),
        (b'[{"channel":"app:a","data":null}]', "item 0: 'data' must be a JSON object"),
    ],
)
def test_a_refusal_names_the_problem_and_only_a_list_item_gets_an_index(
    body: bytes, message: str
) -> None:
    with pytest.raises(Refusal) as refused:
        parse_publications(body)
    assert refused.value.message == message


def test_invalid_json_is_refused_with_the_parser_s_reason() -> None:
    with pytest.raises(Refusal) as refused:
        parse_publications(b'{"channel":')
    try:
        orjson.loads(b'{"channel":')
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
    assert refused.value.message == f"not valid JSON: {reason}"


def test_a_channel_name_of_exactly_the_limit_is_accepted() -> None:
    name = "a" * MAX_CHANNEL_NAME
    body = orjson.dumps({"channel": name, "data": {"x": 1}})
    assert parse_publications(body) == [Publication(name, {"x": 1})]


def test_fnmatch_characters_of_a_key_name_are_escaped_and_nothing_else() -> None:
    assert personal_patterns(["user:{key}:*"], "a*b?c[d]X") == ("user:a[*]b[?]c[[]d]X:*",)


def test_without_a_usable_key_name_key_patterns_are_left_out() -> None:
    patterns = ("user:{key}:*", "sim:*", "{key}")
    assert personal_patterns(patterns, None) == ("sim:*",)
    assert personal_patterns(patterns, "a:b") == ("sim:*",)
    assert personal_patterns(list(patterns), "bob") == ("user:bob:*", "sim:*", "bob")


# PublishedSource ----------------------------------------------------------------------------


def app_source() -> PublishedSource:
    """Made inside each test, so that the test exercises the constructor too."""
    return PublishedSource("app", ["app:state:*"])


@pytest.mark.parametrize(
    ("channel", "kind"),
    [
        ("app:news", StreamKind.EVENT),
        ("app:state:1", StreamKind.STATE),
        ("app:" + "x" * (MAX_CHANNEL_NAME - 4), StreamKind.EVENT),
        ("app:" + "x" * (MAX_CHANNEL_NAME - 3), None),
        ("app:", None),
        ("app", None),
        ("other:news", None),
        ("apps:news", None),
        ("state:app:x", None),
    ],
)
def test_a_published_source_owns_its_name_s_channels(channel: str, kind: StreamKind | None) -> None:
    assert app_source().kind(channel) is kind


def test_state_channels_go_out_as_snapshots_and_others_as_events() -> None:
    source = app_source()
    assert source.update(Publication("app:state:1", {"v": 1})) == Update(
        "app:state:1", {"v": 1}, None, True
    )
    assert source.update(Publication("app:news", {"v": 2})) == Update(
        "app:news", {"v": 2}, None, False
    )
    assert PublishedSource("app").update(Publication("app:state:1", {})).snapshot is False


def test_a_publication_for_another_source_is_a_value_error() -> None:
    with pytest.raises(ValueError) as caught:
        app_source().update(Publication("other:news", {}))
    assert str(caught.value) == "'other:news' is not a channel of source 'app'"


def test_a_published_source_has_no_upstream_to_ask() -> None:
    source = app_source()
    assert source.name == "app"
    assert source.want("app:news") is None
    assert source.unwant("app:news") is None
    assert source.channel_state("app:state:1") is None
