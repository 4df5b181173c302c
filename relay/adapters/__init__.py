"""Every kind of source the relay can connect to, in one registry.

The configuration's list of kinds, and which of a source's keys each kind uses or requires, are
derived from :data:`SOURCE_KINDS`, so adding a kind is adding its adapter module and one entry
here; nothing else in the relay names a kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from relay.adapters import binance, coinbase, kraken
from relay.adapters.base import Adapter
from relay.adapters.ethereum import EthereumAdapter
from relay.adapters.generic import GenericJsonAdapter
from relay.adapters.sim import SimAdapter

if TYPE_CHECKING:
    from relay.config import SourceConfig


@attrs.frozen
class SourceKind:
    """One kind of upstream: how to build its adapter, and which source keys it reads."""

    name: str
    build: Callable[[str, SourceConfig, float], Adapter]
    """``build(source_name, config, heartbeat_interval)``: the adapter for one source."""
    heartbeat_interval: float
    """The default for ``heartbeat_interval``: the upstream's own heartbeat, or how often the
    relay probes an upstream that is silent when idle."""
    options: frozenset[str] = frozenset()
    """Optional keys (``rest_url``, ``rpc_url``, ``symbols``) this kind reads; the others are
    refused, so a key that would be silently ignored is a configuration error."""
    required: frozenset[str] = frozenset()
    request_interval: float = 0.0
    """Seconds to leave after each request sent to the upstream, for upstreams that limit
    requests per connection (Binance: 5 a second, pings and pongs included)."""
    default_url: str | None = None
    """The upstream's public WebSocket endpoint, used when a source gives no ``url``; kinds
    without one (a node, the market) require ``url``."""


#: What the synthetic market trades unless the configuration says otherwise.
DEFAULT_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")


def _sim(name: str, config: SourceConfig, heartbeat_interval: float) -> Adapter:
    symbols = DEFAULT_SYMBOLS if config.symbols is None else config.symbols
    return SimAdapter(name, symbols, heartbeat_interval, config.rest_url)


def _ethereum(name: str, config: SourceConfig, heartbeat_interval: float) -> Adapter:
    return EthereumAdapter(name, config.rpc_url, heartbeat_interval)


def _symbols(config: SourceConfig) -> Sequence[str]:
    assert config.symbols is not None  # required for the exchanges by the configuration
    return config.symbols


def _json(name: str, config: SourceConfig, heartbeat_interval: float) -> Adapter:
    assert config.json is not None  # required for the kind by the configuration
    return GenericJsonAdapter(
        name, config.json, _symbols(config), heartbeat_interval, config.rest_url
    )


def _coinbase(name: str, config: SourceConfig, heartbeat_interval: float) -> Adapter:
    return coinbase.CoinbaseAdapter(name, _symbols(config), heartbeat_interval)


def _kraken(name: str, config: SourceConfig, heartbeat_interval: float) -> Adapter:
    return kraken.KrakenAdapter(name, _symbols(config), heartbeat_interval)


def _binance(name: str, config: SourceConfig, heartbeat_interval: float) -> Adapter:
    rest_url = config.rest_url or binance.DEFAULT_REST_URL
    return binance.BinanceAdapter(name, _symbols(config), rest_url, heartbeat_interval)


SOURCE_KINDS: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (
        SourceKind("sim", _sim, 1.0, options=frozenset({"rest_url", "symbols"})),
        SourceKind(
            "ethereum",
            _ethereum,
            # A node is silent between blocks; an eth_blockNumber every 5 s costs it little.
            5.0,
            options=frozenset({"rpc_url"}),
            required=frozenset({"rpc_url"}),
        ),
        SourceKind(
            "json",
            _json,
            # Set it to the upstream's own heartbeat (or the json.probe interval).
            5.0,
            options=frozenset({"rest_url", "symbols", "json"}),
            required=frozenset({"json", "symbols"}),
        ),
        SourceKind(
            "coinbase",
            _coinbase,
            # The heartbeats channel (subscribed with the first request) ticks every second.
            2.0,
            options=frozenset({"symbols"}),
            required=frozenset({"symbols"}),
            default_url=coinbase.DEFAULT_URL,
        ),
        SourceKind(
            "kraken",
            _kraken,
            # Kraken sends a heartbeat every second while anything is subscribed, and the relay
            # pings it this often (it sends nothing while nothing is subscribed).
            2.0,
            options=frozenset({"symbols"}),
            required=frozenset({"symbols"}),
            default_url=kraken.DEFAULT_URL,
        ),
        SourceKind(
            "binance",
            _binance,
            # Binance has no application heartbeat: a LIST_SUBSCRIPTIONS this often proves life.
            10.0,
            options=frozenset({"rest_url", "symbols"}),
            required=frozenset({"symbols"}),
            default_url=binance.DEFAULT_WS_URL,
            request_interval=0.25,
        ),
    )
}


def source_url(config: SourceConfig) -> str:
    """The WebSocket URL a source connects to: its own, or its kind's public endpoint."""
    url = config.url or SOURCE_KINDS[config.kind].default_url
    assert url is not None  # the configuration refuses a source with neither
    return url


def request_interval(config: SourceConfig) -> float:
    """How long the supervisor waits after each subscribe or unsubscribe request it sends."""
    return SOURCE_KINDS[config.kind].request_interval


def make_adapter(name: str, config: SourceConfig) -> Adapter:
    """The adapter for a configured source (its kind was validated with the configuration)."""
    kind = SOURCE_KINDS[config.kind]
    interval = (
        kind.heartbeat_interval if config.heartbeat_interval is None else config.heartbeat_interval
    )
    return kind.build(name, config, interval)
