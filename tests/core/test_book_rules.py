"""What exchanges add to the book sync: deltas that cover a range of update ids (Binance),
books kept to a depth and verified by a checksum (Kraken)."""

from __future__ import annotations

import itertools
import zlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.book import OrderBook
from relay.core.gaps import BookStep, BookSync, GapDetector, SyncState, Verdict
from relay.core.model import Update

CHANNEL = "x:book:BTC-USDT"
SYMBOL = "BTC-USDT"

Side = list[list[str]]


def delta(first: int, last: int, bids: Side, asks: Side, checksum: int | None = None) -> Update:
    data: dict[str, Any] = {"symbol": SYMBOL, "bids": bids, "asks": asks, "ts": last}
    return Update(CHANNEL, data, last, False, first_seq=first, checksum=checksum)


def snapshot(seq: int, bids: Side, asks: Side, checksum: int | None = None) -> Update:
    data: dict[str, Any] = {"symbol": SYMBOL, "bids": bids, "asks": asks, "ts": seq}
    return Update(CHANNEL, data, seq, True, checksum=checksum)


# --- ranges ---------------------------------------------------------------------------------


@given(st.integers(0, 50), st.lists(st.tuples(st.integers(-6, 6), st.integers(0, 6))))
def test_range_classification_follows_the_documented_rule(
    start: int, batches: list[tuple[int, int]]
) -> None:
    """In order when the batch covers the next id, stale when it ends at or before the last
    id accepted, a gap when it starts beyond the next id (Binance: U <= last + 1 <= u)."""
    detector = GapDetector(start)
    last = start
    for offset, length in batches:
        first = last + 1 + offset
        end = first + length
        verdict = detector.observe(end) if first == end else detector.classify(end, first)
        if end <= last:
            assert verdict is Verdict.STALE
        elif first <= last + 1:
            assert verdict is Verdict.IN_ORDER
        else:
            assert verdict is Verdict.GAP
        if verdict is not Verdict.STALE:
            detector.reset(end)
            last = end


def test_buffered_ranges_merge_with_a_snapshot_as_binance_documents() -> None:
    sync = BookSync(CHANNEL, SYMBOL)
    for first, last, price in ((1, 3, "1"), (4, 6, "2"), (7, 9, "3")):
        assert sync.on_delta(delta(first, last, [[price, "1"]], [])) == BookStep([], False)
    # lastUpdateId 5: [1..3] is dropped, [4..6] is the first applied (4 <= 6 <= 6), then [7..9].
    step = sync.on_snapshot(snapshot(5, [["9", "1"]], []))
    assert sync.live and sync.last_seq == 9
    (published,) = step.publish
    assert published.data["bids"] == [["9", "1"], ["3", "1"], ["2", "1"]]
    assert sync.on_delta(delta(10, 12, [["4", "1"]], [])).publish[0].seq == 12
    assert sync.on_delta(delta(14, 15, [["5", "1"]], [])) == BookStep([], True)  # 13 is lost


@st.composite
def batched_histories(draw: st.DrawFn) -> tuple[list[Update], list[Side], int, int]:
    """Single-level updates 1..n grouped into batches as an exchange sends them, the book of
    bids after each id, a batch lost in the middle and the id a snapshot is taken at."""
    n = draw(st.integers(4, 30))
    prices = [str(draw(st.integers(1, 8))) for _ in range(n)]
    sizes = [draw(st.sampled_from(["0", "1", "2.5"])) for _ in range(n)]
    books: list[Side] = []
    book = OrderBook()
    for price, size in zip(prices, sizes, strict=True):
        book.apply_delta([[price, size]], [])
        books.append(book.levels()[0])
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=n))))
    bounds = [0, *cuts, n]
    batches = [
        delta(a + 1, b, [[p, s] for p, s in zip(prices[a:b], sizes[a:b], strict=True)], [])
        for a, b in itertools.pairwise(bounds)
    ]
    lost = draw(st.integers(0, len(batches) - 1))
    taken = draw(st.integers(0, n))
    return batches, books, lost, taken


