"""Adapter for Kraken's spot WebSocket v2 public market data (``wss://ws.kraken.com/v2``).

Channels: ``SOURCE:trades:SYM`` (Kraken's ``trade``), ``SOURCE:ticker:SYM`` (``ticker``) and
``SOURCE:book:SYM`` (``book`` at the configured depth), ``SYM`` being the relay's ``BASE-QUOTE``
symbol and ``BASE/QUOTE`` Kraken's.

Kraken v2 writes prices and quantities as JSON numbers carrying the instrument's full precision
(``0.10000000``), and its book checksum is computed over exactly those digits, so frames are
parsed with :class:`~decimal.Decimal` floats and numbers are rendered back in plain notation
(``str(Decimal("0.00000001"))`` would say ``1E-8``): the protocol's decimal strings are the digits
Kraken wrote, and the relay's book reproduces Kraken's checksum.

Kraken's book has no sequence numbers. Each book message carries a CRC32 of the top ten levels
after it, which the relay checks against its own book (:func:`book_checksum`); the upstream seq
of a book update is a counter this adapter keeps per channel and connection. Kraken keeps only
the subscribed depth and does not announce the levels pushed out of it, so the relay truncates
the same way (``book_rules``). A mismatch is repaired by unsubscribing and subscribing again:
Kraken answers a subscribe with a fresh snapshot.

Subscribe and unsubscribe requests carry a ``req_id``; Kraken answers each symbol of a request on
its own, echoing the ``req_id``. A refusal names the symbol but not the channel, so the adapter
keeps, per connection, which request asked for which channels (:meth:`KrakenAdapter.reset`).
Every field read is validated: a malformed frame becomes one :class:`UpstreamFormatError`.
"""

from __future__ import annotations

import calendar
import datetime
import itertools
import json
import re
import zlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal, TypeGuard

import attrs

from relay.adapters.base import HttpRepair
from relay.adapters.wire import describe, source_name
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

#: Kraken's public WebSocket v2 endpoint.
DEFAULT_URL = "wss://ws.kraken.com/v2"

#: The depths Kraken accepts for a ``book`` subscription.
DEPTHS = frozenset({10, 25, 100, 500, 1000})

#: Levels per side Kraken's book checksum covers, whatever the subscribed depth.
CHECKSUM_LEVELS = 10

# relay stream -> (Kraken channel, kind)
_STREAMS: dict[str, tuple[str, StreamKind]] = {
    "trades": ("trade", StreamKind.EVENT),
    "ticker": ("ticker", StreamKind.STATE),
    "book": ("book", StreamKind.BOOK),
}

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def book_checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """Kraken's CRC32 of a book (its v2 "Book checksum" guide): the ten best asks from the
    lowest, then the ten best bids from the highest, each as its price and then its quantity
    with the ``.`` removed and the leading zeros stripped, all concatenated.

    ``bids`` and ``asks`` are ``[[price, size], ...]`` best first, as the relay's book keeps
    them (the exact digits Kraken sent)."""
    parts = [
        _checksum_digits(price) + _checksum_digits(size)
        for side in (asks, bids)
        for price, size in side[:CHECKSUM_LEVELS]
    ]
    return zlib.crc32("".join(parts).encode("ascii"))


def _checksum_digits(value: str) -> str:
    return value.replace(".", "").lstrip("0")


@attrs.frozen
class _Stream:
    """What a (Kraken channel, Kraken symbol) pair is on the relay's side."""

    channel: str
    symbol: str
    kind: StreamKind


@attrs.define
class _Request:
    """A subscribe or unsubscribe sent on this connection and not fully answered yet."""

    req_id: int
    method: Literal["subscribe", "unsubscribe"]
    channels: dict[str, str]
    """Kraken symbol -> relay channel, for the symbols not answered yet."""


