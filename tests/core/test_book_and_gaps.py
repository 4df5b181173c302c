"""Property tests for the order book, the gap detector and the snapshot-plus-buffer merge."""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from relay.core.book import OrderBook
from relay.core.gaps import BookStep, BookSync, GapDetector, SyncState, Verdict
from relay.core.model import Update

CHANNEL = "sim:book:BTC-USD"
SYMBOL = "BTC-USD"

Side = list[list[str]]
Levels = tuple[Side, Side]

# A small price grid so deltas keep hitting existing levels, written in several ways so that
# "100", "100.0" and "1.00E+2" must all be recognised as one level.
prices = st.builds(
    lambda n, fmt: fmt.format(n),
    st.integers(1, 12),
    st.sampled_from(["{}", "{}.0", "{}.50", "{}.00"]),
)
nonzero_sizes = st.sampled_from(["1", "2.5", "0.001", "10.10", "7E+1"])
zero_sizes = st.sampled_from(["0", "0.0", "0E-8", "-0"])
sizes = st.one_of(nonzero_sizes, zero_sizes)
sides = st.lists(st.tuples(prices, sizes).map(list), max_size=8)


# --- OrderBook ------------------------------------------------------------------------------


def model_apply(model: dict[Fraction, list[str]], changes: Side) -> None:
    """The protocol's rule, over exact fractions: set absolute sizes, zero removes."""
    for price, size in changes:
        if Fraction(size) == 0:
            model.pop(Fraction(price), None)
        else:
            model[Fraction(price)] = [price, size]


def model_levels(bids: dict[Fraction, list[str]], asks: dict[Fraction, list[str]]) -> Levels:
    return (
        [bids[p] for p in sorted(bids, reverse=True)],
        [asks[p] for p in sorted(asks)],
    )


@given(sides, sides, st.lists(st.tuples(sides, sides), max_size=10))
def test_book_matches_a_model_of_the_protocol(
    snap_bids: Side, snap_asks: Side, deltas: list[tuple[Side, Side]]
) -> None:
    book = OrderBook()
    book.apply_snapshot(snap_bids, snap_asks)
    bids: dict[Fraction, list[str]] = {}
    asks: dict[Fraction, list[str]] = {}
    model_apply(bids, snap_bids)
    model_apply(asks, snap_asks)
    assert book.levels() == model_levels(bids, asks)
    for delta_bids, delta_asks in deltas:
        book.apply_delta(delta_bids, delta_asks)
        model_apply(bids, delta_bids)
        model_apply(asks, delta_asks)
        assert book.levels() == model_levels(bids, asks)


def test_book_keeps_the_source_strings_and_orders_sides() -> None:
    book = OrderBook()
    book.apply_snapshot(
        [["99.5", "1"], ["100.0", "2"], ["98", "0"]], [["101", "3"], ["100.5", "4"]]
    )
    book.apply_delta([["100.00", "5.000"]], [["1.01E+2", "0.0"]])
    assert book.to_data("BTC-USD", 7) == {
        "symbol": "BTC-USD",
        "bids": [["100.00", "5.000"], ["99.5", "1"]],
        "asks": [["100.5", "4"]],
        "ts": 7,
    }


