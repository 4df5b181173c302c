"""Following an Ethereum node's chain head: gap-free, reorg-aware, and free of I/O.

A node's ``newHeads`` subscription is not a stream a client can apply blindly. The node announces
only the heads it settles on, so numbers are skipped when it imports several blocks at once or the
subscription lags; it repeats heads; and it switches branches (a reorg, or a test chain's
``evm_revert``), announcing a head whose parent the client never saw. Clients of the relay want
the opposite: every block of the chain in order, and an explicit signal when blocks they hold were
replaced. :class:`ChainFollower` turns the one into the other.

It keeps the hashes of the last few published blocks, which is all it needs to tell an extension
from a reorg and to find where a new branch forks off. What it is missing it asks its caller to
fetch, one block at a time (by number to fill a gap, by hash to walk a new branch back), because
the answer to each fetch decides what to fetch next. Being free of trio, sockets and clocks, it is
driven by the property tests through every interleaving of heads, reorgs, late answers and lost
connections that a model node can produce.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

import attrs


@attrs.frozen
class Block:
    """One block as the follower sees it: its place in the chain, and a payload for clients."""

    number: int
    hash: str
    parent_hash: str
    data: dict[str, Any] = attrs.field(factory=dict)
    """The normalized payload sent to clients. The follower never looks inside it: two blocks are
    the same block when their hashes are equal, whatever a node put in the payload."""


class Link(enum.Enum):
    """How a published block relates to the blocks published before it.

    This is what lets a client apply the stream with no state but the chain it holds.
    """

    EXTENDS = "extends"
    """The block's parent is the previously published block."""
    REORG = "reorg"
    """Part of a new branch: the client drops the block it holds at this number and every block
    above, then takes this one. Its parent is the block the client holds at ``number - 1``."""
    RESTART = "restart"
    """No known continuity with what was published before (the first block ever, a jump over a
    gap larger than ``max_backfill``, or a fork deeper than the window): the client starts over
    from this block."""


@attrs.frozen
class Published:
    """A block to send to clients, with how it links to the ones sent before it."""

    block: Block
    link: Link


@attrs.frozen
class FetchByNumber:
    """Fetch the node's canonical block at ``number`` (``eth_getBlockByNumber``)."""

    number: int


@attrs.frozen
class FetchByHash:
    """Fetch the block with ``hash``, on the canonical chain or not (``eth_getBlockByHash``)."""

    hash: str


Fetch: TypeAlias = FetchByNumber | FetchByHash


@attrs.frozen
class ChainStep:
    """What the caller must do after feeding a :class:`ChainFollower` one event."""

    publish: list[Published]
    """Blocks to publish, in order."""
    fetch: Fetch | None
    """A fetch the caller must now start, and answer with :meth:`ChainFollower.on_fetched`. None
    when there is nothing new to fetch, which includes "an earlier fetch is still running"."""


