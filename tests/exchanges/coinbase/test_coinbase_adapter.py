"""The Coinbase Advanced Trade adapter without a socket: channels, subscribe frames, derived
acknowledgements, heartbeats, exact normalization, per-channel numbering across the
connection's sequence gaps, and nothing but UpstreamFormatError on malformed input."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.adapters.base import Adapter
from relay.adapters.coinbase import CoinbaseAdapter
from relay.core.model import Ack, Heartbeat, RepairKind, StreamKind, Update, UpstreamFormatError
from relay.core.source import NO_RULES, FetchSnapshot

BOOK = "cb:book:BTC-USD"
ETH_BOOK = "cb:book:ETH-USD"
TRADES = "cb:trades:BTC-USD"
TICKER = "cb:ticker:BTC-USD"
T0 = "2023-02-09T20:32:50.714964855Z"
T0_MS = 1675974770714


@pytest.fixture
def adapter() -> CoinbaseAdapter:
    return CoinbaseAdapter("cb", ["BTC-USD", "ETH-USD"])


def frame(channel: str, seq: int, events: list[Any], timestamp: str = T0) -> str:
    message = {
        "channel": channel,
        "client_id": "",
        "timestamp": timestamp,
        "sequence_num": seq,
        "events": events,
    }
    return orjson.dumps(message).decode()


def level(side: str, price: str, quantity: str, at: str = "1970-01-01T00:00:00Z") -> Any:
    return {"side": side, "event_time": at, "price_level": price, "new_quantity": quantity}


def l2(seq: int, kind: str, product: str, updates: list[Any], timestamp: str = T0) -> str:
    event = {"type": kind, "product_id": product, "updates": updates}
    return frame("l2_data", seq, [event], timestamp)


def trade(trade_id: str, side: str, time: str, price: str = "21922.05") -> dict[str, Any]:
    return {
        "trade_id": trade_id,
        "product_id": "BTC-USD",
        "price": price,
        "size": "0.11",
        "side": side,
        "time": time,
    }


TICKER_EVENT = {
    "type": "ticker",
    "product_id": "BTC-USD",
    "price": "21922.05",
    "volume_24_h": "28365.62",
    "low_24_h": "21700.01",
    "high_24_h": "22105.7",
    "low_52_w": "15460",
    "high_52_w": "48240",
    "price_percent_chg_24_h": "-0.44",
    "best_bid": "21921.73",
    "best_bid_quantity": "0.06317902",
    "best_ask": "21922.05",
    "best_ask_quantity": "0.30",
}


def subscriptions(seq: int, listed: dict[str, list[str]]) -> str:
    return frame("subscriptions", seq, [{"subscriptions": listed}])


# Channels --------------------------------------------------------------------------------


def test_channels_kinds_and_repairs(adapter: CoinbaseAdapter) -> None:
    typed: Adapter = adapter
    assert typed.source == "cb" and typed.heartbeat_interval == 2.0
    assert adapter.channels() == {
        f"cb:{stream}:{product}"
        for stream in ("trades", "ticker", "book")
        for product in ("BTC-USD", "ETH-USD")
    }
    assert adapter.kind(TRADES) is StreamKind.EVENT
    assert adapter.kind(TICKER) is StreamKind.STATE
    assert adapter.kind(BOOK) is StreamKind.BOOK
    for unknown in ("cb:book:SOL-USD", "cb:candles:BTC-USD", "other:book:BTC-USD", "cb"):
        assert adapter.kind(unknown) is None
    assert adapter.repair(BOOK) is RepairKind.RESUBSCRIBE
    assert adapter.repair(TRADES) is RepairKind.NONE
    assert adapter.repair(TICKER) is RepairKind.NONE
    assert adapter.book_rules(BOOK) == NO_RULES
    # At connect the heartbeats subscription, once per connection: its ticks are the sign of
    # life even while nothing else is subscribed.
    probe = adapter.probe_frame()
    assert probe is not None and orjson.loads(probe)["channel"] == "heartbeats"
    assert adapter.probe_frame() is None
    assert "heartbeats" not in {
        orjson.loads(f)["channel"] for f in adapter.subscribe_frames([BOOK])
    }
    adapter.reset()
    assert adapter.probe_frame() is not None
    assert adapter.http_repair(FetchSnapshot(BOOK)) is None


def test_constructor_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="':'"):
        CoinbaseAdapter("c:b", ["BTC-USD"])
    with pytest.raises(ValueError, match="BASE-QUOTE"):
        CoinbaseAdapter("cb", ["btc-usd"])


# Requests --------------------------------------------------------------------------------


def test_subscribe_frames_one_per_coinbase_channel_heartbeats_once(
    adapter: CoinbaseAdapter,
) -> None:
    frames = [orjson.loads(f) for f in adapter.subscribe_frames([BOOK, TRADES, ETH_BOOK])]
    assert frames == [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "heartbeats"},
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"},
    ]
    again = [orjson.loads(f) for f in adapter.subscribe_frames([TICKER])]
    assert again == [{"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "ticker"}]
    adapter.reset()  # a new connection asks for heartbeats again
    assert [orjson.loads(f)["channel"] for f in adapter.subscribe_frames([TICKER])] == [
        "heartbeats",
        "ticker",
    ]
    assert adapter.subscribe_frames([]) == []
    with pytest.raises(KeyError):
        adapter.subscribe_frames(["cb:book:SOL-USD"])


def test_unsubscribe_frames(adapter: CoinbaseAdapter) -> None:
    frames = [orjson.loads(f) for f in adapter.unsubscribe_frames([BOOK, ETH_BOOK, TICKER])]
    assert frames == [
        {"type": "unsubscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
        {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channel": "ticker"},
    ]
    assert adapter.unsubscribe_frames([]) == []


def test_subscriptions_acknowledge_the_channels_they_newly_cover(
    adapter: CoinbaseAdapter,
) -> None:
    adapter.subscribe_frames([BOOK, ETH_BOOK, TRADES])
    # Heartbeats' answer: nothing of the relay's is covered yet.
    assert adapter.parse(subscriptions(0, {"heartbeats": ["heartbeats"]})) == [Heartbeat()]
    listed = {"heartbeats": ["heartbeats"], "level2": ["BTC-USD", "ETH-USD"]}
    assert adapter.parse(subscriptions(1, listed)) == [
        Ack(True, f"subscribed {BOOK}, {ETH_BOOK}", (BOOK, ETH_BOOK))
    ]
    listed["market_trades"] = ["BTC-USD"]
    assert adapter.parse(subscriptions(2, listed)) == [Ack(True, f"subscribed {TRADES}", (TRADES,))]
    # Already acknowledged: a later listing (after an unsubscribe, say) acknowledges nothing.
    assert adapter.parse(subscriptions(3, listed)) == [Heartbeat()]
    # A channel re-subscribed after an unsubscribe is acknowledged again.
    adapter.unsubscribe_frames([BOOK])
    adapter.subscribe_frames([BOOK])
    assert adapter.parse(subscriptions(4, {"level2": ["ETH-USD"]})) == [Heartbeat()]
    assert adapter.parse(subscriptions(5, {"l2_data": ["BTC-USD"]})) == [
        Ack(True, f"subscribed {BOOK}", (BOOK,))
    ]


def test_an_unsubscribed_channel_is_not_acknowledged(adapter: CoinbaseAdapter) -> None:
    adapter.subscribe_frames([TICKER])
    adapter.unsubscribe_frames([TICKER])
    assert adapter.parse(subscriptions(0, {"ticker": ["BTC-USD"]})) == [Heartbeat()]


def test_an_error_refuses_the_oldest_request_not_answered(adapter: CoinbaseAdapter) -> None:
    adapter.subscribe_frames([TICKER])  # heartbeats, then ticker
    adapter.subscribe_frames([BOOK])
    assert adapter.parse(subscriptions(0, {"heartbeats": ["heartbeats"]})) == [Heartbeat()]
    error = orjson.dumps({"type": "error", "message": "failure to subscribe"}).decode()
    assert adapter.parse(error) == [
        Ack(False, "subscribe ticker refused: 'failure to subscribe'", (TICKER,))
    ]
    assert adapter.parse(subscriptions(1, {"level2": ["BTC-USD"]})) == [
        Ack(True, f"subscribed {BOOK}", (BOOK,))
    ]
    # Nothing outstanding: a refusal of nothing the relay can name.
    assert adapter.parse(error) == [Ack(False, "error: 'failure to subscribe'")]


def test_reset_forgets_the_connection(adapter: CoinbaseAdapter) -> None:
    adapter.subscribe_frames([BOOK])
    assert adapter.parse(l2(7, "snapshot", "BTC-USD", [])) == [
        Update(BOOK, {"symbol": "BTC-USD", "bids": [], "asks": [], "ts": T0_MS}, 1, True)
    ]
    adapter.reset()
    # Numbering starts over: the new connection's sequence_num 0 is not a duplicate, and the
    # book's counter restarts with it.
    assert adapter.parse(l2(0, "snapshot", "BTC-USD", []))[0] == Update(
        BOOK, {"symbol": "BTC-USD", "bids": [], "asks": [], "ts": T0_MS}, 1, True
    )
    assert adapter.parse(subscriptions(1, {"level2": ["BTC-USD"]})) == [Heartbeat()]


# Heartbeats ------------------------------------------------------------------------------


@pytest.mark.parametrize("counter", ["3049", 3049])
def test_heartbeats_are_heartbeats(adapter: CoinbaseAdapter, counter: object) -> None:
    event = {
        "current_time": "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105",
        "heartbeat_counter": counter,
    }
    assert adapter.parse(frame("heartbeats", 0, [event])) == [Heartbeat()]


def test_unknown_channels_are_ignored(adapter: CoinbaseAdapter) -> None:
    assert adapter.parse(frame("candles", 0, [{"type": "snapshot", "candles": []}])) == []
    # ...but their numbers count: the next message is in sequence.
    adapter.parse(l2(1, "snapshot", "BTC-USD", []))
    assert adapter.parse(l2(2, "update", "BTC-USD", []))[0].seq == 2  # type: ignore[union-attr]


# Data ------------------------------------------------------------------------------------


def test_level2_snapshot_and_update_normalized(adapter: CoinbaseAdapter) -> None:
    snapshot = l2(
        3,
        "snapshot",
        "BTC-USD",
        [
            level("bid", "21921.73", "0.06317902"),
            level("bid", "21921.3", "0.02"),
            level("offer", "21922.05", "0.41"),
        ],
    )
    assert adapter.parse(snapshot) == [
        Update(
            BOOK,
            {
                "symbol": "BTC-USD",
                "bids": [["21921.73", "0.06317902"], ["21921.3", "0.02"]],
                "asks": [["21922.05", "0.41"]],
                "ts": T0_MS,  # the envelope's: a snapshot's event_time is a placeholder
            },
            1,
            True,
        )
    ]
    update = l2(
        4,
        "update",
        "BTC-USD",
        [
            level("offer", "21922.05", "0.00000000", "2023-02-09T20:32:51.001300999Z"),
            level("bid", "21921.80", "0.5", "2023-02-09T20:32:51.0012Z"),
        ],
        timestamp="2023-02-09T20:32:51.9Z",
    )
    assert adapter.parse(update) == [
        Update(
            BOOK,
            {
                "symbol": "BTC-USD",
                "bids": [["21921.80", "0.5"]],
                "asks": [["21922.05", "0.00000000"]],  # the removal as Coinbase wrote it
                "ts": 1675974771001,  # the newest event_time, truncated to the millisecond
            },
            2,
            False,
        )
    ]
    empty = adapter.parse(l2(5, "update", "BTC-USD", [], timestamp="2023-02-09T20:32:52Z"))
    assert empty == [
        Update(BOOK, {"symbol": "BTC-USD", "bids": [], "asks": [], "ts": 1675974772000}, 3, False)
    ]


def test_one_message_may_carry_several_books(adapter: CoinbaseAdapter) -> None:
    events = [
        {"type": "update", "product_id": "ETH-USD", "updates": [level("bid", "1260", "1")]},
        {"type": "update", "product_id": "BTC-USD", "updates": []},
    ]
    updates = adapter.parse(frame("l2_data", 0, events))
    assert [(u.channel, u.seq) for u in updates if isinstance(u, Update)] == [
        (ETH_BOOK, 1),
        (BOOK, 1),
    ]


def test_ticker_normalized_whole_state(adapter: CoinbaseAdapter) -> None:
    for kind in ("snapshot", "update"):
        adapter.reset()
        message = frame("ticker", 0, [{"type": kind, "tickers": [TICKER_EVENT]}])
        assert adapter.parse(message) == [
            Update(
                TICKER,
                {
                    "symbol": "BTC-USD",
                    "bid": "21921.73",
                    "bid_size": "0.06317902",
                    "ask": "21922.05",
                    "ask_size": "0.30",
                    "last": "21922.05",
                    "ts": T0_MS,
                },
                1,
                True,
            )
        ]


def test_trades_normalized_oldest_first_with_the_takers_side(adapter: CoinbaseAdapter) -> None:
    trades = [
        trade("489201", "SELL", "2023-02-09T20:32:51.0013Z", "21922.05"),
        trade("489200", "BUY", "2023-02-09T20:32:50.999999999Z", "21921.73"),
    ]
    updates = adapter.parse(frame("market_trades", 9, [{"type": "update", "trades": trades}]))
    assert updates == [
        Update(
            TRADES,
            {
                "symbol": "BTC-USD",
                "price": "21921.73",
                "size": "0.11",
                "side": "sell",  # the maker bought: the taker sold
                "trade_id": "489200",
                "ts": 1675974770999,
            },
            1,
            False,
        ),
        Update(
            TRADES,
            {
                "symbol": "BTC-USD",
                "price": "21922.05",
                "size": "0.11",
                "side": "buy",
                "trade_id": "489201",
                "ts": 1675974771001,
            },
            2,
            False,
        ),
    ]


def test_the_trades_snapshot_is_history_not_published(adapter: CoinbaseAdapter) -> None:
    history = [trade("489198", "BUY", "2023-02-09T20:32:49.5Z")]
    message = frame("market_trades", 0, [{"type": "snapshot", "trades": history}])
    assert adapter.parse(message) == [Heartbeat()]


@pytest.mark.parametrize(
    ("time", "ms"),
    [
        ("2023-02-09T20:32:50Z", 1675974770000),
        ("2023-02-09T20:32:50.7Z", 1675974770700),
        ("2023-02-09T20:32:50.999999999Z", 1675974770999),  # truncated, never rounded up
        ("2023-02-09t20:32:50.001z", 1675974770001),
        ("2023-02-09T22:32:50.123+02:00", 1675974770123),
        ("2023-02-09T19:02:50.123-01:30", 1675974770123),
        ("1970-01-01T00:00:00Z", 0),
        ("2999-12-31T23:59:59.999999999Z", 32503680000000 - 1),
    ],
)
def test_times_are_exact_milliseconds(adapter: CoinbaseAdapter, time: str, ms: int) -> None:
    update = adapter.parse(
        frame("market_trades", 0, [{"type": "update", "trades": [trade("1", "BUY", time)]}])
    )
    assert isinstance(update[0], Update) and update[0].data["ts"] == ms


# Sequence numbers ------------------------------------------------------------------------


def test_a_jump_reaches_every_channel_at_its_next_message(adapter: CoinbaseAdapter) -> None:
    def seq_of(events: list[Any]) -> int | None:
        (update,) = events
        assert isinstance(update, Update)
        return update.seq

    assert seq_of(adapter.parse(l2(0, "snapshot", "BTC-USD", []))) == 1
    assert seq_of(adapter.parse(l2(1, "snapshot", "ETH-USD", []))) == 1
    buy = [{"type": "update", "trades": [trade("1", "BUY", T0)]}]
    assert seq_of(adapter.parse(frame("market_trades", 2, buy))) == 1
    assert seq_of(adapter.parse(l2(3, "update", "BTC-USD", []))) == 2
    # sequence_num 4 was lost: nobody knows whose it was, so every channel skips a number.
    assert seq_of(adapter.parse(l2(5, "update", "BTC-USD", []))) == 4
    assert seq_of(adapter.parse(l2(6, "update", "ETH-USD", []))) == 3
    assert seq_of(adapter.parse(frame("market_trades", 7, buy))) == 3
    # A book re-subscribed gets its snapshot numbered after everything it buffered.
    assert adapter.parse(l2(8, "snapshot", "BTC-USD", []))[0] == Update(
        BOOK, {"symbol": "BTC-USD", "bids": [], "asks": [], "ts": T0_MS}, 5, True
    )


def test_duplicates_are_dropped(adapter: CoinbaseAdapter) -> None:
    message = l2(4, "snapshot", "BTC-USD", [])
    assert len(adapter.parse(message)) == 1
    assert adapter.parse(message) == []
    assert adapter.parse(l2(3, "update", "BTC-USD", [])) == []
    assert adapter.parse(frame("heartbeats", 4, [{"heartbeat_counter": 1}])) == []


def test_a_malformed_message_counts_as_lost(adapter: CoinbaseAdapter) -> None:
    assert adapter.parse(l2(0, "snapshot", "BTC-USD", []))[0].seq == 1  # type: ignore[union-attr]
    with pytest.raises(UpstreamFormatError):
        adapter.parse(l2(1, "update", "BTC-USD", [level("ask", "1", "1")]))
    # Its number was not taken: the next message shows the jump, and the book its gap.
    assert adapter.parse(l2(2, "update", "BTC-USD", []))[0].seq == 3  # type: ignore[union-attr]


# Malformed input -------------------------------------------------------------------------

GOOD_L2 = orjson.loads(l2(0, "update", "BTC-USD", [level("bid", "1", "2", T0)]))
GOOD_TRADES = orjson.loads(
    frame("market_trades", 0, [{"type": "update", "trades": [trade("1", "BUY", T0)]}])
)
GOOD_TICKER = orjson.loads(frame("ticker", 0, [{"type": "update", "tickers": [TICKER_EVENT]}]))


def mutated(message: dict[str, Any], path: tuple[Any, ...], value: Any) -> str:
    copied = copy.deepcopy(message)
    target = copied
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return orjson.dumps(copied).decode()


UPDATE0 = ("events", 0, "updates", 0)
TRADE0 = ("events", 0, "trades", 0)
TICKER0 = ("events", 0, "tickers", 0)

MALFORMED: list[tuple[str, str]] = [
    ("[1, 2]", "not a JSON object"),
    ('{"type": "subscribe"}', "message without a channel: {'type': 'subscribe'}"),
    (
        mutated(GOOD_L2, ("channel",), 7),
        "message without a channel: {'channel': 7, 'client_id': '', "
        "'timestamp': '2023-02-09T20:32:50.714964855Z'...",
    ),
    (
        mutated(GOOD_L2, ("sequence_num",), KeyError),
        "sequence_num must be a non-negative integer, got None",
    ),
    (
        mutated(GOOD_L2, ("sequence_num",), -1),
        "sequence_num must be a non-negative integer, got -1",
    ),
    (
        mutated(GOOD_L2, ("sequence_num",), True),
        "sequence_num must be a non-negative integer, got True",
    ),
    (
        mutated(GOOD_L2, ("sequence_num",), "5"),
        "sequence_num must be a non-negative integer, got '5'",
    ),
    (mutated(GOOD_L2, ("events",), {}), "events must be a list, got {}"),
    (
        mutated(GOOD_L2, ("timestamp",), "yesterday"),
        "timestamp must be an RFC 3339 time, got 'yesterday'",
    ),
    (mutated(GOOD_L2, ("events", 0), "update"), "level2 event must be an object, got 'update'"),
    (
        mutated(GOOD_L2, ("events", 0, "type"), "delta"),
        "level2 event type must be snapshot or update, got 'delta'",
    ),
    (
        mutated(GOOD_L2, ("events", 0, "product_id"), "SOL-USD"),
        "level2 for a product this source does not serve: 'SOL-USD'",
    ),
    (
        mutated(GOOD_L2, ("events", 0, "product_id"), None),
        "level2 for a product this source does not serve: None",
    ),
    (mutated(GOOD_L2, ("events", 0, "updates"), None), "updates must be a list, got None"),
    (mutated(GOOD_L2, (*UPDATE0, "side"), "ask"), "level2 side must be bid or offer, got 'ask'"),
    (
        mutated(GOOD_L2, (*UPDATE0, "price_level"), 21921.73),
        "price_level must be a decimal string, got 21921.73",
    ),
    (
        mutated(GOOD_L2, (*UPDATE0, "price_level"), "1e3"),
        "price_level must be a decimal string, got '1e3'",
    ),
    (
        mutated(GOOD_L2, (*UPDATE0, "new_quantity"), "-1"),
        "new_quantity must be a decimal string, got '-1'",
    ),
    (
        mutated(GOOD_L2, (*UPDATE0, "new_quantity"), KeyError),
        "new_quantity must be a decimal string, got None",
    ),
    (
        mutated(GOOD_L2, (*UPDATE0, "event_time"), "2023-02-09T20:32:50"),
        "event_time must be an RFC 3339 time, got '2023-02-09T20:32:50'",
    ),
    (
        mutated(GOOD_L2, (*UPDATE0, "event_time"), "2023-13-09T20:32:50Z"),
        "event_time is not a valid time: '2023-13-09T20:32:50Z'",
    ),
    (
        mutated(GOOD_L2, (*UPDATE0, "event_time"), "2023-02-09T20:32:50.1234567891Z"),
        "event_time must be an RFC 3339 time, got '2023-02-09T20:32:50.1234567891Z'",
    ),
    (
        mutated(GOOD_L2, (*UPDATE0, "event_time"), "2023-02-09T20:32:50+24:00"),
        "event_time is not a valid time: '2023-02-09T20:32:50+24:00'",
    ),
    (
        mutated(GOOD_L2, (*UPDATE0, "event_time"), "2023-02-09T20:32:60Z"),
        "event_time is not a valid time: '2023-02-09T20:32:60Z'",
    ),
    (mutated(GOOD_TRADES, ("events", 0, "trades"), "x"), "trades must be a list, got 'x'"),
    (mutated(GOOD_TRADES, (*TRADE0, "side"), "buy"), "trade side must be BUY or SELL, got 'buy'"),
    (
        mutated(GOOD_TRADES, (*TRADE0, "side"), "UNKNOWN_ORDER_SIDE"),
        "trade side must be BUY or SELL, got 'UNKNOWN_ORDER_SIDE'",
    ),
    (mutated(GOOD_TRADES, (*TRADE0, "trade_id"), KeyError), "trade_id must be a string, got None"),
    (mutated(GOOD_TRADES, (*TRADE0, "trade_id"), ""), "trade_id must be a string, got ''"),
    (mutated(GOOD_TRADES, (*TRADE0, "trade_id"), 1.5), "trade_id must be a string, got 1.5"),
    (mutated(GOOD_TRADES, (*TRADE0, "size"), 0.11), "size must be a decimal string, got 0.11"),
    (
        mutated(GOOD_TRADES, (*TRADE0, "time"), 1675974770),
        "time must be an RFC 3339 time, got 1675974770",
    ),
    (mutated(GOOD_TICKER, ("events", 0, "tickers"), None), "tickers must be a list, got None"),
    (
        mutated(GOOD_TICKER, (*TICKER0, "best_bid_quantity"), KeyError),
        "best_bid_quantity must be a decimal string, got None",
    ),
    (mutated(GOOD_TICKER, (*TICKER0, "best_ask"), ""), "best_ask must be a decimal string, got ''"),
    (mutated(GOOD_TICKER, (*TICKER0, "price"), None), "price must be a decimal string, got None"),
    (
        mutated(GOOD_TICKER, (*TICKER0, "best_bid"), "1e3"),
        "best_bid must be a decimal string, got '1e3'",
    ),
    (
        mutated(GOOD_TICKER, (*TICKER0, "best_ask_quantity"), 1),
        "best_ask_quantity must be a decimal string, got 1",
    ),
    (mutated(GOOD_TRADES, (*TRADE0, "price"), "-2"), "price must be a decimal string, got '-2'"),
    (mutated(GOOD_L2, (*UPDATE0,), "bid"), "level2 update must be an object, got 'bid'"),
    (mutated(GOOD_TICKER, TICKER0, "x"), "ticker must be an object, got 'x'"),
    (mutated(GOOD_TRADES, TRADE0, 1), "trade must be an object, got 1"),
    (frame("subscriptions", 0, ["level2"]), "subscriptions event must be an object, got 'level2'"),
    (
        frame("heartbeats", 0, [{"heartbeat_counter": "many"}]),
        "heartbeat_counter must be a non-negative integer, got 'many'",
    ),
    (frame("heartbeats", 0, ["beat"]), "heartbeat event must be an object, got 'beat'"),
    (
        frame("subscriptions", 0, [{"subscriptions": ["level2"]}]),
        "subscriptions must be an object, got ['level2']",
    ),
    (
        frame("subscriptions", 0, [{"subscriptions": {"level2": "BTC-USD"}}]),
        "subscriptions of level2 must be a list, got 'BTC-USD'",
    ),
    (
        frame("subscriptions", 0, [{"subscriptions": {"level2": [1]}}]),
        "product id must be a string: 1",
    ),
    (
        orjson.dumps({"type": "error", "message": "x", "sequence_num": "1"}).decode(),
        "sequence_num must be a non-negative integer, got '1'",
    ),
]


@pytest.mark.parametrize(("text", "error"), MALFORMED)
def test_malformed_input_is_an_upstream_format_error_naming_what_is_wrong(
    adapter: CoinbaseAdapter, text: str, error: str
) -> None:
    """The error's text is all the log says of a bad frame: it names the field and value."""
    adapter.subscribe_frames([BOOK])
    with pytest.raises(UpstreamFormatError) as caught:
        adapter.parse(text)
    assert str(caught.value) == error


