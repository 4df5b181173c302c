"""The client's sequencing: whatever the relay does to a channel's stream (drops it announces
or not, replays that overlap, reconnects that resume or not), the consumer sees every message
at most once, in order, and every jump announced by a gap."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from relay.client.events import Gap
from relay.client.sequence import ChannelSequencer, Verdict

C = "sim:trades:A"


def test_a_fresh_subscribe_starts_at_the_ack() -> None:
    s = ChannelSequencer()
    assert s.since(C) is None
    assert s.subscribed(C, 41, "e", None) is None
    assert s.message(C, 42, False) is Verdict.DELIVER
    assert s.since(C) == {"seq": 42, "epoch": "e"}


def test_a_recovered_resume_continues_and_a_failed_one_is_a_gap() -> None:
    s = ChannelSequencer()
    s.subscribed(C, 10, "e", None)
    assert s.subscribed(C, 15, "e", True) is None
    assert s.message(C, 11, False) is Verdict.DELIVER
    assert s.subscribed(C, 20, "e", False) == Gap(C, 9, "not_recovered")
    assert s.message(C, 21, False) is Verdict.DELIVER
    # Another epoch: how many were missed is unknowable.
    assert s.subscribed(C, 3, "f", False) == Gap(C, None, "not_recovered")
    assert s.message(C, 3, True) is Verdict.DELIVER


def test_duplicates_and_stale_snapshots_are_dropped() -> None:
    s = ChannelSequencer()
    s.subscribed(C, 5, "e", None)
    assert s.message(C, 5, True) is Verdict.DELIVER
    assert s.message(C, 6, False) is Verdict.DELIVER
    assert s.message(C, 6, False) is Verdict.DUPLICATE
    assert s.message(C, 5, True) is Verdict.DUPLICATE
    assert s.message(C, 9, True) is Verdict.DELIVER  # a newer snapshot replaces everything


def test_a_jump_is_lagged_when_announced_and_sequence_when_not() -> None:
    s = ChannelSequencer()
    s.subscribed(C, 0, "e", None)
    s.message(C, 1, False)
    s.lagged(C, 3)
    assert s.message(C, 5, False) is Verdict.GAP
    assert s.gap(C, 5) == Gap(C, 3, "lagged")
    s.skip_to(C, 5)
    assert s.message(C, 8, False) is Verdict.GAP
    assert s.gap(C, 8) == Gap(C, 2, "sequence")


def test_forget_starts_over() -> None:
    s = ChannelSequencer()
    s.subscribed(C, 3, "e", None)
    s.forget(C)
    assert s.since(C) is None and s.position(C) is None


# A relay stream with everything that can happen to it ----------------------------------------

relay_steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 3)),  # n messages published and sent
        st.tuples(st.just("drop"), st.integers(1, 5)),  # published, dropped for this client
        st.tuples(st.just("lag"), st.integers(1, 5)),  # dropped and announced with lagged
        st.tuples(st.just("replay"), st.integers(1, 4)),  # some already-sent ones again
        st.tuples(st.just("resume"), st.integers(0, 1)),  # reconnect; recovered or not
        st.tuples(st.just("restart"), st.integers(0, 0)),  # a new relay process: new epoch
    ),
    max_size=60,
)


@given(relay_steps)
def test_the_consumer_sees_each_message_once_in_order_and_every_jump_announced(
    steps: list[tuple[str, int]],
) -> None:
    s = ChannelSequencer()
    relay_seq, epoch = 0, 0
    s.subscribed(C, relay_seq, "e0", None)
    delivered: list[tuple[int, int]] = []  # (epoch, seq)
    expected = 1  # the seq the consumer can take without a gap
    announced: int | None = None  # what the last gap said was missed (None: unknown)
    gap_pending = False

    def announce(gap: Gap | None, known_next: int) -> None:
        nonlocal gap_pending, announced, expected
        if gap is not None:
            gap_pending, announced = True, gap.missed
        expected = known_next

    def arrive(seq: int) -> None:
        nonlocal gap_pending, expected
        before = s.position(C)
        verdict = s.message(C, seq, False)
        if verdict is Verdict.GAP:
            assert before is not None and seq > before + 1
            gap = s.gap(C, seq)
            assert gap.missed == seq - before - 1
            s.skip_to(C, seq)
            announce(gap, seq)
            verdict = Verdict.DELIVER
        if verdict is Verdict.DUPLICATE:
            assert (epoch, seq) in delivered or seq < expected
            return
        if seq != expected:
            # Only right after a gap event, which said exactly how many (checked above).
            assert gap_pending and announced == seq - expected
        delivered.append((epoch, seq))
        gap_pending = False
        expected = seq + 1

    for kind, n in steps:
        if kind == "send":
            for _ in range(n):
                relay_seq += 1
                arrive(relay_seq)
        elif kind in ("drop", "lag"):
            relay_seq += n
            if kind == "lag":
                s.lagged(C, n)
        elif kind == "replay":
            for seq in range(max(1, relay_seq - n + 1), relay_seq + 1):
                arrive(seq)
        elif kind == "resume":
            since = s.since(C)
            assert since is not None and since["epoch"] == f"e{epoch}"
            position = int(since["seq"])
            if n == 1:  # recovered: the relay replays everything after since
                assert s.subscribed(C, relay_seq, f"e{epoch}", True) is None
                for seq in range(position + 1, relay_seq + 1):
                    arrive(seq)
            else:
                gap = s.subscribed(C, relay_seq, f"e{epoch}", False)
                assert (gap is None) == (position >= relay_seq)
                assert gap is None or gap.missed == relay_seq - position
                announce(gap, relay_seq + 1)
        else:  # a new relay process: a new epoch, seqs from 1 again
            epoch += 1
            relay_seq = 0
            gap = s.subscribed(C, relay_seq, f"e{epoch}", False)
            assert gap is not None and gap.missed is None
            announce(gap, 1)
    assert len(delivered) == len(set(delivered))
    for (e1, a), (e2, b) in itertools.pairwise(delivered):
        assert e2 > e1 or b > a