class KrakenAdapter:
    """Translates between relay channels and Kraken v2 subscriptions, and normalizes Kraken's
    ``trade``, ``ticker`` and ``book`` messages."""

    def __init__(
        self,
        source: str,
        symbols: Sequence[str],
        heartbeat_interval: float = 2.0,
        depth: int = 10,
    ) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"Kraken book depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        self.source = source_name(source)
        self.heartbeat_interval = heartbeat_interval
        self._depth = depth
        self._rules = BookRules(depth=depth, checksum=book_checksum)
        self._streams: dict[str, tuple[str, str]] = {}
        """relay channel -> (Kraken channel, Kraken symbol)"""
        self._by_kraken: dict[tuple[str, str], _Stream] = {}
        for symbol in symbols:
            base, dash, quote = symbol.partition("-")
            if not dash or not base or not quote or "-" in quote or "/" in symbol:
                raise ValueError(f"symbol must be BASE-QUOTE, got {symbol!r}")
            pair = f"{base}/{quote}"
            for stream, (kraken_channel, kind) in _STREAMS.items():
                channel = f"{source}:{stream}:{symbol}"
                self._streams[channel] = (kraken_channel, pair)
                self._by_kraken[kraken_channel, pair] = _Stream(channel, symbol, kind)
        self._ids = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._book_seq: dict[str, int] = {}
        """Book channel -> the counter its last message got (Kraken numbers nothing)."""
        self._acked_at: dict[str, int] = {}
        """Book channel -> when Kraken acknowledged its subscribe (ms), for a snapshot that
        carries no time of its own."""

    # The catalogue -------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return self._depth

    def channels(self) -> frozenset[str]:
        return frozenset(self._streams)

    def kind(self, channel: str) -> StreamKind | None:
        stream = self._streams.get(channel)
        return None if stream is None else self._by_kraken[stream].kind

    def repair(self, channel: str) -> RepairKind:
        """A book is repaired by subscribing again (Kraken sends a snapshot on subscribe);
        a lost trade is gone and every ticker message is whole."""
        if self.kind(channel) is StreamKind.BOOK:
            return RepairKind.RESUBSCRIBE
        return RepairKind.NONE

    def book_rules(self, channel: str) -> BookRules:
        """Kraken keeps the subscribed depth and checksums the top ten levels."""
        return self._rules if self.kind(channel) is StreamKind.BOOK else NO_RULES

    def reset(self) -> None:
        self._requests.clear()
        self._book_seq.clear()
        self._acked_at.clear()

    def http_repair(self, repair: FetchSnapshot | FetchItem) -> HttpRepair | None:
        """Nothing is fetched over HTTP: a book is resynchronized by subscribing again."""
        return None

    # Requests ------------------------------------------------------------------------------

    def subscribe_frames(self, channels: Sequence[str]) -> list[str]:
        return self._requests_for("subscribe", channels)

    def unsubscribe_frames(self, channels: Sequence[str]) -> list[str]:
        return self._requests_for("unsubscribe", channels)

    def probe_frame(self) -> str:
        """Kraken's application ``ping``: heartbeats only flow while something is subscribed,
        and the ``pong`` proves the connection alive when nothing is."""
        return _dumps({"method": "ping", "req_id": next(self._ids)})

    def _requests_for(
        self, method: Literal["subscribe", "unsubscribe"], channels: Sequence[str]
    ) -> list[str]:
        """One request per Kraken channel, naming all its symbols (Kraken answers each)."""
        grouped: dict[str, dict[str, str]] = {}
        for channel in channels:
            stream = self._streams.get(channel)
            if stream is None:
                raise KeyError(f"unknown channel {channel!r}")
            kraken_channel, pair = stream
            grouped.setdefault(kraken_channel, {})[pair] = channel
        frames = []
        for kraken_channel, by_pair in grouped.items():
            params: dict[str, Any] = {"channel": kraken_channel, "symbol": list(by_pair)}
            if kraken_channel == "book":
                params["depth"] = self._depth
            if method == "subscribe":
                if kraken_channel == "book":
                    params["snapshot"] = True
                elif kraken_channel == "trade":
                    params["snapshot"] = False  # past trades are not events to publish
                elif kraken_channel == "ticker":
                    # Every change of the best bid or ask, not only trades: the protocol's
                    # ticker is the top of the book as much as the last price.
                    params["event_trigger"] = "bbo"
                    params["snapshot"] = True
            req_id = next(self._ids)
            self._requests[req_id] = _Request(req_id, method, dict(by_pair))
            frames.append(_dumps({"method": method, "params": params, "req_id": req_id}))
        return frames

    # Frames --------------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[UpstreamEvent]:
        message = _load(frame)
        channel = message.get("channel")
        if channel is not None:
            if channel == "heartbeat":
                return [Heartbeat()]
            if channel == "status":
                _list(message, "data")
                return [Heartbeat()]
            if channel == "trade":
                return self._trades(message)
            if channel == "ticker":
                return self._tickers(message)
            if channel == "book":
                return self._books(message)
            raise UpstreamFormatError(f"message on unknown channel {describe(channel)}")
        method = message.get("method")
        if method == "pong":
            if message.get("success") is False:
                return [Ack(False, f"ping refused: {describe(message.get('error'))}")]
            return [Heartbeat()]
        if method in ("subscribe", "unsubscribe", "error"):
            return [self._answer(message)]
        raise UpstreamFormatError(f"neither data nor an answer: {describe(message)}")

    def _answer(self, message: dict[str, Any]) -> Ack:
        """A (per-symbol) answer to a subscribe or unsubscribe, or an error answering a
        request as a whole."""
        method = message["method"]
        success = message.get("success")
        if not isinstance(success, bool):
            raise UpstreamFormatError(f"{method} answer without a boolean 'success'")
        req_id = message.get("req_id")
        request = self._requests.get(req_id) if _is_int(req_id) else None
        if success:
            if method == "error":
                raise UpstreamFormatError("an error answer with success true")
            result = _object(message, "result")
            pair = _string(result, "symbol")
            stream = self._stream(_string(result, "channel"), pair)
            if request is not None:
                self._settle(request, pair)
            if method == "unsubscribe":
                # Names no channel: nothing waits for an unsubscribe, and only a subscribe's
                # refusal concerns the channel's clients.
                return Ack(True, f"unsubscribed {stream.channel}")
            if stream.kind is StreamKind.BOOK and "time_out" in message:
                self._acked_at[stream.channel] = _timestamp(message, "time_out")
            return Ack(True, f"subscribed {stream.channel}", (stream.channel,))
        error = describe(message.get("error"))
        if request is None:
            return Ack(False, f"{method} refused: {error}")
        symbol = message.get("symbol")
        if isinstance(symbol, str) and symbol in request.channels:
            channels: tuple[str, ...] = (request.channels[symbol],)
            self._settle(request, symbol)
        else:
            # Refused as a whole (a malformed request): every channel it still asked for.
            channels = tuple(request.channels.values())
            del self._requests[request.req_id]
        detail = f"{request.method} {', '.join(channels)} refused: {error}"
        return Ack(False, detail, channels if request.method == "subscribe" else ())

    def _settle(self, request: _Request, pair: str) -> None:
        request.channels.pop(pair, None)
        if not request.channels:
            del self._requests[request.req_id]

    def _stream(self, kraken_channel: str, pair: str) -> _Stream:
        stream = self._by_kraken.get((kraken_channel, pair))
        if stream is None:
            raise UpstreamFormatError(f"{kraken_channel} for unknown symbol {describe(pair)}")
        return stream

    def _items(self, message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        kind = message.get("type")
        if kind not in ("snapshot", "update"):
            raise UpstreamFormatError(f"type must be 'snapshot' or 'update', got {describe(kind)}")
        items = _list(message, "data")
        for item in items:
            if not isinstance(item, dict):
                raise UpstreamFormatError(f"data item is not an object: {describe(item)}")
        return kind, items

    def _trades(self, message: dict[str, Any]) -> list[UpstreamEvent]:
        kind, items = self._items(message)
        updates: list[UpstreamEvent] = []
        for item in items:
            stream = self._stream("trade", _string(item, "symbol"))
            side = item.get("side")
            if side not in ("buy", "sell"):
                raise UpstreamFormatError(f"trade side must be buy or sell, got {describe(side)}")
            trade_id = item.get("trade_id")
            if not _is_int(trade_id) or trade_id < 0:
                raise UpstreamFormatError(f"trade_id must be an integer, got {describe(trade_id)}")
            data = {
                "symbol": stream.symbol,
                "price": _decimal(item, "price"),
                "size": _decimal(item, "qty"),
                "side": side,  # Kraken's side is the taker's
                "trade_id": str(trade_id),
                "ts": _timestamp(item, "timestamp"),
            }
            updates.append(Update(stream.channel, data, trade_id, snapshot=False))
        if kind == "snapshot":
            # Past trades (only sent when asked for, which the relay does not): not events.
            return [Heartbeat()]
        return updates

    def _tickers(self, message: dict[str, Any]) -> list[UpstreamEvent]:
        _, items = self._items(message)
        updates: list[UpstreamEvent] = []
        for item in items:
            stream = self._stream("ticker", _string(item, "symbol"))
            data = {
                "symbol": stream.symbol,
                "bid": _decimal(item, "bid"),
                "bid_size": _decimal(item, "bid_qty"),
                "ask": _decimal(item, "ask"),
                "ask_size": _decimal(item, "ask_qty"),
                "last": _decimal(item, "last"),
                "ts": _timestamp(item, "timestamp"),
            }
            # Every ticker message, snapshot or update, is the whole state.
            updates.append(Update(stream.channel, data, None, snapshot=True))
        return updates

    def _books(self, message: dict[str, Any]) -> list[UpstreamEvent]:
        kind, items = self._items(message)
        updates: list[UpstreamEvent] = []
        for item in items:
            stream = self._stream("book", _string(item, "symbol"))
            checksum = item.get("checksum")
            if not _is_int(checksum) or not 0 <= checksum <= 0xFFFFFFFF:
                raise UpstreamFormatError(
                    f"book checksum must be a CRC32, got {describe(checksum)}"
                )
            if "timestamp" in item:
                ts = _timestamp(item, "timestamp")
            elif kind == "snapshot" and stream.channel in self._acked_at:
                # Kraken's snapshot is the book as of its subscribe acknowledgement.
                ts = self._acked_at[stream.channel]
            else:
                raise UpstreamFormatError(f"book {kind} without a timestamp")
            data = {
                "symbol": stream.symbol,
                "bids": _levels(item, "bids"),
                "asks": _levels(item, "asks"),
                "ts": ts,
            }
            seq = self._book_seq.get(stream.channel, 0) + 1
            self._book_seq[stream.channel] = seq
            updates.append(
                Update(stream.channel, data, seq, snapshot=kind == "snapshot", checksum=checksum)
            )
        return updates


# Reading untrusted JSON ---------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _load(frame: str | bytes) -> dict[str, Any]:
    """A JSON object whose fractional numbers are Decimals, exactly as written."""
    try:
        message = json.loads(frame, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise UpstreamFormatError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise UpstreamFormatError("not a JSON object")
    return message


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass, and True is not a number here.
    return isinstance(value, int) and not isinstance(value, bool)


def _object(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise UpstreamFormatError(f"{key!r} must be an object, got {describe(value)}")
    return value


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise UpstreamFormatError(f"{key!r} must be a list, got {describe(value)}")
    return value


def _string(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise UpstreamFormatError(f"{key!r} must be a string, got {describe(value)}")
    return value


def _decimal(obj: dict[str, Any], key: str) -> str:
    """A non-negative number as the exact decimal string Kraken wrote, in plain notation."""
    return _number(obj.get(key), key)


_MAX_DIGITS = 40
"""The most digits before or after the point a price or a quantity may have."""


def _number(value: object, what: str) -> str:
    if isinstance(value, Decimal):
        # Bounded: "1e100000000" is 11 bytes on the wire and 100 MB written out in full.
        if value.is_finite() and not value.is_signed() and abs(value.adjusted()) <= _MAX_DIGITS:
            return format(value, "f")
    elif _is_int(value):
        if value >= 0:
            return str(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        return value  # a quoted number, as Kraken's v1 wrote them
    raise UpstreamFormatError(f"{what!r} must be a non-negative number, got {describe(value)}")


def _levels(item: dict[str, Any], key: str) -> list[list[str]]:
    """Kraken's ``[{"price": p, "qty": q}, ...]`` as ``[[price, size], ...]``, in Kraken's
    order (a message may change a level twice: the last one stands)."""
    levels = []
    for level in _list(item, key):
        if not isinstance(level, dict):
            raise UpstreamFormatError(f"{key!r}: a level must be an object, got {describe(level)}")
        levels.append([_number(level.get("price"), "price"), _number(level.get("qty"), "qty")])
    return levels


def _timestamp(obj: dict[str, Any], key: str) -> int:
    """An RFC 3339 time as integer milliseconds since the epoch (sub-milliseconds dropped)."""
    value = obj.get(key)
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise UpstreamFormatError(f"{key!r} must be an RFC 3339 time, got {describe(value)}")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    try:
        # Validates the fields; a leap second (:60) is allowed, as RFC 3339 does.
        if second > 60:
            raise ValueError(second)
        datetime.datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        raise UpstreamFormatError(f"{key!r} is not a valid time: {describe(value)}") from None
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if match[9] is not None:
        offset = int(match[10]) * 3600 + int(match[11]) * 60
        seconds -= offset if match[9] == "+" else -offset
    if seconds < 0:
        raise UpstreamFormatError(f"{key!r} is before 1970: {describe(value)}")
    millis = int((match[7] or "0")[:3].ljust(3, "0"))
    return seconds * 1000 + millis
