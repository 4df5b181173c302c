"""The sans-IO market model: reproducible, sequenced, and a book a client can rebuild exactly."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sim.market import DEPTH_LEVELS, MarketModel, SymbolSpec

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD"]
PRICE = re.compile(r"[0-9]+\.[0-9]{2}")
SIZE = re.compile(r"[0-9]+\.[0-9]{4}")


def run(model: MarketModel, steps: int, symbols: list[str] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(steps):
        for symbol in symbols or list(model.symbols):
            out.extend(model.step(symbol, 1_000_000 * i))
    return out


class Book:
    """A client-side book: snapshot plus absolute-size deltas, "0" deletes."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.seq: int = snapshot["seq"]
        self.bids = {p: s for p, s in snapshot["body"]["bids"]}
        self.asks = {p: s for p, s in snapshot["body"]["asks"]}

    def apply(self, update: dict[str, Any]) -> None:
        assert update["kind"] == "update"
        self.seq = update["seq"]
        for side, levels in (
            (self.bids, update["body"]["bids"]),
            (self.asks, update["body"]["asks"]),
        ):
            for price, size in levels:
                if size == "0":
                    side.pop(price, None)
                else:
                    side[price] = size

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return [list(kv) for kv in bids], [list(kv) for kv in asks]

    def assert_uncrossed(self) -> None:
        assert self.bids and self.asks
        assert max(map(Decimal, self.bids)) < min(map(Decimal, self.asks))


def test_same_seed_same_messages_and_different_seed_differs() -> None:
    a = run(MarketModel(SYMBOLS, seed=7), 50)
    b = run(MarketModel(SYMBOLS, seed=7), 50)
    c = run(MarketModel(SYMBOLS, seed=8), 50)
    assert a == b
    assert a != c


def test_a_symbols_path_does_not_depend_on_other_symbols() -> None:
    alone = run(MarketModel(["BTC-USD", "ETH-USD"], seed=3), 30, ["BTC-USD"])
    interleaved = [
        m for m in run(MarketModel(["BTC-USD", "ETH-USD"], seed=3), 30) if "BTC" in m["topic"]
    ]
    assert alone == interleaved


def test_step_emits_trade_ticker_depth_with_per_topic_seq() -> None:
    model = MarketModel(["BTC-USD", "ETH-USD"])
    for i in range(1, 6):
        trade, ticker, depth = model.step("BTC-USD", 42)
        assert [trade["topic"], ticker["topic"], depth["topic"]] == [
            "trade.BTC-USD",
            "ticker.BTC-USD",
            "depth.BTC-USD",
        ]
        assert [trade["kind"], ticker["kind"], depth["kind"]] == ["update", "snapshot", "update"]
        assert trade["seq"] == ticker["seq"] == depth["seq"] == i
        assert trade["body"]["id"] == i
    model.step("ETH-USD", 42)
    assert model.seq("trade.ETH-USD") == 1
    assert model.seq("depth.BTC-USD") == 5


def test_start_prices_and_formats() -> None:
    model = MarketModel(SYMBOLS)
    expected = {"BTC-USD": 43000, "ETH-USD": 2300, "SOL-USD": 100, "DOGE-USD": 100}
    for symbol, start in expected.items():
        snap = model.snapshot(f"depth.{symbol}", 0)
        assert snap is not None
        bids, asks = snap["body"]["bids"], snap["body"]["asks"]
        assert len(bids) == len(asks) == DEPTH_LEVELS
        assert abs(Decimal(bids[0][0]) - start) / start < Decimal("0.01")
        for price, size in bids + asks:
            assert PRICE.fullmatch(price) and SIZE.fullmatch(size)
    for message in run(model, 20):
        body = message["body"]
        if message["topic"].startswith("trade."):
            assert PRICE.fullmatch(body["px"]) and SIZE.fullmatch(body["qty"])
            assert body["taker"] in ("B", "S")
            assert isinstance(body["time"], int) and isinstance(body["id"], int)
        elif message["topic"].startswith("depth."):
            for _, size in body["bids"] + body["asks"]:
                assert size == "0" or SIZE.fullmatch(size)


def test_ticker_matches_book_top_and_trade_hits_the_touch() -> None:
    model = MarketModel(["ETH-USD"], seed=5)
    for _ in range(200):
        before = model.snapshot("ticker.ETH-USD", 0)
        assert before is not None
        trade, ticker, _ = model.step("ETH-USD", 0)
        touch = before["body"]["ask" if trade["body"]["taker"] == "B" else "bid"]
        assert trade["body"]["px"] == touch["px"]
        assert Decimal(trade["body"]["qty"]) <= Decimal(touch["qty"])
        assert ticker["body"]["last"] == trade["body"]["px"]
        depth = model.snapshot("depth.ETH-USD", 0)
        assert depth is not None
        bid, ask = depth["body"]["bids"][0], depth["body"]["asks"][0]
        assert ticker["body"]["bid"] == {"px": bid[0], "qty": bid[1]}
        assert ticker["body"]["ask"] == {"px": ask[0], "qty": ask[1]}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 300))