@attrs.define
class ChainFollower:
    """Turns the heads a node announces into a block sequence clients can trust.

    The published sequence is gap-free: every block either extends the previous one, replaces a
    suffix of what was published with a branch whose parent the client holds (REORG), or tells the
    client to start over (RESTART). The follower does no I/O; it asks for one block at a time and
    holds back new heads while that fetch runs, so the answer is applied to the state that asked
    for it. Malformed answers raise ValueError and leave the follower as it was.
    """

    window: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    """How many of the last published blocks are remembered (number -> hash). A fork below them
    cannot be verified, so it is published as a RESTART."""
    max_backfill: int = attrs.field(default=256, validator=attrs.validators.ge(0))
    """The largest gap filled block by block; past it, clients are better served by a RESTART at
    the new head than by a burst of old blocks."""
    max_buffered: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    """How many heads (and height probes) are held back during a fetch; the oldest go first."""
    _tip: Block | None = attrs.field(init=False, default=None)
    # The published chain's last `window` hashes, keyed by number: always contiguous, ending at
    # the tip, oldest first (insertion order), and linked (each block's parent is the entry below).
    _hashes: dict[int, str] = attrs.field(init=False, factory=dict, repr=False)
    # The parent hash of the oldest entry of _hashes: the last block of the published chain whose
    # hash is still known beyond the window.
    _floor_parent: str | None = attrs.field(init=False, default=None, repr=False)
    # The end of the gap being backfilled: a head (processed once its parent's number is reached)
    # or a height from on_height (nothing to process at the end).
    _target: Block | int | None = attrs.field(init=False, default=None)
    # The new branch collected so far while walking back by parent hash, newest first.
    _branch: list[Block] = attrs.field(init=False, factory=list, repr=False)
    _fetching: Fetch | None = attrs.field(init=False, default=None)
    _buffer: deque[Block | int] = attrs.field(init=False, repr=False)

    @_buffer.default
    def _new_buffer(self) -> deque[Block | int]:
        # When full, the oldest head goes. Nothing is lost for clients: any later head that is
        # ahead of the tip is a gap, and the gap is backfilled.
        return deque(maxlen=self.max_buffered)

    @property
    def tip(self) -> Block | None:
        """The last published block, or None before the first."""
        return self._tip

    @property
    def fetching(self) -> Fetch | None:
        """The fetch the caller is running for the follower, if any."""
        return self._fetching

    @property
    def published(self) -> Mapping[int, str]:
        """Hashes of the published blocks still in the window, by number (a read-only, live
        view). Contiguous and ending at the tip; what a client holds beyond it is older."""
        return MappingProxyType(self._hashes)

    @property
    def buffered(self) -> int:
        """Heads and heights held back until the outstanding fetch is answered."""
        return len(self._buffer)

    # --- events --------------------------------------------------------------------------------

    def on_head(self, block: Block) -> ChainStep:
        """A head the node announced.

        While a fetch runs, the head is only buffered: the repair in progress was planned on the
        current tip, and a head applied in the middle of it could move that tip underneath it.
        """
        if self._fetching is not None:
            self._buffer.append(block)
            return ChainStep([], None)
        publish: list[Published] = []
        return self._settle(publish, self._head(block, publish))

    def on_height(self, number: int) -> ChainStep:
        """The node says its head is at ``number`` (the answer to a periodic ``eth_blockNumber``).

        This catches a subscription that went silent: if the node is ahead of the tip, the blocks
        up to ``number`` are backfilled as after a head. Buffered like a head during a fetch.
        """
        if self._fetching is not None:
            self._buffer.append(number)
            return ChainStep([], None)
        publish: list[Published] = []
        return self._settle(publish, self._height(number))

    def on_fetched(self, fetch: Fetch, block: Block | None) -> ChainStep:
        """The answer to the outstanding ``fetch``: the block, or None if the node has no such
        block (the branch was reorganized away, or the chain is now shorter).

        A None abandons the repair in progress rather than retrying it: the node has moved on,
        and its next head (or height) starts a repair that fits what it has now. Raises
        ValueError, changing nothing, if ``fetch`` is not the outstanding fetch (a caller bug) or
        ``block`` is not the block asked for (a malformed answer, which the caller may log and
        then answer again or with None).
        """
        if self._fetching is None:
            raise ValueError(f"answer to {fetch!r}, but no fetch is outstanding")
        if fetch != self._fetching:
            raise ValueError(f"answer to {fetch!r}, but {self._fetching!r} is outstanding")
        if block is not None:
            self._check_answer(fetch, block)
        self._fetching = None
        publish: list[Published] = []
        following: Fetch | None
        if block is None:
            self._target = None
            self._branch.clear()
            following = None
        elif isinstance(fetch, FetchByNumber):
            # A backfilled block is checked like a head: it extends the tip or starts a walk.
            # (The answer to a jump from _height lands beyond the tip and is restarted on.)
            following = self._head(block, publish)
        else:
            following = self._walk(block, publish)
        return self._settle(publish, following)

    def connection_lost(self) -> None:
        """The caller's connection to the node is gone, and with it the outstanding fetch.

        What was published stays published, and the tip stays, so that the first head after the
        reconnect is a gap from it and the blocks missed in between are backfilled. The buffered
        heads and a half-walked branch go: they describe the node as it was, and the node's heads
        after the reconnect supersede them.
        """
        self._fetching = None
        self._target = None
        self._branch.clear()
        self._buffer.clear()

    # --- decisions -----------------------------------------------------------------------------

    def _check_answer(self, fetch: Fetch, block: Block) -> None:
        """Refuse a block that is not the one asked for, before it can touch any state."""
        if isinstance(fetch, FetchByNumber):
            if block.number != fetch.number:
                raise ValueError(f"asked for block {fetch.number}, got block {block.number}")
            return
        if block.hash != fetch.hash:
            raise ValueError(f"asked for block {fetch.hash}, got block {block.hash}")
        # A by-hash fetch asks for the parent of the oldest block of the branch being walked, so
        # its number is known too; checking it is what guarantees that every walk ends.
        expected = self._branch[-1].number - 1
        if block.number != expected:
            raise ValueError(f"block {block.hash} has number {block.number}, expected {expected}")

    def _settle(self, publish: list[Published], fetch: Fetch | None) -> ChainStep:
        """Carry on until a fetch is needed or there is nothing left to do.

        When a repair step completes without a new fetch, a gap being backfilled continues, and
        once it is done the buffered events are processed in the order they arrived. Every turn
        either returns a fetch, resolves the gap target, or consumes a buffered event, so the loop
        ends.
        """
        while fetch is None:
            if self._target is not None:
                fetch = self._advance(publish)
            elif self._buffer:
                item = self._buffer.popleft()
                fetch = self._head(item, publish) if isinstance(item, Block) else self._height(item)
            else:
                break
        self._fetching = fetch
        return ChainStep(publish, fetch)

    def _head(self, block: Block, publish: list[Published]) -> Fetch | None:
        """Decide what a head (or a backfilled block) means for the published chain."""
        tip = self._tip
        if tip is None:
            self._publish(block, Link.RESTART, publish)
            return None
        if block.number <= tip.number - self.window:
            # Below the window: too old to compare with anything, and clients are past it.
            return None
        if self._hashes.get(block.number) == block.hash or (
            block.number == tip.number - len(self._hashes) and block.hash == self._floor_parent
        ):
            # Already published. (The parent of the oldest entry counts, because after a RESTART
            # the window holds one block and a late announcement of its parent is no reorg.)
            return None
        if block.number == tip.number + 1 and block.parent_hash == tip.hash:
            self._publish(block, Link.EXTENDS, publish)
            return None
        if block.number > tip.number + 1:
            if block.number - tip.number - 1 > self.max_backfill:
                self._publish(block, Link.RESTART, publish)
                return None
            # No target is pending here: a target is only set from a head above tip + 1, and
            # heads above tip + 1 are only processed with no repair in progress.
            self._target = block
            return FetchByNumber(tip.number + 1)
        # At or below the tip with another hash, or on top of it with another parent: a branch
        # the clients have not seen. Its blocks are collected back to the common ancestor.
        return self._walk(block, publish)

    def _height(self, number: int) -> Fetch | None:
        """Decide what a height probe means: a gap known only by its end."""
        tip = self._tip
        if tip is None or number <= tip.number:
            # Before the first head there is nothing to link a backfill to, so wait for a head.
            return None
        if number - tip.number - 1 > self.max_backfill:
            # Too far to backfill: fetch the block at that height and restart on it (its answer
            # goes through _head, which sees the same gap).
            return FetchByNumber(number)
        self._target = number
        return FetchByNumber(tip.number + 1)

    def _advance(self, publish: list[Published]) -> Fetch | None:
        """Take the backfill one block further, or finish it: when the tip has reached the
        target's parent number, the target head is processed like any head."""
        target, tip = self._target, self._tip
        assert tip is not None  # a gap target is only ever set relative to a published tip
        if isinstance(target, Block):
            if target.number > tip.number + 1:
                return FetchByNumber(tip.number + 1)
            self._target = None
            return self._head(target, publish)
        if target is not None and target > tip.number:
            return FetchByNumber(tip.number + 1)
        self._target = None
        return None

    def _walk(self, block: Block, publish: list[Published]) -> Fetch | None:
        """Add ``block`` to the new branch and either adopt the branch or ask for its parent.

        The walk stops at the first block whose parent is the published block one below it (the
        common ancestor), or when the parent is older than anything remembered: then the fork
        point cannot be verified, and the oldest block collected is published as a RESTART
        rather than as a REORG whose parent a client might hold a different block for. The
        number of a walked block drops by one at each step, so a walk is at most a window long.
        """
        self._branch.append(block)
        tip = self._tip
        assert tip is not None  # a walk starts from a head compared with the tip
        parent = block.number - 1
        if parent < tip.number - len(self._hashes) + 1:
            self._adopt(Link.RESTART, publish)
            return None
        if self._hashes[parent] == block.parent_hash:
            self._adopt(Link.REORG, publish)
            return None
        return FetchByHash(block.parent_hash)

    def _adopt(self, first: Link, publish: list[Published]) -> None:
        """Publish the walked branch oldest first: ``first`` for its fork point, REORG above."""
        branch = self._branch[::-1]
        self._branch.clear()
        for i, block in enumerate(branch):
            self._publish(block, first if i == 0 else Link.REORG, publish)

    def _publish(self, block: Block, link: Link, publish: list[Published]) -> None:
        """Make ``block`` the tip, keeping the window as the client will hold it after ``link``."""
        tip = self._tip
        if link is Link.RESTART or tip is None:
            self._hashes.clear()
            self._floor_parent = block.parent_hash
        else:
            # A REORG drops this number and everything above it; an EXTENDS drops nothing.
            for number in range(block.number, tip.number + 1):
                del self._hashes[number]
        self._hashes[block.number] = block.hash
        while len(self._hashes) > self.window:
            oldest = next(iter(self._hashes))
            self._floor_parent = self._hashes.pop(oldest)
        self._tip = block
        publish.append(Published(block, link))
