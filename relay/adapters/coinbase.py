"""Adapter for Coinbase Advanced Trade's public market data WebSocket
(``wss://advanced-trade-ws.coinbase.com``; public channels need no authentication, so no JWT).

Channels: ``SOURCE:trades:SYM`` from ``market_trades``, ``SOURCE:ticker:SYM`` from ``ticker`` and
``SOURCE:book:SYM`` from ``level2`` (received as ``l2_data``). ``SYM`` is the relay's
``BASE-QUOTE`` symbol, which is also Coinbase's product id (``BTC-USD``). Coinbase takes one
channel per request, so a batch of relay channels becomes one ``subscribe`` per Coinbase channel
with all its product ids; the first batch of a connection also subscribes ``heartbeats``
(a message every second; without it most channels are closed after 60-90 s without updates).

Acknowledgements. Coinbase answers a subscribe or unsubscribe with a ``subscriptions`` message
that lists everything the connection is subscribed to now, not what the request asked. So an
acknowledgement is derived: the relay channels requested and not yet acknowledged that the list
now covers are acknowledged (``Ack(True, channels)``). An ``error`` message names no request:
requests are answered in the order they were sent, one answer each, so it is taken as the
refusal of the oldest request not answered yet (``Ack(False, its channels)``).

Sequence numbers and book repair. Every message carries ``sequence_num``, counted per
connection across all channels: a jump means messages were lost on this connection, but not
which channel's. The relay's book sync needs a number per book, so the adapter keeps a counter
per relay channel (the last number it gave an Update of that channel on this connection). When
``sequence_num`` jumps, every counter is advanced by one extra, so each channel's next message
arrives one number further than its tracker expects: each book then sees a gap at its next
message and is repaired the Coinbase way, by re-subscribing (``RepairKind.RESUBSCRIBE``: the
``level2`` channel sends a fresh ``snapshot`` on subscribe). The snapshot gets its channel's next
counter value with ``snapshot=True``, newer than every delta the book buffered meanwhile, so they
are all (rightly) dropped as included in it. Counters only grow on a connection: unsubscribing
keeps them, or a resubscribed book's snapshot would look older than its buffered deltas.
:meth:`CoinbaseAdapter.reset` starts them over with the connection. A frame that cannot be read
does not advance the connection's number, so the next one shows the jump: a malformed message
is a lost one. A message whose ``sequence_num`` is not above the last one is a duplicate and
is dropped.

Trades and tickers have nothing to repair from (``RepairKind.NONE``); their Updates get the same
per-channel counters, so a connection's gap is also counted (logged, never hidden) on each of
them at its next message, although it may have been another channel's loss.

Taker side: ``market_trades`` gives ``side`` as ``BUY``/``SELL`` and Coinbase reports the maker
order's side there (see :func:`_taker_side`), so the protocol's taker side is the opposite one.

What the ticker lacks: a ``ticker`` message has ``price`` (the last trade's), ``best_bid``,
``best_bid_quantity``, ``best_ask`` and ``best_ask_quantity``, which is the whole protocol
ticker, but no time of its own: ``ts`` is the envelope's ``timestamp``. The last trade's size is
not in it (the protocol does not ask for it).

Times are RFC 3339 strings with up to nine fractional digits; they are read exactly (integers,
never floats) and truncated to milliseconds. A book snapshot's ``ts`` is the envelope's
``timestamp`` (Coinbase's snapshot levels carry a placeholder ``event_time``, the epoch, in its
documented example); a book update's is the newest ``event_time`` of its levels.

Trades in the ``market_trades`` snapshot that follows a subscribe are history from before the
subscription: they are not published (a reconnect would publish them again), only the updates.
Every field read is validated: a malformed message is one :class:`UpstreamFormatError`.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import orjson

from relay.adapters.base import HttpRepair
from relay.adapters.wire import describe, load_object, source_name
from relay.core.model import (
    Ack,
    Heartbeat,
    RepairKind,
    StreamKind,
    Update,
    UpstreamEvent,
    UpstreamFormatError,
)
from relay.core.source import NO_RULES, BookRules, FetchItem, FetchSnapshot

#: The public market data endpoint (the configuration's default for this kind).
DEFAULT_URL = "wss://advanced-trade-ws.coinbase.com"

# relay stream -> (Coinbase channel to subscribe, kind)
_STREAMS: dict[str, tuple[str, StreamKind]] = {
    "trades": ("market_trades", StreamKind.EVENT),
    "ticker": ("ticker", StreamKind.STATE),
    "book": ("level2", StreamKind.BOOK),
}
_HEARTBEATS = "heartbeats"
# What a received message's ``channel`` says for each subscribed channel: level2 is
# subscribed as ``level2`` and arrives as ``l2_data``.
_RECEIVED_AS = {"market_trades": "market_trades", "ticker": "ticker", "l2_data": "level2"}

_SYMBOL = re.compile(r"[A-Z0-9]+-[A-Z0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@attrs.define
class _Request:
    """One request sent on this connection and not answered yet."""

    what: str
    """``subscribe <channel>`` or ``unsubscribe <channel>``, for the refusal's detail."""
    channels: tuple[str, ...]
    """The relay channels it subscribes (none for unsubscribes and heartbeats)."""


