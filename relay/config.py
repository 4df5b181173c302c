"""The relay's configuration: one TOML file, loaded into frozen attrs classes.

Every class checks its own values when it is constructed, so a configuration object that exists
is a valid one, whether it came from a file, from :func:`demo_config` or from a program that embeds
the relay. Parsing goes through one cattrs converter with strict hooks (TOML is typed, so ``"10"``
for a number is a mistake, not something to coerce) and ``forbid_extra_keys`` (a misspelt key
silently falling back to its default is the worst kind of configuration bug). Every problem is
reported at once, each with the dotted path of the key, in one :class:`ConfigError`.
"""

from __future__ import annotations

import ast
import fnmatch
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.gen import make_dict_structure_fn
from cattrs.v import format_exception, transform_error

from relay.adapters import SOURCE_KINDS as _KINDS
from relay.adapters import make_adapter
from relay.adapters.generic import JsonSpec
from relay.core.channels import matches_any
from relay.core.credentials import (
    HMAC_ALGORITHMS,
    JWT_ALGORITHMS,
    MIN_HMAC_SECRET,
    RSA_ALGORITHMS,
)
from relay.core.deflate import CompressionPolicy
from relay.core.history import HistoryBounds
from relay.issues import UNKNOWN_KEY as _UNKNOWN_KEY
from relay.issues import ConfigError, Issue, raise_issues
from relay.tls import server_context

__all__ = [
    "FORWARDED_HEADERS",
    "PATH_KEYS",
    "POLICIES",
    "SOURCE_KINDS",
    "ApiKey",
    "AuthConfig",
    "BackpressureRule",
    "CompressionConfig",
    "ConfigError",
    "HistoryConfig",
    "HistoryRule",
    "Issue",
    "JwtConfig",
    "OutboxConfig",
    "PolicyName",
    "PublishedSourceConfig",
    "RelayConfig",
    "ServerConfig",
    "SourceConfig",
    "TierConfig",
    "TlsConfig",
    "demo_config",
    "load_config",
    "parse_config",
    "unstructure",
]

#: Upstream kinds the relay has an adapter for, from the adapters' registry.
SOURCE_KINDS: frozenset[str] = frozenset(_KINDS)

#: What to do with a message for a client whose outbox is full.
PolicyName = Literal["drop", "coalesce", "disconnect"]
POLICIES: tuple[PolicyName, ...] = get_args(PolicyName)

#: Which header a trusted proxy gives the client's address in.
ForwardedHeader = Literal["x-forwarded-for", "forwarded"]
FORWARDED_HEADERS: tuple[ForwardedHeader, ...] = get_args(ForwardedHeader)

#: Keys whose values are file paths: :func:`load_config` resolves relative ones against the
#: directory of the configuration file, so the file means the same from any working directory.
PATH_KEYS: tuple[str, ...] = (
    "server.tls.certificate",
    "server.tls.private_key",
    "auth.key_file",
    "auth.jwt.secret_file",
    "auth.jwt.public_key_file",
)

#: Source names are the first part of channel names (``SOURCE:STREAM:SYMBOL``), so no ``:``.
_SOURCE_NAME = re.compile(r"[a-z0-9_-]+")
#: TOML bare keys; anything else is quoted when it appears in a dotted path.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# --------------------------------------------------------------------------------------------
# Errors


def _join(base: str, rest: str) -> str:
    if not base:
        return rest
    if not rest:
        return base
    return base + rest if rest.startswith("[") else f"{base}.{rest}"


def _key(name: str) -> str:
    """A mapping key as it would be written in a TOML dotted key. Names with characters that
    do not print (line breaks such as U+0085 among them) are escaped, so that every issue stays
    on one line of the error message."""
    if _BARE_KEY.fullmatch(name):
        return name
    return json.dumps(name, ensure_ascii=not name.isprintable())


# --------------------------------------------------------------------------------------------
# Value checks shared by the classes' __attrs_post_init__


def _positive(issues: list[Issue], name: str, value: float) -> None:
    if not math.isfinite(value):
        issues.append(Issue(name, f"must be a finite number, got {value!r}"))
    elif value <= 0:
        issues.append(Issue(name, f"must be greater than 0, got {value!r}"))


def _non_negative(issues: list[Issue], name: str, value: float) -> None:
    if not math.isfinite(value):
        issues.append(Issue(name, f"must be a finite number, got {value!r}"))
    elif value < 0:
        issues.append(Issue(name, f"must be 0 or greater, got {value!r}"))


def _at_least_one(issues: list[Issue], name: str, value: int) -> None:
    if value < 1:
        issues.append(Issue(name, f"must be at least 1, got {value!r}"))


def _policy(issues: list[Issue], name: str, value: str) -> None:
    if value not in POLICIES:
        issues.append(Issue(name, f"must be one of {', '.join(POLICIES)}, got {value!r}"))