def test_replaying_depth_updates_over_a_snapshot_equals_the_later_snapshot(
    seed: int, steps: int
) -> None:
    model = MarketModel(["BTC-USD", "SOL-USD"], seed=seed)
    first = model.snapshot("depth.SOL-USD", 0)
    assert first is not None
    book = Book(first)
    removals = 0
    for message in run(model, steps):
        if message["topic"] == "depth.SOL-USD":
            assert message["seq"] == book.seq + 1
            book.apply(message)
            book.assert_uncrossed()
            removals += sum(
                size == "0" for _, size in message["body"]["bids"] + message["body"]["asks"]
            )
    later = model.snapshot("depth.SOL-USD", 99)
    assert later is not None
    assert later["seq"] == book.seq == steps
    assert book.levels() == (later["body"]["bids"], later["body"]["asks"])
    assert len(book.bids) <= DEPTH_LEVELS and len(book.asks) <= DEPTH_LEVELS
    if steps >= 50:
        assert removals > 0


def test_snapshot_kinds_and_unknown_topics() -> None:
    model = MarketModel(["BTC-USD"])
    assert model.snapshot("trade.BTC-USD", 0) is None
    ticker = model.snapshot("ticker.BTC-USD", 123)
    assert ticker is not None
    assert ticker["kind"] == "snapshot" and ticker["seq"] == 0 and ticker["body"]["time"] == 123
    assert model.topics() == ["trade.BTC-USD", "ticker.BTC-USD", "depth.BTC-USD"]
    with pytest.raises(KeyError):
        model.snapshot("depth.ETH-USD", 0)
    with pytest.raises(KeyError):
        model.step("ETH-USD", 0)
    with pytest.raises(ValueError):
        MarketModel([])
    with pytest.raises(ValueError):
        MarketModel(["BTC-USD", "BTC-USD"])


def test_skip_jumps_seq_and_leaves_a_replayed_book_wrong() -> None:
    model = MarketModel(["BTC-USD"], seed=11)
    snap = model.snapshot("depth.BTC-USD", 0)
    assert snap is not None
    book = Book(snap)
    for message in run(model, 5):
        if message["topic"] == "depth.BTC-USD":
            book.apply(message)
    ticker_before = model.snapshot("ticker.BTC-USD", 0)
    model.skip("depth.BTC-USD", 7, 0)
    assert model.seq("depth.BTC-USD") == 12
    assert model.seq("ticker.BTC-USD") == 5  # skipped deltas never touch the ticker
    assert model.snapshot("ticker.BTC-USD", 0) == ticker_before
    _, _, depth = model.step("BTC-USD", 0)
    assert depth["seq"] == book.seq + 8  # the gap a client sees
    book.apply(depth)
    truth = model.snapshot("depth.BTC-USD", 0)
    assert truth is not None
    assert book.levels() != (truth["body"]["bids"], truth["body"]["asks"])
    # Resync: the fresh snapshot plus later deltas is right again.
    book = Book(truth)
    for message in run(model, 20):
        if message["topic"] == "depth.BTC-USD":
            book.apply(message)
    final = model.snapshot("depth.BTC-USD", 0)
    assert final is not None
    assert book.levels() == (final["body"]["bids"], final["body"]["asks"])


def test_skip_rejects_non_depth_topics() -> None:
    model = MarketModel(["BTC-USD"])
    with pytest.raises(ValueError):
        model.skip("trade.BTC-USD", 1, 0)
    with pytest.raises(ValueError):
        model.skip("depth.BTC-USD", -1, 0)


def test_burst_trades_change_no_state() -> None:
    model = MarketModel(["BTC-USD"], seed=2)
    run(model, 3)
    ticker, depth = model.snapshot("ticker.BTC-USD", 0), model.snapshot("depth.BTC-USD", 0)
    trades = [model.trade("BTC-USD", i) for i in range(100)]
    assert [t["seq"] for t in trades] == list(range(4, 104))
    assert model.snapshot("ticker.BTC-USD", 0) == ticker
    assert model.snapshot("depth.BTC-USD", 0) == depth
    assert ticker is not None
    touch = {ticker["body"]["bid"]["px"], ticker["body"]["ask"]["px"]}
    assert {t["body"]["px"] for t in trades} <= touch


def test_price_floor_keeps_every_level_positive() -> None:
    # Starts two levels above the floor, so the walk runs into it within a few steps.
    model = MarketModel(["PENNY-USD"], seed=4, specs={"PENNY-USD": SymbolSpec("0.21", 2, 1)})
    snap = model.snapshot("depth.PENNY-USD", 0)
    assert snap is not None
    book = Book(snap)
    lowest_bids = []
    for message in run(model, 3000):
        if message["topic"] == "depth.PENNY-USD":
            book.apply(message)
            book.assert_uncrossed()
            lowest_bids.append(min(map(Decimal, book.bids)))
    assert min(lowest_bids) == Decimal("0.01")  # the floor was reached ...
    assert all(Decimal(p) > 0 for p in book.bids)  # ... and never crossed