class CoinbaseAdapter:
    """Translates between relay channels and Coinbase Advanced Trade channel/product pairs."""

    def __init__(
        self, source: str, symbols: Sequence[str], heartbeat_interval: float = 2.0
    ) -> None:
        self.source = source_name(source)
        self.heartbeat_interval = heartbeat_interval
        self._to_pair: dict[str, tuple[str, str]] = {}
        """relay channel -> (Coinbase channel, product id)"""
        self._to_channel: dict[tuple[str, str], tuple[str, StreamKind]] = {}
        """(Coinbase channel, product id) -> (relay channel, kind)"""
        for symbol in symbols:
            if not _SYMBOL.fullmatch(symbol):
                raise ValueError(f"symbol must be BASE-QUOTE in capitals: {symbol!r}")
            for stream, (coinbase_channel, kind) in _STREAMS.items():
                channel = f"{source}:{stream}:{symbol}"
                self._to_pair[channel] = (coinbase_channel, symbol)
                self._to_channel[(coinbase_channel, symbol)] = (channel, kind)
        # Per connection (reset() clears them):
        self._last_seq: int | None = None
        self._counters: dict[str, int] = {}
        """relay channel -> the last seq given to one of its Updates."""
        self._pending: dict[str, None] = {}
        """Relay channels subscribed and not acknowledged yet, oldest first."""
        self._requests: deque[_Request] = deque()
        self._heartbeats = False
        """Whether this connection has asked for heartbeats."""

    def channels(self) -> frozenset[str]:
        return frozenset(self._to_pair)

    def kind(self, channel: str) -> StreamKind | None:
        pair = self._to_pair.get(channel)
        return None if pair is None else self._to_channel[pair][1]

    def repair(self, channel: str) -> RepairKind:
        """Books re-subscribe (a fresh snapshot follows every subscribe); trades and tickers
        have nothing to repair from."""
        return RepairKind.RESUBSCRIBE if self.kind(channel) is StreamKind.BOOK else RepairKind.NONE

    def book_rules(self, channel: str) -> BookRules:
        """``level2`` is the whole book, without a checksum."""
        return NO_RULES

    def reset(self) -> None:
        self._last_seq = None
        self._counters.clear()
        self._pending.clear()
        self._requests.clear()
        self._heartbeats = False

    def probe_frame(self) -> str | None:
        """At connect, the ``heartbeats`` subscription, and nothing after it: its ticks every
        second are the sign of life, also while no client wants anything (Coinbase closes a
        connection that subscribes to nothing within seconds)."""
        if self._heartbeats:
            return None
        self._heartbeats = True
        products = sorted({symbol for _, symbol in self._to_pair.values()})
        self._requests.append(_Request(f"subscribe {_HEARTBEATS}", ()))
        return self._frame("subscribe", _HEARTBEATS, products)

    def http_repair(self, repair: FetchSnapshot | FetchItem) -> HttpRepair | None:
        """Books are repaired by re-subscribing, never over HTTP."""
        return None

    # Requests ------------------------------------------------------------------------------

    def _pair(self, channel: str) -> tuple[str, str]:
        try:
            return self._to_pair[channel]
        except KeyError:
            raise KeyError(f"unknown channel {channel!r}") from None

    def _grouped(self, channels: Sequence[str]) -> dict[str, list[str]]:
        """Coinbase channel -> relay channels, in the order first named."""
        groups: dict[str, list[str]] = {}
        for channel in channels:
            groups.setdefault(self._pair(channel)[0], []).append(channel)
        return groups

    def _frame(self, op: str, coinbase_channel: str, product_ids: list[str]) -> str:
        body = {"type": op, "product_ids": product_ids, "channel": coinbase_channel}
        return orjson.dumps(body).decode()

    def subscribe_frames(self, channels: Sequence[str]) -> list[str]:
        """One ``subscribe`` per Coinbase channel, after ``heartbeats`` on a new connection."""
        groups = self._grouped(channels)
        if not groups:
            return []
        frames = []
        if not self._heartbeats:
            self._heartbeats = True
            products = [self._to_pair[c][1] for c in next(iter(groups.values()))]
            self._requests.append(_Request(f"subscribe {_HEARTBEATS}", ()))
            frames.append(self._frame("subscribe", _HEARTBEATS, products))
        for coinbase_channel, members in groups.items():
            for channel in members:
                self._pending[channel] = None
            self._requests.append(_Request(f"subscribe {coinbase_channel}", tuple(members)))
            products = [self._to_pair[c][1] for c in members]
            frames.append(self._frame("subscribe", coinbase_channel, products))
        return frames

    def unsubscribe_frames(self, channels: Sequence[str]) -> list[str]:
        frames = []
        for coinbase_channel, members in self._grouped(channels).items():
            for channel in members:
                self._pending.pop(channel, None)
            self._requests.append(_Request(f"unsubscribe {coinbase_channel}", ()))
            products = [self._to_pair[c][1] for c in members]
            frames.append(self._frame("unsubscribe", coinbase_channel, products))
        return frames

    # Frames --------------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[UpstreamEvent]:
        message = load_object(frame)
        if message.get("type") == "error":
            return self._error(message)
        name = message.get("channel")
        if not isinstance(name, str):
            raise UpstreamFormatError(f"message without a channel: {describe(message)}")
        seq = _count(message.get("sequence_num"), "sequence_num")
        events = _list(message.get("events"), "events")
        # Each frame is read whole before its number is recorded: one that cannot be read
        # leaves the connection's number where it was, so the next message shows the loss.
        if name in _RECEIVED_AS:
            parsed = self._data(_RECEIVED_AS[name], message, events)
            return self._updates(parsed) if self._in_sequence(seq) else []
        if name == _HEARTBEATS:
            for event in events:
                _counter(_object(event, "heartbeat event").get("heartbeat_counter"))
            return [Heartbeat()] if self._in_sequence(seq) else []
        if name == "subscriptions":
            covered = _subscriptions(events)
            return self._acknowledged(covered) if self._in_sequence(seq) else []
        # A channel this adapter never asks for: ignored, as Coinbase advises for anything new.
        self._in_sequence(seq)
        return []

    def _in_sequence(self, seq: int) -> bool:
        """Record the connection's number; False for a duplicate. After a jump every channel's
        counter moves one further, so each channel's tracker sees the gap at its next message
        (the module docstring says why)."""
        last = self._last_seq
        if last is not None and seq <= last:
            return False
        if last is not None and seq > last + 1:
            for channel in self._counters:
                self._counters[channel] += 1
        self._last_seq = seq
        return True

    def _updates(self, parsed: list[tuple[str, dict[str, Any], bool]]) -> list[UpstreamEvent]:
        events: list[UpstreamEvent] = []
        for channel, data, snapshot in parsed:
            seq = self._counters.get(channel, 0) + 1
            self._counters[channel] = seq
            events.append(Update(channel, data, seq, snapshot))
        # A message with nothing to publish (a trades snapshot) still shows the feed alive.
        return events or [Heartbeat()]

    def _acknowledged(self, covered: set[tuple[str, str]]) -> list[UpstreamEvent]:
        """A ``subscriptions`` message: the oldest request is answered (requests are answered
        in order), and every pending channel it lists is acknowledged."""
        if self._requests:
            self._requests.popleft()
        acked = tuple(c for c in self._pending if self._to_pair[c] in covered)
        if not acked:
            return [Heartbeat()]
        for channel in acked:
            del self._pending[channel]
        return [Ack(True, f"subscribed {', '.join(acked)}", acked)]

    def _error(self, message: dict[str, Any]) -> list[UpstreamEvent]:
        """An ``error`` names no request: it answers the oldest one not answered yet."""
        if "sequence_num" in message:
            self._in_sequence(_count(message["sequence_num"], "sequence_num"))
        detail = describe(message.get("message"))
        if not self._requests:
            return [Ack(False, f"error: {detail}")]
        request = self._requests.popleft()
        refused = tuple(c for c in request.channels if c in self._pending)
        for channel in refused:
            del self._pending[channel]
        return [Ack(False, f"{request.what} refused: {detail}", refused)]

    # Data ----------------------------------------------------------------------------------

    def _data(
        self, coinbase_channel: str, message: dict[str, Any], events: list[Any]
    ) -> list[tuple[str, dict[str, Any], bool]]:
        """(relay channel, data, snapshot) for each normalized item of a data message."""
        sent_ms = _ms(message.get("timestamp"), "timestamp")
        parsed: list[tuple[str, dict[str, Any], bool]] = []
        for raw in events:
            event = _object(raw, f"{coinbase_channel} event")
            kind = event.get("type")
            if kind not in ("snapshot", "update"):
                raise UpstreamFormatError(
                    f"{coinbase_channel} event type must be snapshot or update, "
                    f"got {describe(kind)}"
                )
            if coinbase_channel == "level2":
                parsed.append(self._book(event, kind == "snapshot", sent_ms))
            elif coinbase_channel == "ticker":
                tickers = _list(event.get("tickers"), "tickers")
                parsed.extend(self._ticker(_object(t, "ticker"), sent_ms) for t in tickers)
            else:
                trades = [
                    self._trade(_object(t, "trade")) for t in _list(event.get("trades"), "trades")
                ]
                if kind == "update":  # a snapshot's trades are history: not published
                    trades.sort(key=lambda t: t[0])  # oldest first, whatever order they came in
                    parsed.extend(item for _, item in trades)
        return parsed

    def _channel(self, coinbase_channel: str, product: object) -> tuple[str, str]:
        if not isinstance(product, str) or (coinbase_channel, product) not in self._to_channel:
            raise UpstreamFormatError(
                f"{coinbase_channel} for a product this source does not serve: {describe(product)}"
            )
        return self._to_channel[(coinbase_channel, product)][0], product

    def _book(
        self, event: dict[str, Any], snapshot: bool, sent_ms: int
    ) -> tuple[str, dict[str, Any], bool]:
        channel, symbol = self._channel("level2", event.get("product_id"))
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        newest: int | None = None
        for raw in _list(event.get("updates"), "updates"):
            level = _object(raw, "level2 update")
            side = level.get("side")
            if side not in ("bid", "offer"):
                raise UpstreamFormatError(f"level2 side must be bid or offer, got {describe(side)}")
            price = _decimal(level.get("price_level"), "price_level")
            quantity = _decimal(level.get("new_quantity"), "new_quantity")
            at = _ms(level.get("event_time"), "event_time")
            newest = at if newest is None else max(newest, at)
            (bids if side == "bid" else asks).append([price, quantity])
        ts = sent_ms if snapshot or newest is None else newest
        return channel, {"symbol": symbol, "bids": bids, "asks": asks, "ts": ts}, snapshot

    def _ticker(self, ticker: dict[str, Any], sent_ms: int) -> tuple[str, dict[str, Any], bool]:
        channel, symbol = self._channel("ticker", ticker.get("product_id"))
        data = {
            "symbol": symbol,
            "bid": _decimal(ticker.get("best_bid"), "best_bid"),
            "bid_size": _decimal(ticker.get("best_bid_quantity"), "best_bid_quantity"),
            "ask": _decimal(ticker.get("best_ask"), "best_ask"),
            "ask_size": _decimal(ticker.get("best_ask_quantity"), "best_ask_quantity"),
            "last": _decimal(ticker.get("price"), "price"),
            "ts": sent_ms,
        }
        return channel, data, True  # every ticker message is the whole state

    def _trade(self, trade: dict[str, Any]) -> tuple[int, tuple[str, dict[str, Any], bool]]:
        """(time in ns, the item): the time orders a message's trades."""
        channel, symbol = self._channel("market_trades", trade.get("product_id"))
        trade_id = trade.get("trade_id")
        if isinstance(trade_id, int) and not isinstance(trade_id, bool):
            trade_id = str(trade_id)
        if not isinstance(trade_id, str) or not trade_id:
            raise UpstreamFormatError(f"trade_id must be a string, got {describe(trade_id)}")
        at = _ns(trade.get("time"), "time")
        data = {
            "symbol": symbol,
            "price": _decimal(trade.get("price"), "price"),
            "size": _decimal(trade.get("size"), "size"),
            "side": _taker_side(trade.get("side")),
            "trade_id": trade_id,
            "ts": at // 1_000_000,
        }
        return at, (channel, data, False)