def _url(issues: list[Issue], name: str, value: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(value)
        ok = parts.scheme in schemes and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a malformed or out-of-range port
    except ValueError:
        ok = False
    if not ok:
        wanted = " or ".join(f"{scheme}://" for scheme in schemes)
        issues.append(
            Issue(name, f"must be a URL starting with {wanted}, with a host, got {value!r}")
        )


def _origin(issues: list[Issue], name: str, value: str) -> None:
    """A serialized origin as browsers send it: ``scheme://host[:port]``, nothing after."""
    try:
        parts = urlsplit(value)
        ok = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and parts.path in ("", "/")
            and not parts.query
            and not parts.fragment
            and parts.username is None
        )
        parts.port  # noqa: B018 - raises ValueError for a malformed or out-of-range port
    except ValueError:
        ok = False
    if not ok:
        issues.append(
            Issue(name, f"must be an origin such as https://app.example.com[:port], got {value!r}")
        )


# --------------------------------------------------------------------------------------------
# Schema


@attrs.frozen
class TlsConfig:
    """The certificate the relay's port serves ``wss://`` and ``https://`` with.

    Checked when constructed: both files are read and must load as a pair, so a configuration
    with a bad certificate never starts listening."""

    certificate: str
    """PEM file: the server's certificate, then any intermediates (the chain)."""
    private_key: str
    """PEM file: the certificate's private key, unencrypted."""

    def __attrs_post_init__(self) -> None:
        issues = [
            Issue(name, "must not be empty")
            for name in ("certificate", "private_key")
            if not getattr(self, name)
        ]
        raise_issues(issues)
        server_context(self.certificate, self.private_key)


@attrs.frozen
class ServerConfig:
    """The listening socket and per-connection limits and deadlines (all durations in seconds)."""

    host: str = "127.0.0.1"
    port: int = 8765
    listen_backlog: int = 4096
    """Connections the kernel queues before the relay accepts them (capped by the kernel's
    ``net.core.somaxconn``): what a reconnect storm can pile up without SYNs being dropped."""
    handshake_timeout: float = 5.0
    """Deadline for reading the HTTP request head and completing the upgrade."""
    heartbeat: float = 15.0
    """Interval between WebSocket pings to each client; announced in ``welcome``."""
    heartbeat_timeout: float = 10.0
    """How long a pong may take before the connection is closed with 4001."""
    idle_timeout: float = 60.0
    """A connection with no subscription for this long is closed with 4000."""
    send_timeout: float = 10.0
    """A single write taking longer than this closes the connection hard (half a frame may be
    on the wire, so it cannot be closed politely)."""
    close_timeout: float = 2.0
    """How long to wait for the client's close frame before dropping the TCP connection."""
    max_connections: int = 10000
    """Global cap across every key and the anonymous tier; past it upgrades get 429."""
    max_message_size: int = 65536
    """Largest client message in bytes; larger ones close the connection with 1009."""
    max_head_bytes: int = 16384
    """Largest HTTP request head in bytes; bounds what a client can make the front door buffer."""
    max_publish_bytes: int = 1_048_576
    """Largest ``POST /v1/publish`` body in bytes; larger ones get 413 ``too_large``."""
    max_connections_per_address: int = 1000
    """Connections open at once from one client IP address (handshakes in progress included),
    whatever their keys; past it upgrades get 429 ``too_many_connections``. Loopback too."""
    connection_rate_per_address: float = 100.0
    """New WebSocket connections per second from one address, sustained (token bucket refill
    rate); past it upgrades get 429 ``connection_rate`` with ``Retry-After``."""
    connection_burst_per_address: int = 500
    """How many new connections one address may open at once (token bucket size)."""
    allowed_origins: list[str] = attrs.Factory(list)
    """Browser origins (``https://app.example.com``) allowed to upgrade; an upgrade with an
    ``Origin`` header not listed gets 403. Empty: no check. Requests without ``Origin`` pass."""
    tls: TlsConfig | None = None
    """When set, the whole port speaks TLS: ``wss://`` and ``https://``."""
    trusted_proxies: list[str] = attrs.Factory(list)
    """Addresses or CIDR networks of reverse proxies whose :attr:`forwarded_header` gives the
    client's address. Empty: the header is ignored and the client is the TCP peer."""
    forwarded_header: ForwardedHeader = "x-forwarded-for"
    """The header the trusted proxies set: ``x-forwarded-for`` or ``forwarded`` (RFC 7239)."""

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        if not self.host:
            issues.append(Issue("host", "must not be empty"))
        if not 0 <= self.port <= 65535:
            issues.append(Issue("port", f"must be between 0 and 65535, got {self.port!r}"))
        for name in (
            "handshake_timeout",
            "heartbeat",
            "heartbeat_timeout",
            "idle_timeout",
            "send_timeout",
            "close_timeout",
        ):
            _positive(issues, name, getattr(self, name))
        for name in (
            "listen_backlog",
            "max_connections",
            "max_message_size",
            "max_head_bytes",
            "max_publish_bytes",
            "max_connections_per_address",
            "connection_burst_per_address",
        ):
            _at_least_one(issues, name, getattr(self, name))
        _positive(issues, "connection_rate_per_address", self.connection_rate_per_address)
        for i, origin in enumerate(self.allowed_origins):
            _origin(issues, f"allowed_origins[{i}]", origin)
        for i, proxy in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(proxy)
            except ValueError as exc:
                issues.append(
                    Issue(f"trusted_proxies[{i}]", f"must be an IP address or network: {exc}")
                )
        raise_issues(issues)


