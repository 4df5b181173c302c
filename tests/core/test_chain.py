"""Example and property tests for the chain follower: gaps, duplicates, reorgs and lost answers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

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

from relay.core.chain import (
    Block,
    ChainFollower,
    ChainStep,
    Fetch,
    FetchByHash,
    FetchByNumber,
    Link,
    Published,
)

GENESIS_PARENT = "0x" + "0" * 64


def branch(tag: str, first: int, last: int, parent_hash: str) -> list[Block]:
    """Blocks ``first..last`` of a branch whose block ``first`` has parent ``parent_hash``."""
    blocks = []
    for number in range(first, last + 1):
        block = Block(number, f"0x{tag}{number:04d}", parent_hash, {"number": number, "tag": tag})
        blocks.append(block)
        parent_hash = block.hash
    return blocks


# The main chain, indexed by number, and branches forking off it.
A = branch("a", 0, 100, GENESIS_PARENT)


def fork(tag: str, ancestor: Block, last: int) -> dict[int, Block]:
    """A branch on ``ancestor`` up to ``last``, by number."""
    return {b.number: b for b in branch(tag, ancestor.number + 1, last, ancestor.hash)}


def follower_at(last: int, first: int = 0, **kwargs: int) -> ChainFollower:
    """A follower that has published A[first..last]."""
    follower = ChainFollower(**kwargs)
    follower.on_head(A[first])
    for number in range(first + 1, last + 1):
        assert follower.on_head(A[number]) == ChainStep([Published(A[number], Link.EXTENDS)], None)
    return follower


def links(step: ChainStep) -> list[tuple[int, str, Link]]:
    return [(p.block.number, p.block.hash, p.link) for p in step.publish]


def pub(blocks: Iterable[Block], link: Link) -> list[tuple[int, str, Link]]:
    return [(b.number, b.hash, link) for b in blocks]


def window_of(blocks: Iterable[Block]) -> dict[int, str]:
    return {b.number: b.hash for b in blocks}


# --- extending, duplicates, the window ------------------------------------------------------


def test_first_head_restarts_then_heads_extend() -> None:
    follower = ChainFollower()
    assert follower.tip is None and follower.fetching is None and not follower.published
    assert follower.on_head(A[7]) == ChainStep([Published(A[7], Link.RESTART)], None)
    assert follower.on_head(A[8]) == ChainStep([Published(A[8], Link.EXTENDS)], None)
    assert follower.tip == A[8]
    assert dict(follower.published) == window_of(A[7:9])


def test_duplicate_and_too_old_heads_are_ignored() -> None:
    follower = follower_at(10, window=4)
    assert dict(follower.published) == window_of(A[7:11])
    for number in (10, 9, 7):
        assert follower.on_head(A[number]) == ChainStep([], None)
    # Below the window, even a block never published is ignored: clients are past it.
    assert follower.on_head(fork("b", A[4], 6)[6]) == ChainStep([], None)
    assert follower.on_head(A[3]) == ChainStep([], None)
    assert follower.tip == A[10]


def test_a_late_parent_of_the_restart_block_is_not_a_reorg() -> None:
    follower = ChainFollower()
    follower.on_head(A[9])
    assert follower.on_head(A[8]) == ChainStep([], None)
    assert follower.tip == A[9]


def test_window_sizes_are_validated() -> None:
    with pytest.raises(ValueError):
        ChainFollower(window=0)
    with pytest.raises(ValueError):
        ChainFollower(max_backfill=-1)
    with pytest.raises(ValueError):
        ChainFollower(max_buffered=0)


# --- gaps -------------------------------------------------------------------------------------


def test_gap_is_backfilled_by_number_then_the_head_published() -> None:
    follower = follower_at(5, first=3)
    assert follower.on_head(A[8]) == ChainStep([], FetchByNumber(6))
    assert follower.fetching == FetchByNumber(6)
    step = follower.on_fetched(FetchByNumber(6), A[6])
    assert step == ChainStep([Published(A[6], Link.EXTENDS)], FetchByNumber(7))
    step = follower.on_fetched(FetchByNumber(7), A[7])
    assert links(step) == pub(A[7:9], Link.EXTENDS) and step.fetch is None
    assert follower.fetching is None and follower.tip == A[8]


def test_heads_during_a_fetch_are_buffered_and_processed_in_order() -> None:
    follower = follower_at(5)
    follower.on_head(A[7])
    # Buffered: nothing to publish, and no second fetch while one runs.
    for number in (9, 8, 9, 10):
        assert follower.on_head(A[number]) == ChainStep([], None)
    assert follower.buffered == 4 and follower.fetching == FetchByNumber(6)
    step = follower.on_fetched(FetchByNumber(6), A[6])
    assert links(step) == pub(A[6:8], Link.EXTENDS) and step.fetch == FetchByNumber(8)
    step = follower.on_fetched(FetchByNumber(8), A[8])
    assert links(step) == pub(A[8:11], Link.EXTENDS) and step.fetch is None
    assert follower.buffered == 0


def test_a_full_buffer_drops_the_oldest_head_and_the_gap_is_still_filled() -> None:
    follower = follower_at(5, max_buffered=2)
    follower.on_head(A[7])
    for number in (8, 12, 13):
        follower.on_head(A[number])
    assert follower.buffered == 2
    step = follower.on_fetched(FetchByNumber(6), A[6])
    assert links(step) == pub(A[6:8], Link.EXTENDS) and step.fetch == FetchByNumber(8)
    published = links(step)
    while step.fetch is not None:
        assert isinstance(step.fetch, FetchByNumber)
        step = follower.on_fetched(step.fetch, A[step.fetch.number])
        published += links(step)
    assert published == pub(A[6:14], Link.EXTENDS)


def test_a_gap_beyond_max_backfill_restarts_at_the_head() -> None:
    follower = follower_at(10, first=5, max_backfill=3)
    assert follower.on_head(A[14]) == ChainStep([], FetchByNumber(11))
    follower.connection_lost()
    assert follower.on_head(A[15]) == ChainStep([Published(A[15], Link.RESTART)], None)
    assert dict(follower.published) == window_of([A[15]])
    assert follower.on_head(A[16]) == ChainStep([Published(A[16], Link.EXTENDS)], None)


# --- reorgs -----------------------------------------------------------------------------------


def test_reorg_at_the_same_number() -> None:
    follower = follower_at(5, first=2)
    b = fork("b", A[4], 5)
    assert follower.on_head(b[5]) == ChainStep([Published(b[5], Link.REORG)], None)
    assert follower.tip == b[5]
    assert dict(follower.published) == {**window_of(A[2:5]), 5: b[5].hash}
    # The old head again is itself a reorg back.
    assert follower.on_head(A[5]) == ChainStep([Published(A[5], Link.REORG)], None)


def test_reorg_walks_back_by_hash_to_the_common_ancestor() -> None:
    follower = follower_at(8, first=2)
    b = fork("b", A[3], 9)
    assert follower.on_head(b[9]) == ChainStep([], FetchByHash(b[8].hash))
    assert follower.on_fetched(FetchByHash(b[8].hash), b[8]) == ChainStep(
        [], FetchByHash(b[7].hash)
    )
    for number in (7, 6, 5, 4):
        step = follower.on_fetched(FetchByHash(b[number].hash), b[number])
    assert links(step) == pub([b[n] for n in range(4, 10)], Link.REORG) and step.fetch is None
    assert dict(follower.published) == {**window_of(A[2:4]), **window_of(b.values())}


def test_reorg_to_a_shorter_chain_as_after_evm_revert_and_evm_mine() -> None:
    # ganache: snapshot at 7, blocks 8..10 mined, evm_revert to the snapshot, evm_mine: the new
    # head is a new block 8 on block 7, below the tip.
    follower = follower_at(10)
    g = fork("g", A[7], 9)
    assert follower.on_head(g[8]) == ChainStep([Published(g[8], Link.REORG)], None)
    assert follower.tip == g[8]
    assert dict(follower.published) == {**window_of(A[:8]), 8: g[8].hash}
    assert follower.on_head(g[9]) == ChainStep([Published(g[9], Link.EXTENDS)], None)


def test_reorg_discovered_by_a_backfilled_block() -> None:
    follower = follower_at(5, first=1)
    b = fork("b", A[3], 8)
    assert follower.on_head(b[8]) == ChainStep([], FetchByNumber(6))
    # The node's chain changed under the gap: block 6 is on the new branch.
    assert follower.on_fetched(FetchByNumber(6), b[6]) == ChainStep([], FetchByHash(b[5].hash))
    assert follower.on_fetched(FetchByHash(b[5].hash), b[5]) == ChainStep(
        [], FetchByHash(b[4].hash)
    )
    step = follower.on_fetched(FetchByHash(b[4].hash), b[4])
    # The branch up to the backfilled block, then the gap goes on to the head.
    assert links(step) == pub([b[4], b[5], b[6]], Link.REORG) and step.fetch == FetchByNumber(7)
    step = follower.on_fetched(FetchByNumber(7), b[7])
    assert links(step) == pub([b[7], b[8]], Link.EXTENDS) and step.fetch is None


def test_a_reorged_head_at_the_end_of_a_gap_is_walked_too() -> None:
    follower = follower_at(5)
    b = fork("b", A[6], 8)
    assert follower.on_head(b[8]) == ChainStep([], FetchByNumber(6))
    step = follower.on_fetched(FetchByNumber(6), A[6])
    assert step == ChainStep([Published(A[6], Link.EXTENDS)], FetchByNumber(7))
    # The node answers with its old block 7; the head's parent is another block 7.
    step = follower.on_fetched(FetchByNumber(7), A[7])
    assert links(step) == pub([A[7]], Link.EXTENDS) and step.fetch == FetchByHash(b[7].hash)
    step = follower.on_fetched(FetchByHash(b[7].hash), b[7])
    assert links(step) == pub([b[7], b[8]], Link.REORG) and step.fetch is None


def test_a_walk_below_the_window_restarts_at_the_oldest_block_collected() -> None:
    follower = follower_at(8, window=3)
    assert dict(follower.published) == window_of(A[6:9])
    b = fork("b", A[2], 8)
    step = follower.on_head(b[8])
    while step.fetch is not None:
        assert isinstance(step.fetch, FetchByHash)
        assert not step.publish
        step = follower.on_fetched(step.fetch, b[int(step.fetch.hash[-4:])])
    # Block 6's parent is older than the window, so the fork is not verified: clients restart.
    assert links(step) == [
        (6, b[6].hash, Link.RESTART),
        (7, b[7].hash, Link.REORG),
        (8, b[8].hash, Link.REORG),
    ]
    assert dict(follower.published) == window_of([b[6], b[7], b[8]])


# --- answers that are None or wrong -----------------------------------------------------------


def test_none_by_number_abandons_the_gap_and_goes_on_with_buffered_heads() -> None:
    follower = follower_at(5)
    follower.on_head(A[8])
    g = fork("g", A[5], 6)
    follower.on_head(g[6])  # the node reverted: its chain is now shorter than 8
    assert follower.on_fetched(FetchByNumber(6), None) == ChainStep(
        [Published(g[6], Link.EXTENDS)], None
    )
    assert follower.tip == g[6] and follower.buffered == 0


def test_none_by_hash_abandons_the_branch_and_keeps_the_chain() -> None:
    follower = follower_at(6)
    b = fork("b", A[3], 6)
    assert follower.on_head(b[6]) == ChainStep([], FetchByHash(b[5].hash))
    assert follower.on_fetched(FetchByHash(b[5].hash), None) == ChainStep([], None)
    assert follower.tip == A[6] and dict(follower.published) == window_of(A[:7])
    # A later head of the old chain just extends it.
    assert follower.on_head(A[7]) == ChainStep([Published(A[7], Link.EXTENDS)], None)


B = fork("b", A[3], 6)


def in_a_gap() -> ChainFollower:
    """A follower waiting for block 6 by number."""
    follower = follower_at(5)
    follower.on_head(A[8])
    assert follower.fetching == FetchByNumber(6)
    return follower


def in_a_walk() -> ChainFollower:
    """A follower waiting for block B[5] by hash."""
    follower = follower_at(6)
    follower.on_head(B[6])
    assert follower.fetching == FetchByHash(B[5].hash)
    return follower


@pytest.mark.parametrize(
    ("setup", "fetch", "block"),
    [
        (in_a_gap, FetchByNumber(7), A[7]),  # not the outstanding fetch
        (in_a_gap, FetchByHash(A[6].hash), A[6]),  # not the outstanding fetch
        (in_a_gap, FetchByNumber(6), A[7]),  # the wrong number
        (in_a_walk, FetchByNumber(5), A[5]),  # not the outstanding fetch
        (in_a_walk, FetchByHash(B[5].hash), B[4]),  # the wrong hash
        (in_a_walk, FetchByHash(B[5].hash), Block(3, B[5].hash, A[2].hash)),  # the wrong number
    ],
)
def test_wrong_answers_raise_and_change_nothing(
    setup: Callable[[], ChainFollower], fetch: Fetch, block: Block
) -> None:
    follower = setup()
    before = (follower.tip, follower.fetching, dict(follower.published), follower.buffered)
    with pytest.raises(ValueError):
        follower.on_fetched(fetch, block)
    assert (follower.tip, follower.fetching, dict(follower.published), follower.buffered) == before
    # The right answer still goes through.
    assert follower.fetching is not None
    follower.on_fetched(follower.fetching, None)
    assert follower.fetching is None


def test_an_answer_with_nothing_outstanding_raises() -> None:
    follower = follower_at(5)
    with pytest.raises(ValueError, match="no fetch"):
        follower.on_fetched(FetchByNumber(6), A[6])


def test_a_wrong_answer_by_hash_can_be_followed_by_the_right_one() -> None:
    follower = follower_at(6)
    b = fork("b", A[3], 6)
    follower.on_head(b[6])
    impostor = Block(3, b[5].hash, b[4].hash)
    with pytest.raises(ValueError, match="number"):
        follower.on_fetched(FetchByHash(b[5].hash), impostor)
    assert follower.fetching == FetchByHash(b[5].hash)
    step = follower.on_fetched(FetchByHash(b[5].hash), b[5])
    assert step.fetch == FetchByHash(b[4].hash)


# --- heights and lost connections -------------------------------------------------------------


def test_on_height_backfills_up_to_the_nodes_height() -> None:
    follower = ChainFollower(max_backfill=5)
    assert follower.on_height(9) == ChainStep([], None)  # nothing to link a backfill to yet
    follower.on_head(A[4])
    assert follower.on_height(4) == ChainStep([], None)
    assert follower.on_height(2) == ChainStep([], None)
    assert follower.on_height(6) == ChainStep([], FetchByNumber(5))
    assert follower.on_height(7) == ChainStep([], None)  # buffered
    step = follower.on_fetched(FetchByNumber(5), A[5])
    assert step == ChainStep([Published(A[5], Link.EXTENDS)], FetchByNumber(6))
    step = follower.on_fetched(FetchByNumber(6), A[6])
    assert step == ChainStep([Published(A[6], Link.EXTENDS)], FetchByNumber(7))
    step = follower.on_fetched(FetchByNumber(7), A[7])
    assert step == ChainStep([Published(A[7], Link.EXTENDS)], None)


def test_on_height_beyond_max_backfill_restarts_at_that_height() -> None:
    follower = follower_at(4, max_backfill=5)
    assert follower.on_height(20) == ChainStep([], FetchByNumber(20))
    assert follower.on_fetched(FetchByNumber(20), A[20]) == ChainStep(
        [Published(A[20], Link.RESTART)], None
    )


def test_connection_lost_keeps_the_chain_and_the_next_head_backfills() -> None:
    follower = follower_at(5)
    b = fork("b", A[3], 6)
    follower.on_head(b[6])
    follower.on_head(A[9])
    follower.connection_lost()
    assert follower.fetching is None and follower.buffered == 0
    assert follower.tip == A[5] and dict(follower.published) == window_of(A[:6])
    with pytest.raises(ValueError):
        follower.on_fetched(FetchByHash(b[5].hash), b[5])
    # The branch walked before is forgotten: the new connection's head starts afresh.
    assert follower.on_head(A[8]) == ChainStep([], FetchByNumber(6))
    follower.on_fetched(FetchByNumber(6), A[6])
    step = follower.on_fetched(FetchByNumber(7), A[7])
    assert links(step) == pub(A[7:9], Link.EXTENDS)


# --- property: one chain, announced with skips and repeats ------------------------------------


@settings(max_examples=200)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=30),
    st.integers(0, 5),
    st.integers(1, 8),
)
def test_heads_of_one_chain_publish_every_block_once(
    steps: list[int], max_backfill: int, window: int
) -> None:
    """Heads announced in order with skips (step > 1) and repeats (step 0), fetches answered at
    once: every block from the first head on is published once, unless a skip is too long."""
    follower = ChainFollower(window=window, max_backfill=max_backfill)
    number = 0
    expected: list[tuple[int, str, Link]] = []
    published: list[tuple[int, str, Link]] = []
    for i, step in enumerate(steps):
        previous, number = number, number + step
        if i == 0 or number - previous - 1 > max_backfill:
            expected.append((number, A[number].hash, Link.RESTART))
        else:
            expected += pub(A[previous + 1 : number + 1], Link.EXTENDS)
        chain_step = follower.on_head(A[number])
        published += links(chain_step)
        while chain_step.fetch is not None:
            assert isinstance(chain_step.fetch, FetchByNumber)
            chain_step = follower.on_fetched(chain_step.fetch, A[chain_step.fetch.number])
            published += links(chain_step)
    assert published == expected
    assert follower.tip == A[number]


# --- stateful: a model node that mines, reorganizes and answers late --------------------------


class Node:
    """A node's block tree: every block ever made (for answers by hash) and its canonical chain
    (for answers by number and its head)."""

    def __init__(self) -> None:
        genesis = Block(0, "0x0", GENESIS_PARENT, {"number": 0})
        self.blocks: dict[str, Block] = {genesis.hash: genesis}
        self.canonical: list[Block] = [genesis]
        self.highest = 0

    @property
    def head(self) -> Block:
        return self.canonical[-1]

    def mine(self) -> Block:
        parent = self.head
        made = len(self.blocks)
        block = Block(parent.number + 1, f"0x{made:x}", parent.hash, {"made": made})
        self.blocks[block.hash] = block
        self.canonical.append(block)
        self.highest = max(self.highest, block.number)
        return block

    def reorganize(self, ancestor: int, length: int) -> None:
        del self.canonical[ancestor + 1 :]
        for _ in range(length):
            self.mine()

    def answer(self, fetch: Fetch) -> Block | None:
        if isinstance(fetch, FetchByNumber):
            return self.canonical[fetch.number] if fetch.number < len(self.canonical) else None
        return self.blocks.get(fetch.hash)


class Client:
    """A client applying the published stream, checking that each block links as documented."""

    def __init__(self) -> None:
        self.chain: list[Block] = []

    def apply(self, published: Published) -> None:
        block = published.block
        if published.link is Link.RESTART:
            self.chain = [block]
            return
        assert self.chain, "the first block must be a RESTART"
        first, last = self.chain[0], self.chain[-1]
        if published.link is Link.EXTENDS:
            assert block.number == last.number + 1 and block.parent_hash == last.hash
            self.chain.append(block)
            return
        # REORG: the parent is the block the client holds one below. (Stricter than "when it
        # holds it": a fork the follower cannot verify must come as a RESTART.)
        assert first.number < block.number <= last.number + 1
        assert self.chain[block.number - 1 - first.number].hash == block.parent_hash
        del self.chain[block.number - first.number :]
        self.chain.append(block)


class ChainMachine(RuleBasedStateMachine):
    """A node that mines, reorganizes within the window, announces some of its heads (and stale
    ones), answers fetches from its state at answer time, and drops the connection."""

    node: Node
    follower: ChainFollower

    @initialize(
        window=st.integers(1, 6), max_backfill=st.integers(0, 6), max_buffered=st.integers(1, 4)
    )
    def setup(self, window: int, max_backfill: int, max_buffered: int) -> None:
        self.node = Node()
        self.window = window
        self.max_buffered = max_buffered
        self.follower = ChainFollower(window, max_backfill, max_buffered)
        self.client = Client()

    def receive(self, step: ChainStep) -> None:
        for published in step.publish:
            assert self.node.blocks[published.block.hash] == published.block
            self.client.apply(published)

    def feed(self, event: Block | int) -> None:
        outstanding = self.follower.fetching
        if isinstance(event, Block):
            step = self.follower.on_head(event)
        else:
            step = self.follower.on_height(event)
        if outstanding is not None:
            assert step == ChainStep([], None)
            assert self.follower.fetching == outstanding
        else:
            assert self.follower.fetching == step.fetch
        self.receive(step)

    def answer(self, block: Block | None) -> None:
        fetch = self.follower.fetching
        assert fetch is not None
        step = self.follower.on_fetched(fetch, block)
        assert self.follower.fetching == step.fetch
        self.receive(step)

    @rule(count=st.integers(1, 3))
    def mine_silently(self, count: int) -> None:
        for _ in range(count):
            self.node.mine()

    @rule()
    def mine_and_announce(self) -> None:
        self.feed(self.node.mine())

    @rule(data=st.data())
    def reorganize(self, data: st.DataObject) -> None:
        # The fork is less than a window below the highest block ever: so the final head is
        # never below the follower's window, whatever stale branch it was shown meanwhile.
        lowest = max(0, self.node.highest - self.window + 1)
        ancestor = data.draw(st.integers(lowest, self.node.head.number), label="ancestor")
        self.node.reorganize(ancestor, data.draw(st.integers(1, 4), label="length"))

    @rule()
    def announce_head(self) -> None:
        self.feed(self.node.head)

    @rule(data=st.data())
    def announce_an_old_block(self, data: st.DataObject) -> None:
        self.feed(data.draw(st.sampled_from(list(self.node.blocks.values())), label="old"))

    @rule()
    def probe_height(self) -> None:
        self.feed(self.node.head.number)

    @precondition(lambda self: self.follower.fetching is not None)
    @rule()
    def answer_fetch(self) -> None:
        fetch = self.follower.fetching
        assert fetch is not None
        self.answer(self.node.answer(fetch))

    @precondition(lambda self: self.follower.fetching is not None)
    @rule()
    def answer_none(self) -> None:
        self.answer(None)

    @precondition(lambda self: self.follower.fetching is not None)
    @rule()
    def answer_wrongly(self) -> None:
        fetch = self.follower.fetching
        assert fetch is not None
        if isinstance(fetch, FetchByNumber):
            wrong = Block(fetch.number + 1, "0xbad", GENESIS_PARENT)
        else:
            wrong = Block(0, "0xbad", GENESIS_PARENT)
        before = (self.follower.tip, dict(self.follower.published), self.follower.buffered)
        with pytest.raises(ValueError):
            self.follower.on_fetched(fetch, wrong)
        after = (self.follower.tip, dict(self.follower.published), self.follower.buffered)
        assert after == before and self.follower.fetching == fetch

    @rule()
    def lose_connection(self) -> None:
        self.follower.connection_lost()
        assert self.follower.fetching is None and self.follower.buffered == 0

    @rule()
    def settle(self) -> None:
        """The node stops changing, announces its head, and answers everything truthfully: the
        client must end up holding the node's canonical chain, up to its head."""
        self.feed(self.node.head)
        for _ in range(10_000):
            if self.follower.fetching is None:
                break
            self.answer_fetch()
        assert self.follower.fetching is None, "the follower kept fetching"
        assert self.client.chain[-1] == self.node.head
        first = self.client.chain[0].number
        assert self.client.chain == self.node.canonical[first:]

    @invariant()
    def follower_agrees_with_the_client(self) -> None:
        chain = self.client.chain
        assert self.follower.tip == (chain[-1] if chain else None)
        # The window is the top of the client's chain: all of it, up to `window` blocks, except
        # that a reorg shortens it until the chain grows back.
        published = dict(self.follower.published)
        assert 0 < len(published) <= self.window or not chain
        assert published == window_of(chain[-len(published) :] if published else [])
        assert self.follower.buffered <= self.max_buffered
        if self.follower.fetching is None:
            assert self.follower.buffered == 0

    def teardown(self) -> None:
        # Settle at the end of every run too, unless a step already failed (its error is the one
        # to report, not this check's).
        if hasattr(self, "follower") and sys.exc_info()[0] is None:
            self.settle()


ChainMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
test_chain_machine = ChainMachine.TestCase


def test_a_height_backfill_stops_at_the_height() -> None:
    follower = follower_at(4, max_backfill=5)
    assert follower.on_height(6) == ChainStep([], FetchByNumber(5))
    assert follower.on_fetched(FetchByNumber(5), A[5]).fetch == FetchByNumber(6)
    assert follower.on_fetched(FetchByNumber(6), A[6]) == ChainStep(
        [Published(A[6], Link.EXTENDS)], None
    )
    assert follower.fetching is None


@pytest.mark.parametrize(("height", "fetch"), [(10, 5), (11, 11)])
def test_a_height_exactly_max_backfill_ahead_is_backfilled_one_more_restarts(
    height: int, fetch: int
) -> None:
    """From tip 4, height 10 leaves 5 blocks missing (5..9): exactly max_backfill."""
    follower = follower_at(4, max_backfill=5)
    assert follower.on_height(height) == ChainStep([], FetchByNumber(fetch))


def test_a_wrong_answer_is_refused_with_what_was_asked_and_what_came() -> None:
    follower = follower_at(4, max_backfill=5)
    follower.on_height(6)
    with pytest.raises(ValueError) as other_fetch:
        follower.on_fetched(FetchByNumber(9), A[9])
    assert str(other_fetch.value) == (
        "answer to FetchByNumber(number=9), but FetchByNumber(number=5) is outstanding"
    )
    with pytest.raises(ValueError) as other_block:
        follower.on_fetched(FetchByNumber(5), A[6])
    assert str(other_block.value) == "asked for block 5, got block 6"
    walking = follower_at(5)
    fetch = walking.on_head(fork("b", A[3], 6)[6]).fetch
    assert fetch == FetchByHash("0xb0005")
    with pytest.raises(ValueError) as other_hash:
        walking.on_fetched(fetch, A[5])
    assert str(other_hash.value) == "asked for block 0xb0005, got block 0xa0005"