def _taker_side(side: object) -> str:
    """The taker's side of a ``market_trades`` trade, whose ``side`` is the maker order's.

    Coinbase documents the ``side`` of its feed's matches as the maker order's side: "The side
    field indicates the maker order side. If the side is sell this indicates the maker was a
    sell order and the match is considered an up-tick"
    (https://docs.cdp.coinbase.com/exchange/websocket-feed/channels#match). The Advanced Trade
    ``market_trades`` channel (https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/
    websocket/websocket-channels#market-trades-channel) reports the same engine's matches with
    ``side`` in capitals and, in what its documentation shows, does not say whose side it is;
    the maker reading is kept, so the taker is on the other side.
    """
    if side == "BUY":
        return "sell"
    if side == "SELL":
        return "buy"
    raise UpstreamFormatError(f"trade side must be BUY or SELL, got {describe(side)}")


def _subscriptions(events: Iterable[Any]) -> set[tuple[str, str]]:
    """The (Coinbase channel, product id) pairs a ``subscriptions`` message lists."""
    covered: set[tuple[str, str]] = set()
    for raw in events:
        listed = _object(_object(raw, "subscriptions event").get("subscriptions"), "subscriptions")
        for name, products in listed.items():
            coinbase_channel = _RECEIVED_AS.get(name, name)
            for product in _list(products, f"subscriptions of {name}"):
                if not isinstance(product, str):
                    raise UpstreamFormatError(f"product id must be a string: {describe(product)}")
                covered.add((coinbase_channel, product))
    return covered


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UpstreamFormatError(f"{what} must be an object, got {describe(value)}")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise UpstreamFormatError(f"{what} must be a list, got {describe(value)}")
    return value