@attrs.frozen
class JwtConfig:
    """Signed tokens as credentials (docs/security.md). Key material is read from its files
    when the relay starts or reloads, not here."""

    algorithms: list[str] = attrs.Factory(lambda: ["HS256"])
    """Accepted signature algorithms; a token naming any other (``none`` included) is refused."""
    secret: str | None = attrs.field(default=None, repr=False)
    """The HMAC secret (HS256/384/512), at least 32 bytes; or ``secret_file``."""
    secret_file: str | None = None
    """A file holding the HMAC secret (surrounding whitespace ignored)."""
    public_key_file: str | None = None
    """A PEM RSA public key, for RS256/384/512."""
    issuer: str | None = None
    """When set, tokens must carry this ``iss``."""
    audience: str | None = None
    """When set, tokens must carry this ``aud``."""
    leeway: float = 0.0
    """Seconds of clock difference tolerated on ``exp`` and ``nbf``."""
    default_tier: str = "default"
    """The tier of a token without a ``tier`` claim."""

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        algorithms = set(self.algorithms)
        if not self.algorithms:
            issues.append(Issue("algorithms", "must not be empty"))
        for i, name in enumerate(self.algorithms):
            if name not in JWT_ALGORITHMS:
                known = ", ".join(sorted(JWT_ALGORITHMS))
                issues.append(Issue(f"algorithms[{i}]", f"must be one of {known}, got {name!r}"))
        hmac = bool(algorithms & HMAC_ALGORITHMS)
        rsa = bool(algorithms & RSA_ALGORITHMS)
        if self.secret is not None and self.secret_file is not None:
            issues.append(Issue("secret", "give secret or secret_file, not both"))
        elif hmac and self.secret is None and self.secret_file is None:
            issues.append(Issue("secret", "secret or secret_file is required for HS algorithms"))
        elif not hmac and (self.secret is not None or self.secret_file is not None):
            name = "secret" if self.secret is not None else "secret_file"
            issues.append(Issue(name, "is only used with HS algorithms"))
        if self.secret is not None and len(self.secret.encode()) < MIN_HMAC_SECRET:
            # Never echo the secret: error messages end up in logs.
            issues.append(Issue("secret", f"must be at least {MIN_HMAC_SECRET} bytes"))
        if rsa and self.public_key_file is None:
            issues.append(Issue("public_key_file", "is required for RS algorithms"))
        elif not rsa and self.public_key_file is not None:
            issues.append(Issue("public_key_file", "is only used with RS algorithms"))
        optional = ("secret_file", "public_key_file", "issuer", "audience", "default_tier")
        issues.extend(Issue(n, "must not be empty") for n in optional if getattr(self, n) == "")
        _non_negative(issues, "leeway", self.leeway)
        raise_issues(issues)


@attrs.frozen
class AuthConfig:
    """Who may connect without credentials; see :attr:`anonymous_tier_name`."""

    required: bool = True
    anonymous_tier: str | None = None
    key_file: str | None = None
    """A TOML file of hashed API keys, managed with ``relay keys``; relative to the
    configuration file. Its keys are accepted besides ``[[keys]]``."""
    jwt: JwtConfig | None = None

    @property
    def anonymous_tier_name(self) -> str | None:
        """The tier of a connection that presents no credentials, or None to refuse it (401).

        Kept here so the rule lives in one place: with ``required`` false every credential-less
        connection is admitted (to ``anonymous_tier``, else ``"default"``); with ``required`` true
        only if ``anonymous_tier`` is set.
        """
        if not self.required:
            return self.anonymous_tier or "default"
        return self.anonymous_tier

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        if self.anonymous_tier == "":
            issues.append(Issue("anonymous_tier", "must not be empty"))
        if self.key_file == "":
            issues.append(Issue("key_file", "must not be empty"))
        raise_issues(issues)


