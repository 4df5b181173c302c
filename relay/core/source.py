"""What a source's messages mean for its channels: sequencing, book sync, and which repair to run.

The supervisor of a source only moves bytes: it connects, reads, writes, and runs repairs. Every
decision between "the adapter normalized a frame" and "the hub publishes it" is taken here,
without I/O and without reading a clock (times are passed in), so property tests can drive it
through any interleaving of messages, gaps, reconnects and repair answers.

Each tracked channel gets the tracker its adapter asks for: a :class:`BookSync` for books, a
:class:`ChainFollower` for chains of numbered items (blocks), a :class:`GapDetector` for
sequenced events and states. A step names the repairs to start from a
closed set the shell knows how to run; a repair is named once, and stays "in flight" until its
answer comes back through :meth:`SourcePipeline.on_repaired` (or the channel or the connection
goes), so the shell never runs the same repair twice at once.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from relay.core.chain import Block, ChainFollower, ChainStep, Fetch, Link
from relay.core.gaps import BookStep, BookSync, Checksum, GapDetector, SyncState, Verdict
from relay.core.model import RepairKind, StreamKind, Update


@attrs.frozen
class FetchSnapshot:
    """Fetch the channel's snapshot over HTTP and hand it to :meth:`SourcePipeline.on_repaired`."""

    channel: str


@attrs.frozen
class Resubscribe:
    """Unsubscribe the channel upstream and subscribe it again; the upstream's own snapshot then
    resynchronizes it. It stays wanted until the book is live again, so a shell that sees no
    snapshot come (it was lost too) subscribes again rather than leave the book stale."""

    channel: str


@attrs.frozen
class FetchItem:
    """Fetch one numbered item (a block, by number or by hash) over HTTP and hand it, or None
    when the upstream has no such item, to :meth:`SourcePipeline.on_repaired`."""

    channel: str
    fetch: Fetch


Repair = FetchSnapshot | Resubscribe | FetchItem


@attrs.frozen
class BookRules:
    """How an upstream keeps a book, beyond "absolute sizes, zero removes"."""

    depth: int | None = None
    """Levels per side it keeps; levels pushed past it vanish without a removal (Kraken)."""
    checksum: Checksum | None = None
    """Its checksum of a book's levels, for updates that carry one (Kraken's CRC32)."""


NO_RULES = BookRules()


@attrs.frozen
class SourceStep:
    """What the shell must do after the pipeline took one input."""

    publish: list[Update] = attrs.Factory(list)
    """Updates to publish, in order."""
    repairs: list[Repair] = attrs.Factory(list)
    """Repairs to start now (none of them is already in flight)."""
    gaps: list[str] = attrs.Factory(list)
    """Channels on which this input revealed lost messages: for the log and the gap count."""
    resynced: list[str] = attrs.Factory(list)
    """Channels consistent with the upstream again after a repair: for the log and the
    ``resynced`` status event."""


_NOTHING = SourceStep()


class ChannelCatalogue(Protocol):
    """What the pipeline needs to know about a source's channels (the adapter answers)."""

    def kind(self, channel: str) -> StreamKind | None: ...

    def repair(self, channel: str) -> RepairKind: ...

    def book_rules(self, channel: str) -> BookRules: ...


