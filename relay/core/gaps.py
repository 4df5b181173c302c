"""Upstream sequence checking, and the snapshot-plus-buffered-deltas dance for order books.

A book built from deltas is only right if no delta was lost, so every delta's upstream sequence
number is checked, and a gap is never skipped over: the channel stops publishing, buffers what
keeps arriving, and asks the caller for a snapshot. When the snapshot comes, the buffered deltas
newer than it are replayed on top. Dropping those (a known cryptofeed bug) or applying ones the
snapshot already contains would both corrupt the book silently, which is why this logic lives here,
small and free of I/O, where property tests can drive every interleaving.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from relay.core.book import OrderBook, parse_levels
from relay.core.model import Update


class Verdict(enum.Enum):
    """How one sequence number relates to the ones seen before it."""

    IN_ORDER = "in_order"
    """The next expected number (or the first one seen)."""
    GAP = "gap"
    """Numbers were skipped: at least one message is lost."""
    STALE = "stale"
    """A duplicate or an old number: already accounted for."""


@attrs.define
class GapDetector:
    """Tracks the last sequence number of one upstream stream."""

    _last: int | None = None

    @property
    def last(self) -> int | None:
        """The highest number accepted so far, or None before the first."""
        return self._last

    def classify(self, seq: int, first: int | None = None) -> Verdict:
        """What :meth:`observe` would say about ``seq``, without recording it.

        With ``first``, the message covers the numbers ``first`` to ``seq`` (a batch of
        upstream updates, as Binance's depth events): it is in order when it covers the next
        number expected, stale when it ends at or before the last one accepted. An overlap is
        in order: a book delta carries absolute sizes, so re-applying its older part is exact.
        """
        last = self._last
        if last is None:
            return Verdict.IN_ORDER
        if seq <= last:
            return Verdict.STALE
        if (seq if first is None else first) <= last + 1:
            return Verdict.IN_ORDER
        return Verdict.GAP

    def observe(self, seq: int) -> Verdict:
        """Classify ``seq`` and record it unless it is stale.

        After a gap the detector moves on to ``seq``, so each gap is reported exactly once; what
        to do about the lost messages is the caller's decision.
        """
        verdict = self.classify(seq)
        if verdict is not Verdict.STALE:
            self._last = seq
        return verdict

    def reset(self, seq: int | None = None) -> None:
        """Start over (or record a number :meth:`classify` already found in order): the next
        number expected is ``seq + 1``, or any number if None."""
        self._last = seq


Checksum = Callable[[list[list[str]], list[list[str]]], int]
"""An upstream's checksum of a book, from its levels as :meth:`OrderBook.levels` gives them."""


class SyncState(enum.Enum):
    """Where a :class:`BookSync` stands with its upstream."""

    AWAITING_SNAPSHOT = "awaiting_snapshot"
    """No consistent book on this connection yet: deltas are buffered until a snapshot."""
    LIVE = "live"
    """The book follows the upstream delta by delta, and deltas are published."""
    RESYNCING = "resyncing"
    """A gap (or a snapshot too old to use) was seen: a snapshot fetch is in flight."""


@attrs.frozen
class BookStep:
    """What the caller must do after feeding a :class:`BookSync` one message."""

    publish: list[Update]
    """Updates to publish on the relay channel, in order."""
    fetch_snapshot: bool
    """True when the caller must fetch a (REST) snapshot and pass it to ``on_snapshot``."""


def _levels(data: dict[str, Any], side: str, required: bool) -> Sequence[Sequence[str]]:
    if side in data:
        levels: Sequence[Sequence[str]] = data[side]
        return levels
    if required:
        raise ValueError(f"book snapshot without {side!r}")
    return ()


@attrs.define
class BookSync:
    """Keeps one book channel consistent with its upstream across gaps and reconnects.

    Snapshots from the WebSocket and from a REST fetch go through the same :meth:`on_snapshot`:
    both say "the book was exactly this at upstream sequence ``seq``", and the merge rule is the
    same for both. Malformed data raises ValueError and leaves the sync as it was.
    """

    channel: str
    symbol: str
    max_buffer: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    depth: int | None = None
    """Levels per side the upstream keeps (Kraken: the subscribed depth). Levels pushed past it
    are dropped as the upstream drops them, without telling, and published as removals."""
    checksum: Checksum | None = None
    """The upstream's checksum of a book, for updates that carry one: a mismatch means the book
    went wrong, and it is repaired like a gap."""
    _book: OrderBook = attrs.field(init=False, factory=OrderBook)
    _detector: GapDetector = attrs.field(init=False, factory=GapDetector)
    _state: SyncState = attrs.field(init=False, default=SyncState.AWAITING_SNAPSHOT)
    _ts: int = attrs.field(init=False, default=0)
    _buffer: deque[Update] = attrs.field(init=False, repr=False)

    @_buffer.default
    def _new_buffer(self) -> deque[Update]:
        # When full, the oldest delta goes. The lost delta then shows up as a snapshot that is
        # older than the first buffered delta, and a newer snapshot is fetched: no special case.
        return deque(maxlen=self.max_buffer)

    @property
    def state(self) -> SyncState:
        return self._state

    @property
    def live(self) -> bool:
        """Whether the book is consistent with the upstream right now (else it is stale)."""
        return self._state is SyncState.LIVE

    @property
    def book(self) -> OrderBook:
        """The current book. Replaced by a new object whenever a snapshot is taken."""
        return self._book

    def state_data(self) -> dict[str, Any] | None:
        """The whole book in the protocol's schema, for a new subscriber's snapshot; None while
        the book is not consistent with the upstream (a stale book must not reach anyone)."""
        if self._state is not SyncState.LIVE:
            return None
        return self._book.to_data(self.symbol, self._ts)

    @property
    def last_seq(self) -> int | None:
        """The upstream sequence number the book reflects, or None before the first snapshot."""
        return self._detector.last

    @property
    def buffered(self) -> int:
        """Deltas held back until a snapshot arrives."""
        return len(self._buffer)

    def _check(self, update: Update, snapshot: bool) -> int:
        if update.channel != self.channel:
            raise ValueError(f"update for {update.channel!r} fed to the sync of {self.channel!r}")
        if update.snapshot is not snapshot:
            right = "on_snapshot" if update.snapshot else "on_delta"
            raise ValueError(
                f"update on {self.channel!r} with snapshot={update.snapshot} belongs in {right}"
            )
        if update.seq is None:
            raise ValueError(f"book update on {self.channel!r} without an upstream seq")
        return update.seq

    def on_snapshot(self, update: Update) -> BookStep:
        """An upstream snapshot (``snapshot=True``, ``seq`` = the last delta it includes).

        On success the book becomes the snapshot plus the buffered deltas newer than it, and
        exactly one snapshot update is published. If the deltas after the snapshot are not all
        there (the snapshot is older than the first buffered delta, or the buffer itself has a
        hole), the buffer is kept and another snapshot is requested. While live, a snapshot no
        newer than the book is ignored: the book is already past it.
        """
        seq = self._check(update, snapshot=True)
        last = self._detector.last
        if self._state is SyncState.LIVE and last is not None and seq <= last:
            return BookStep([], False)
        candidate = OrderBook()
        candidate.apply_snapshot(
            _levels(update.data, "bids", required=True),
            _levels(update.data, "asks", required=True),
        )
        if self.depth is not None:
            candidate.truncate(self.depth)
        if self._corrupt(candidate, update):
            return self._resync()
        ts = update.data.get("ts")
        walk = GapDetector(seq)
        for delta in self._buffer:
            assert delta.seq is not None  # checked when it was buffered
            verdict = walk.classify(delta.seq, delta.first_seq)
            if verdict is Verdict.STALE:
                continue
            if verdict is Verdict.GAP:
                return self._resync()
            candidate.apply_delta(
                _levels(delta.data, "bids", required=False),
                _levels(delta.data, "asks", required=False),
            )
            if self.depth is not None:
                candidate.truncate(self.depth)
            if self._corrupt(candidate, delta):
                return self._resync()
            walk.reset(delta.seq)  # classified in order above
            if delta.data.get("ts") is not None:
                ts = delta.data["ts"]
        if not isinstance(ts, int):
            raise ValueError(f"book snapshot on {self.channel!r} without an integer 'ts'")
        self._book = candidate
        self._ts = ts
        self._detector.reset(walk.last)
        self._buffer.clear()
        self._state = SyncState.LIVE
        data = candidate.to_data(self.symbol, ts)
        return BookStep([Update(self.channel, data, walk.last, True)], False)

    def on_delta(self, update: Update) -> BookStep:
        """An upstream delta (``snapshot=False``): changed levels with absolute sizes.

        Live and in order, it is applied and published unchanged; a duplicate is ignored; a gap
        stops publishing and requests a snapshot. Otherwise the delta is buffered for the
        snapshot to come. Asking for the first snapshot after a (re)connect is left to the
        caller, which knows whether the upstream sends one by itself.
        """
        seq = self._check(update, snapshot=False)
        bids = _levels(update.data, "bids", required=False)
        asks = _levels(update.data, "asks", required=False)
        if self._state is SyncState.LIVE:
            verdict = self._detector.classify(seq, update.first_seq)
            if verdict is Verdict.IN_ORDER:
                self._book.apply_delta(bids, asks)
                published = update
                if self.depth is not None:
                    dropped_bids, dropped_asks = self._book.truncate(self.depth)
                    if dropped_bids or dropped_asks:
                        published = _with_removals(update, dropped_bids, dropped_asks)
                if self._corrupt(self._book, update):
                    return self._resync()
                self._detector.reset(seq)  # classified in order above
                ts = update.data.get("ts")
                if isinstance(ts, int):
                    self._ts = ts
                return BookStep([published], False)
            if verdict is Verdict.STALE:
                return BookStep([], False)
            self._hold(update, bids, asks)
            return self._resync()
        self._hold(update, bids, asks)
        return BookStep([], False)

    def _corrupt(self, book: OrderBook, update: Update) -> bool:
        """Whether ``update`` carries a checksum that ``book`` (the book after it) fails."""
        if update.checksum is None or self.checksum is None:
            return False
        bids, asks = book.levels()
        return self.checksum(bids, asks) != update.checksum

    def _resync(self) -> BookStep:
        self._state = SyncState.RESYNCING
        return BookStep([], True)

    def _hold(
        self, update: Update, bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]
    ) -> None:
        # Validated now, because a malformed delta in the buffer would fail every snapshot after.
        parse_levels(bids)
        parse_levels(asks)
        self._buffer.append(update)

    def reset(self) -> None:
        """The upstream connection was lost: the book is kept but stale until a new snapshot.

        The buffer goes because an upstream may restart its numbering on a new connection.
        """
        self._state = SyncState.AWAITING_SNAPSHOT
        self._buffer.clear()


def _with_removals(update: Update, bids: list[list[str]], asks: list[list[str]]) -> Update:
    """The delta as clients must apply it: with the levels the upstream's depth pushed out
    listed as removed (size ``"0"``), so a client's book stays the relay's."""
    data = dict(update.data)
    data["bids"] = [*data.get("bids", ()), *([price, "0"] for price, _ in bids)]
    data["asks"] = [*data.get("asks", ()), *([price, "0"] for price, _ in asks)]
    return attrs.evolve(update, data=data)
