"""The source pipeline: which tracker a channel gets, what a step reports, repairs in flight."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from relay.core.chain import FetchByHash, FetchByNumber
from relay.core.model import RepairKind, StreamKind, Update
from relay.core.source import (
    NO_RULES,
    BookRules,
    FetchItem,
    FetchSnapshot,
    Resubscribe,
    SourcePipeline,
    SourceStep,
)

BOOK = "x:book:A"
TRADES = "x:trades:A"


class Catalogue:
    def __init__(self, book_repair: RepairKind = RepairKind.REST_SNAPSHOT) -> None:
        self.book_repair = book_repair

    def kind(self, channel: str) -> StreamKind | None:
        return StreamKind.BOOK if ":book:" in channel else StreamKind.EVENT

    def repair(self, channel: str) -> RepairKind:
        return self.book_repair if ":book:" in channel else RepairKind.NONE

    def book_rules(self, channel: str) -> BookRules:
        return NO_RULES


def book(seq: int, snapshot: bool = False, bid: str = "1") -> Update:
    data: dict[str, Any] = {"symbol": "A", "bids": [[bid, "1"]], "asks": [], "ts": seq}
    return Update(BOOK, data, seq, snapshot)


def trade(seq: int) -> Update:
    return Update(TRADES, {"trade_id": str(seq)}, seq, False)


def live_pipeline(repair: RepairKind = RepairKind.REST_SNAPSHOT) -> SourcePipeline:
    pipeline = SourcePipeline(Catalogue(repair))
    pipeline.track(BOOK)
    pipeline.track(TRADES)
    assert pipeline.on_update(book(1, snapshot=True)).publish == [book(1, snapshot=True)]
    return pipeline


def test_events_are_published_and_gaps_reported_once() -> None:
    pipeline = live_pipeline()
    assert pipeline.on_update(trade(1)) == SourceStep(publish=[trade(1)])
    assert pipeline.on_update(trade(4)) == SourceStep(publish=[trade(4)], gaps=[TRADES])
    assert pipeline.on_update(trade(5)) == SourceStep(publish=[trade(5)])


def test_untracked_channels_publish_nothing() -> None:
    pipeline = live_pipeline()
    pipeline.untrack(TRADES)
    assert pipeline.on_update(trade(1)) == SourceStep()


def test_a_book_gap_names_one_repair_until_it_is_answered() -> None:
    pipeline = live_pipeline()
    gap = pipeline.on_update(book(3))
    assert gap == SourceStep(repairs=[FetchSnapshot(BOOK)], gaps=[BOOK])
    assert pipeline.state(BOOK) is None  # stale: a new subscriber must not get it
    assert pipeline.on_update(book(4)) == SourceStep()  # buffered, no second repair
    assert pipeline.wants(FetchSnapshot(BOOK))
    repaired = pipeline.on_repaired(FetchSnapshot(BOOK), book(3, snapshot=True, bid="2"))
    assert repaired.resynced == [BOOK] and repaired.repairs == []
    assert [u.seq for u in repaired.publish] == [4]
    assert not pipeline.wants(FetchSnapshot(BOOK))
    state = pipeline.state(BOOK)
    assert state is not None and state["ts"] == 4


def test_a_snapshot_older_than_the_buffer_names_the_same_repair_again() -> None:
    pipeline = live_pipeline()
    pipeline.on_update(book(5))
    again = pipeline.on_repaired(FetchSnapshot(BOOK), book(2, snapshot=True))
    assert again == SourceStep(repairs=[FetchSnapshot(BOOK)])
    assert pipeline.wants(FetchSnapshot(BOOK))


def test_a_rejected_snapshot_keeps_the_repair_in_flight() -> None:
    pipeline = live_pipeline()
    pipeline.on_update(book(5))
    bad = Update(BOOK, {"bids": [["x", "1"]], "asks": [], "ts": 1}, 4, True)
    with pytest.raises(ValueError):
        pipeline.on_repaired(FetchSnapshot(BOOK), bad)
    assert pipeline.wants(FetchSnapshot(BOOK))


@pytest.mark.parametrize("end", ["untrack", "connection_lost"])
def test_answers_for_a_channel_or_connection_that_went_are_ignored(end: str) -> None:
    pipeline = live_pipeline()
    pipeline.on_update(book(5))
    if end == "untrack":
        pipeline.untrack(BOOK)
    else:
        pipeline.connection_lost()
    assert not pipeline.wants(FetchSnapshot(BOOK))
    assert pipeline.on_repaired(FetchSnapshot(BOOK), book(4, snapshot=True)) == SourceStep()


def test_a_book_without_a_snapshot_of_its_own_fetches_the_first_one() -> None:
    """Binance sends no book snapshot over the WebSocket: buffer, then fetch (its docs)."""
    pipeline = SourcePipeline(Catalogue())
    pipeline.track(BOOK)
    assert pipeline.on_update(book(3)) == SourceStep(repairs=[FetchSnapshot(BOOK)])
    assert pipeline.on_update(book(4)) == SourceStep()  # one fetch at a time
    first = pipeline.on_repaired(FetchSnapshot(BOOK), book(3, snapshot=True))
    assert [u.seq for u in first.publish] == [4] and first.resynced == []  # not a resync


def test_a_book_whose_snapshot_on_subscribe_is_lost_subscribes_again() -> None:
    """Coinbase and Kraken send the book's snapshot first: a delta before any means it was
    lost, and the book would wait forever (only buffering) without a repair."""
    pipeline = SourcePipeline(Catalogue(RepairKind.RESUBSCRIBE))
    pipeline.track(BOOK)
    assert pipeline.on_update(book(3)) == SourceStep(repairs=[Resubscribe(BOOK)])
    assert pipeline.on_update(book(4)) == SourceStep()  # under way
    assert pipeline.on_update(book(9, snapshot=True)).publish
    assert not pipeline.wants(Resubscribe(BOOK))


def test_resubscribe_sources_resync_from_their_own_snapshot() -> None:
    pipeline = live_pipeline(RepairKind.RESUBSCRIBE)
    assert pipeline.on_update(book(3)).repairs == [Resubscribe(BOOK)]
    assert pipeline.on_update(book(4)) == SourceStep()  # the repair is under way
    assert pipeline.wants(Resubscribe(BOOK))  # until the book is live again
    resynced = pipeline.on_update(book(10, snapshot=True))
    assert resynced.resynced == [BOOK] and resynced.publish[0].seq == 10
    assert not pipeline.wants(Resubscribe(BOOK))


# --- chains -----------------------------------------------------------------------------------

BLOCKS = "x:blocks"


class ChainCatalogue:
    def kind(self, channel: str) -> StreamKind | None:
        return StreamKind.STATE

    def repair(self, channel: str) -> RepairKind:
        return RepairKind.BACKFILL

    def book_rules(self, channel: str) -> BookRules:
        return NO_RULES


def block(number: int, fork: str = "a") -> Update:
    def hash_of(n: int) -> str:
        return f"{fork if n > 3 else 'a'}{n}"

    data = {"number": number, "hash": hash_of(number), "parent_hash": hash_of(number - 1)}
    return Update(BLOCKS, data, number, False)


def chain_pipeline() -> SourcePipeline:
    pipeline = SourcePipeline(ChainCatalogue())
    pipeline.track(BLOCKS)
    first = pipeline.on_update(block(1))
    assert first.publish == [attrs.evolve(block(1), snapshot=True)]  # start from here
    return pipeline


def test_a_chain_gap_is_backfilled_item_by_item() -> None:
    pipeline = chain_pipeline()
    gap = pipeline.on_update(block(4))
    assert gap == SourceStep(repairs=[FetchItem(BLOCKS, FetchByNumber(2))])
    step = pipeline.on_repaired(FetchItem(BLOCKS, FetchByNumber(2)), block(2))
    assert step == SourceStep(publish=[block(2)], repairs=[FetchItem(BLOCKS, FetchByNumber(3))])
    assert pipeline.on_repaired(FetchItem(BLOCKS, FetchByNumber(3)), block(3)).publish == [
        block(3),
        block(4),
    ]


def test_a_reorg_is_published_flagged() -> None:
    pipeline = chain_pipeline()
    for n in (2, 3, 4, 5):
        pipeline.on_update(block(n))
    walk = pipeline.on_update(block(5, fork="b"))
    assert walk.repairs == [FetchItem(BLOCKS, FetchByHash("b4"))]
    step = pipeline.on_repaired(walk.repairs[0], block(4, fork="b"))
    assert step.publish == [
        attrs.evolve(block(4, fork="b"), reorg=True),
        attrs.evolve(block(5, fork="b"), reorg=True),
    ]


def test_a_chain_answer_that_does_not_fit_keeps_the_repair() -> None:
    pipeline = chain_pipeline()
    repair = pipeline.on_update(block(3)).repairs[0]
    with pytest.raises(ValueError):
        pipeline.on_repaired(repair, block(5))
    assert pipeline.wants(repair)


def test_a_chain_outlives_its_connection_but_not_its_channel() -> None:
    pipeline = chain_pipeline()
    pipeline.on_update(block(4))  # a backfill in flight when the connection goes
    pipeline.connection_lost()
    assert not pipeline.wants(FetchItem(BLOCKS, FetchByNumber(2)))
    pipeline.track(BLOCKS)  # the next connection subscribes again
    assert pipeline.on_update(block(3)).repairs == [FetchItem(BLOCKS, FetchByNumber(2))]
    assert pipeline.on_head(BLOCKS, 9).publish == []  # buffered behind the fetch
    pipeline.untrack(BLOCKS)
    pipeline.track(BLOCKS)  # a channel unsubscribed and subscribed again starts over
    assert pipeline.on_update(block(7)).publish[0].snapshot


def test_a_missing_snapshot_answer_keeps_the_fetch_in_flight() -> None:
    pipeline = live_pipeline()
    pipeline.on_update(book(5))
    with pytest.raises(ValueError, match=f"^no snapshot of {BOOK}$"):
        pipeline.on_repaired(FetchSnapshot(BOOK), None)
    assert pipeline.wants(FetchSnapshot(BOOK))


def test_a_resubscribe_answered_without_a_snapshot_is_done_with() -> None:
    """The shell answers a resubscription once it sent it; the snapshot comes on the feed."""
    pipeline = SourcePipeline(Catalogue(RepairKind.RESUBSCRIBE))
    pipeline.track(BOOK)
    assert pipeline.on_update(book(3)).repairs == [Resubscribe(BOOK)]
    assert pipeline.on_repaired(Resubscribe(BOOK), None) == SourceStep()
    assert not pipeline.wants(Resubscribe(BOOK))


def test_a_book_with_no_repair_only_waits_for_the_upstreams_snapshot() -> None:
    pipeline = SourcePipeline(Catalogue(RepairKind.NONE))
    pipeline.track(BOOK)
    assert pipeline.on_update(book(3)) == SourceStep()
    assert pipeline.on_update(book(4)) == SourceStep()
    assert [u.seq for u in pipeline.on_update(book(3, snapshot=True)).publish] == [4]


def test_a_head_for_a_channel_with_no_chain_is_nothing() -> None:
    pipeline = live_pipeline()
    assert pipeline.on_head(BLOCKS, 9) == SourceStep()
    assert pipeline.on_head(TRADES, 9) == SourceStep()


def test_a_block_without_a_number_is_refused() -> None:
    pipeline = chain_pipeline()
    numberless = Update(BLOCKS, {"hash": "a2", "parent_hash": "a1"}, None, False)
    with pytest.raises(ValueError, match=r"^block on 'x:blocks' without a number$"):
        pipeline.on_update(numberless)
    assert pipeline.on_update(block(2)).publish == [block(2)]


class RulesCatalogue(Catalogue):
    def __init__(self, rules: BookRules) -> None:
        super().__init__()
        self.rules = rules

    def book_rules(self, channel: str) -> BookRules:
        assert channel == "x:book:BTC-USD"
        return self.rules


def test_a_book_gets_its_symbol_depth_and_checksum_from_its_channel_and_rules() -> None:
    channel = "x:book:BTC-USD"
    rules = BookRules(depth=1, checksum=lambda bids, asks: len(bids) + len(asks))
    pipeline = SourcePipeline(RulesCatalogue(rules))
    pipeline.track(channel)
    levels = {"bids": [["2", "1"], ["1", "1"]], "asks": [["3", "1"]], "ts": 1}
    (published,) = pipeline.on_update(Update(channel, levels, 1, True)).publish
    assert published.data == {
        "symbol": "BTC-USD",
        "bids": [["2", "1"]],  # kept to the depth
        "asks": [["3", "1"]],
        "ts": 1,
    }
    delta = {"bids": [["2.5", "1"]], "asks": [], "ts": 2}
    wrong = Update(channel, delta, 2, False, checksum=3)  # 2 levels after it, not 3
    assert pipeline.on_update(wrong).repairs == [FetchSnapshot(channel)]


def test_a_resync_while_a_fetch_is_in_flight_names_no_second_fetch() -> None:
    pipeline = live_pipeline()
    assert pipeline.on_update(book(3)).repairs == [FetchSnapshot(BOOK)]
    # The upstream's own snapshot comes meanwhile, older than the buffered delta: the book
    # needs a newer one, which the fetch in flight will bring.
    assert pipeline.on_update(book(1, snapshot=True)) == SourceStep()
    assert pipeline.wants(FetchSnapshot(BOOK))


def test_the_state_of_a_channel_without_a_book_is_none() -> None:
    pipeline = live_pipeline()
    assert pipeline.state(TRADES) is None and pipeline.state("x:book:B") is None
    assert pipeline.state(BOOK) is not None


def test_untracked_channels_of_every_kind_are_forgotten() -> None:
    pipeline = live_pipeline()
    pipeline.untrack(BOOK)
    assert pipeline.state(BOOK) is None and pipeline.on_update(book(2)) == SourceStep()
    chains = chain_pipeline()
    chains.untrack(BLOCKS)
    assert chains.on_update(block(2)) == SourceStep() and chains.on_head(BLOCKS, 9) == SourceStep()
    chains.track(BLOCKS)
    chains.on_update(block(1))
    chains.connection_lost()  # resting: the next connection would go on from block 1
    chains.untrack(BLOCKS)  # but the channel went meanwhile
    chains.track(BLOCKS)
    assert chains.on_update(block(7)).publish == [attrs.evolve(block(7), snapshot=True)]


def test_a_head_ahead_of_the_chain_backfills_up_to_it() -> None:
    pipeline = chain_pipeline()
    step = pipeline.on_head(BLOCKS, 3)
    assert step == SourceStep(repairs=[FetchItem(BLOCKS, FetchByNumber(2))])
    assert pipeline.wants(FetchItem(BLOCKS, FetchByNumber(2)))
    answered = pipeline.on_repaired(FetchItem(BLOCKS, FetchByNumber(2)), block(2))
    assert answered.publish == [block(2)]
    assert not pipeline.wants(FetchItem(BLOCKS, FetchByNumber(2)))


def test_a_block_the_node_no_longer_has_ends_the_repair() -> None:
    pipeline = chain_pipeline()
    repair = pipeline.on_update(block(3)).repairs[0]
    assert pipeline.on_repaired(repair, None) == SourceStep()
    assert not pipeline.wants(repair)


def test_a_resubscription_answered_with_a_stale_snapshot_resubscribes_again() -> None:
    pipeline = live_pipeline(RepairKind.RESUBSCRIBE)
    assert pipeline.on_update(book(3)).repairs == [Resubscribe(BOOK)]
    step = pipeline.on_repaired(Resubscribe(BOOK), book(1, snapshot=True))
    assert step == SourceStep(repairs=[Resubscribe(BOOK)])
