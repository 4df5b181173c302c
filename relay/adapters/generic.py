"""Adapter for a JSON WebSocket source described in the configuration alone (``kind = "json"``).

For an upstream without a built-in adapter: its ``[sources.NAME.json]`` table (:class:`JsonSpec`)
says which streams it offers and under which topics, what its subscribe and unsubscribe requests
look like, and where, in each message, the routing key, the sequence number, the time and every
normalized field are, as RFC 6901 JSON pointers. Everything the built-in adapters promise holds
here too: prices and sizes are the upstream's exact decimal strings, every field read is
validated (a malformed message is one :class:`UpstreamFormatError`, never a ``KeyError``), every
subscribe is answered by an :class:`Ack` naming its channels, and books carry a sequence number
and are repaired from a REST snapshot (``[json.rest]``) or by subscribing again.

The specification is checked when it is built, so a mistake in it is a configuration error with
the key's path (``streams.trades.fields.price: ...``), not a stream of malformed messages later.
``examples/json-sim.toml`` describes the relay's own synthetic market this way; fed the
same frames, this adapter and :class:`relay.adapters.sim.SimAdapter` produce the same updates.

Pointers: ``json.topic``, ``seq``, ``payload``, ``time`` (and a stream's overrides of them, its
``expect`` and ``snapshot`` conditions, and the ack, heartbeat and ignore rules) are read from
the message's root; a stream's ``fields`` from its payload; book levels' ``level_price`` and
``level_size`` from each level. A value compared with a rule's ``values`` is taken as text: a
JSON string as itself, anything else as its JSON text (``true``, ``42``, ``null``).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Final, Literal, get_args
from urllib.parse import quote, urlsplit

import attrs
import orjson

from relay.adapters.base import HttpRepair, HttpRequest
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
from relay.issues import Issue, raise_issues

__all__ = [
    "FIELDS",
    "MISSING",
    "AckSpec",
    "GenericJsonAdapter",
    "JsonPointer",
    "JsonSpec",
    "Match",
    "RestSpec",
    "StreamSpec",
    "as_text",
]

TimeUnit = Literal["s", "ms", "us", "ns", "iso"]
SymbolCase = Literal["keep", "lower", "upper"]
StreamKindName = Literal["event", "state", "book"]

_TIME_UNITS: Final = get_args(TimeUnit)
_SYMBOL_CASES: Final = get_args(SymbolCase)
_KINDS: Final = {"event": StreamKind.EVENT, "state": StreamKind.STATE, "book": StreamKind.BOOK}

#: The normalized fields of each kind of stream (protocol.md, "Normalized data"), besides
#: ``symbol`` (the relay's) and ``ts`` (the event time, from ``fields.ts`` or a time pointer).
FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "event": ("price", "size", "side", "trade_id"),
    "state": ("bid", "bid_size", "ask", "ask_size", "last"),
    "book": ("bids", "asks"),
}
#: The protocol's own stream names have a fixed kind; other names may be of any kind.
_STANDARD_KINDS: Final = {"trades": "event", "ticker": "state", "book": "book"}

_NAME = re.compile(r"[a-z0-9_-]+")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_INDEX = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE = re.compile(r"~(?![01])")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CASES: Final[Mapping[str, Callable[[str], str]]] = {
    "keep": lambda text: text,
    "lower": str.lower,
    "upper": str.upper,
}
_MS = timedelta(milliseconds=1)


# --------------------------------------------------------------------------------------------
# RFC 6901 JSON pointers


class _Missing:
    """What a pointer resolves to where the document has nothing."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


class JsonPointer:
    """An RFC 6901 pointer, parsed once: ``""`` is the whole document, ``/a/0/b~1c`` is key
    ``a``, then index 0, then key ``b/c`` (``~1`` stands for ``/`` and ``~0`` for ``~``)."""

    __slots__ = ("text", "tokens")

    def __init__(self, text: str) -> None:
        """Raises ValueError for text that is not a pointer."""
        if text and not text.startswith("/"):
            raise ValueError("must be empty or start with '/'")
        if _BAD_ESCAPE.search(text):
            raise ValueError("'~' must be followed by '0' or '1'")
        self.text = text
        # Unescape ~1 before ~0, so that "~01" is "~1" and not "/".
        self.tokens: tuple[str, ...] = tuple(
            token.replace("~1", "/").replace("~0", "~") for token in text.split("/")[1:]
        )

    def resolve(self, document: Any) -> Any:
        """The value the pointer refers to, or :data:`MISSING`."""
        value = document
        for token in self.tokens:
            if isinstance(value, dict):
                value = value.get(token, MISSING)
                if value is MISSING:
                    return MISSING
            elif isinstance(value, list):
                # Array indexes are decimal without leading zeros; "-" (past the end) and
                # anything else refer to nothing.
                if not _INDEX.fullmatch(token):
                    return MISSING
                index = int(token)
                if index >= len(value):
                    return MISSING
                value = value[index]
            else:
                return MISSING
        return value

    def __repr__(self) -> str:
        return f"JsonPointer({self.text!r})"


