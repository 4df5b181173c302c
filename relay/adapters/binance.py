"""Adapter for Binance spot market data (WebSocket streams, and REST for book snapshots).

Channels ``SOURCE:trades:SYM``, ``SOURCE:ticker:SYM`` and ``SOURCE:book:SYM``, ``SYM`` being the
relay's ``BASE-QUOTE`` (``BTC-USDT``), which Binance writes ``BTCUSDT`` (lower-case in stream
names). Each channel is one stream, subscribed with the live-subscription requests of the raw
endpoint (``{"method": "SUBSCRIBE", "params": [...], "id": N}``):

- trades: ``<sym>@trade``. Binance's ``m`` says whether the buyer was the maker, so ``m`` true
  means the taker sold.
- ticker: ``<sym>@ticker``, the 24h rolling ticker: the only per-symbol stream with the best bid
  and ask (with sizes), the last price and an event time. ``@bookTicker`` has no last price and,
  on spot, no event time, so it cannot fill the protocol's ticker.
- book: ``<sym>@depth@100ms``, the diff depth stream, synchronized with the REST snapshot
  ``GET /api/v3/depth`` as Binance documents ("How to manage a local order book correctly"). An
  event covers the update ids ``U``..``u`` and becomes ``Update(seq=u, first_seq=U)``; the REST
  snapshot becomes ``Update(seq=lastUpdateId, snapshot=True)``. The relay's ``BookSync`` then
  applies Binance's rules with its range classification: an event with ``u <= lastUpdateId`` is
  dropped, the first one applied must have ``U <= lastUpdateId + 1 <= u``, and a later one whose
  ``U`` is past the book's id + 1 is a gap, repaired by a new REST snapshot.

Binance answers each request by its ``id``: ``{"result": null, "id": N}`` accepts it, an
``error`` refuses it. The adapter keeps, per connection, which request id asked for which
channels. A quiet symbol may send nothing for a long time and Binance has no application
heartbeat (its WebSocket pings are answered by the transport), so the probe is
``LIST_SUBSCRIPTIONS``, whose answer proves the connection alive.

Prices and sizes stay the strings Binance sent. Every field read is validated: a malformed
message becomes one counted :class:`UpstreamFormatError`.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from typing import Any, Literal

import orjson

from relay.adapters.base import HttpRepair, HttpRequest
from relay.adapters.wire import (
    describe,
    field_decimal,
    field_int,
    field_levels,
    load_object,
    source_name,
)
from relay.core.model import (
    Ack,
    RepairKind,
    StreamKind,
    Update,
    UpstreamEvent,
    UpstreamFormatError,
)
from relay.core.source import NO_RULES, BookRules, FetchItem, FetchSnapshot

#: Binance's public endpoints (the configuration's defaults for this kind).
DEFAULT_WS_URL = "wss://stream.binance.com:9443/ws"
DEFAULT_REST_URL = "https://api.binance.com"

#: Levels per side of the REST snapshot the book starts from (and is repaired from).
SNAPSHOT_LIMIT = 1000

# relay stream -> (Binance stream suffix, Binance event type, kind)
_STREAMS: dict[str, tuple[str, str, StreamKind]] = {
    "trades": ("@trade", "trade", StreamKind.EVENT),
    "ticker": ("@ticker", "24hrTicker", StreamKind.STATE),
    "book": ("@depth@100ms", "depthUpdate", StreamKind.BOOK),
}

_SYMBOL = re.compile(r"([A-Z0-9]+)-([A-Z0-9]+)")

_Purpose = tuple[Literal["subscribe", "unsubscribe", "probe"], tuple[str, ...]]


class BinanceAdapter:
    """Translates between relay channels and Binance spot streams, and normalizes their
    events and the REST depth snapshot."""

    def __init__(
        self,
        source: str,
        symbols: Sequence[str],
        rest_url: str | None,
        heartbeat_interval: float = 10.0,
    ) -> None:
        self.source = source_name(source)
        self._rest_url = None if rest_url is None else rest_url.rstrip("/")
        self.heartbeat_interval = heartbeat_interval
        self._stream_of: dict[str, str] = {}
        """Relay channel -> Binance stream name."""
        self._kinds: dict[str, StreamKind] = {}
        self._market_of: dict[str, str] = {}
        """Relay channel -> Binance symbol (``BTCUSDT``)."""
        self._routes: dict[tuple[str, str], tuple[str, str]] = {}
        """(Binance event type, Binance symbol) -> (relay channel, relay symbol)."""
        for symbol in symbols:
            match = _SYMBOL.fullmatch(symbol)
            if match is None:
                raise ValueError(f"symbol must be BASE-QUOTE in capitals: {symbol!r}")
            market = match[1] + match[2]
            for stream, (suffix, event, kind) in _STREAMS.items():
                channel = f"{source}:{stream}:{symbol}"
                if (event, market) in self._routes:
                    raise ValueError(f"{symbol!r} is Binance's {market} twice")
                self._stream_of[channel] = market.lower() + suffix
                self._kinds[channel] = kind
                self._market_of[channel] = market
                self._routes[(event, market)] = (channel, symbol)
        self._ids = itertools.count(1)
        self._requests: dict[int, _Purpose] = {}
        """Request id -> what it asked, until its answer comes (per connection)."""
        self._event_time: dict[str, int] = {}
        """Binance symbol -> the latest event time seen on any of its streams: the REST
        snapshot carries none, and a book's ``ts`` must be an integer."""

    def channels(self) -> frozenset[str]:
        return frozenset(self._stream_of)

    def kind(self, channel: str) -> StreamKind | None:
        return self._kinds.get(channel)

    def repair(self, channel: str) -> RepairKind:
        """Books are repaired from the REST snapshot; a lost trade is gone and a ticker is
        whole in every message."""
        return (
            RepairKind.REST_SNAPSHOT if self.kind(channel) is StreamKind.BOOK else RepairKind.NONE
        )

    def book_rules(self, channel: str) -> BookRules:
        """Binance's diff stream covers the whole book and carries no checksum."""
        return NO_RULES

    def reset(self) -> None:
        """Request ids are answered on the connection that sent them."""
        self._requests.clear()

    # Requests ------------------------------------------------------------------------------

    def stream(self, channel: str) -> str:
        """The Binance stream of a relay channel; KeyError for channels this source does not
        serve."""
        try:
            return self._stream_of[channel]
        except KeyError:
            raise KeyError(f"unknown channel {channel!r}") from None

    def _request(self, method: str, params: list[str] | None, purpose: _Purpose) -> str:
        request_id = next(self._ids)
        self._requests[request_id] = purpose
        body: dict[str, Any] = {"method": method}
        if params is not None:
            body["params"] = params
        body["id"] = request_id
        return orjson.dumps(body).decode()

    def subscribe_frames(self, channels: Sequence[str]) -> list[str]:
        """One request for all the channels: Binance limits a connection to five incoming
        messages a second, so fewer requests are better."""
        if not channels:
            return []
        streams = [self.stream(channel) for channel in channels]
        return [self._request("SUBSCRIBE", streams, ("subscribe", tuple(channels)))]

    def unsubscribe_frames(self, channels: Sequence[str]) -> list[str]:
        if not channels:
            return []
        streams = [self.stream(channel) for channel in channels]
        return [self._request("UNSUBSCRIBE", streams, ("unsubscribe", tuple(channels)))]

    def probe_frame(self) -> str:
        """``LIST_SUBSCRIPTIONS``: Binance sends no heartbeat of its own and a quiet symbol may
        send nothing for long; the answer proves the connection alive."""
        return self._request("LIST_SUBSCRIPTIONS", None, ("probe", ()))

    # Frames --------------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[UpstreamEvent]:
        message = load_object(frame)
        if "e" in message:
            return self._event(message)
        if "stream" in message and "data" in message:
            # A combined stream (``/stream?streams=...``) wraps each event.
            data = message["data"]
            if not isinstance(data, dict):
                raise UpstreamFormatError("combined stream event without an object 'data'")
            return self._event(data)
        if "id" in message:
            return self._answer(message)
        if "code" in message and "msg" in message:
            # An error about a request Binance could not even read an id from.
            return [Ack(False, f"request rejected: {describe(message)}")]
        raise UpstreamFormatError(f"neither an event nor an answer: {describe(message)}")

    def _answer(self, message: dict[str, Any]) -> list[UpstreamEvent]:
        request_id = message["id"]
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            raise UpstreamFormatError(f"answer id must be an integer, got {describe(request_id)}")
        purpose = self._requests.pop(request_id, None)
        if purpose is None:
            raise UpstreamFormatError(f"answer to no request of ours (id {request_id})")
        what, channels = purpose
        # An unsubscribe's answer names no channel: the relay waits only for subscribes, and
        # the refusal of an unsubscribe is no refusal of the channel to its clients.
        named = channels if what == "subscribe" else ()
        error = message.get("error")
        if error is None and "code" in message:
            error = {"code": message["code"], "msg": message.get("msg")}  # the bare form
        if error is not None:
            return [Ack(False, f"{what} refused: {describe(error)}", named)]
        if "result" not in message:
            raise UpstreamFormatError(f"answer {request_id} without result or error")
        result = message["result"]
        if what == "probe":
            if not isinstance(result, list) or not all(isinstance(s, str) for s in result):
                raise UpstreamFormatError(
                    f"LIST_SUBSCRIPTIONS result must be a list of streams, got {describe(result)}"
                )
            return [Ack(True, f"{len(result)} streams subscribed")]
        if result is not None:
            raise UpstreamFormatError(f"{what} answered {describe(result)}, not null")
        return [Ack(True, f"{what}d {', '.join(channels)}", named)]

    def _event(self, message: dict[str, Any]) -> list[UpstreamEvent]:
        update = self._update(message)
        if update is None:
            return []
        # Read after the whole message was: a malformed one moves nothing.
        market = self._market_of[update.channel]
        time = message["E"]
        if time > self._event_time.get(market, -1):
            self._event_time[market] = time
        return [update]

    def _update(self, message: dict[str, Any]) -> Update | None:
        event = message.get("e")
        if event == "serverShutdown":
            # The server is about to close the connection: nothing to publish, and no sign of
            # life either (the reconnect follows the close).
            return None
        market = message.get("s")
        route = None
        if isinstance(event, str) and isinstance(market, str):
            route = self._routes.get((event, market))
        if route is None:
            raise UpstreamFormatError(f"event {describe(event)} for unknown {describe(market)}")
        channel, symbol = route
        time = field_int(message, "E")
        if event == "trade":
            maker = message.get("m")
            if not isinstance(maker, bool):
                raise UpstreamFormatError(f"'m' must be a boolean, got {describe(maker)}")
            trade_id = field_int(message, "t")
            data: dict[str, Any] = {
                "symbol": symbol,
                "price": field_decimal(message, "p"),
                "size": field_decimal(message, "q"),
                # The buyer was the maker: the taker sold.
                "side": "sell" if maker else "buy",
                "trade_id": str(trade_id),
                "ts": field_int(message, "T"),
            }
            return Update(channel, data, trade_id, snapshot=False)
        if event == "24hrTicker":
            data = {
                "symbol": symbol,
                "bid": field_decimal(message, "b"),
                "bid_size": field_decimal(message, "B"),
                "ask": field_decimal(message, "a"),
                "ask_size": field_decimal(message, "A"),
                "last": field_decimal(message, "c"),
                "ts": time,
            }
            return Update(channel, data, None, snapshot=True)
        first, last = field_int(message, "U"), field_int(message, "u")
        if first > last:
            raise UpstreamFormatError(f"depthUpdate with U {first} after u {last}")
        data = {
            "symbol": symbol,
            "bids": field_levels(message, "b"),
            "asks": field_levels(message, "a"),
            "ts": time,
        }
        return Update(channel, data, last, snapshot=False, first_seq=first)

    # Repairs -------------------------------------------------------------------------------

    def http_repair(self, repair: FetchSnapshot | FetchItem) -> HttpRepair | None:
        """A book's REST snapshot; trades and tickers have nothing to fetch."""
        if isinstance(repair, FetchItem) or self._rest_url is None:
            return None
        if self.kind(repair.channel) is not StreamKind.BOOK:
            return None
        market = self._market_of[repair.channel]
        url = f"{self._rest_url}/api/v3/depth?symbol={market}&limit={SNAPSHOT_LIMIT}"
        return HttpRepair(HttpRequest("GET", url), functools.partial(self.parse_depth, repair))

    def parse_depth(self, repair: FetchSnapshot, body: bytes) -> Update:
        """``GET /api/v3/depth``'s answer as the book's snapshot at ``lastUpdateId``.

        The answer has no time of its own: its ``ts`` is the latest event time seen for the
        symbol (0 before any), which the events buffered since then move forward."""
        channel = repair.channel
        market = self._market_of[channel]
        message = load_object(body)
        if "code" in message and "lastUpdateId" not in message:
            raise UpstreamFormatError(f"depth snapshot refused: {describe(message)}")
        data = {
            "symbol": channel.rsplit(":", 1)[-1],
            "bids": field_levels(message, "bids"),
            "asks": field_levels(message, "asks"),
            "ts": self._event_time.get(market, 0),
        }
        return Update(channel, data, field_int(message, "lastUpdateId"), snapshot=True)