@settings(max_examples=200)
@given(batched_histories())
def test_ranges_through_a_gap_and_a_snapshot_end_at_the_exchanges_book(
    scenario: tuple[list[Update], list[Side], int, int],
) -> None:
    batches, books, lost, taken = scenario
    n = len(books)
    sync = BookSync(CHANNEL, SYMBOL)
    sync.on_snapshot(snapshot(0, [], []))
    for i, batch in enumerate(batches):
        if i != lost:
            sync.on_delta(batch)
    if lost == len(batches) - 1 and sync.live:
        # The last batch was lost and nothing came after it: nothing shows the gap yet.
        return
    state_book = books[taken - 1] if taken else []
    step = sync.on_snapshot(snapshot(taken, state_book, []))
    lost_first, lost_last = batches[lost].first_seq, batches[lost].seq
    assert lost_first is not None and lost_last is not None
    if taken < lost_last:
        # Older than what the lost batch covered: another snapshot is needed.
        assert step.fetch_snapshot or sync.live
        step = sync.on_snapshot(snapshot(n, books[-1], []))
    assert sync.live
    assert sync.book.levels()[0] == books[-1]


# --- depth and checksum ---------------------------------------------------------------------


def crc(bids: Side, asks: Side) -> int:
    """A checksum of the top levels, in the spirit of Kraken's (what matters here is that it
    depends on every level the book should hold)."""
    text = "".join(p + s for p, s in asks[:10]) + "|" + "".join(p + s for p, s in bids[:10])
    return zlib.crc32(text.encode())


class Client:
    """Applies what the relay publishes, as protocol.md tells clients to."""

    def __init__(self) -> None:
        self.book = OrderBook()

    def apply(self, step: BookStep) -> None:
        for update in step.publish:
            if update.snapshot:
                self.book.apply_snapshot(update.data["bids"], update.data["asks"])
            else:
                self.book.apply_delta(update.data["bids"], update.data["asks"])


def test_levels_pushed_past_the_depth_are_published_as_removed() -> None:
    sync = BookSync(CHANNEL, SYMBOL, depth=2)
    client = Client()
    client.apply(sync.on_snapshot(snapshot(1, [["10", "1"], ["9", "1"]], [["11", "1"]])))
    step = sync.on_delta(delta(2, 2, [["10.5", "2"]], []))
    (published,) = step.publish
    assert published.data["bids"] == [["10.5", "2"], ["9", "0"]]
    client.apply(step)
    assert (
        sync.book.levels() == client.book.levels() == ([["10.5", "2"], ["10", "1"]], [["11", "1"]])
    )


def test_a_checksum_mismatch_stops_the_book_until_it_is_repaired() -> None:
    sync = BookSync(CHANNEL, SYMBOL, depth=10, checksum=crc)
    bids, asks = [["10", "1"]], [["11", "1"]]
    assert sync.on_snapshot(snapshot(1, bids, asks, crc(bids, asks))).publish
    good = crc([["10", "2"]], asks)
    assert sync.on_delta(delta(2, 2, [["10", "2"]], [], checksum=good)).publish
    bad = sync.on_delta(delta(3, 3, [["10", "3"]], [], checksum=good))
    assert bad == BookStep([], True) and sync.state is SyncState.RESYNCING
    assert sync.state_data() is None
    # A snapshot that fails its own checksum is not adopted either.
    assert sync.on_snapshot(snapshot(9, bids, asks, checksum=0)) == BookStep([], True)
    adopted = sync.on_snapshot(snapshot(9, bids, asks, crc(bids, asks)))
    assert adopted.publish and sync.live


levels = st.lists(
    st.tuples(st.integers(1, 30).map(str), st.sampled_from(["0", "1", "2"])).map(list),
    max_size=6,
)


@settings(max_examples=200)
@given(st.integers(1, 5), levels, levels, st.lists(st.tuples(levels, levels), max_size=25))
def test_a_book_kept_to_a_depth_is_the_clients_and_passes_the_checksum(
    depth: int, snap_bids: Side, snap_asks: Side, deltas: list[tuple[Side, Side]]
) -> None:
    """The exchange's model: apply, then truncate to the depth. Every update carries the
    model's checksum; the relay must agree with all of them, and its clients with it."""
    model = OrderBook()
    model.apply_snapshot(snap_bids, snap_asks)
    model.truncate(depth)
    sync = BookSync(CHANNEL, SYMBOL, depth=depth, checksum=crc)
    client = Client()
    step = sync.on_snapshot(snapshot(0, snap_bids, snap_asks, crc(*model.levels())))
    client.apply(step)
    for seq, (bids, asks) in enumerate(deltas, start=1):
        model.apply_delta(bids, asks)
        model.truncate(depth)
        step = sync.on_delta(delta(seq, seq, bids, asks, checksum=crc(*model.levels())))
        assert not step.fetch_snapshot, "a correct book must pass every checksum"
        client.apply(step)
        assert sync.book.levels() == model.levels() == client.book.levels()
