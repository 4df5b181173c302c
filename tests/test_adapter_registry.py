"""The registry of source kinds (relay/adapters/__init__.py): each kind builds its adapter from a
source's configuration with the kind's defaults where the source leaves a key out, and gives the
WebSocket URL and the pause between requests the supervisor uses."""

from __future__ import annotations

import pytest

from relay.adapters import (
    DEFAULT_SYMBOLS,
    SOURCE_KINDS,
    binance,
    coinbase,
    kraken,
    make_adapter,
    request_interval,
    source_url,
)
from relay.adapters.binance import BinanceAdapter
from relay.adapters.coinbase import CoinbaseAdapter
from relay.adapters.ethereum import EthereumAdapter
from relay.adapters.generic import GenericJsonAdapter
from relay.adapters.kraken import KrakenAdapter
from relay.adapters.sim import SimAdapter
from relay.config import SourceConfig
from relay.core.chain import FetchByNumber
from relay.core.source import FetchItem, FetchSnapshot
from tests.exchanges.generic.specs import load_spec, sim_table


def test_sim_defaults_to_the_markets_symbols_and_its_heartbeat() -> None:
    adapter = make_adapter("sim", SourceConfig(kind="sim", url="ws://127.0.0.1:8766/ws"))
    assert isinstance(adapter, SimAdapter)
    assert adapter.source == "sim"
    assert adapter.heartbeat_interval == 1.0
    assert adapter.channels() == {
        f"sim:{stream}:{symbol}"
        for stream in ("trades", "ticker", "book")
        for symbol in DEFAULT_SYMBOLS
    }
    assert adapter.http_repair(FetchSnapshot("sim:book:BTC-USD")) is None  # no rest_url


def test_sim_takes_the_sources_symbols_rest_url_and_heartbeat() -> None:
    config = SourceConfig(
        kind="sim",
        url="ws://127.0.0.1:8766/ws",
        rest_url="http://127.0.0.1:8766",
        symbols=["DOGE-USD"],
        heartbeat_interval=3.0,
    )
    adapter = make_adapter("market", config)
    assert adapter.source == "market"
    assert adapter.heartbeat_interval == 3.0
    assert adapter.channels() == {
        f"market:{stream}:DOGE-USD" for stream in ("trades", "ticker", "book")
    }
    how = adapter.http_repair(FetchSnapshot("market:book:DOGE-USD"))
    assert how is not None
    assert how.request.url == "http://127.0.0.1:8766/api/snapshot?topic=depth.DOGE-USD"


def test_ethereum_fetches_blocks_from_the_sources_rpc_url() -> None:
    config = SourceConfig(kind="ethereum", url="ws://127.0.0.1:8545", rpc_url="http://node:8545")
    adapter = make_adapter("eth", config)
    assert isinstance(adapter, EthereumAdapter)
    assert adapter.source == "eth"
    assert adapter.heartbeat_interval == 5.0
    how = adapter.http_repair(FetchItem("eth:blocks", FetchByNumber(1)))
    assert how is not None
    assert how.request.url == "http://node:8545"


def test_json_is_the_generic_adapter_with_the_sources_spec() -> None:
    config = SourceConfig(
        kind="json",
        url="ws://127.0.0.1:8766/ws",
        rest_url="http://127.0.0.1:8766",
        symbols=["BTC-USD"],
        json=load_spec(sim_table()),
    )
    adapter = make_adapter("gen", config)
    assert isinstance(adapter, GenericJsonAdapter)
    assert adapter.source == "gen"
    assert adapter.heartbeat_interval == 5.0
    assert adapter.channels() == {"gen:trades:BTC-USD", "gen:ticker:BTC-USD", "gen:book:BTC-USD"}
    how = adapter.http_repair(FetchSnapshot("gen:book:BTC-USD"))
    assert how is not None
    assert how.request.url.startswith("http://127.0.0.1:8766/")


@pytest.mark.parametrize(
    ("kind", "adapter_type", "heartbeat"),
    [("coinbase", CoinbaseAdapter, 2.0), ("kraken", KrakenAdapter, 2.0)],
)
def test_exchanges_serve_the_sources_symbols(
    kind: str, adapter_type: type, heartbeat: float
) -> None:
    adapter = make_adapter("ex", SourceConfig(kind=kind, symbols=["BTC-USD"]))
    assert isinstance(adapter, adapter_type)
    assert adapter.source == "ex"
    assert adapter.heartbeat_interval == heartbeat
    assert adapter.channels() == {"ex:trades:BTC-USD", "ex:ticker:BTC-USD", "ex:book:BTC-USD"}
    tuned = make_adapter("ex", SourceConfig(kind=kind, symbols=["BTC-USD"], heartbeat_interval=7))
    assert tuned.heartbeat_interval == 7


def test_binance_fetches_snapshots_from_its_public_rest_api_unless_told_otherwise() -> None:
    adapter = make_adapter("bn", SourceConfig(kind="binance", symbols=["BTC-USDT"]))
    assert isinstance(adapter, BinanceAdapter)
    assert adapter.source == "bn"
    assert adapter.heartbeat_interval == 10.0
    how = adapter.http_repair(FetchSnapshot("bn:book:BTC-USDT"))
    assert how is not None
    assert how.request.url == (
        f"{binance.DEFAULT_REST_URL}/api/v3/depth?symbol=BTCUSDT&limit={binance.SNAPSHOT_LIMIT}"
    )
    config = SourceConfig(kind="binance", symbols=["BTC-USDT"], rest_url="http://127.0.0.1:9")
    how = make_adapter("bn", config).http_repair(FetchSnapshot("bn:book:BTC-USDT"))
    assert how is not None
    assert how.request.url.startswith("http://127.0.0.1:9/api/v3/depth?")


def test_a_source_connects_to_its_url_or_its_kinds_public_endpoint() -> None:
    assert source_url(SourceConfig(kind="coinbase", symbols=["BTC-USD"])) == coinbase.DEFAULT_URL
    assert source_url(SourceConfig(kind="kraken", symbols=["BTC-USD"])) == kraken.DEFAULT_URL
    assert source_url(SourceConfig(kind="binance", symbols=["BTC-USDT"])) == (
        binance.DEFAULT_WS_URL
    )
    own = SourceConfig(kind="kraken", url="ws://127.0.0.1:9/v2", symbols=["BTC-USD"])
    assert source_url(own) == "ws://127.0.0.1:9/v2"
    assert source_url(SourceConfig(kind="sim", url="ws://127.0.0.1:8766/ws")) == (
        "ws://127.0.0.1:8766/ws"
    )


def test_only_binance_leaves_time_between_requests() -> None:
    assert request_interval(SourceConfig(kind="binance", symbols=["BTC-USDT"])) == 0.25
    assert request_interval(SourceConfig(kind="kraken", symbols=["BTC-USD"])) == 0.0
    assert {name for name, kind in SOURCE_KINDS.items() if kind.request_interval} == {"binance"}
