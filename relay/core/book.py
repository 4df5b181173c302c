"""A level-2 order book that keeps prices and sizes exactly as the upstream wrote them.

The protocol promises clients the source's own decimal strings, so the book never turns them into
floats: it stores the strings and uses :class:`~decimal.Decimal` only to compare. Keying levels by
their Decimal value means "100.0" and "100.00" are the same level (a source that changes its
formatting mid-stream must not leave a phantom level behind), and comparing sizes with Decimal
means "0", "0.0" and "0E-8" all remove a level.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

Level = tuple[Decimal, str, str, bool]
"""A parsed level: the price as the sort and identity key, price and size as given, and whether
the size is zero (the level is to be removed)."""

_ZERO = Decimal(0)


def _decimal(text: object, what: str) -> Decimal:
    if not isinstance(text, str):
        raise ValueError(f"book {what} must be a decimal string, got {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"book {what} is not a decimal: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"book {what} must be finite, got {text!r}")
    return value


def parse_levels(levels: Iterable[Sequence[str]]) -> list[Level]:
    """Validate ``[[price, size], ...]`` as found in normalized book data.

    Raises ValueError on anything malformed. Parsing everything before touching the book is what
    makes the book's updates all-or-nothing.
    """
    parsed: list[Level] = []
    for level in levels:
        if not isinstance(level, list | tuple) or len(level) != 2:
            raise ValueError(f"book level must be a [price, size] pair, got {level!r}")
        price, size = level
        key = _decimal(price, "price")
        amount = _decimal(size, "size")
        if amount < _ZERO:
            raise ValueError(f"book size must not be negative, got {size!r}")
        parsed.append((key, price, size, amount == _ZERO))
    return parsed


@attrs.define
class OrderBook:
    """Bids and asks of one symbol, each a map from price to the (price, size) strings."""

    _bids: dict[Decimal, tuple[str, str]] = attrs.field(init=False, factory=dict)
    _asks: dict[Decimal, tuple[str, str]] = attrs.field(init=False, factory=dict)

    def apply_snapshot(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        """Replace the whole book.

        A snapshot reads like a delta on an empty book: zero sizes leave a level out, and a price
        listed twice takes its last entry. Raises ValueError on malformed levels, leaving the
        book unchanged.
        """
        new_bids, new_asks = parse_levels(bids), parse_levels(asks)
        self._bids, self._asks = {}, {}
        self._apply(new_bids, new_asks)

    def apply_delta(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        """Set the listed levels to their new absolute size; a zero size removes the level.

        Raises ValueError on malformed levels, leaving the book unchanged.
        """
        self._apply(parse_levels(bids), parse_levels(asks))

    def _apply(self, bids: list[Level], asks: list[Level]) -> None:
        for side, changes in ((self._bids, bids), (self._asks, asks)):
            for key, price, size, zero in changes:
                if zero:
                    side.pop(key, None)
                else:
                    side[key] = (price, size)

    def truncate(self, depth: int) -> tuple[list[list[str]], list[list[str]]]:
        """Keep the best ``depth`` levels of each side; answers the levels removed."""
        removed: list[list[list[str]]] = []
        for side, best_first in ((self._bids, True), (self._asks, False)):
            beyond = sorted(side, reverse=best_first)[depth:] if len(side) > depth else []
            removed.append([list(side.pop(key)) for key in beyond])
        return removed[0], removed[1]

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        """``(bids, asks)`` as ``[[price, size], ...]``: bids best (highest) first, asks lowest
        first. Two books are the same book exactly when their levels are equal."""
        bids = [[p, s] for _, (p, s) in sorted(self._bids.items(), reverse=True)]
        asks = [[p, s] for _, (p, s) in sorted(self._asks.items())]
        return bids, asks

    def to_data(self, symbol: str, ts: int) -> dict[str, Any]:
        """The book in the protocol's normalized schema, for a snapshot message."""
        bids, asks = self.levels()
        return {"symbol": symbol, "bids": bids, "asks": asks, "ts": ts}