def test_the_good_messages_the_malformed_ones_come_from_are_good(adapter: CoinbaseAdapter) -> None:
    for message in (GOOD_L2, GOOD_TRADES, GOOD_TICKER):
        adapter.reset()
        assert adapter.parse(orjson.dumps(message).decode())


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([GOOD_L2, GOOD_TRADES, GOOD_TICKER]),
    pick=st.integers(min_value=0),
    value=_JSON,
)
def test_any_corruption_is_an_upstream_format_error_or_valid(
    base: dict[str, Any], pick: int, value: Any
) -> None:
    paths = _paths(base)
    text = mutated(base, paths[pick % len(paths)], value)
    adapter = CoinbaseAdapter("cb", ["BTC-USD", "ETH-USD"])
    try:
        events = adapter.parse(text)
    except UpstreamFormatError:
        return
    for event in events:
        if isinstance(event, Update):
            # Whatever got through is in the protocol's shape.
            assert isinstance(event.data["symbol"], str) and isinstance(event.data["ts"], int)


def test_an_unknown_channel_is_named(adapter: CoinbaseAdapter) -> None:
    with pytest.raises(KeyError) as caught:
        adapter.subscribe_frames(["cb:book:SOL-USD"])
    assert caught.value.args == ("unknown channel 'cb:book:SOL-USD'",)