@pytest.mark.parametrize(
    "bad",
    [
        [["1"]],
        [["1", "2", "3"]],
        ["12"],
        [["abc", "1"]],
        [["1", "x"]],
        [["1", "-1"]],
        [["NaN", "1"]],
        [["1", "Infinity"]],
        [[1.5, "1"]],
        [["1", 2]],
    ],
)
def test_book_rejects_malformed_levels_and_stays_unchanged(bad: Any) -> None:
    book = OrderBook()
    book.apply_snapshot([["10", "1"]], [["11", "1"]])
    before = book.levels()
    with pytest.raises(ValueError):
        book.apply_delta([["10", "0"], *bad], [])
    with pytest.raises(ValueError):
        book.apply_snapshot([], bad)
    assert book.levels() == before


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([[1.5, "1"]], "book price must be a decimal string, got 1.5"),
        ([["1", 2]], "book size must be a decimal string, got 2"),
        ([["abc", "1"]], "book price is not a decimal: 'abc'"),
        ([["1", "x"]], "book size is not a decimal: 'x'"),
        ([["NaN", "1"]], "book price must be finite, got 'NaN'"),
        ([["1", "-1"]], "book size must not be negative, got '-1'"),
        ([["1"]], "book level must be a [price, size] pair, got ['1']"),
    ],
)
def test_a_malformed_level_is_refused_with_what_is_wrong_with_it(bad: Any, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        OrderBook().apply_snapshot(bad, [])
    assert str(refused.value) == message


# --- GapDetector ----------------------------------------------------------------------------

# Mostly +1, sometimes a skip forward, a duplicate or a step back.
steps = st.one_of(st.just(1), st.just(1), st.integers(2, 5), st.just(0), st.integers(-4, -1))


@given(st.integers(-5, 1000), st.lists(steps, max_size=60))
def test_detector_flags_exactly_the_gaps(start: int, deltas: list[int]) -> None:
    seqs = [start]
    for step in deltas:
        seqs.append(seqs[-1] + step)
    detector = GapDetector()
    verdicts = [detector.observe(seq) for seq in seqs]
    # The spec, stated over the whole prefix rather than a running "last".
    for i, seq in enumerate(seqs):
        if i == 0:
            expected = Verdict.IN_ORDER
        elif seq <= max(seqs[:i]):
            expected = Verdict.STALE
        elif seq == max(seqs[:i]) + 1:
            expected = Verdict.IN_ORDER
        else:
            expected = Verdict.GAP
        assert verdicts[i] is expected, (i, seqs)
    assert detector.last == max(seqs)


def test_detector_reset_and_classify() -> None:
    detector = GapDetector()
    assert detector.last is None
    assert detector.classify(41) is Verdict.IN_ORDER
    assert detector.last is None
    detector.reset(10)
    assert [detector.observe(s) for s in (11, 11, 13, 12, 14)] == [
        Verdict.IN_ORDER,
        Verdict.STALE,
        Verdict.GAP,
        Verdict.STALE,
        Verdict.IN_ORDER,
    ]
    detector.reset()
    assert detector.observe(3) is Verdict.IN_ORDER


# --- BookSync: helpers ----------------------------------------------------------------------


def ts_of(seq: int) -> int:
    """Upstream event time of the message with sequence ``seq`` in the generated histories."""
    return 1_000_000 + seq


class History:
    """An upstream's full delta sequence and the book after each prefix of it."""

    def __init__(self, initial: Levels) -> None:
        book = OrderBook()
        book.apply_snapshot(*initial)
        self.book = book
        self.books: list[Levels] = [book.levels()]
        self.deltas: list[Update] = [Update(CHANNEL, {}, 0, False)]  # index 0 unused

    def extend(self, bids: Side, asks: Side) -> Update:
        seq = len(self.books)
        self.book.apply_delta(bids, asks)
        self.books.append(self.book.levels())
        data = {"symbol": SYMBOL, "bids": bids, "asks": asks, "ts": ts_of(seq)}
        update = Update(CHANNEL, data, seq, False)
        self.deltas.append(update)
        return update

    def snapshot(self, seq: int) -> Update:
        bids, asks = self.books[seq]
        data = {"symbol": SYMBOL, "bids": bids, "asks": asks, "ts": ts_of(seq)}
        return Update(CHANNEL, data, seq, True)


class Client:
    """A downstream client applying what the sync publishes, checking it could follow it."""

    def __init__(self) -> None:
        self.book = OrderBook()
        self.seq: int | None = None

    def receive(self, step: BookStep) -> None:
        for update in step.publish:
            assert update.channel == CHANNEL
            assert update.seq is not None
            if update.snapshot:
                self.book.apply_snapshot(update.data["bids"], update.data["asks"])
            else:
                assert self.seq is not None and update.seq == self.seq + 1
                self.book.apply_delta(update.data["bids"], update.data["asks"])
            self.seq = update.seq


def check_snapshot_step(step: BookStep, history: History, seq: int) -> None:
    assert not step.fetch_snapshot
    assert len(step.publish) == 1
    (published,) = step.publish
    assert published.snapshot and published.seq == seq
    assert published.data == {
        "symbol": SYMBOL,
        "bids": history.books[seq][0],
        "asks": history.books[seq][1],
        "ts": ts_of(seq),
    }


# --- BookSync: the resync scenario ----------------------------------------------------------


@st.composite
def resync_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    history = History((draw(sides), draw(sides)))
    n = draw(st.integers(2, 20))
    for _ in range(n):
        history.extend(draw(sides), draw(sides))
    first_lost = draw(st.integers(1, n - 1))
    last_lost = draw(st.integers(first_lost, n - 1))
    # After the gap is seen, the rest of the deltas arrive with snapshot answers in between,
    # some too old to use, some newer than anything the WebSocket delivered so far.
    events: list[tuple[str, int]] = [("delta", seq) for seq in range(last_lost + 2, n + 1)]
    for snap in draw(st.lists(st.integers(0, n), max_size=4)):
        events.insert(draw(st.integers(0, len(events))), ("snapshot", snap))
    final = draw(st.integers(last_lost, n))
    return {
        "history": history,
        "n": n,
        "first_lost": first_lost,
        "last_lost": last_lost,
        "events": events,
        "final": final,
    }


@settings(max_examples=150)
@given(resync_scenarios())
def test_resync_yields_the_book_of_the_full_sequence(scenario: dict[str, Any]) -> None:
    history: History = scenario["history"]
    n, first_lost, last_lost = scenario["n"], scenario["first_lost"], scenario["last_lost"]
    sync = BookSync(CHANNEL, SYMBOL)
    client = Client()

    step = sync.on_snapshot(history.snapshot(0))
    check_snapshot_step(step, history, 0)
    client.receive(step)
    for seq in range(1, first_lost):
        step = sync.on_delta(history.deltas[seq])
        assert step == BookStep([history.deltas[seq]], False)
        client.receive(step)

    # The first delta after the lost ones: never applied past the hole, a snapshot is needed.
    step = sync.on_delta(history.deltas[last_lost + 1])
    assert step == BookStep([], True)
    assert sync.state is SyncState.RESYNCING and not sync.live
    live_at: int | None = None
    arrived = last_lost + 1

    for kind, seq in scenario["events"]:
        if kind == "delta":
            arrived = seq
            step = sync.on_delta(history.deltas[seq])
            if live_at is None:
                assert step == BookStep([], False)
            elif seq == live_at + 1:
                assert step == BookStep([history.deltas[seq]], False)
                live_at = seq
            else:
                assert step == BookStep([], False)
        else:
            step = sync.on_snapshot(history.snapshot(seq))
            if live_at is None and seq < last_lost:
                # Older than the first buffered delta: fetch again, keep the buffer.
                assert step == BookStep([], True)
                assert sync.buffered == arrived - last_lost
            elif live_at is None:
                live_at = max(seq, arrived)
                check_snapshot_step(step, history, live_at)
            elif seq <= live_at:
                assert step == BookStep([], False)
            else:
                live_at = seq
                check_snapshot_step(step, history, live_at)
        client.receive(step)
        assert sync.live == (live_at is not None)
        if live_at is not None:
            assert sync.last_seq == live_at
            assert sync.book.levels() == history.books[live_at] == client.book.levels()

    if live_at is None:
        step = sync.on_snapshot(history.snapshot(scenario["final"]))
        check_snapshot_step(step, history, n)
        client.receive(step)
    assert sync.live and sync.buffered == 0 and sync.last_seq == n
    assert sync.book.levels() == history.books[n] == client.book.levels()


# --- BookSync: examples ---------------------------------------------------------------------


def make_history(n: int) -> History:
    history = History(([["100", "1"]], [["101", "1"]]))
    for i in range(1, n + 1):
        history.extend([[str(100 - i), str(i)]], [[str(101 + i), "0" if i % 2 else str(i)]])
    return history


def test_initial_deltas_wait_for_a_snapshot_that_covers_them() -> None:
    history = make_history(8)
    sync = BookSync(CHANNEL, SYMBOL)
    assert sync.last_seq is None
    assert sync.state.value == "awaiting_snapshot"
    for seq in (5, 6, 7):
        assert sync.on_delta(history.deltas[seq]) == BookStep([], False)
    assert sync.buffered == 3
    assert sync.on_snapshot(history.snapshot(3)) == BookStep([], True)
    assert sync.state is SyncState.RESYNCING and sync.buffered == 3
    check_snapshot_step(sync.on_snapshot(history.snapshot(5)), history, 7)
    assert sync.live and sync.buffered == 0


def test_a_hole_inside_the_buffer_needs_a_newer_snapshot() -> None:
    history = make_history(6)
    sync = BookSync(CHANNEL, SYMBOL)
    for seq in (2, 3, 5, 6):
        sync.on_delta(history.deltas[seq])
    assert sync.on_snapshot(history.snapshot(1)) == BookStep([], True)
    check_snapshot_step(sync.on_snapshot(history.snapshot(4)), history, 6)


def test_buffer_overflow_drops_the_oldest_and_forces_a_newer_snapshot() -> None:
    history = make_history(5)
    sync = BookSync(CHANNEL, SYMBOL, max_buffer=2)
    for seq in range(1, 5):
        sync.on_delta(history.deltas[seq])
    assert sync.buffered == 2
    assert sync.on_snapshot(history.snapshot(1)) == BookStep([], True)
    check_snapshot_step(sync.on_snapshot(history.snapshot(2)), history, 4)


def test_reset_keeps_a_stale_book_and_accepts_restarted_numbering() -> None:
    history = make_history(3)
    sync = BookSync(CHANNEL, SYMBOL)
    sync.on_snapshot(history.snapshot(3))
    sync.on_delta(history.deltas[2])  # live and stale: ignored, not buffered
    assert sync.buffered == 0
    sync.reset()
    assert sync.state is SyncState.AWAITING_SNAPSHOT and not sync.live
    assert sync.book.levels() == history.books[3] and sync.last_seq == 3
    # The new connection numbers from scratch.
    restarted = make_history(2)
    sync.on_delta(restarted.deltas[1])
    sync.on_delta(restarted.deltas[2])
    check_snapshot_step(sync.on_snapshot(restarted.snapshot(0)), restarted, 2)


def test_live_snapshots_older_than_the_book_are_ignored_newer_ones_adopted() -> None:
    history = make_history(4)
    sync = BookSync(CHANNEL, SYMBOL)
    sync.on_snapshot(history.snapshot(2))
    assert sync.on_snapshot(history.snapshot(2)) == BookStep([], False)
    assert sync.on_snapshot(history.snapshot(1)) == BookStep([], False)
    check_snapshot_step(sync.on_snapshot(history.snapshot(4)), history, 4)


def test_snapshot_ts_comes_from_the_last_applied_delta_or_the_snapshot() -> None:
    history = make_history(2)
    sync = BookSync(CHANNEL, SYMBOL)
    sync.on_delta(history.deltas[1])
    without_ts = Update(CHANNEL, {"bids": [], "asks": []}, 0, True)
    assert sync.on_snapshot(without_ts).publish[0].data["ts"] == ts_of(1)
    sync.reset()
    with pytest.raises(ValueError, match="ts"):
        sync.on_snapshot(without_ts)
    assert sync.state is SyncState.AWAITING_SNAPSHOT


@pytest.mark.parametrize(
    ("method", "update"),
    [
        ("on_delta", Update("sim:book:ETH-USD", {"bids": []}, 1, False)),
        ("on_delta", Update(CHANNEL, {"bids": []}, None, False)),
        ("on_delta", Update(CHANNEL, {"bids": [], "asks": []}, 1, True)),
        ("on_snapshot", Update(CHANNEL, {"bids": [], "asks": [], "ts": 1}, 1, False)),
        ("on_snapshot", Update(CHANNEL, {"bids": [], "ts": 1}, 1, True)),
        ("on_snapshot", Update(CHANNEL, {"bids": [["x", "1"]], "asks": [], "ts": 1}, 1, True)),
        ("on_delta", Update(CHANNEL, {"bids": [["1", "-2"]]}, 1, False)),
    ],
)
@pytest.mark.parametrize("state", ["awaiting", "live"])
def test_bad_updates_raise_and_change_nothing(method: str, update: Update, state: str) -> None:
    sync = BookSync(CHANNEL, SYMBOL)
    if state == "live":
        sync.on_snapshot(Update(CHANNEL, {"bids": [["1", "1"]], "asks": [], "ts": 1}, 0, True))
    before = (sync.state, sync.last_seq, sync.buffered, sync.book.levels())
    with pytest.raises(ValueError):
        getattr(sync, method)(update)
    assert (sync.state, sync.last_seq, sync.buffered, sync.book.levels()) == before


def test_max_buffer_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BookSync(CHANNEL, SYMBOL, max_buffer=0)


def one_sided(side: str, seq: int, levels: Side) -> Update:
    """A delta that changes one side only: the other key is absent, as upstreams send it."""
    return Update(CHANNEL, {side: levels, "ts": ts_of(seq)}, seq, False)


def live_sync() -> BookSync:
    sync = BookSync(CHANNEL, SYMBOL)
    snapshot = {"bids": [["100", "1"]], "asks": [["101", "1"]], "ts": ts_of(0)}
    sync.on_snapshot(Update(CHANNEL, snapshot, 0, True))
    return sync


@pytest.mark.parametrize(("side", "other"), [("bids", "asks"), ("asks", "bids")])
def test_a_live_one_sided_delta_changes_its_side_only_and_is_published_as_sent(
    side: str, other: str
) -> None:
    sync = live_sync()
    before = dict(zip(("bids", "asks"), sync.book.levels(), strict=True))
    delta = one_sided(side, 1, [["100", "0"], ["101", "0"], ["99", "3"], ["102", "4"]])
    assert sync.on_delta(delta) == BookStep([delta], False)
    after = dict(zip(("bids", "asks"), sync.book.levels(), strict=True))
    assert after[other] == before[other]
    assert after[side] == (
        [["102", "4"], ["99", "3"]] if side == "bids" else [["99", "3"], ["102", "4"]]
    )
    assert sync.last_seq == 1 and sync.state_data() == {
        "symbol": SYMBOL,
        **after,
        "ts": ts_of(1),
    }


@pytest.mark.parametrize(("side", "other"), [("bids", "asks"), ("asks", "bids")])
def test_a_buffered_one_sided_delta_is_replayed_on_its_side_only(side: str, other: str) -> None:
    sync = BookSync(CHANNEL, SYMBOL)
    assert sync.on_delta(one_sided(side, 1, [["100", "5"], ["101", "0"]])) == BookStep([], False)
    assert sync.buffered == 1
    snapshot = {"bids": [["100", "1"]], "asks": [["101", "1"]], "ts": ts_of(0)}
    step = sync.on_snapshot(Update(CHANNEL, snapshot, 0, True))
    (published,) = step.publish
    expected = {"bids": [["100", "1"]], "asks": [["101", "1"]]}
    expected[side] = [["100", "5"]]
    assert published == Update(CHANNEL, {"symbol": SYMBOL, **expected, "ts": ts_of(1)}, 1, True)
    assert published.data[other] == snapshot[other]


@pytest.mark.parametrize(("side", "better"), [("bids", "100.5"), ("asks", "100.5")])
def test_a_one_sided_delta_that_pushes_a_level_past_the_depth_publishes_it_removed(
    side: str, better: str
) -> None:
    sync = BookSync(CHANNEL, SYMBOL, depth=1)
    snapshot = {"bids": [["100", "1"]], "asks": [["101", "1"]], "ts": ts_of(0)}
    sync.on_snapshot(Update(CHANNEL, snapshot, 0, True))
    (published,) = sync.on_delta(one_sided(side, 1, [[better, "2"]])).publish
    pushed_out = snapshot[side][0][0]
    other = "asks" if side == "bids" else "bids"
    assert published.data == {side: [[better, "2"], [pushed_out, "0"]], other: [], "ts": ts_of(1)}
    assert dict(zip(("bids", "asks"), sync.book.levels(), strict=True))[side] == [[better, "2"]]


def test_a_snapshot_without_bids_is_refused_like_one_without_asks() -> None:
    sync = BookSync(CHANNEL, SYMBOL)
    for side in ("bids", "asks"):
        data = {"bids": [], "asks": [], "ts": 1}
        del data[side]
        with pytest.raises(ValueError, match=f"^book snapshot without '{side}'$"):
            sync.on_snapshot(Update(CHANNEL, data, 1, True))
    assert sync.state is SyncState.AWAITING_SNAPSHOT


def test_a_taken_snapshot_is_the_new_state_and_asks_for_nothing() -> None:
    sync = BookSync(CHANNEL, SYMBOL)
    snapshot = {"bids": [["1", "1"]], "asks": [], "ts": 77}
    step = sync.on_snapshot(Update(CHANNEL, snapshot, 3, True))
    assert step.fetch_snapshot is False
    assert sync.state_data() == {"symbol": SYMBOL, "bids": [["1", "1"]], "asks": [], "ts": 77}


def test_buffered_deltas_are_replayed_to_the_depth_and_checked_against_their_checksum() -> None:
    def count(bids: Side, asks: Side) -> int:
        return len(bids) + len(asks)

    snapshot = Update(CHANNEL, {"bids": [["1", "1"]], "asks": [["5", "1"]], "ts": 1}, 1, True)
    better = {"bids": [["2", "1"]], "asks": [["4", "1"]], "ts": 2}
    sync = BookSync(CHANNEL, SYMBOL, depth=1, checksum=count)
    sync.on_delta(Update(CHANNEL, better, 2, False, checksum=2))  # right after the depth cut
    (published,) = sync.on_snapshot(snapshot).publish
    assert (published.data["bids"], published.data["asks"]) == ([["2", "1"]], [["4", "1"]])
    wrong = BookSync(CHANNEL, SYMBOL, depth=1, checksum=count)
    wrong.on_delta(Update(CHANNEL, better, 2, False, checksum=4))
    assert wrong.on_snapshot(snapshot) == BookStep([], True)


def test_an_update_checksum_is_ignored_without_a_checksum_function() -> None:
    sync = live_sync()
    delta = Update(CHANNEL, {"bids": [["99", "1"]], "ts": 5}, 1, False, checksum=12345)
    assert sync.on_delta(delta) == BookStep([delta], False)


@pytest.mark.parametrize("state", ["awaiting", "resyncing"])
@pytest.mark.parametrize("bad", [[["1", "-2"]], [["x", "1"]], [["1"]], "1,2"])
def test_a_malformed_ask_side_is_refused_before_it_is_buffered(state: str, bad: Any) -> None:
    sync = live_sync() if state == "resyncing" else BookSync(CHANNEL, SYMBOL)
    if state == "resyncing":
        assert sync.on_delta(one_sided("bids", 3, [["98", "1"]])) == BookStep([], True)
    before = (sync.state, sync.buffered)
    delta = Update(CHANNEL, {"bids": [["100", "2"]], "asks": bad, "ts": 1}, 5, False)
    with pytest.raises(ValueError):
        sync.on_delta(delta)
    assert (sync.state, sync.buffered) == before


# --- BookSync: stateful ---------------------------------------------------------------------


class BookSyncMachine(RuleBasedStateMachine):
    """An upstream that loses, repeats and re-sends deltas, answers snapshot requests late or
    with stale data, and drops the connection, against a model of the documented rules."""

    history: History
    sync: BookSync

    @initialize(bids=sides, asks=sides, max_buffer=st.integers(1, 6))
    def setup(self, bids: Side, asks: Side, max_buffer: int) -> None:
        self.history = History((bids, asks))
        self.sync = BookSync(CHANNEL, SYMBOL, max_buffer=max_buffer)
        self.client = Client()
        self.state = SyncState.AWAITING_SNAPSHOT
        self.last: int | None = None
        self.buffer: deque[int] = deque(maxlen=max_buffer)

    def deliver(self, seq: int) -> None:
        step = self.sync.on_delta(self.history.deltas[seq])
        expected = BookStep([], False)
        if self.state is SyncState.LIVE:
            assert self.last is not None
            if seq == self.last + 1:
                self.last = seq
                expected = BookStep([self.history.deltas[seq]], False)
            elif seq > self.last + 1:
                self.state = SyncState.RESYNCING
                self.buffer.append(seq)
                expected = BookStep([], True)
        else:
            self.buffer.append(seq)
        assert step == expected
        self.client.receive(step)

    @rule(bids=sides, asks=sides)
    def upstream_sends_a_delta(self, bids: Side, asks: Side) -> None:
        self.history.extend(bids, asks)
        self.deliver(len(self.history.books) - 1)

    @rule(bids=sides, asks=sides)
    def upstream_delta_is_lost(self, bids: Side, asks: Side) -> None:
        self.history.extend(bids, asks)

    @precondition(lambda self: len(self.history.books) > 1)
    @rule(data=st.data())
    def an_old_delta_arrives_again(self, data: st.DataObject) -> None:
        self.deliver(data.draw(st.integers(1, len(self.history.books) - 1)))

    @rule(data=st.data())
    def a_snapshot_arrives(self, data: st.DataObject) -> None:
        seq = data.draw(st.integers(0, len(self.history.books) - 1))
        step = self.sync.on_snapshot(self.history.snapshot(seq))
        if self.state is SyncState.LIVE and self.last is not None and seq <= self.last:
            assert step == BookStep([], False)
            return
        cur, usable = seq, True
        for buffered in self.buffer:
            if buffered <= cur:
                continue
            if buffered != cur + 1:
                usable = False
                break
            cur = buffered
        if usable:
            self.state, self.last = SyncState.LIVE, cur
            self.buffer.clear()
            check_snapshot_step(step, self.history, cur)
            self.client.receive(step)
        else:
            self.state = SyncState.RESYNCING
            assert step == BookStep([], True)

    @rule()
    def connection_drops(self) -> None:
        self.sync.reset()
        self.state = SyncState.AWAITING_SNAPSHOT
        self.buffer.clear()

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.sync.state is self.state
        assert self.sync.buffered == len(self.buffer)
        assert self.sync.last_seq == self.last
        if self.sync.live:
            assert self.last is not None
            assert self.sync.book.levels() == self.history.books[self.last]
            assert self.client.book.levels() == self.history.books[self.last]


BookSyncMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30)
test_book_sync_machine = BookSyncMachine.TestCase