@attrs.frozen
class TierConfig:
    """Limits shared by every API key of a tier (or by all anonymous connections together)."""

    max_connections: int = 100
    """Per API key; for the anonymous tier, across all anonymous connections."""
    max_subscriptions: int = 100
    """Per connection."""
    channels: list[str] = attrs.Factory(lambda: ["*"])
    """fnmatch patterns of the channels this tier may subscribe to; others answer ``forbidden``.
    ``{key}`` stands for the connection's key name (``"user:{key}:*"``): private channels."""
    publish: list[str] = attrs.Factory(list)
    """Patterns of the channels this tier's keys may publish to (``POST /v1/publish``), with
    ``{key}`` as in ``channels``; only channels of a ``[published.NAME]`` source can be."""
    rate_limit: float = 20.0
    """Sustained client commands per second (token bucket refill rate)."""
    rate_burst: int = 40
    """Token bucket size: how many commands may arrive at once."""
    admin: bool = False
    """This tier's keys may read the live status (``GET /v1/status``, shown by ``/status``):
    every source, every channel, and every connection's key name and queue."""

    def allows(self, channel: str) -> bool:
        """Case-sensitive on every platform, unlike :func:`fnmatch.fnmatch`."""
        return matches_any(channel, self.channels)

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        _at_least_one(issues, "max_connections", self.max_connections)
        _at_least_one(issues, "max_subscriptions", self.max_subscriptions)
        _positive(issues, "rate_limit", self.rate_limit)
        _at_least_one(issues, "rate_burst", self.rate_burst)
        for field in ("channels", "publish"):
            for i, pattern in enumerate(getattr(self, field)):
                if not pattern:
                    issues.append(Issue(f"{field}[{i}]", "must not be empty"))
        raise_issues(issues)


@attrs.frozen
class ApiKey:
    """A credential and the tier it grants. The key is left out of repr so logs never hold it."""

    key: str = attrs.field(repr=False)
    tier: str
    name: str = ""
    """A label for logs and metrics, which must never see the key itself, and what ``{key}``
    stands for in the tier's patterns (an unnamed key has no private channels)."""

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        if ":" in self.name:
            issues.append(Issue("name", "must not contain ':' (it separates channel parts)"))
        if not self.key:
            issues.append(Issue("key", "must not be empty"))
        elif any(c.isspace() for c in self.key):
            # It travels in an Authorization header and a query string.
            issues.append(Issue("key", "must not contain whitespace"))
        if not self.tier:
            issues.append(Issue("tier", "must not be empty"))
        raise_issues(issues)


@attrs.frozen
class SourceConfig:
    """One upstream connection (durations in seconds)."""

    kind: str
    """Which adapter speaks to it; one of :data:`SOURCE_KINDS`."""
    url: str | None = None
    """The upstream's WebSocket URL (ws:// or wss://); None means the kind's public endpoint,
    for kinds that have one (the exchanges)."""
    rest_url: str | None = None
    """Base URL for REST snapshots (http:// or https://), for kinds that resynchronize over REST."""
    rpc_url: str | None = None
    """The node's HTTP JSON-RPC endpoint (http:// or https://), for kinds that backfill over
    JSON-RPC (ethereum)."""
    symbols: list[str] | None = None
    """The symbols to serve, for kinds with symbols; None means the kind's default list."""
    json: JsonSpec | None = None
    """For kind ``json``: the upstream's wire format, described (docs/upstreams.md)."""
    heartbeat_interval: float | None = None
    """The upstream's own heartbeat interval, or how often the relay probes an upstream that is
    silent when idle; the watchdog allows 1.5 times this. None means the kind's default."""
    answer_timeout: float = 10.0
    """A subscribe request the upstream has not answered within this is a dead connection."""
    linger: float = 5.0
    """Keep an upstream subscription this long after the last client left, so a client that
    resubscribes at once does not cost an upstream round trip and a fresh snapshot."""
    connect_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_factor: float = 2.0
    backoff_cap: float = 30.0
    backoff_reset_after: float = 30.0
    """A connection that stayed up this long resets the backoff to ``backoff_initial``."""
    ping_interval: float = 0.0
    """WebSocket pings to the upstream; 0 disables them (for upstreams with their own heartbeat)."""
    snapshot_timeout: float = 10.0

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        kind = _KINDS.get(self.kind)
        if kind is None:
            known = ", ".join(sorted(SOURCE_KINDS))
            issues.append(Issue("kind", f"unknown source kind {self.kind!r} (known: {known})"))
        else:
            for option in ("rest_url", "rpc_url", "symbols", "json"):
                given = getattr(self, option) is not None
                if given and option not in kind.options:
                    issues.append(Issue(option, f"is not used by kind {self.kind!r}"))
                elif not given and option in kind.required:
                    issues.append(Issue(option, f"is required for kind {self.kind!r}"))
        if self.url is not None:
            _url(issues, "url", self.url, ("ws", "wss"))
        elif kind is not None and kind.default_url is None:
            issues.append(Issue("url", f"is required for kind {self.kind!r}"))
        for option in ("rest_url", "rpc_url"):
            value = getattr(self, option)
            if value is not None:
                _url(issues, option, value, ("http", "https"))
        seen: set[str] = set()
        if self.json is not None and self.json.rest is not None and self.rest_url is None:
            issues.append(Issue("rest_url", "is required when json.rest is set"))
        for i, symbol in enumerate(self.symbols or ()):
            if not symbol or ":" in symbol:
                # The symbol is the last part of a channel name.
                issues.append(
                    Issue(f"symbols[{i}]", f"must be non-empty without ':', got {symbol!r}")
                )
            elif symbol in seen:
                issues.append(Issue(f"symbols[{i}]", f"duplicate symbol {symbol!r}"))
            seen.add(symbol)
        if self.heartbeat_interval is not None:
            _positive(issues, "heartbeat_interval", self.heartbeat_interval)
        for name in ("connect_timeout", "backoff_initial", "answer_timeout"):
            _positive(issues, name, getattr(self, name))
        for name in ("linger", "backoff_reset_after", "ping_interval"):
            _non_negative(issues, name, getattr(self, name))
        _positive(issues, "snapshot_timeout", self.snapshot_timeout)
        if not math.isfinite(self.backoff_factor) or self.backoff_factor < 1:
            issues.append(
                Issue("backoff_factor", f"must be at least 1, got {self.backoff_factor!r}")
            )
        if not math.isfinite(self.backoff_cap):
            issues.append(
                Issue("backoff_cap", f"must be a finite number, got {self.backoff_cap!r}")
            )
        elif self.backoff_cap < self.backoff_initial:
            issues.append(
                Issue(
                    "backoff_cap",
                    f"must be at least backoff_initial ({self.backoff_initial!r}), "
                    f"got {self.backoff_cap!r}",
                )
            )
        raise_issues(issues)