class SourcePipeline:
    """Per source: the trackers of the channels subscribed upstream, and the repairs in flight."""

    def __init__(self, catalogue: ChannelCatalogue) -> None:
        self._catalogue = catalogue
        self._books: dict[str, tuple[BookSync, RepairKind]] = {}
        self._detectors: dict[str, GapDetector] = {}
        self._chains: dict[str, ChainFollower] = {}
        self._resting: dict[str, ChainFollower] = {}
        """Chains of channels that lost their connection: what was published stays what
        clients hold, so the channel's next connection goes on from it (backfilling the gap)."""
        self._in_flight: set[Repair] = set()

    # Channels ------------------------------------------------------------------------------

    def track(self, channel: str) -> None:
        """The channel is being subscribed upstream: its messages count from now on."""
        repair = self._catalogue.repair(channel)
        if self._catalogue.kind(channel) is StreamKind.BOOK:
            rules = self._catalogue.book_rules(channel)
            sync = BookSync(
                channel, channel.rsplit(":", 1)[-1], depth=rules.depth, checksum=rules.checksum
            )
            self._books[channel] = (sync, repair)
        elif repair is RepairKind.BACKFILL:
            resting = self._resting.pop(channel, None)
            self._chains[channel] = ChainFollower() if resting is None else resting
        else:
            self._detectors[channel] = GapDetector()

    def untrack(self, channel: str) -> None:
        """The channel is being unsubscribed upstream: late messages and repairs are dropped."""
        self._books.pop(channel, None)
        self._detectors.pop(channel, None)
        self._chains.pop(channel, None)
        self._resting.pop(channel, None)
        self._in_flight = {r for r in self._in_flight if r.channel != channel}

    def connection_lost(self) -> None:
        """A new connection subscribes afresh: books wait for a new snapshot, numbering may
        restart, and the repairs of the old connection were cancelled with it."""
        for sync, _ in self._books.values():
            sync.reset()
        self._books.clear()
        self._detectors.clear()
        for channel, chain in self._chains.items():
            chain.connection_lost()
            self._resting[channel] = chain
        self._chains.clear()
        self._in_flight.clear()

    def state(self, channel: str) -> dict[str, Any] | None:
        """The full state of a book channel for a new subscriber, or None (no book, or stale).

        Other channels' state is their last message, which the hub keeps as it publishes."""
        entry = self._books.get(channel)
        return None if entry is None else entry[0].state_data()

    def wants(self, repair: Repair) -> bool:
        """Whether a repair is still needed: a shell retrying a failed fetch stops when not."""
        return repair in self._in_flight

    # Data ----------------------------------------------------------------------------------

    def on_update(self, update: Update) -> SourceStep:
        """One normalized message from the upstream connection."""
        channel = update.channel
        entry = self._books.get(channel)
        if entry is not None:
            sync, repair = entry
            resyncing = sync.state is SyncState.RESYNCING
            book = sync.on_snapshot(update) if update.snapshot else sync.on_delta(update)
            if sync.live:
                self._in_flight.discard(Resubscribe(channel))
            if sync.state is SyncState.AWAITING_SNAPSHOT and not update.snapshot:
                # A delta before any snapshot on this connection: an upstream that sends none
                # of its own (Binance: "buffer the events, then get a snapshot"), or one whose
                # snapshot on subscribe was lost. Either way the book must not wait forever.
                return self._first_snapshot(channel, repair)
            return self._book_step(channel, repair, book, resyncing)
        chain = self._chains.get(channel)
        if chain is not None:
            return self._chain_step(channel, chain.on_head(_block(update)))
        detector = self._detectors.get(channel)
        if detector is None:
            return _NOTHING  # a late message for a channel no client wants any more
        if update.seq is not None and detector.observe(update.seq) is Verdict.GAP:
            # Trades and tickers have nothing to repair from: a ticker is whole in every
            # message, a lost trade is gone. Reported, never hidden.
            return SourceStep(publish=[update], gaps=[channel])
        return SourceStep(publish=[update])

    def on_head(self, channel: str, seq: int) -> SourceStep:
        """The upstream says a chain has reached ``seq``: backfill up to it if that is news."""
        chain = self._chains.get(channel)
        if chain is None:
            return _NOTHING
        return self._chain_step(channel, chain.on_height(seq))

    def on_repaired(self, repair: FetchSnapshot | FetchItem, update: Update | None) -> SourceStep:
        """The answer to a repair the shell ran. Raises ValueError for an answer that does not
        fit (a snapshot the book rejects, a block that is not the one asked for, no snapshot at
        all): the repair stays in flight and the shell tries again."""
        if repair not in self._in_flight:
            return _NOTHING  # the channel or the connection went meanwhile
        if isinstance(repair, FetchItem):
            chain = self._chains[repair.channel]
            step = chain.on_fetched(repair.fetch, None if update is None else _block(update))
            self._in_flight.discard(repair)
            return self._chain_step(repair.channel, step)
        if isinstance(repair, FetchSnapshot) and update is None:
            raise ValueError(f"no snapshot of {repair.channel}")
        entry = self._books.get(repair.channel)
        if entry is None or update is None:
            self._in_flight.discard(repair)
            return _NOTHING
        sync, kind = entry
        first = sync.state is SyncState.AWAITING_SNAPSHOT
        book = sync.on_snapshot(update)
        self._in_flight.discard(repair)
        repaired = self._book_step(repair.channel, kind, book, resyncing=True)
        # A book's first snapshot on a connection is no resynchronization to announce.
        return attrs.evolve(repaired, resynced=[]) if first else repaired

    def _first_snapshot(self, channel: str, kind: RepairKind) -> SourceStep:
        if kind not in (RepairKind.REST_SNAPSHOT, RepairKind.RESUBSCRIBE):
            return _NOTHING
        repair = self._repair_for(channel, kind)
        if repair in self._in_flight:
            return _NOTHING
        self._in_flight.add(repair)
        return SourceStep(repairs=[repair])

    def _book_step(
        self, channel: str, kind: RepairKind, book: BookStep, resyncing: bool
    ) -> SourceStep:
        if book.fetch_snapshot:
            repair = self._repair_for(channel, kind)
            new = repair not in self._in_flight
            self._in_flight.add(repair)
            return SourceStep(
                publish=book.publish,
                repairs=[repair] if new else [],
                gaps=[] if resyncing else [channel],
            )
        if resyncing and book.publish:
            return SourceStep(publish=book.publish, resynced=[channel])
        return SourceStep(publish=book.publish)

    def _chain_step(self, channel: str, step: ChainStep) -> SourceStep:
        publish = [
            Update(
                channel,
                p.block.data,
                p.block.number,
                snapshot=p.link is Link.RESTART,
                reorg=p.link is Link.REORG,
            )
            for p in step.publish
        ]
        if step.fetch is None:
            return SourceStep(publish=publish)
        repair = FetchItem(channel, step.fetch)
        self._in_flight.add(repair)
        return SourceStep(publish=publish, repairs=[repair])

    @staticmethod
    def _repair_for(channel: str, kind: RepairKind) -> Repair:
        if kind is RepairKind.RESUBSCRIBE:
            return Resubscribe(channel)
        return FetchSnapshot(channel)


def _block(update: Update) -> Block:
    """A chain item as the follower sees it: the adapter's normalized block carries its own
    number, hash and parent hash (protocol.md, "Ethereum sources")."""
    data = update.data
    if update.seq is None:
        raise ValueError(f"block on {update.channel!r} without a number")
    return Block(update.seq, data["hash"], data["parent_hash"], data)