def test_an_integer_trade_id_is_published_as_text(adapter: CoinbaseAdapter) -> None:
    message = mutated(GOOD_TRADES, (*TRADE0, "trade_id"), 12345)
    (update,) = adapter.parse(message)
    assert isinstance(update, Update) and update.data["trade_id"] == "12345"


def test_the_heartbeats_request_is_one_that_an_error_can_refuse(adapter: CoinbaseAdapter) -> None:
    error = orjson.dumps({"type": "error", "message": "failure"}).decode()
    assert orjson.loads(adapter.probe_frame() or "") == {
        "type": "subscribe",
        "product_ids": ["BTC-USD", "ETH-USD"],
        "channel": "heartbeats",
    }
    assert adapter.parse(error) == [Ack(False, "subscribe heartbeats refused: 'failure'")]
    adapter.reset()
    adapter.subscribe_frames([TICKER])  # heartbeats first, on a new connection
    assert adapter.parse(error) == [Ack(False, "subscribe heartbeats refused: 'failure'")]
    assert adapter.parse(error) == [Ack(False, "subscribe ticker refused: 'failure'", (TICKER,))]


def test_an_unsubscribe_is_a_request_that_an_error_can_refuse(adapter: CoinbaseAdapter) -> None:
    adapter.unsubscribe_frames([BOOK])
    error = orjson.dumps({"type": "error", "message": "failure", "sequence_num": 3}).decode()
    assert adapter.parse(error) == [Ack(False, "unsubscribe level2 refused: 'failure'")]
    assert adapter.parse(error) == [Ack(False, "error: 'failure'")]


def test_a_duplicate_subscriptions_message_acknowledges_nothing(adapter: CoinbaseAdapter) -> None:
    adapter.subscribe_frames([BOOK])
    adapter.parse(l2(5, "snapshot", "BTC-USD", []))
    assert adapter.parse(subscriptions(5, {"level2": ["BTC-USD"]})) == []


def test_an_unknown_channels_number_counts_after_other_messages(adapter: CoinbaseAdapter) -> None:
    adapter.parse(l2(1, "snapshot", "BTC-USD", []))
    assert adapter.parse(frame("candles", 2, [])) == []
    # In sequence: no gap, so the book's counter moves by one.
    assert adapter.parse(l2(3, "update", "BTC-USD", []))[0].seq == 2  # type: ignore[union-attr]


def test_trades_at_the_same_time_keep_their_order(adapter: CoinbaseAdapter) -> None:
    trades = [trade("7", "BUY", T0), trade("8", "SELL", T0)]
    events = adapter.parse(frame("market_trades", 0, [{"type": "update", "trades": trades}]))
    assert [e.data["trade_id"] for e in events] == ["7", "8"]  # type: ignore[union-attr]


def test_a_book_updates_time_is_its_newest_levels(adapter: CoinbaseAdapter) -> None:
    levels = [
        level("bid", "1", "2", "1970-01-01T00:00:02Z"),
        level("bid", "2", "2", "1970-01-01T00:00:01Z"),
    ]
    (update,) = adapter.parse(l2(0, "update", "BTC-USD", levels))
    assert isinstance(update, Update) and update.data["ts"] == 2000


@pytest.mark.parametrize(
    ("time", "ms"),
    [("1970-01-01T23:00:00+23:00", 0), ("1970-01-01T00:59:00+00:59", 0)],
)
def test_the_largest_offsets_are_valid(adapter: CoinbaseAdapter, time: str, ms: int) -> None:
    (update,) = adapter.parse(l2(0, "snapshot", "BTC-USD", [], timestamp=time))
    assert isinstance(update, Update) and update.data["ts"] == ms


def test_an_offset_of_sixty_minutes_is_not_a_time(adapter: CoinbaseAdapter) -> None:
    with pytest.raises(UpstreamFormatError) as caught:
        adapter.parse(l2(0, "snapshot", "BTC-USD", [], timestamp="1970-01-01T01:00:00+00:60"))
    assert str(caught.value) == "timestamp is not a valid time: '1970-01-01T01:00:00+00:60'"