@attrs.frozen
class OutboxConfig:
    """Each client's bounded queue of frames, and what happens when it is full."""

    max_messages: int = 1024
    max_bytes: int = 1_048_576
    policy: PolicyName = "drop"
    """Default for channels no :class:`BackpressureRule` matches."""

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        _at_least_one(issues, "max_messages", self.max_messages)
        _at_least_one(issues, "max_bytes", self.max_bytes)
        _policy(issues, "policy", self.policy)
        raise_issues(issues)


@attrs.frozen
class BackpressureRule:
    """Overrides the outbox policy for matching channels: e.g. tickers coalesce, trades drop."""

    pattern: str
    """fnmatch pattern on channel names (``*:ticker:*``), case-sensitive."""
    policy: PolicyName

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        if not self.pattern:
            issues.append(Issue("pattern", "must not be empty"))
        _policy(issues, "policy", self.policy)
        raise_issues(issues)


@attrs.frozen
class HistoryRule:
    """Overrides the history bounds for matching channels (a slow chain keeps more time, a
    busy book fewer messages); ``max_messages = 0`` turns history off for them."""

    pattern: str
    """fnmatch pattern on channel names, case-sensitive; the first matching rule wins."""
    max_messages: int
    max_age: float

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        if not self.pattern:
            issues.append(Issue("pattern", "must not be empty"))
        _non_negative(issues, "max_messages", self.max_messages)
        _positive(issues, "max_age", self.max_age)
        raise_issues(issues)


@attrs.frozen
class HistoryConfig:
    """How many recent messages each channel keeps for clients resuming with ``since``.

    The defaults suit a market feed: a client that reconnects within seconds gets exactly what
    it missed; past 1,000 messages or five minutes it gets the snapshot. Memory: at most
    ``max_messages`` frames per channel that has ever had a subscriber."""

    max_messages: int = 1000
    """Per channel; 0 turns history off (every resume then answers ``recovered: false``)."""
    max_age: float = 300.0
    """Seconds; older messages are not replayed."""
    rules: list[HistoryRule] = attrs.Factory(list)

    def bounds_for(self, channel: str) -> HistoryBounds:
        for rule in self.rules:
            if fnmatch.fnmatchcase(channel, rule.pattern):
                return HistoryBounds(rule.max_messages, _millis(rule.max_age))
        return HistoryBounds(self.max_messages, _millis(self.max_age))

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        _non_negative(issues, "max_messages", self.max_messages)
        _positive(issues, "max_age", self.max_age)
        raise_issues(issues)


