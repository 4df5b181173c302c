"""The synthetic market's state and wire messages, with no I/O and no clock.

The simulator exists to exercise the relay's hard paths (snapshots, sequenced deltas, gaps,
resyncs) reproducibly. Keeping the model sans-IO means the same seed and the same call sequence
always produce the same bytes, so property tests can replay thousands of books in milliseconds and
the Trio shell in :mod:`relay.sim.server` only decides *when* to call it. Time is passed in as
microseconds since the epoch for the same reason.

Prices and sizes are held as integers (price ticks, size units of ``10**-SIZE_DECIMALS``) and only
formatted into decimal strings on the way out, so a replayed book compares exactly, never with
float rounding.

Wire format: docs/simulator.md.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

STREAMS = ("trade", "ticker", "depth")
"""Topic streams, in the order :meth:`MarketModel.topics` lists them per symbol."""

DEPTH_LEVELS = 20
"""Price levels per side of every book."""

SIZE_DECIMALS = 4
"""Decimals of every size string; sizes are integers of ``10**-SIZE_DECIMALS`` internally."""

_MAX_LEVEL_SIZE = 50_000
"""Largest resting size of a fresh level, in size units (5.0000)."""

_MAX_TRADE_SIZE = 5_000
"""Largest trade, in size units (0.5000): most trades leave the touch level partly filled."""

_REMOVE_PROBABILITY = 0.25
"""Chance that a random book change deletes a level instead of resizing it, so "0" sizes
(level removals) show up regularly, not only when the mid moves."""


@attrs.frozen
class SymbolSpec:
    """How one symbol looks: where it starts and on which price grid its book lives."""

    start_price: str
    """Decimal string; the initial best bid, snapped down to the level grid."""
    price_decimals: int = 2
    level_step: int = 1
    """Distance between adjacent book levels, in price ticks of ``10**-price_decimals``."""


DEFAULT_SPECS: Mapping[str, SymbolSpec] = {
    "BTC": SymbolSpec("43000.00", 2, 50),
    "ETH": SymbolSpec("2300.00", 2, 5),
    "SOL": SymbolSpec("100.00", 2, 1),
}
"""Plausible starting points per base asset; any other base asset uses :data:`FALLBACK_SPEC`."""

FALLBACK_SPEC = SymbolSpec("100.00", 2, 1)


def spec_for(symbol: str) -> SymbolSpec:
    """The default spec for ``symbol``, chosen by its base asset (``BTC`` in ``BTC-USD``)."""
    return DEFAULT_SPECS.get(symbol.split("-", 1)[0].upper(), FALLBACK_SPEC)


def format_units(value: int, decimals: int) -> str:
    """An integer count of ``10**-decimals`` as a fixed-point decimal string."""
    if decimals == 0:
        return str(value)
    whole, frac = divmod(value, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}"


def _format_size(units: int) -> str:
    # The protocol's removal marker is exactly "0", not "0.0000": clients compare strings.
    return "0" if units == 0 else format_units(units, SIZE_DECIMALS)


_MIN_MID = DEPTH_LEVELS
"""Lowest grid index of the best bid, so the deepest bid level stays at a positive price."""


@attrs.define(eq=False)
class _Book:
    """One symbol's order book on a grid of level indices (price = index * level_step ticks).

    Invariants after every public operation: the best bid is exactly index ``mid`` and the best
    ask exactly ``mid + 1`` (both present, so the book is never crossed or empty at the touch),
    bids live in ``[mid - DEPTH_LEVELS + 1, mid]`` and asks in ``[mid + 1, mid + DEPTH_LEVELS]``;
    deeper levels may be missing (removed) and come back later.
    """

    symbol: str
    spec: SymbolSpec
    rng: random.Random
    mid: int
    bids: dict[int, int]
    asks: dict[int, int]
    last: int
    """Last trade price, in price ticks."""
    trade_id: int = 0

    @classmethod
    def create(cls, symbol: str, spec: SymbolSpec, rng: random.Random) -> _Book:
        ticks = int(Decimal(spec.start_price).scaleb(spec.price_decimals))
        mid = max(ticks // spec.level_step, _MIN_MID)
        book = cls(symbol, spec, rng, mid, {}, {}, mid * spec.level_step)
        for offset in range(DEPTH_LEVELS):
            book.bids[mid - offset] = book.fresh_size()
            book.asks[mid + 1 + offset] = book.fresh_size()
        return book

    def fresh_size(self) -> int:
        return self.rng.randint(1, _MAX_LEVEL_SIZE)

    def price(self, index: int) -> str:
        return format_units(index * self.spec.level_step, self.spec.price_decimals)

    def levels(self, side: dict[int, int], changes: dict[int, int]) -> list[list[str]]:
        """``[[price, size], ...]`` for ``changes``; best price first, like the book itself."""
        order = sorted(changes, reverse=side is self.bids)
        return [[self.price(i), _format_size(changes[i])] for i in order]

    def full_levels(self) -> tuple[list[list[str]], list[list[str]]]:
        return self.levels(self.bids, self.bids), self.levels(self.asks, self.asks)


class _Changes:
    """The levels one depth message reports: the last absolute size written per level."""

    def __init__(self, book: _Book) -> None:
        self.book = book
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}

    def set(self, side: dict[int, int], index: int, size: int) -> None:
        """Write one level and remember it; size 0 deletes the level."""
        if size == 0:
            side.pop(index, None)
        else:
            side[index] = size
        (self.bids if side is self.book.bids else self.asks)[index] = size

    def remove_if_present(self, side: dict[int, int], index: int) -> None:
        if index in side:
            self.set(side, index, 0)

    def ensure(self, side: dict[int, int], index: int) -> None:
        if index not in side:
            self.set(side, index, self.book.fresh_size())

    def body(self, now_us: int) -> dict[str, Any]:
        return {
            "bids": self.book.levels(self.book.bids, self.bids),
            "asks": self.book.levels(self.book.asks, self.asks),
            "time": now_us,
        }


class MarketModel:
    """A seeded random-walk market with trades, tickers and level-2 books for some symbols.

    Each symbol has its own random generator seeded from ``seed`` and the symbol name, so one
    symbol's path does not depend on how calls for other symbols interleave with it.

    Every change of ticker or depth state is emitted with a new ``seq`` on its topic, except the
    depth deltas :meth:`skip` loses on purpose, so a client holding a snapshot plus every update
    since holds exactly the model's state.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        seed: int = 1,
        specs: Mapping[str, SymbolSpec] | None = None,
    ) -> None:
        """``specs`` overrides :func:`spec_for` per symbol (full symbol name as key)."""
        if not symbols:
            raise ValueError("a market needs at least one symbol")
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbols")
        overrides = specs or {}
        self._symbols = tuple(symbols)
        self._books = {
            symbol: _Book.create(
                symbol,
                overrides.get(symbol, spec_for(symbol)),
                random.Random(f"{seed}:{symbol}"),
            )
            for symbol in symbols
        }
        self._topics = {
            f"{stream}.{symbol}": (stream, symbol) for symbol in symbols for stream in STREAMS
        }
        self._seq = dict.fromkeys(self._topics, 0)

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    def topics(self) -> list[str]:
        """Every topic the market serves: ``trade.``, ``ticker.`` and ``depth.`` per symbol."""
        return list(self._topics)

    def has_topic(self, topic: str) -> bool:
        return topic in self._topics

    def seq(self, topic: str) -> int:
        """The seq of the latest message on ``topic`` (0 before the first one)."""
        self._split(topic)
        return self._seq[topic]

    def step(self, symbol: str, now_us: int) -> list[dict[str, Any]]:
        """One market event: a trade, the ticker after it and the depth change it caused.

        The taker hits the touch; if the trade consumes the whole level, the price moves that
        way, otherwise the mid takes a random step (or none). Then one to three deeper levels
        are resized or removed, like other participants quoting.
        """
        book = self._book(symbol)
        rng = book.rng
        changes = _Changes(book)
        buy = rng.random() < 0.5
        side, touch = (book.asks, book.mid + 1) if buy else (book.bids, book.mid)
        qty = min(rng.randint(1, _MAX_TRADE_SIZE), side[touch])
        consumed = qty == side[touch]
        changes.set(side, touch, side[touch] - qty)
        book.last = touch * book.spec.level_step
        book.trade_id += 1
        trade = self._trade_message(book, touch, qty, buy, now_us)

        move = (1 if buy else -1) if consumed else rng.choice((-1, 0, 0, 1))
        if book.mid + move < _MIN_MID:
            move = 0
        if move == 0 and consumed:
            # Only at the price floor: a fresh order refills the level the taker emptied.
            changes.set(side, touch, book.fresh_size())
        self._move(book, changes, move)
        self._requote(book, changes)

        ticker = self._message("ticker", symbol, "snapshot", self._ticker_body(book, now_us))
        depth = self._message("depth", symbol, "update", changes.body(now_us))
        return [trade, ticker, depth]

    def trade(self, symbol: str, now_us: int) -> dict[str, Any]:
        """One trade message alone, for bursts: a print at the touch that changes no state.

        It neither fills book levels nor moves ``last``, so ticker and depth topics stay exactly
        described by their emitted messages however many trades a burst adds.
        """
        book = self._book(symbol)
        buy = book.rng.random() < 0.5
        touch = book.mid + 1 if buy else book.mid
        size = (book.asks if buy else book.bids)[touch]
        qty = book.rng.randint(1, min(_MAX_TRADE_SIZE, size))
        book.trade_id += 1
        return self._trade_message(book, touch, qty, buy, now_us)

    def snapshot(self, topic: str, now_us: int) -> dict[str, Any] | None:
        """The full-state message of a ticker or depth topic at its current seq; None for trades.

        ``time`` is ``now_us``: the snapshot describes the state as of the moment it is taken.
        """
        stream, symbol = self._split(topic)
        book = self._books[symbol]
        if stream == "trade":
            return None
        if stream == "ticker":
            body = self._ticker_body(book, now_us)
        else:
            bids, asks = book.full_levels()
            body = {"bids": bids, "asks": asks, "time": now_us}
        return {"topic": topic, "seq": self._seq[topic], "kind": "snapshot", "body": body}

    def skip(self, topic: str, n: int, now_us: int) -> None:
        """Apply ``n`` depth deltas without emitting them: the topic's seq jumps by ``n``.

        The lost deltas only touch levels behind the touch, so the ticker (best bid and ask)
        stays consistent while a client's depth book is genuinely wrong until it resyncs.
        ``now_us`` is accepted so every state-changing call has the same shape; the lost deltas
        carry no time anyone could see.
        """
        stream, symbol = self._split(topic)
        if stream != "depth":
            raise ValueError(f"only depth topics can skip, not {topic!r}")
        if n < 0:
            raise ValueError("n must not be negative")
        book = self._books[symbol]
        for _ in range(n):
            self._requote(book, _Changes(book))
            self._seq[topic] += 1

    # -- internals -------------------------------------------------------------------------

    def _split(self, topic: str) -> tuple[str, str]:
        try:
            return self._topics[topic]
        except KeyError:
            raise KeyError(f"unknown topic {topic!r}") from None

    def _book(self, symbol: str) -> _Book:
        try:
            return self._books[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r}") from None

    def _message(self, stream: str, symbol: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        topic = f"{stream}.{symbol}"
        self._seq[topic] += 1
        return {"topic": topic, "seq": self._seq[topic], "kind": kind, "body": body}

    def _trade_message(
        self, book: _Book, index: int, qty: int, buy: bool, now_us: int
    ) -> dict[str, Any]:
        body = {
            "px": book.price(index),
            "qty": _format_size(qty),
            "taker": "B" if buy else "S",
            "id": book.trade_id,
            "time": now_us,
        }
        return self._message("trade", book.symbol, "update", body)

    @staticmethod
    def _ticker_body(book: _Book, now_us: int) -> dict[str, Any]:
        bid, ask = book.mid, book.mid + 1
        return {
            "bid": {"px": book.price(bid), "qty": _format_size(book.bids[bid])},
            "ask": {"px": book.price(ask), "qty": _format_size(book.asks[ask])},
            "last": format_units(book.last, book.spec.price_decimals),
            "time": now_us,
        }

    @staticmethod
    def _move(book: _Book, changes: _Changes, move: int) -> None:
        """Shift the mid by one level, keeping both windows DEPTH_LEVELS wide and uncrossed."""
        old = book.mid
        if move == 1:
            book.mid = old + 1
            changes.remove_if_present(book.asks, old + 1)
            changes.set(book.bids, old + 1, book.fresh_size())
            changes.remove_if_present(book.bids, old + 1 - DEPTH_LEVELS)
            changes.set(book.asks, old + 1 + DEPTH_LEVELS, book.fresh_size())
            changes.ensure(book.asks, old + 2)
        elif move == -1:
            book.mid = old - 1
            changes.remove_if_present(book.bids, old)
            changes.set(book.asks, old, book.fresh_size())
            changes.remove_if_present(book.asks, old + DEPTH_LEVELS)
            changes.set(book.bids, old - DEPTH_LEVELS, book.fresh_size())
            changes.ensure(book.bids, old - 1)

    @staticmethod
    def _requote(book: _Book, changes: _Changes) -> None:
        """Resize or remove one to three levels behind the touch (never the touch itself)."""
        rng = book.rng
        for _ in range(rng.randint(1, 3)):
            offset = rng.randint(1, DEPTH_LEVELS - 1)
            if rng.random() < 0.5:
                side, index = book.bids, book.mid - offset
            else:
                side, index = book.asks, book.mid + 1 + offset
            if index in side and rng.random() < _REMOVE_PROBABILITY:
                changes.set(side, index, 0)
            else:
                changes.set(side, index, book.fresh_size())
