"""ChannelMirrors: a cluster node relays a channel only while its view is consistent."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.cluster_wire import (
    HEADER_SIZE,
    ClusterKeys,
    decode_join_answer,
    decode_message,
    encode_message,
    envelope_parts,
)
from relay.core.mirror import ChannelMirrors, Phase, Resynced, Verdict
from relay.core.protocol import encode_envelope


def live(channel: str = "c", seq: int = 10) -> ChannelMirrors:
    mirrors = ChannelMirrors()
    assert mirrors.follow(channel) is True
    assert mirrors.joined(channel, seq) is True
    return mirrors


def test_a_cold_channel_drops_until_its_first_join_answer() -> None:
    mirrors = ChannelMirrors()
    mirrors.follow("c")
    assert mirrors.follow("c") is False
    assert (mirrors.phase("c"), mirrors.live("c"), "c" in mirrors) == (Phase.COLD, False, True)
    assert mirrors.live("other") is False
    assert mirrors.message("c", 1) is Verdict.DROP
    assert mirrors.joined("c", 4) is True
    assert (mirrors.phase("c"), mirrors.seq("c")) == (Phase.LIVE, 4)
    assert mirrors.message("c", 5) is Verdict.RELAY
    assert mirrors.seq("c") == 5


def test_duplicates_are_dropped_and_a_skip_asks_for_a_resync() -> None:
    mirrors = live()
    assert mirrors.message("c", 10) is Verdict.DROP
    assert mirrors.message("c", 9) is Verdict.DROP
    assert mirrors.message("c", 12) is Verdict.RESYNC
    assert mirrors.phase("c") is Phase.RESYNCING
    assert mirrors.resync_from("c") == 10
    assert mirrors.message("c", 13) is Verdict.DROP
    assert mirrors.joined("c", 14) is False  # a client's join waits for the resync
    assert mirrors.resynced("c", 13, [b"11", b"12", b"13"]) == Resynced([b"11", b"12", b"13"], 0)
    assert (mirrors.phase("c"), mirrors.seq("c")) == (Phase.LIVE, 13)
    assert mirrors.message("c", 14) is Verdict.RELAY


def test_a_resync_without_the_whole_history_counts_what_is_lost() -> None:
    mirrors = live()
    mirrors.message("c", 15)
    assert mirrors.resynced("c", 15, None) == Resynced(None, 5)
    mirrors.message("c", 20)
    assert mirrors.resynced("c", 20, [b"x"]) == Resynced(None, 5)
    assert mirrors.resynced("c", 20, []) is None  # not resynchronizing
    mirrors.interrupted("c")
    # Nothing was lost after all: the answer is at the seq already relayed.
    assert mirrors.resynced("c", 20, []) == Resynced([], 0)


def test_an_interrupted_subscription_resyncs_only_live_channels() -> None:
    mirrors = live()
    mirrors.follow("cold")
    assert mirrors.interrupted("cold") is False
    assert mirrors.interrupted("gone") is False
    assert mirrors.live("c") is True
    assert mirrors.interrupted("c") is True
    assert (mirrors.phase("c"), mirrors.live("c")) == (Phase.RESYNCING, False)
    assert mirrors.interrupted("c") is False
    assert sorted(mirrors.followed()) == ["c", "cold"]


def test_unfollowed_channels_are_forgotten() -> None:
    mirrors = live()
    mirrors.unfollow("c")
    mirrors.unfollow("c")
    assert ("c" in mirrors, mirrors.phase("c"), mirrors.seq("c")) == (False, None, 0)
    assert mirrors.message("c", 11) is Verdict.DROP
    assert mirrors.joined("c", 11) is False
    assert mirrors.resynced("c", 11, None) is None


def test_a_join_answer_ahead_of_the_node_is_taken_as_the_truth() -> None:
    mirrors = live(seq=10)
    assert mirrors.joined("c", 10) is True and mirrors.seq("c") == 10
    assert mirrors.joined("c", 12) is True and mirrors.seq("c") == 12
    assert mirrors.joined("c", 11) is True and mirrors.seq("c") == 12


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=60))
def test_what_is_relayed_is_consecutive_whatever_arrives(arrivals: list[int]) -> None:
    """Any order, duplicates and gaps: relayed seqs go up by one; a gap stops relaying until
    the resync's answer, which covers it."""
    mirrors = live(seq=0)
    relayed: list[int] = []
    for seq in arrivals:
        verdict = mirrors.message("c", seq)
        if verdict is Verdict.RELAY:
            relayed.append(seq)
        elif verdict is Verdict.RESYNC:
            start = mirrors.resync_from("c")
            answer = mirrors.resynced("c", seq, [b""] * (seq - start))
            assert answer == Resynced([b""] * (seq - start), 0)
            relayed.extend(range(start + 1, seq + 1))
    assert relayed == list(range(1, len(relayed) + 1))