@attrs.frozen
class CompressionConfig:
    """permessage-deflate (RFC 7692) for clients that offer it: each message is compressed once
    for all of them (see :mod:`relay.core.deflate`)."""

    enabled: bool = True
    min_bytes: int = 128
    """Messages shorter than this go out plain. Below about a hundred bytes deflate's block
    header and Huffman tables eat most of the gain on JSON, and compressing costs a few
    microseconds per message that nothing pays back."""
    level: int = 1
    """zlib's level, 0 to 9. 1 (fastest) because the fan-out compresses on the ingest path:
    on a trade message it is as small as level 6's, on a 1.7 KB book snapshot within 10 %."""
    exclude: list[str] = attrs.Factory(list)
    """Channel patterns (fnmatch, case-sensitive) always sent plain: latency-critical channels."""

    @property
    def policy(self) -> CompressionPolicy:
        return CompressionPolicy(self.min_bytes, self.level, tuple(self.exclude))

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        _non_negative(issues, "min_bytes", self.min_bytes)
        if not 0 <= self.level <= 9:
            issues.append(Issue("level", f"must be a zlib level from 0 to 9, got {self.level}"))
        issues.extend(
            Issue(f"exclude[{i}]", "must not be empty") for i, p in enumerate(self.exclude) if not p
        )
        raise_issues(issues)


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@attrs.frozen
class PublishedSourceConfig:
    """A source with no upstream: the application publishes its channels itself
    (``POST /v1/publish``, or ``publish`` and feeds when the relay is embedded)."""

    state: list[str] = attrs.Factory(list)
    """Patterns of this source's channels whose every message is the channel's whole state: the
    latest is kept and sent to new subscribers as their snapshot. Other channels are events."""

    def __attrs_post_init__(self) -> None:
        issues = [
            Issue(f"state[{i}]", "must not be empty") for i, p in enumerate(self.state) if not p
        ]
        raise_issues(issues)


@attrs.frozen
class ClusterConfig:
    """Cluster mode: many relay processes on one Redis, still one upstream connection per source
    (see docs/scaling.md). Without ``redis_url`` the relay is one process and uses no Redis."""

    redis_url: str | None = None
    """``redis://host:port/db`` (or ``rediss://`` for TLS)."""
    prefix: str = "relay"
    """Every key and Pub/Sub channel the cluster uses starts with this and a colon, so several
    clusters can share one Redis."""
    lease_ttl: float = 3.0
    """Seconds a source's lease lasts unless renewed: how long a dead holder can keep a source
    without a connection (another node takes it over within this plus ``lease_retry``)."""
    lease_renew: float = 1.0
    """Seconds between renewals of a held lease."""
    lease_retry: float = 1.0
    """Seconds between attempts to take a source that another node holds."""
    request_timeout: float = 1.0
    """Seconds a Redis request may take before the node counts Redis as unreachable."""
    join_timeout: float = 5.0
    """Seconds a subscribe may wait for Redis before the client gets an error for it."""

    @property
    def enabled(self) -> bool:
        return self.redis_url is not None

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        if self.redis_url is not None:
            _url(issues, "redis_url", self.redis_url, ("redis", "rediss"))
        if not self.prefix or any(c.isspace() for c in self.prefix):
            issues.append(Issue("prefix", f"must be a word with no spaces, got {self.prefix!r}"))
        for name in ("lease_ttl", "lease_renew", "lease_retry", "request_timeout", "join_timeout"):
            _positive(issues, name, getattr(self, name))
        if self.lease_renew + self.request_timeout >= 0.9 * self.lease_ttl:
            issues.append(
                Issue(
                    "lease_renew",
                    "plus request_timeout must be under 90 % of lease_ttl "
                    f"({self.lease_renew:g} + {self.request_timeout:g} >= "
                    f"0.9 * {self.lease_ttl:g}), or a holder loses its lease between renewals",
                )
            )
        raise_issues(issues)


