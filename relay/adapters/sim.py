"""Adapter for the synthetic market (docs/simulator.md) to the relay's normalized schema.

The simulator's wire format is deliberately unlike the relay's (``op``/``topic`` envelopes,
microsecond times, ``B``/``S`` takers, nested ticker sides), so this adapter does the same kind of
translation an exchange adapter does. It validates every field it reads: a malformed upstream
frame must become one counted :class:`UpstreamFormatError`, never a ``KeyError`` or a
``TypeError`` that would look like a relay bug or, worse, a bad value fanned out to clients.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson

from relay.adapters.base import HttpRepair, HttpRequest
from relay.adapters.wire import (
    describe,
    field_decimal,
    field_int,
    field_levels,
    field_object,
    load_object,
    source_name,
)
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

# relay stream name -> (sim stream name, kind)
_STREAMS: dict[str, tuple[str, StreamKind]] = {
    "trades": ("trade", StreamKind.EVENT),
    "ticker": ("ticker", StreamKind.STATE),
    "book": ("depth", StreamKind.BOOK),
}


class SimAdapter:
    """Translates between relay channels ``<source>:<stream>:<SYM>`` and sim topics
    ``<stream>.<SYM>`` and normalizes the sim's messages."""

    def __init__(
        self,
        source: str,
        symbols: Sequence[str],
        heartbeat_interval: float = 1.0,
        rest_url: str | None = None,
    ) -> None:
        self.source = source_name(source)
        self.heartbeat_interval = heartbeat_interval
        self._rest_url = None if rest_url is None else rest_url.rstrip("/")
        self._to_topic: dict[str, str] = {}
        self._to_channel: dict[str, tuple[str, str, StreamKind]] = {}
        """sim topic -> (relay channel, symbol, kind)"""
        for symbol in symbols:
            for stream, (sim_stream, kind) in _STREAMS.items():
                channel = f"{source}:{stream}:{symbol}"
                topic = f"{sim_stream}.{symbol}"
                self._to_topic[channel] = topic
                self._to_channel[topic] = (channel, symbol, kind)
        self._req = itertools.count(1)

    def channels(self) -> frozenset[str]:
        return frozenset(self._to_topic)

    def kind(self, channel: str) -> StreamKind | None:
        topic = self._to_topic.get(channel)
        return None if topic is None else self._to_channel[topic][2]

    def repair(self, channel: str) -> RepairKind:
        """Books are repaired from the REST snapshot; trades and tickers have nothing to
        repair from."""
        return (
            RepairKind.REST_SNAPSHOT if self.kind(channel) is StreamKind.BOOK else RepairKind.NONE
        )

    def book_rules(self, channel: str) -> BookRules:
        """The market keeps whole books and sends no checksum."""
        return NO_RULES

    def reset(self) -> None:
        """Request numbers only label requests in logs; nothing is correlated by them."""

    def probe_frame(self) -> None:
        """The market sends its own heartbeat every second."""
        return None

    def topic(self, channel: str) -> str:
        """The sim topic of a relay channel; KeyError for channels this source does not serve."""
        try:
            return self._to_topic[channel]
        except KeyError:
            raise KeyError(f"unknown channel {channel!r}") from None

    def subscribe_frames(self, channels: Sequence[str]) -> list[str]:
        return self._frames("subscribe", channels)

    def unsubscribe_frames(self, channels: Sequence[str]) -> list[str]:
        return self._frames("unsubscribe", channels)

    def _frames(self, op: str, channels: Sequence[str]) -> list[str]:
        """One request for all channels; ``req`` numbers them so acks are traceable in logs."""
        if not channels:
            return []
        args = [self.topic(channel) for channel in channels]
        return [orjson.dumps({"op": op, "args": args, "req": next(self._req)}).decode()]

    def http_repair(self, repair: FetchSnapshot | FetchItem) -> HttpRepair | None:
        """Tickers and books have a REST snapshot; the market has no numbered items."""
        if isinstance(repair, FetchItem) or self._rest_url is None:
            return None
        topic = self.topic(repair.channel)
        if self.kind(repair.channel) is StreamKind.EVENT:
            return None
        url = f"{self._rest_url}/api/snapshot?topic={quote(topic, safe='')}"
        return HttpRepair(HttpRequest("GET", url), functools.partial(self.parse_snapshot, repair))

    def parse(self, frame: str | bytes) -> list[UpstreamEvent]:
        message = load_object(frame)
        if "topic" in message:
            return [self._update(message)]
        op = message.get("op")
        if op == "heartbeat":
            field_int(message, "time")
            return [Heartbeat()]
        if op == "pong":
            return [Heartbeat()]
        if op in ("subscribe", "unsubscribe"):
            ok = message.get("ok")
            if not isinstance(ok, bool):
                raise UpstreamFormatError(f"{op} ack without a boolean 'ok'")
            # Only a subscribe's answer is about a channel's subscription: an unsubscribe's
            # must not touch a new subscribe of the same channel.
            channels = self._ack_channels(message.get("args")) if op == "subscribe" else ()
            if ok:
                return [Ack(True, f"{op} {describe(message.get('args'))}", channels)]
            return [Ack(False, f"{op} refused: {describe(message.get('error'))}", channels)]
        if op == "error":
            # The sim could not read one of our requests: a refusal, not a broken stream.
            return [Ack(False, f"request rejected: {describe(message.get('error'))}")]
        raise UpstreamFormatError(f"unknown message op {describe(op)}")

    def _ack_channels(self, args: object) -> tuple[str, ...]:
        """The channels an ack names; topics the relay does not know are left out (an ack is
        only ever matched against what was requested)."""
        if not isinstance(args, list):
            return ()
        known = self._to_channel
        return tuple(known[t][0] for t in args if isinstance(t, str) and t in known)

    def parse_snapshot(self, repair: FetchSnapshot, body: bytes) -> Update:
        """A REST snapshot's body as an Update with ``snapshot=True``."""
        topic = self.topic(repair.channel)
        message = load_object(body)
        if message.get("topic") != topic:
            raise UpstreamFormatError(f"snapshot for {describe(message.get('topic'))}, not {topic}")
        if message.get("kind") != "snapshot":
            raise UpstreamFormatError("REST snapshot without kind 'snapshot'")
        return self._update(message)

    def _update(self, message: dict[str, Any]) -> Update:
        topic = message["topic"]
        if not isinstance(topic, str) or topic not in self._to_channel:
            raise UpstreamFormatError(f"unknown topic {describe(topic)}")
        channel, symbol, kind = self._to_channel[topic]
        seq = field_int(message, "seq")
        msg_kind = message.get("kind")
        body = message.get("body")
        if not isinstance(body, dict):
            raise UpstreamFormatError(f"{topic}: body is not an object")
        ts = field_int(body, "time") // 1000
        data: dict[str, Any]
        if kind is StreamKind.EVENT:
            if msg_kind != "update":
                raise UpstreamFormatError(f"{topic}: trade kind must be 'update'")
            taker = body.get("taker")
            if taker not in ("B", "S"):
                raise UpstreamFormatError(f"{topic}: taker must be 'B' or 'S'")
            data = {
                "symbol": symbol,
                "price": field_decimal(body, "px"),
                "size": field_decimal(body, "qty"),
                "side": "buy" if taker == "B" else "sell",
                "trade_id": str(field_int(body, "id")),
                "ts": ts,
            }
            return Update(channel, data, seq, snapshot=False)
        if kind is StreamKind.STATE:
            if msg_kind != "snapshot":
                raise UpstreamFormatError(f"{topic}: ticker kind must be 'snapshot'")
            bid, ask = field_object(body, "bid"), field_object(body, "ask")
            data = {
                "symbol": symbol,
                "bid": field_decimal(bid, "px"),
                "bid_size": field_decimal(bid, "qty"),
                "ask": field_decimal(ask, "px"),
                "ask_size": field_decimal(ask, "qty"),
                "last": field_decimal(body, "last"),
                "ts": ts,
            }
            return Update(channel, data, seq, snapshot=True)
        if msg_kind not in ("snapshot", "update"):
            raise UpstreamFormatError(f"{topic}: depth kind must be 'snapshot' or 'update'")
        data = {
            "symbol": symbol,
            "bids": field_levels(body, "bids"),
            "asks": field_levels(body, "asks"),
            "ts": ts,
        }
        return Update(channel, data, seq, snapshot=msg_kind == "snapshot")