def _count(value: object, what: str) -> int:
    # bool is an int subclass, and True is not a sequence number.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UpstreamFormatError(f"{what} must be a non-negative integer, got {describe(value)}")
    return value


def _counter(value: object) -> int:
    """A heartbeat's counter: documented as a string of digits, sent as an integer too."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return _count(value, "heartbeat_counter")


def _decimal(value: object, what: str) -> str:
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise UpstreamFormatError(f"{what} must be a decimal string, got {describe(value)}")
    return value


def _ns(value: object, what: str) -> int:
    """An RFC 3339 time as integer nanoseconds since the epoch, exactly."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise UpstreamFormatError(f"{what} must be an RFC 3339 time, got {describe(value)}")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        at = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
        if not zulu and (int(off_h) > 23 or int(off_m) > 59):
            raise ValueError("offset out of range")
        offset = timedelta(0) if zulu else timedelta(hours=int(off_h), minutes=int(off_m))
        if sign == "-":
            offset = -offset
        whole = at - offset - _EPOCH
    except (ValueError, OverflowError):
        raise UpstreamFormatError(f"{what} is not a valid time: {describe(value)}") from None
    seconds = whole.days * 86_400 + whole.seconds
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def _ms(value: object, what: str) -> int:
    """An RFC 3339 time as integer milliseconds since the epoch (truncated)."""
    return _ns(value, what) // 1_000_000