@attrs.frozen
class RelayConfig:
    """The whole configuration. Checks what no single table can: names referring to each other."""

    server: ServerConfig = attrs.Factory(ServerConfig)
    auth: AuthConfig = attrs.Factory(AuthConfig)
    tiers: dict[str, TierConfig] = attrs.Factory(lambda: {"default": TierConfig()})
    keys: list[ApiKey] = attrs.Factory(list)
    sources: dict[str, SourceConfig] = attrs.Factory(dict)
    outbox: OutboxConfig = attrs.Factory(OutboxConfig)
    backpressure: list[BackpressureRule] = attrs.Factory(list)
    history: HistoryConfig = attrs.Factory(HistoryConfig)
    published: dict[str, PublishedSourceConfig] = attrs.Factory(dict)
    compression: CompressionConfig = attrs.Factory(CompressionConfig)
    cluster: ClusterConfig = attrs.Factory(ClusterConfig)

    def policy_for(self, channel: str) -> PolicyName:
        """First matching rule wins, so specific patterns go before general ones."""
        for rule in self.backpressure:
            if fnmatch.fnmatchcase(channel, rule.pattern):
                return rule.policy
        return self.outbox.policy

    def __attrs_post_init__(self) -> None:
        issues: list[Issue] = []
        if "" in self.tiers:
            issues.append(Issue('tiers.""', "tier name must not be empty"))
        defined = ", ".join(_key(name) for name in self.tiers) or "none"
        anonymous = self.auth.anonymous_tier_name
        if anonymous is not None and anonymous not in self.tiers:
            if self.auth.anonymous_tier is None:
                message = (
                    "auth.required is false, so connections without credentials get tier "
                    f"'default', which is not defined (defined: {defined}); define it or set "
                    "auth.anonymous_tier"
                )
            else:
                message = f"unknown tier {anonymous!r} (defined: {defined})"
            issues.append(Issue("auth.anonymous_tier", message))
        jwt = self.auth.jwt
        if jwt is not None and jwt.default_tier not in self.tiers:
            issues.append(
                Issue(
                    "auth.jwt.default_tier",
                    f"unknown tier {jwt.default_tier!r} (defined: {defined})",
                )
            )
        first_index: dict[str, int] = {}
        named: dict[str, int] = {}
        for i, api_key in enumerate(self.keys):
            if api_key.tier not in self.tiers:
                issues.append(
                    Issue(f"keys[{i}].tier", f"unknown tier {api_key.tier!r} (defined: {defined})")
                )
            if api_key.key in first_index:
                # Never echo the key: error messages end up in logs.
                issues.append(
                    Issue(f"keys[{i}].key", f"duplicate of keys[{first_index[api_key.key]}].key")
                )
            else:
                first_index[api_key.key] = i
            if api_key.name in named:
                # A key's name is what {key} in a tier's patterns stands for: two keys with one
                # name would share each other's private channels.
                issues.append(
                    Issue(f"keys[{i}].name", f"duplicate of keys[{named[api_key.name]}].name")
                )
            elif api_key.name:
                named[api_key.name] = i
        for table, names in (("sources", self.sources), ("published", self.published)):
            issues.extend(
                Issue(
                    f"{table}.{_key(name)}",
                    "source name must match [a-z0-9_-]+ (it starts every channel name)",
                )
                for name in names
                if not _SOURCE_NAME.fullmatch(name)
            )
        issues.extend(
            Issue(f"published.{_key(name)}", f"{name!r} is also an upstream in [sources]")
            for name in self.published
            if name in self.sources
        )
        if not issues:
            for name, source in self.sources.items():
                # What only the adapter knows (an exchange's symbol rules, a generic spec
                # against its symbols) is refused here, not by a traceback when serving.
                try:
                    make_adapter(name, source)
                except ValueError as exc:
                    issues.append(Issue(f"sources.{_key(name)}", str(exc)))
        raise_issues(issues)


# --------------------------------------------------------------------------------------------
# The converter


class _WrongType(TypeError):
    """Raised by the strict hooks; carries the value so the message can show it."""

    def __init__(self, expected: str, value: object) -> None:
        super().__init__(expected, value)
        self.expected = expected
        self.value = value


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str | int | float) or value is None:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__} ({str(value)[:40]})"


_Hook = Callable[[Any, Any], Any]