def test_messages_round_trip_with_and_without_state() -> None:
    payload = b'{"channel":"c","seq":3}'
    header, tail = encode_message(3, 99, payload, True, None)
    assert len(header) == HEADER_SIZE and tail == b""
    decoded = decode_message(header + payload)
    assert (decoded.seq, decoded.ts, decoded.snapshot, decoded.payload, decoded.state) == (
        3,
        99,
        True,
        payload,
        None,
    )
    header, tail = encode_message(4, 100, payload, False, payload)
    decoded = decode_message(header + payload + tail)
    assert tail == b"" and decoded.state == payload and decoded.snapshot is False
    header, tail = encode_message(5, 101, payload, False, b"STATE")
    decoded = decode_message(header + payload + tail)
    assert (tail, decoded.state, decoded.flags) == (b"STATE", b"STATE", 0)
    header, _ = encode_message(6, 102, b"", False, None)
    assert decode_message(header).payload == b""


def test_a_short_or_truncated_message_is_refused() -> None:
    with pytest.raises(ValueError, match=f"at least {HEADER_SIZE} bytes, got 3"):
        decode_message(b"abc")
    header, _ = encode_message(1, 1, b"12345", False, None)
    with pytest.raises(ValueError, match="said to be 5 bytes, 2 came"):
        decode_message(header + b"12")


def test_join_answers_are_read_as_lua_writes_them() -> None:
    answer = decode_join_answer(
        b'{"id":"j1","channels":[{"channel":"a","seq":3,"ts":7,"snap":"S","missed":{}},'
        b'{"channel":"b","seq":0,"ts":0,"snap":false,"missed":false},'
        b'{"channel":"c","seq":2,"ts":1,"snap":false,"missed":["x","y"]}]}'
    )
    assert answer.join == "j1"
    a, b, c = answer.channels
    assert (a.channel, a.seq, a.ts, a.state, a.missed) == ("a", 3, 7, b"S", [])
    assert (b.state, b.missed) == (None, None)
    assert c.missed == [b"x", b"y"]
    assert decode_join_answer(b'{"id":"j","channels":{}}').channels == []
    (bare,) = decode_join_answer(
        b'{"id":"j","channels":[{"channel":"d","seq":1,"ts":1,"snap":false}]}'
    ).channels
    assert bare.missed is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not json", "not a join answer: invalid literal"),
        (b'{"channels":[]}', "not a join answer: 'id'"),
        (b'{"id":1,"channels":[]}', "not a join answer: its id is not a string"),
        (b'{"id":"j","channels":5}', "not a join answer: expected a list, got int"),
    ],
)
def test_anything_else_is_not_a_join_answer(data: bytes, why: str) -> None:
    with pytest.raises(ValueError) as refused:
        decode_join_answer(data)
    assert str(refused.value).startswith(why)


def test_keys_live_under_the_prefix() -> None:
    keys = ClusterKeys("p")
    assert (keys.epoch, keys.control, keys.wants_changed, keys.nodes) == (
        "p:epoch",
        "p:ctl",
        "p:wants-changed",
        "p:nodes",
    )
    assert (keys.lease("s"), keys.seqs("s"), keys.wants("s"), keys.node("n")) == (
        "p:lease:s",
        "p:seqs:s",
        "p:wants:s",
        "p:node:n",
    )
    assert (keys.message_prefix(), keys.messages("c")) == ("p:msg:", "p:msg:c")
    assert (keys.state("c"), keys.connections("k")) == ("p:chan:c", "p:conns:k")


@given(
    st.text(min_size=1, max_size=20),
    st.integers(min_value=0, max_value=2**53),
    st.integers(min_value=1, max_value=2**53),
    st.dictionaries(
        st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=3
    ),
    st.booleans(),
)
def test_the_parts_around_a_seq_are_the_envelope(
    channel: str, ts: int, seq: int, data: dict[str, object], snapshot: bool
) -> None:
    head, tail = envelope_parts(channel, ts, orjson.dumps(data), snapshot)
    assert head + str(seq).encode() + tail == encode_envelope(channel, seq, ts, data, snapshot)