def as_text(value: Any) -> str:
    """A JSON value as a rule compares it: a string as itself, anything else as JSON text."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a number beyond 64 bits, from the exact-number parser
        return json.dumps(value)


# --------------------------------------------------------------------------------------------
# The configuration table


def _key(name: str) -> str:
    """A mapping key as written in a TOML dotted path (quoted unless bare)."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _check_pointer(issues: list[Issue], path: str, text: str | None) -> None:
    if text is None:
        return
    try:
        JsonPointer(text)
    except ValueError as exc:
        issues.append(Issue(path, f"must be a JSON pointer (RFC 6901): {exc}, got {text!r}"))


def _check_placeholders(
    issues: list[Issue], path: str, template: str, allowed: Sequence[str]
) -> set[str]:
    """The placeholders a template uses; unknown ones are issues."""
    used = set(_PLACEHOLDER.findall(template))
    for name in sorted(used - set(allowed)):
        known = ", ".join("{" + a + "}" for a in allowed)
        issues.append(Issue(path, f"unknown placeholder {{{name}}} (known: {known})"))
    return used


def _render(template: str, values: Mapping[str, str]) -> str:
    """Substitute the placeholders (unknown ones, already reported, are left as they are)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _check_request(
    issues: list[Issue], path: str, template: str | None, *, with_topics: bool
) -> None:
    """A request template: JSON text once its placeholders are filled in."""
    if template is None:
        return
    allowed = ("topics", "topic", "id") if with_topics else ("id",)
    used = _check_placeholders(issues, path, template, allowed)
    if with_topics and len(used & {"topics", "topic"}) != 1:
        issues.append(
            Issue(path, "must name the topics: {topics} (a JSON list) or {topic} (one per frame)")
        )
    sample = _render(template, {"topics": '["t"]', "topic": '"t"', "id": "1"})
    try:
        orjson.loads(sample)
    except orjson.JSONDecodeError as exc:
        issues.append(Issue(path, f"is not JSON once filled in ({exc}): {sample!r}"))


@attrs.frozen
class Match:
    """A condition on a message: the value at ``pointer`` is one of ``values``, compared as text
    (a JSON string as itself, anything else as its JSON text: ``true``, ``42``, ``null``). With
    no ``values``, the pointer only has to lead somewhere."""

    pointer: str
    values: list[str] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        _check_pointer(issues, "pointer", self.pointer)
        raise_issues(issues)


@attrs.frozen
class AckSpec:
    """How an answer to a request looks: a message matching every ``when`` is an ack."""

    when: list[Match]
    ok: Match | None = None
    """The ack is a success when this matches (``{pointer = "/ok", values = ["true"]}``); None:
    every ack this rule matches is a success (unless ``refusal``)."""
    refusal: bool = False
    """Every message this rule matches is a refusal (an error message of the upstream)."""
    topics: str | None = None
    """Pointer to the topic, or the list of topics, the ack answers."""
    id: str | None = None
    """Pointer to the echoed request id (``{id}`` in the request templates), for acks that do
    not name their topics."""
    detail: str | None = None
    """Pointer to a reason or message worth logging."""

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        if not self.when:
            issues.append(Issue("when", "must have at least one condition"))
        if self.ok is not None and self.refusal:
            issues.append(Issue("refusal", "contradicts ok: a refusal has no ok flag to read"))
        for name in ("topics", "id", "detail"):
            _check_pointer(issues, name, getattr(self, name))
        raise_issues(issues)


@attrs.frozen
class StreamSpec:
    """One relay stream (``[json.streams.NAME]``): ``SOURCE:NAME:SYMBOL`` for every symbol."""

    kind: StreamKindName
    """``event`` (trades' fields), ``state`` (a ticker's) or ``book``."""
    topic: str
    """The upstream topic of a symbol, e.g. ``"trade.{symbol}"``; also ``{base}``, ``{quote}``."""
    fields: dict[str, str]
    """Normalized field -> pointer into the payload: by kind, ``price size side trade_id``,
    ``bid bid_size ask ask_size last``, or ``bids asks``; ``ts`` optionally."""
    route: str | None = None
    """The routing key in data messages when it is not the topic (same placeholders)."""
    payload: str | None = None
    seq: str | None = None
    first_seq: str | None = None
    """Books: the first upstream seq a delta covers, when a delta covers a range."""
    time: str | None = None
    time_unit: TimeUnit | None = None
    expect: list[Match] = attrs.Factory(list)
    """Conditions every data message of the stream must meet (else it is malformed)."""
    snapshot: Match | None = None
    """Books: a message matching this is a snapshot, any other a delta."""
    batch: bool = False
    """Events: the payload is a list of events (one update each), not one event."""
    sides: dict[str, str] = attrs.Factory(lambda: {"buy": "buy", "sell": "sell"})
    """Events: the upstream's value of ``side`` (as text) -> ``buy``/``sell``, the taker's side."""
    level_price: str = "/0"
    level_size: str = "/1"
    depth: int = 0
    """Books: the levels per side the upstream keeps (0: the whole book)."""

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        if self.kind not in _KINDS:
            issues.append(Issue("kind", f"must be one of event, state, book, got {self.kind!r}"))
            raise_issues(issues)
        for name, template in (("topic", self.topic), ("route", self.route)):
            if template is None:
                continue
            used = _check_placeholders(issues, name, template, ("symbol", "base", "quote"))
            if not used:
                issues.append(Issue(name, "must contain {symbol} (or {base} and {quote})"))
        for name in ("payload", "seq", "first_seq", "time", "level_price", "level_size"):
            _check_pointer(issues, name, getattr(self, name))
        if self.time_unit is not None and self.time_unit not in _TIME_UNITS:
            issues.append(Issue("time_unit", f"must be one of {', '.join(_TIME_UNITS)}"))
        wanted = FIELDS[self.kind]
        for name, pointer in self.fields.items():
            if name not in (*wanted, "ts"):
                known = ", ".join((*wanted, "ts"))
                issues.append(
                    Issue(f"fields.{_key(name)}", f"not a field of {self.kind} streams ({known})")
                )
            else:
                _check_pointer(issues, f"fields.{name}", pointer)
        issues.extend(
            Issue(f"fields.{name}", f"required for {self.kind} streams")
            for name in wanted
            if name not in self.fields
        )
        book = self.kind == "book"
        if book and self.snapshot is None:
            issues.append(Issue("snapshot", "required for book streams: what marks a snapshot"))
        if not book:
            book_only = {
                "snapshot": self.snapshot is not None,
                "first_seq": self.first_seq is not None,
                "depth": self.depth != 0,
                "level_price": self.level_price != "/0",
                "level_size": self.level_size != "/1",
            }
            issues.extend(
                Issue(name, "only book streams have it")
                for name, given in book_only.items()
                if given
            )
        if self.batch and self.kind != "event":
            issues.append(Issue("batch", "only event streams have it"))
        if self.depth < 0:
            issues.append(Issue("depth", f"must be 0 (whole book) or more, got {self.depth}"))
        if self.kind == "event":
            for value, side in self.sides.items():
                if side not in ("buy", "sell"):
                    issues.append(
                        Issue(f"sides.{_key(value)}", f"must be buy or sell, got {side!r}")
                    )
            missing = {"buy", "sell"} - set(self.sides.values())
            if missing:
                issues.append(Issue("sides", f"no value maps to {' or '.join(sorted(missing))}"))
        elif self.sides != {"buy": "buy", "sell": "sell"}:
            issues.append(Issue("sides", "only event streams have sides"))
        raise_issues(issues)


@attrs.frozen
class RestSpec:
    """Where a book's snapshot is fetched after a gap (``[json.rest]``); pointers into its body.
    The book's levels are read with the stream's ``fields`` from ``payload``."""

    url: str
    """E.g. ``"{rest_url}/api/snapshot?topic={topic}"``; also ``{symbol}``, ``{base}``,
    ``{quote}`` (URL-quoted; ``{rest_url}`` is the source's ``rest_url`` as configured)."""
    seq: str
    """The upstream seq of the last update the snapshot includes."""
    payload: str = ""
    time: str | None = None
    time_unit: TimeUnit | None = None
    topic: str | None = None
    """Pointer to the topic the body is about; it must be the topic asked for."""
    expect: list[Match] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        allowed = ("rest_url", "topic", "symbol", "base", "quote")
        _check_placeholders(issues, "url", self.url, allowed)
        sample = _render(self.url, dict.fromkeys(allowed, "x") | {"rest_url": "http://host"})
        if urlsplit(sample).scheme not in ("http", "https"):
            issues.append(Issue("url", "must start with {rest_url} or http:// or https://"))
        for name in ("seq", "payload", "time", "topic"):
            _check_pointer(issues, name, getattr(self, name))
        if self.time_unit is not None and self.time_unit not in _TIME_UNITS:
            issues.append(Issue("time_unit", f"must be one of {', '.join(_TIME_UNITS)}"))
        raise_issues(issues)


@attrs.frozen
class JsonSpec:
    """A JSON WebSocket source, described in its configuration (``[sources.NAME.json]``)."""

    subscribe: str
    """The subscribe request as JSON text, with ``{topics}`` (a JSON list of topics) or
    ``{topic}`` (one JSON string, one frame per topic) and optionally ``{id}`` (a counter)."""
    unsubscribe: str
    topic: str
    """Pointer to the routing key of a data message; a message without one is not data."""
    streams: dict[str, StreamSpec]
    symbol: str = "{symbol}"
    """The upstream's symbol from the relay's ``BASE-QUOTE``: ``{base}``, ``{quote}``,
    ``{symbol}`` (the relay's symbol), e.g. ``"{base}{quote}"``."""
    symbol_case: SymbolCase = "keep"
    symbol_overrides: dict[str, str] = attrs.Factory(dict)
    """Relay symbol -> upstream symbol, where the template does not fit."""
    seq: str | None = None
    """Pointer to the upstream's sequence number (per topic); books without one are numbered
    by the relay, and then repaired by subscribing again."""
    payload: str = ""
    time: str | None = None
    """Pointer to the event time, in ``time_unit`` (``s``, ``ms``, ``us``, ``ns``, or ``iso`` for
    ISO 8601 text)."""
    time_unit: TimeUnit = "ms"
    heartbeat: list[Match] = attrs.Factory(list)
    """A message matching any of these is a heartbeat (a sign of life, nothing more)."""
    acks: list[AckSpec] = attrs.Factory(list)
    data_acks: bool = False
    """The upstream confirms no subscription: a channel's first data message stands for it."""
    ignore: list[Match] = attrs.Factory(list)
    """A message matching any of these is skipped (informational messages)."""
    probe: str | None = None
    """A request sent every heartbeat interval (JSON text, ``{id}``), for upstreams silent when
    idle; its answer must match a ``heartbeat`` rule."""
    max_topics: int = 0
    """Topics per subscribe frame with ``{topics}`` (0: no limit)."""
    exact_numbers: bool = False
    """Prices and sizes may be JSON numbers: frames are then parsed keeping each number's exact
    text (slower). Off, a number where a decimal string is expected is malformed."""
    rest: RestSpec | None = None

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        _check_placeholders(issues, "symbol", self.symbol, ("base", "quote", "symbol"))
        if self.symbol_case not in _SYMBOL_CASES:
            issues.append(Issue("symbol_case", f"must be one of {', '.join(_SYMBOL_CASES)}"))
        for name, value in self.symbol_overrides.items():
            if not value:
                issues.append(Issue(f"symbol_overrides.{_key(name)}", "must not be empty"))
        _check_request(issues, "subscribe", self.subscribe, with_topics=True)
        _check_request(issues, "unsubscribe", self.unsubscribe, with_topics=True)
        _check_request(issues, "probe", self.probe, with_topics=False)
        for name in ("topic", "seq", "payload", "time"):
            _check_pointer(issues, name, getattr(self, name))
        if self.time_unit not in _TIME_UNITS:
            issues.append(Issue("time_unit", f"must be one of {', '.join(_TIME_UNITS)}"))
        if self.max_topics < 0:
            issues.append(
                Issue("max_topics", f"must be 0 (no limit) or more, got {self.max_topics}")
            )
        if not self.streams:
            issues.append(Issue("streams", "must define at least one stream"))
        routes: dict[str, str] = {}
        for name, stream in self.streams.items():
            path = f"streams.{_key(name)}"
            if not _NAME.fullmatch(name):
                issues.append(Issue(path, "stream name must match [a-z0-9_-]+ (channel names)"))
            standard = _STANDARD_KINDS.get(name)
            if standard is not None and stream.kind != standard:
                issues.append(Issue(f"{path}.kind", f"must be {standard!r} for {name}"))
            if "ts" not in stream.fields and stream.time is None and self.time is None:
                issues.append(
                    Issue(path, "has no event time: set fields.ts, time, or the table's time")
                )
            route = stream.route if stream.route is not None else stream.topic
            other = routes.setdefault(route, name)
            if other != name:
                issues.append(
                    Issue(f"{path}.topic", f"routes like streams.{_key(other)}: {route!r}")
                )
        if self.rest is not None:
            books = [(n, s) for n, s in self.streams.items() if s.kind == "book"]
            if not books:
                issues.append(Issue("rest", "only books are repaired from REST; no book stream"))
            for name, stream in books:
                if stream.seq is None and self.seq is None:
                    issues.append(
                        Issue(
                            f"streams.{_key(name)}.seq",
                            "required with rest: a REST snapshot is merged by sequence number",
                        )
                    )
                if self.rest.time is None and "ts" not in stream.fields:
                    issues.append(
                        Issue("rest.time", f"required: streams.{_key(name)} has no fields.ts")
                    )
        if not self.data_acks and not any(
            a.topics is not None or a.id is not None for a in self.acks
        ):
            # The relay waits for every subscribe to be answered (answer_timeout): answers that
            # name nothing would end every connection.
            issues.append(
                Issue(
                    "acks",
                    "a rule must name what it answers (topics or id), "
                    "or set data_acks = true for an upstream that confirms nothing",
                )
            )
        raise_issues(issues)


# --------------------------------------------------------------------------------------------
# The spec compiled for parsing


class _Condition:
    """A compiled :class:`Match`."""

    __slots__ = ("pointer", "values")

    def __init__(self, match: Match) -> None:
        self.pointer = JsonPointer(match.pointer)
        self.values: frozenset[str] | None = frozenset(match.values) if match.values else None

    def holds(self, message: Any) -> bool:
        value = self.pointer.resolve(message)
        if value is MISSING:
            return False
        return self.values is None or as_text(value) in self.values


def _all(conditions: Sequence[_Condition], message: Any) -> bool:
    return all(c.holds(message) for c in conditions)


def _expect(conditions: Sequence[_Condition], message: Any, where: str) -> None:
    """UpstreamFormatError unless every condition holds."""
    for condition in conditions:
        if not condition.holds(message):
            found = describe(condition.pointer.resolve(message))
            where_in = condition.pointer.text or "the message"
            raise UpstreamFormatError(f"{where}: {where_in} is {found}, not one expected")


def _pointer(text: str | None) -> JsonPointer | None:
    return None if text is None else JsonPointer(text)


@attrs.frozen
class _AckRule:
    when: tuple[_Condition, ...]
    ok: _Condition | None
    refusal: bool
    topics: JsonPointer | None
    id: JsonPointer | None
    detail: JsonPointer | None


@attrs.frozen(eq=False)
class _Stream:
    name: str
    kind: StreamKind
    payload: JsonPointer
    seq: JsonPointer | None
    first_seq: JsonPointer | None
    time: JsonPointer | None
    time_unit: TimeUnit
    ts_field: JsonPointer | None
    expect: tuple[_Condition, ...]
    snapshot: _Condition | None
    batch: bool
    fields: dict[str, JsonPointer]
    sides: dict[str, str]
    level_price: JsonPointer
    level_size: JsonPointer
    depth: int | None


@attrs.frozen(eq=False)
class _Route:
    channel: str
    symbol: str
    topic: str
    stream: _Stream


@attrs.frozen
class _Rest:
    url: str
    seq: JsonPointer
    payload: JsonPointer
    time: JsonPointer | None
    time_unit: TimeUnit | None
    topic: JsonPointer | None
    expect: tuple[_Condition, ...]


class _NumberText(str):
    """A JSON number's exact text, from the exact-number parser."""

    __slots__ = ()


# --------------------------------------------------------------------------------------------
# The adapter


class GenericJsonAdapter:
    """Translates between relay channels and the topics of a source a :class:`JsonSpec`
    describes, and normalizes its messages."""

    def __init__(
        self,
        source: str,
        spec: JsonSpec,
        symbols: Sequence[str],
        heartbeat_interval: float,
        rest_url: str | None,
    ) -> None:
        """Raises ValueError where the spec does not fit the source's other keys: a symbol
        without ``-`` for a template with ``{base}``/``{quote}``, two channels on one topic,
        ``[json.rest]`` without a ``rest_url``."""
        if spec.rest is not None and rest_url is None:
            raise ValueError(f"source {source!r}: json.rest needs the source's rest_url")
        self.source = source_name(source)
        self._spec = spec
        self.heartbeat_interval = heartbeat_interval
        self._rest_url = None if rest_url is None else rest_url.rstrip("/")
        self._topic_pointer = JsonPointer(spec.topic)
        self._heartbeat = tuple(_Condition(m) for m in spec.heartbeat)
        self._ignore = tuple(_Condition(m) for m in spec.ignore)
        self._acks = tuple(
            _AckRule(
                tuple(_Condition(m) for m in rule.when),
                None if rule.ok is None else _Condition(rule.ok),
                rule.refusal,
                _pointer(rule.topics),
                _pointer(rule.id),
                _pointer(rule.detail),
            )
            for rule in spec.acks
        )
        self._by_id = any(rule.id is not None for rule in self._acks)
        self._rest = None if spec.rest is None else self._compile_rest(spec.rest)
        self._load: Callable[[str | bytes], dict[str, Any]] = (
            _load_exact if spec.exact_numbers else load_object
        )
        self._routes: dict[str, _Route] = {}
        """Routing key of data messages -> route."""
        self._by_channel: dict[str, _Route] = {}
        self._by_topic: dict[str, _Route] = {}
        """Subscribe topic -> route, for acks that name topics."""
        streams = {name: self._compile_stream(name, s) for name, s in spec.streams.items()}
        for symbol in symbols:
            names = self._symbol_names(symbol)
            for name, stream_spec in spec.streams.items():
                values = {**names, "symbol": names["upstream"]}
                topic = _render(stream_spec.topic, values)
                route_key = (
                    topic if stream_spec.route is None else _render(stream_spec.route, values)
                )
                channel = f"{source}:{name}:{symbol}"
                route = _Route(channel, symbol, topic, streams[name])
                for index, key in ((self._routes, route_key), (self._by_topic, topic)):
                    if key in index:
                        raise ValueError(
                            f"source {source!r}: {channel} and {index[key].channel} "
                            f"share the upstream topic {key!r}"
                        )
                    index[key] = route
                self._by_channel[channel] = route
        self._ids = itertools.count(1)
        self._requests: dict[str, tuple[bool, tuple[str, ...]]] = {}
        """Request id (as text) -> whether it subscribes, and the channels it asked for, until
        its ack comes. Only a subscribe's answer names channels: an unsubscribe's must not touch
        a new subscribe of the same channel."""
        self._counters: dict[str, int] = {}
        """Book channel -> the relay's own numbering, for books without an upstream seq."""
        self._unconfirmed: set[str] = set()
        """With ``data_acks``: channels subscribed whose first message has not come yet."""

    def _symbol_names(self, symbol: str) -> dict[str, str]:
        """``base``, ``quote`` and ``upstream`` (the upstream's symbol) for a relay symbol."""
        spec = self._spec
        case = _CASES[spec.symbol_case]
        base, dash, quote_ = symbol.partition("-")
        templates = [spec.symbol, *(s.topic for s in spec.streams.values())]
        templates += [s.route for s in spec.streams.values() if s.route is not None]
        if spec.rest is not None:
            templates.append(spec.rest.url)
        uses_parts = any({"base", "quote"} & set(_PLACEHOLDER.findall(t)) for t in templates)
        if uses_parts and not (dash and base and quote_):
            raise ValueError(
                f"source {self.source!r}: symbol {symbol!r} is not BASE-QUOTE, which the "
                "json templates' {base} and {quote} need"
            )
        names = {"base": case(base), "quote": case(quote_), "symbol": case(symbol)}
        override = spec.symbol_overrides.get(symbol)
        names["upstream"] = override if override is not None else _render(spec.symbol, names)
        return names

    def _compile_stream(self, name: str, stream: StreamSpec) -> _Stream:
        spec = self._spec
        seq = stream.seq if stream.seq is not None else spec.seq
        time = stream.time if stream.time is not None else spec.time
        fields = {k: JsonPointer(v) for k, v in stream.fields.items() if k != "ts"}
        return _Stream(
            name=name,
            kind=_KINDS[stream.kind],
            payload=JsonPointer(stream.payload if stream.payload is not None else spec.payload),
            seq=_pointer(seq),
            first_seq=_pointer(stream.first_seq),
            time=_pointer(time),
            time_unit=stream.time_unit if stream.time_unit is not None else spec.time_unit,
            ts_field=_pointer(stream.fields.get("ts")),
            expect=tuple(_Condition(m) for m in stream.expect),
            snapshot=None if stream.snapshot is None else _Condition(stream.snapshot),
            batch=stream.batch,
            fields=fields,
            sides=dict(stream.sides),
            level_price=JsonPointer(stream.level_price),
            level_size=JsonPointer(stream.level_size),
            depth=stream.depth or None,
        )

    @staticmethod
    def _compile_rest(rest: RestSpec) -> _Rest:
        return _Rest(
            rest.url,
            JsonPointer(rest.seq),
            JsonPointer(rest.payload),
            _pointer(rest.time),
            rest.time_unit,
            _pointer(rest.topic),
            tuple(_Condition(m) for m in rest.expect),
        )

    # The catalogue ---------------------------------------------------------------------------

    def channels(self) -> frozenset[str]:
        return frozenset(self._by_channel)

    def kind(self, channel: str) -> StreamKind | None:
        route = self._by_channel.get(channel)
        return None if route is None else route.stream.kind

    def repair(self, channel: str) -> RepairKind:
        """Books: from the REST snapshot when ``[json.rest]`` says where it is, else by
        subscribing again (the upstream sends a snapshot on subscribe). Events and states have
        nothing to repair from."""
        if self.kind(channel) is not StreamKind.BOOK:
            return RepairKind.NONE
        return RepairKind.REST_SNAPSHOT if self._rest is not None else RepairKind.RESUBSCRIBE

    def book_rules(self, channel: str) -> BookRules:
        route = self._by_channel.get(channel)
        if route is None or route.stream.depth is None:
            return NO_RULES
        return BookRules(depth=route.stream.depth)

    def reset(self) -> None:
        """Request ids and the relay's own book numbering belong to one connection."""
        self._requests.clear()
        self._counters.clear()
        self._unconfirmed.clear()

    def topic(self, channel: str) -> str:
        """The upstream topic of a relay channel; KeyError for channels this source does not
        serve."""
        try:
            return self._by_channel[channel].topic
        except KeyError:
            raise KeyError(f"unknown channel {channel!r}") from None

    # Requests --------------------------------------------------------------------------------

    def subscribe_frames(self, channels: Sequence[str]) -> list[str]:
        frames = self._frames(self._spec.subscribe, channels, subscribe=True)
        if self._spec.data_acks:
            self._unconfirmed.update(channels)
        return frames

    def unsubscribe_frames(self, channels: Sequence[str]) -> list[str]:
        self._unconfirmed.difference_update(channels)
        return self._frames(self._spec.unsubscribe, channels, subscribe=False)

    def _frames(self, template: str, channels: Sequence[str], subscribe: bool) -> list[str]:
        if not channels:
            return []
        pairs = [(channel, self.topic(channel)) for channel in channels]
        size = 1 if "{topic}" in template else (self._spec.max_topics or len(pairs))
        frames = []
        for batch in _chunks(pairs, size):
            request_id = next(self._ids)
            if self._by_id:
                self._requests[str(request_id)] = (subscribe, tuple(c for c, _ in batch))
            topics = [topic for _, topic in batch]
            values = {
                "topics": orjson.dumps(topics).decode(),
                "topic": orjson.dumps(topics[0]).decode(),
                "id": str(request_id),
            }
            frames.append(_render(template, values))
        return frames

    def probe_frame(self) -> str | None:
        if self._spec.probe is None:
            return None
        return _render(self._spec.probe, {"id": str(next(self._ids))})

    # Frames ----------------------------------------------------------------------------------

    def parse(self, frame: str | bytes) -> list[UpstreamEvent]:
        message = self._load(frame)
        if any(c.holds(message) for c in self._heartbeat):
            return [*self._confirm_all(), Heartbeat()]
        for rule in self._acks:
            if _all(rule.when, message):
                return [self._ack(rule, message)]
        if any(c.holds(message) for c in self._ignore):
            return []
        key = self._topic_pointer.resolve(message)
        if not isinstance(key, str):
            raise UpstreamFormatError(f"neither data, an ack nor a heartbeat: {describe(message)}")
        route = self._routes.get(key)
        if route is None:
            raise UpstreamFormatError(f"unknown topic {describe(key)}")
        updates = self._updates(route, message)
        return [*self._confirm_all(), *updates]

    def _confirm_all(self) -> list[UpstreamEvent]:
        """With ``data_acks``: the upstream confirms nothing, so the first sign of life after a
        subscribe (a heartbeat, or data on any channel) stands for its acknowledgement; a quiet
        channel must not be taken for an unanswered request."""
        if not self._unconfirmed:
            return []
        channels = tuple(sorted(self._unconfirmed))
        self._unconfirmed.clear()
        return [Ack(True, "the upstream is sending after the subscribe", channels)]

    def _ack(self, rule: _AckRule, message: dict[str, Any]) -> Ack:
        ok = not rule.refusal and (rule.ok is None or rule.ok.holds(message))
        channels: tuple[str, ...] = ()
        answers_unsubscribe = False
        if rule.id is not None:
            request_id = rule.id.resolve(message)
            if request_id is not MISSING:
                subscribe, channels = self._requests.pop(as_text(request_id), (True, ()))
                answers_unsubscribe = not subscribe
        if answers_unsubscribe:
            channels = ()
        elif rule.topics is not None:
            named = rule.topics.resolve(message)
            if isinstance(named, str):
                named = [named]
            if isinstance(named, list):
                # Topics the relay does not know are left out: an ack is only ever matched
                # against what was requested.
                found = (
                    self._by_topic.get(t) or self._routes.get(t)
                    for t in named
                    if isinstance(t, str)
                )
                channels = tuple(route.channel for route in found if route is not None) or channels
        shown = describe(message)
        for pointer in (rule.detail, rule.topics):
            value = MISSING if pointer is None else pointer.resolve(message)
            if value is not MISSING:
                shown = describe(value)
                break
        return Ack(ok, f"{'ok' if ok else 'refused'}: {shown}", channels)

    def _updates(self, route: _Route, message: dict[str, Any]) -> list[UpstreamEvent]:
        stream = route.stream
        where = route.topic
        _expect(stream.expect, message, where)
        seq = None if stream.seq is None else _integer(stream.seq.resolve(message), "seq", where)
        payload = stream.payload.resolve(message)
        if stream.kind is StreamKind.EVENT:
            if stream.batch and not isinstance(payload, list):
                raise UpstreamFormatError(f"{where}: payload is not a list of events")
            items = payload if stream.batch else [payload]
            updates: list[UpstreamEvent] = []
            for item in items:
                if not isinstance(item, dict):
                    raise UpstreamFormatError(f"{where}: payload is not an object")
                data = self._trade(route, item, message)
                updates.append(Update(route.channel, data, seq, snapshot=False))
            return updates
        if not isinstance(payload, dict):
            raise UpstreamFormatError(f"{where}: payload is not an object")
        ts = self._ts(stream, payload, message, stream.time, stream.time_unit, where)
        if stream.kind is StreamKind.STATE:
            fields = stream.fields
            data = {"symbol": route.symbol}
            for name in FIELDS["state"]:
                data[name] = _decimal(fields[name].resolve(payload), name, where)
            data["ts"] = ts
            return [Update(route.channel, data, seq, snapshot=True)]
        snapshot = stream.snapshot is not None and stream.snapshot.holds(message)
        data = {
            "symbol": route.symbol,
            "bids": self._levels(stream, payload, "bids", where),
            "asks": self._levels(stream, payload, "asks", where),
            "ts": ts,
        }
        first_seq = None
        if seq is None:
            # No upstream numbering: number the channel's messages ourselves, per connection.
            seq = self._counters.get(route.channel, 0) + 1
            self._counters[route.channel] = seq
        elif stream.first_seq is not None:
            first_seq = _integer(stream.first_seq.resolve(message), "first_seq", where)
        return [Update(route.channel, data, seq, snapshot=snapshot, first_seq=first_seq)]

    def _trade(
        self, route: _Route, item: dict[str, Any], message: dict[str, Any]
    ) -> dict[str, Any]:
        stream = route.stream
        fields = stream.fields
        where = route.topic
        side_value = fields["side"].resolve(item)
        side = None if side_value is MISSING else stream.sides.get(as_text(side_value))
        if side is None:
            raise UpstreamFormatError(f"{where}: side {describe(side_value)} is not a known side")
        return {
            "symbol": route.symbol,
            "price": _decimal(fields["price"].resolve(item), "price", where),
            "size": _decimal(fields["size"].resolve(item), "size", where),
            "side": side,
            "trade_id": _trade_id(fields["trade_id"].resolve(item), where),
            "ts": self._ts(stream, item, message, stream.time, stream.time_unit, where),
        }

    @staticmethod
    def _ts(
        stream: _Stream,
        payload: dict[str, Any],
        message: dict[str, Any],
        time: JsonPointer | None,
        unit: TimeUnit,
        where: str,
    ) -> int:
        """The event time in ms: the stream's ``fields.ts`` in the payload if it has one, else
        ``time`` (in ``unit``) from the message's root; the spec has one or the other."""
        if stream.ts_field is not None:
            return _milliseconds(stream.ts_field.resolve(payload), stream.time_unit, where)
        if time is None:  # pragma: no cover - JsonSpec refuses a stream without a time
            raise UpstreamFormatError(f"{where}: no time is configured")
        return _milliseconds(time.resolve(message), unit, where)

    @staticmethod
    def _levels(stream: _Stream, payload: dict[str, Any], side: str, where: str) -> list[list[str]]:
        value = stream.fields[side].resolve(payload)
        if not isinstance(value, list):
            raise UpstreamFormatError(f"{where}: {side} must be a list of levels")
        levels = []
        for level in value:
            price = _decimal(stream.level_price.resolve(level), f"{side} price", where)
            size = _decimal(stream.level_size.resolve(level), f"{side} size", where)
            levels.append([price, size])
        return levels

    # Repairs ---------------------------------------------------------------------------------

    def http_repair(self, repair: FetchSnapshot | FetchItem) -> HttpRepair | None:
        """A book's snapshot from ``[json.rest]``; nothing else can be fetched."""
        rest = self._rest
        if isinstance(repair, FetchItem) or rest is None or self._rest_url is None:
            return None
        route = self._by_channel.get(repair.channel)
        if route is None or route.stream.kind is not StreamKind.BOOK:
            return None
        names = self._symbol_names(route.symbol)
        values = {
            "topic": quote(route.topic, safe=""),
            "symbol": quote(names["upstream"], safe=""),
            "base": quote(names["base"], safe=""),
            "quote": quote(names["quote"], safe=""),
            "rest_url": self._rest_url,
        }
        url = _render(rest.url, values)
        return HttpRepair(HttpRequest("GET", url), functools.partial(self.parse_snapshot, repair))

    def parse_snapshot(self, repair: FetchSnapshot, body: bytes) -> Update:
        """A REST snapshot's body as an Update with ``snapshot=True``."""
        rest = self._rest
        route = self._by_channel.get(repair.channel)
        if rest is None or route is None or route.stream.kind is not StreamKind.BOOK:
            raise UpstreamFormatError(f"no REST snapshot is configured for {repair.channel}")
        stream = route.stream
        where = f"snapshot of {route.topic}"
        message = self._load(body)
        if rest.topic is not None:
            about = rest.topic.resolve(message)
            if about != route.topic:
                raise UpstreamFormatError(f"{where}: it is about {describe(about)}")
        _expect(rest.expect, message, where)
        seq = _integer(rest.seq.resolve(message), "seq", where)
        payload = rest.payload.resolve(message)
        if not isinstance(payload, dict):
            raise UpstreamFormatError(f"{where}: payload is not an object")
        unit = rest.time_unit if rest.time_unit is not None else stream.time_unit
        data = {
            "symbol": route.symbol,
            "bids": self._levels(stream, payload, "bids", where),
            "asks": self._levels(stream, payload, "asks", where),
            "ts": self._ts(stream, payload, message, rest.time, unit, where),
        }
        return Update(route.channel, data, seq, snapshot=True)


# --------------------------------------------------------------------------------------------
# Values


def _load_exact(frame: str | bytes) -> dict[str, Any]:
    """A JSON object whose non-integer numbers keep their text (:class:`_NumberText`)."""
    try:
        message = json.loads(frame, parse_float=_NumberText, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise UpstreamFormatError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise UpstreamFormatError("not a JSON object")
    return message


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _integer(value: Any, what: str, where: str) -> int:
    # bool is an int subclass, and True is not a sequence number.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UpstreamFormatError(
            f"{where}: {what} must be a non-negative integer, got {describe(value)}"
        )
    return value


def _decimal(value: Any, what: str, where: str) -> str:
    if isinstance(value, _NumberText) or (isinstance(value, int) and not isinstance(value, bool)):
        text = str(value)  # a JSON number's text, under exact_numbers
    elif isinstance(value, str) and type(value) is str:
        text = value
    else:
        hint = " (a JSON number: see exact_numbers)" if isinstance(value, float) else ""
        raise UpstreamFormatError(
            f"{where}: {what} must be a decimal string{hint}, got {describe(value)}"
        )
    if not _DECIMAL.fullmatch(text):
        raise UpstreamFormatError(
            f"{where}: {what} must be a decimal string, got {describe(value)}"
        )
    return text


def _trade_id(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value and type(value) is str:
        return value
    raise UpstreamFormatError(
        f"{where}: trade_id must be a string or an integer, got {describe(value)}"
    )


_FACTORS: Final[Mapping[str, Decimal]] = {
    "s": Decimal(1000),
    "ms": Decimal(1),
    "us": Decimal("0.001"),
    "ns": Decimal("0.000001"),
}
_DIVISORS: Final[Mapping[str, int]] = {"ms": 1, "us": 1000, "ns": 1_000_000}


def _milliseconds(value: Any, unit: TimeUnit, where: str) -> int:
    """A time as milliseconds since the epoch (rounded down), from the upstream's unit."""
    if unit == "iso":
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                moment = None
            if moment is not None:
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                ms = (moment - _EPOCH) // _MS
                if ms >= 0:
                    return ms
        raise UpstreamFormatError(f"{where}: time must be ISO 8601 text, got {describe(value)}")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value * 1000 if unit == "s" else value // _DIVISORS[unit]
    number: Decimal | None = None
    if isinstance(value, float) and math.isfinite(value):
        number = Decimal(repr(value))
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        try:
            number = Decimal(value)
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            number = None
    if number is None or number < 0:
        raise UpstreamFormatError(
            f"{where}: time must be a non-negative number of {unit}, got {describe(value)}"
        )
    return int((number * _FACTORS[unit]).to_integral_value(rounding=ROUND_FLOOR))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