def _guard(accepts: Callable[[Any], bool], expected: str, inner: _Hook) -> _Hook:
    def hook(value: Any, type_: Any) -> Any:
        if not accepts(value):
            raise _WrongType(expected, value)
        return inner(value, type_)

    return hook


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_array(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(
        str, _guard(lambda v: isinstance(v, str), "a string", lambda v, _: v)
    )
    conv.register_structure_hook(
        bool, _guard(lambda v: isinstance(v, bool), "a boolean (true or false)", lambda v, _: v)
    )
    conv.register_structure_hook(int, _guard(_is_int, "an integer", lambda v, _: v))
    conv.register_structure_hook(float, _guard(_is_number, "a number", lambda v, _: float(v)))

    def literal(type_: Any) -> _Hook:
        values = get_args(type_)
        expected = "one of " + ", ".join(repr(v) for v in values)
        return _guard(lambda v: isinstance(v, str) and v in values, expected, lambda v, _: v)

    def origin_is(origin: Any) -> Callable[[Any], bool]:
        return lambda type_: get_origin(type_) is origin

    conv.register_structure_hook_factory(origin_is(Literal), literal)
    conv.register_structure_hook_factory(
        origin_is(list), lambda t: _guard(_is_array, "an array", list_structure_factory(t, conv))
    )
    conv.register_structure_hook_factory(
        origin_is(dict), lambda t: _guard(_is_table, "a table", mapping_structure_factory(t, conv))
    )
    conv.register_structure_hook_factory(
        attrs.has, lambda t: _guard(_is_table, "a table", make_dict_structure_fn(t, conv))
    )
    return conv


_converter = _make_converter()


def _dotted(path: str) -> str:
    """Turn a cattrs path (``$.sources['sim'].symbols[0]``) into ``sources.sim.symbols[0]``."""
    out = ""
    for attr, index, string in re.findall(
        r"\.([A-Za-z_]\w*)|\[(\d+)\]|\[('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]", path[1:]
    ):
        if attr:
            out = _join(out, attr)
        elif index:
            out += f"[{index}]"
        else:
            out = _join(out, _key(_unrepr(string)))
    return out


def _unrepr(text: str) -> str:
    # transform_error writes mapping keys with repr(); literal_eval is its exact inverse.
    return str(ast.literal_eval(text))


def _issues_from(exc: BaseException) -> list[Issue]:
    # transform_error walks the cattrs tree and builds the paths; each leaf's description is a
    # token pointing back at the leaf, so the real message can be written from the exception
    # itself rather than parsed out of text.
    leaves: list[tuple[BaseException, Any]] = []

    def record(leaf: BaseException, type_: Any) -> str:
        leaves.append((leaf, type_))
        return str(len(leaves) - 1)

    issues: list[Issue] = []
    for line in transform_error(exc, "$", record):
        token, _, raw_path = line.partition(" @ ")
        leaf, type_ = leaves[int(token)]
        path = _dotted(raw_path)
        if isinstance(leaf, cattrs.ForbiddenExtraKeysError):
            issues.extend(
                Issue(_join(path, _key(k)), _UNKNOWN_KEY) for k in sorted(leaf.extra_fields)
            )
        elif isinstance(leaf, ConfigError):
            issues.extend(Issue(_join(path, i.path), i.message) for i in leaf.issues)
        elif isinstance(leaf, _WrongType):
            issues.append(Issue(path, f"expected {leaf.expected}, got {_show(leaf.value)}"))
        elif isinstance(leaf, KeyError):
            issues.append(Issue(path, "required key missing"))
        else:
            issues.append(Issue(path, format_exception(leaf, type_)))
    return issues


# --------------------------------------------------------------------------------------------
# Public entry points


def parse_config(data: Mapping[str, Any]) -> RelayConfig:
    """Build a configuration from already-parsed data (a TOML document or an equivalent dict).

    Raises :class:`ConfigError` listing every problem. Wrong types and unknown keys are found in
    one pass; range checks of a table run once its types are right, and checks across tables
    (tier names, duplicate keys) once every table is valid.
    """
    try:
        return _converter.structure(data, RelayConfig)
    except (cattrs.BaseValidationError, _WrongType, ConfigError) as exc:
        raise ConfigError(_issues_from(exc)) from None


def load_config(path: str | os.PathLike[str]) -> RelayConfig:
    """Read and validate a TOML file. OSError (a missing file) propagates unchanged.

    Relative paths in the file (:data:`PATH_KEYS`) are taken from the file's directory."""
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([Issue("", f"{os.fspath(path)}: invalid TOML: {exc}")]) from None
    _resolve_paths(data, os.path.dirname(os.path.abspath(path)))
    return parse_config(data)


def _resolve_paths(data: dict[str, Any], base: str) -> None:
    """Make the relative paths at :data:`PATH_KEYS` relative to ``base``, in place. Values of
    the wrong type are left for the converter to report."""
    for dotted in PATH_KEYS:
        *tables, key = dotted.split(".")
        table: Any = data
        for name in tables:
            table = table.get(name) if isinstance(table, dict) else None
        value = table.get(key) if isinstance(table, dict) else None
        if isinstance(value, str) and value and not os.path.isabs(value):
            table[key] = os.path.join(base, value)


def unstructure(config: RelayConfig) -> dict[str, Any]:
    """Plain data that :func:`parse_config` turns back into an equal config, as a TOML file
    would hold it: optional values left unset are left out (TOML has no null, and a key a
    source's kind does not use must not be written at all)."""
    data: dict[str, Any] = _without_none(_converter.unstructure(config))
    return data


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def demo_config(*, port: int, sim_port: int, host: str = "127.0.0.1") -> RelayConfig:
    """A relay in front of a local simulator, open to anonymous clients on ``sim:*`` only.

    Used by the demo, tests and benchmarks, which drive many anonymous clients: the anonymous
    tier's connection limit is therefore the server's global one.
    """
    url_host = f"[{host}]" if ":" in host else host
    # Every demo client comes from the same (loopback) address, so the per-address limits are
    # the global ones: they must not get in the way of a thousand clients opened at once.
    limit = ServerConfig().max_connections
    server = ServerConfig(
        host=host,
        port=port,
        max_connections_per_address=limit,
        connection_rate_per_address=float(limit),
        connection_burst_per_address=limit,
    )
    return RelayConfig(
        server=server,
        auth=AuthConfig(required=True, anonymous_tier="anonymous"),
        tiers={
            "default": TierConfig(),
            # The demo's status page is open: it listens on loopback unless told otherwise.
            "anonymous": TierConfig(
                max_connections=server.max_connections, channels=["sim:*"], admin=True
            ),
        },
        sources={
            "sim": SourceConfig(
                kind="sim",
                url=f"ws://{url_host}:{sim_port}/ws",
                rest_url=f"http://{url_host}:{sim_port}",
            )
        },
    )
