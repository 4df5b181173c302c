"""Configuration loading: round trips, the shipped examples, and one clear line per mistake."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.adapters import SOURCE_KINDS
from relay.config import (
    POLICIES,
    ApiKey,
    AuthConfig,
    BackpressureRule,
    CompressionConfig,
    ConfigError,
    HistoryConfig,
    HistoryRule,
    JwtConfig,
    OutboxConfig,
    PublishedSourceConfig,
    RelayConfig,
    ServerConfig,
    SourceConfig,
    TierConfig,
    demo_config,
    load_config,
    parse_config,
    unstructure,
)

ROOT = Path(__file__).resolve().parent.parent

# Every key set, none to its default, so a key that was not read would show up as a difference.
FULL = """
[server]
host = "0.0.0.0"
port = 9100
listen_backlog = 2048
handshake_timeout = 3
heartbeat = 20.0
heartbeat_timeout = 7.5
idle_timeout = 120.0
send_timeout = 4.0
close_timeout = 1.5
max_connections = 777
max_message_size = 4096
max_head_bytes = 8192
max_publish_bytes = 2048
max_connections_per_address = 12
connection_rate_per_address = 3.5
connection_burst_per_address = 7
allowed_origins = ["https://app.example.com", "http://localhost:3000"]
trusted_proxies = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]
forwarded_header = "forwarded"

[auth]
required = false
anonymous_tier = "free"

[tiers.free]
max_connections = 3
max_subscriptions = 9
channels = ["md:ticker:*", "md:trades:*"]
publish = ["app:{key}:alerts"]
rate_limit = 2.5
rate_burst = 5
admin = false

[tiers.pro]
max_connections = 30
max_subscriptions = 300
channels = ["md:*", "app:{key}:*"]
publish = ["app:{key}:*"]
rate_limit = 30.0
rate_burst = 60
admin = true

[[keys]]
key = "k-free-1"
tier = "free"
name = "alice"

[[keys]]
key = "k-pro-1"
tier = "pro"
name = "bob"

[sources.md]
kind = "sim"
url = "wss://md.example.com:8443/ws"
rest_url = "https://md.example.com"
symbols = ["BTC-EUR", "ETH-EUR"]
heartbeat_interval = 2.0
answer_timeout = 3.0
linger = 0.0
connect_timeout = 4.0
backoff_initial = 0.5
backoff_factor = 3.0
backoff_cap = 45.0
backoff_reset_after = 0.0
ping_interval = 20.0
snapshot_timeout = 6.0

[sources.eth]
kind = "ethereum"
url = "ws://127.0.0.1:8545"
rpc_url = "http://127.0.0.1:8545"
heartbeat_interval = 5.0
answer_timeout = 10.0
linger = 5.0
connect_timeout = 10.0
backoff_initial = 1.0
backoff_factor = 2.0
backoff_cap = 30.0
backoff_reset_after = 30.0
ping_interval = 0.0
snapshot_timeout = 10.0

[outbox]
max_messages = 64
max_bytes = 65536
policy = "disconnect"

[[backpressure]]
pattern = "*:ticker:*"
policy = "coalesce"

[[backpressure]]
pattern = "md:trades:*"
policy = "drop"

[history]
max_messages = 50
max_age = 30.0

[[history.rules]]
pattern = "md:book:*"
max_messages = 0
max_age = 1.0

[published.app]
state = ["app:*:positions"]

[compression]
enabled = false
min_bytes = 256
level = 6
exclude = ["md:ticker:*"]

[cluster]
prefix = "relay-eu"
lease_ttl = 6.0
lease_renew = 2.0
lease_retry = 1.5
request_timeout = 1.0
join_timeout = 4.0
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    return str(info.value).splitlines()


# ---------------------------------------------------------------------------------------------
# Loading what is valid


def test_full_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(FULL, encoding="utf-8")
    config = load_config(path)
    raw = tomllib.loads(FULL)
    # Every key of the file landed in the field of the same name, with the same value.
    assert unstructure(config) == raw
    assert parse_config(unstructure(config)) == config
    assert config.server.handshake_timeout == 3.0
    assert isinstance(config.server.handshake_timeout, float)
    assert config.sources["md"].backoff_cap == 45.0
    assert [k.tier for k in config.keys] == ["free", "pro"]
    assert load_config(str(path)) == config


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")
    config = load_config(path)
    assert config == RelayConfig()
    assert config.server.port == 8765
    assert config.sources == {}
    assert config.tiers == {"default": TierConfig()}
    assert config.auth.required is True
    assert config.outbox.policy == "drop"


@pytest.mark.parametrize("name", ["binance", "kraken", "coinbase"])
def test_exchange_examples_load(name: str) -> None:
    path = ROOT / "examples" / f"{name}.toml"
    if name not in SOURCE_KINDS:
        pytest.fail(f"{path.name} is for a kind the relay does not have")
    config = load_config(path)
    assert config.sources[name].kind == name
    assert config.sources[name].url is None  # the exchange's public endpoint


def test_ethereum_example_loads() -> None:
    config = load_config(ROOT / "examples" / "ethereum.toml")
    eth = config.sources["eth"]
    assert eth.kind == "ethereum" and eth.rpc_url == "http://127.0.0.1:8545"
    assert config.tiers["apps"].allows("eth:logs:0x" + "ab" * 20)


@pytest.mark.parametrize(
    ("kind", "symbol"), [("binance", "btcusdt"), ("coinbase", "btc-usd"), ("kraken", "BTCUSD")]
)
def test_a_symbol_an_exchange_adapter_refuses_is_a_config_error(kind: str, symbol: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sources": {"x": {"kind": kind, "symbols": [symbol]}}})
    (line,) = str(info.value).splitlines()
    assert line.startswith("sources.x: ") and symbol in line


def test_kind_specific_keys_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sources": {"eth": {"kind": "ethereum", "url": "ws://n", "symbols": ["A"]}}})
    assert str(info.value).splitlines() == [
        "sources.eth.rpc_url: is required for kind 'ethereum'",
        "sources.eth.symbols: is not used by kind 'ethereum'",
    ]
    with pytest.raises(ConfigError) as info:
        parse_config({"sources": {"sim": {"kind": "sim", "url": "ws://h", "rpc_url": "ftp://x"}}})
    assert str(info.value).splitlines() == [
        "sources.sim.rpc_url: is not used by kind 'sim'",
        "sources.sim.rpc_url: must be a URL starting with http:// or https://, with a host, "
        "got 'ftp://x'",
    ]


def test_example_file_loads() -> None:
    config = load_config(ROOT / "examples" / "relay.toml")
    assert set(config.tiers) == {"free", "pro"}
    assert len(config.keys) == 2
    assert {k.tier for k in config.keys} == {"free", "pro"}
    assert config.sources["sim"].kind == "sim"
    assert config.policy_for("sim:ticker:BTC-USD") == "coalesce"
    assert config.policy_for("sim:trades:BTC-USD") == "drop"
    assert config.tiers["free"].allows("sim:trades:ETH-USD")
    assert not config.tiers["free"].allows("sim:book:ETH-USD")


def _docs() -> str:
    return (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_docs_complete_example_sets_every_key() -> None:
    section = _docs().split("## Complete example", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match is not None
    raw = tomllib.loads(match.group(1))
    config = parse_config(raw)
    # Equal only if the example sets every key (unstructure writes them all).
    assert unstructure(config) == raw


@pytest.mark.parametrize(
    ("heading", "cls"),
    [
        ("## `[server]`", ServerConfig),
        ("## `[auth]`", AuthConfig),
        ("## `[auth.jwt]`", JwtConfig),
        ("## `[tiers.NAME]`", TierConfig),
        ("## `[[keys]]`", ApiKey),
        ("## `[sources.NAME]`", SourceConfig),
        ("## `[outbox]`", OutboxConfig),
        ("## `[[backpressure]]`", BackpressureRule),
        ("## `[history]`", HistoryConfig),
        ("## `[[history.rules]]`", HistoryRule),
        ("## `[published.NAME]`", PublishedSourceConfig),
        ("## `[compression]`", CompressionConfig),
    ],
)
def test_docs_list_every_key(heading: str, cls: type[Any]) -> None:
    section = _docs().split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
    assert documented == [field.name for field in attrs.fields(cls)]


# ---------------------------------------------------------------------------------------------
# One clear line per mistake


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # unknown keys, at every level
        ("[server]\nprot = 1", "unknown key 'server.prot'"),
        ("colour = 1", "unknown key 'colour'"),
        ("[tiers.free]\nburst = 1", "unknown key 'tiers.free.burst'"),
        ("[[keys]]\nkey = 'k'\ntier = 'default'\nsecret = 1", "unknown key 'keys[0].secret'"),
        (
            "[sources.sim]\nkind = 'sim'\nurl = 'ws://h/ws'\nurls = []",
            "unknown key 'sources.sim.urls'",
        ),
        # wrong types
        (
            "[sources.sim]\nkind = 'sim'\nurl = 'ws://h/ws'\nbackoff_cap = 'abc'",
            "sources.sim.backoff_cap: expected a number, got 'abc'",
        ),
        ("[server]\nport = '8765'", "server.port: expected an integer, got '8765'"),
        ("[outbox]\nmax_messages = 1.5", "outbox.max_messages: expected an integer, got 1.5"),
        ("[tiers.a]\nrate_burst = true", "tiers.a.rate_burst: expected an integer, got true"),
        ("[tiers.a]\nrate_limit = false", "tiers.a.rate_limit: expected a number, got false"),
        ("[auth]\nrequired = 1", "auth.required: expected a boolean (true or false), got 1"),
        ("[server]\nhost = 127", "server.host: expected a string, got 127"),
        ("server = 5", "server: expected a table, got 5"),
        ("keys = {}", "keys: expected an array, got a table"),
        ("tiers = []", "tiers: expected a table, got an array"),
        ("[tiers.a]\nchannels = 'sim:*'", "tiers.a.channels: expected an array, got 'sim:*'"),
        ("[tiers.a]\nchannels = ['sim:*', 3]", "tiers.a.channels[1]: expected a string, got 3"),
        (
            "[outbox]\npolicy = 'dropp'",
            "outbox.policy: expected one of 'drop', 'coalesce', 'disconnect', got 'dropp'",
        ),
        (
            "[[backpressure]]\npattern = '*'\npolicy = 'drop'\n"
            "[[backpressure]]\npattern = '*'\npolicy = 'block'",
            "backpressure[1].policy: expected one of 'drop', 'coalesce', 'disconnect', got 'block'",
        ),
        ("[sources.sim]\nkind = 'sim'", "sources.sim.url: is required for kind 'sim'"),
        ("[[keys]]\nkey = 'k'", "keys[0].tier: required key missing"),
        # out of range
        ("[server]\nport = 70000", "server.port: must be between 0 and 65535, got 70000"),
        ("[server]\nport = -1", "server.port: must be between 0 and 65535, got -1"),
        ("[server]\nheartbeat = 0", "server.heartbeat: must be greater than 0, got 0.0"),
        ("[server]\nsend_timeout = -2.5", "server.send_timeout: must be greater than 0, got -2.5"),
        ("[server]\nidle_timeout = inf", "server.idle_timeout: must be a finite number, got inf"),
        ("[server]\nclose_timeout = nan", "server.close_timeout: must be a finite number, got nan"),
        ("[server]\nmax_connections = 0", "server.max_connections: must be at least 1, got 0"),
        (
            "[tiers.a]\nmax_subscriptions = 0",
            "tiers.a.max_subscriptions: must be at least 1, got 0",
        ),
        ("[outbox]\nmax_bytes = -1", "outbox.max_bytes: must be at least 1, got -1"),
        (
            "[compression]\nlevel = 10",
            "compression.level: must be a zlib level from 0 to 9, got 10",
        ),
        ("[compression]\nmin_bytes = -1", "compression.min_bytes: must be 0 or greater, got -1"),
        ("[compression]\nexclude = ['']", "compression.exclude[0]: must not be empty"),
        (
            "[compression]\nenabled = 1",
            "compression.enabled: expected a boolean (true or false), got 1",
        ),
        (
            "[sources.sim]\nkind = 'sim'\nurl = 'ws://h/ws'\nbackoff_factor = 0.5",
            "sources.sim.backoff_factor: must be at least 1, got 0.5",
        ),
        (
            "[sources.sim]\nkind = 'sim'\nurl = 'ws://h/ws'\nbackoff_initial = 5\nbackoff_cap = 2",
            "sources.sim.backoff_cap: must be at least backoff_initial (5.0), got 2.0",
        ),
        (
            "[sources.sim]\nkind = 'sim'\nurl = 'ws://h/ws'\nlinger = -1",
            "sources.sim.linger: must be 0 or greater, got -1.0",
        ),
        # unknown tier
        (
            "[[keys]]\nkey = 'a'\ntier = 'default'\n[[keys]]\nkey = 'b'\ntier = 'gold'",
            "keys[1].tier: unknown tier 'gold' (defined: default)",
        ),
        (
            "[auth]\nanonymous_tier = 'public'",
            "auth.anonymous_tier: unknown tier 'public' (defined: default)",
        ),
        (
            "[auth]\nrequired = false\n[tiers.free]",
            "auth.anonymous_tier: auth.required is false, so connections without credentials "
            "get tier 'default', which is not defined (defined: free); define it or set "
            "auth.anonymous_tier",
        ),
        # unknown source kind
        (
            "[sources.sim]\nkind = 'kafka'\nurl = 'ws://h/ws'",
            "sources.sim.kind: unknown source kind 'kafka' (known: "
            + ", ".join(sorted(SOURCE_KINDS))
            + ")",
        ),
        # bad source names
        (
            "[sources.Sim]\nkind = 'sim'\nurl = 'ws://h/ws'",
            "sources.Sim: source name must match [a-z0-9_-]+ (it starts every channel name)",
        ),
        (
            "[sources.'a:b']\nkind = 'sim'\nurl = 'ws://h/ws'",
            'sources."a:b": source name must match [a-z0-9_-]+ (it starts every channel name)',
        ),
        # other shapes
        (
            "[sources.sim]\nkind = 'sim'\nurl = 'http://h/ws'",
            "sources.sim.url: must be a URL starting with ws:// or wss://, with a host, "
            "got 'http://h/ws'",
        ),
        (
            "[sources.sim]\nkind = 'sim'\nurl = 'ws://h/ws'\nrest_url = 'h:80'",
            "sources.sim.rest_url: must be a URL starting with http:// or https://, with a host, "
            "got 'h:80'",
        ),
        (
            "[sources.sim]\nkind = 'sim'\nurl = 'ws://h/ws'\nsymbols = ['A', 'B:C']",
            "sources.sim.symbols[1]: must be non-empty without ':', got 'B:C'",
        ),
        (
            "[sources.sim]\nkind = 'sim'\nurl = 'ws://h/ws'\nsymbols = ['A', 'A']",
            "sources.sim.symbols[1]: duplicate symbol 'A'",
        ),
        ("[[keys]]\nkey = ''\ntier = 'default'", "keys[0].key: must not be empty"),
        ("[[keys]]\nkey = 'a b'\ntier = 'default'", "keys[0].key: must not contain whitespace"),
        ("[tiers.a]\nchannels = ['']", "tiers.a.channels[0]: must not be empty"),
        ('[tiers.""]', 'tiers."": tier name must not be empty'),
    ],
)
def test_bad_input_names_the_key(text: str, line: str) -> None:
    assert line in problems(text)


def test_duplicate_keys_are_reported_without_the_secret() -> None:
    lines = problems(
        "[[keys]]\nkey = 'sekrit-123'\ntier = 'default'\n"
        "[[keys]]\nkey = 'other'\ntier = 'default'\n"
        "[[keys]]\nkey = 'sekrit-123'\ntier = 'default'\n"
    )
    assert lines == ["keys[2].key: duplicate of keys[0].key"]


def test_every_problem_is_listed_once() -> None:
    lines = problems(
        "[server]\nprot = 1\nport = 'x'\n"
        "[tiers.a]\nrate_limit = 'fast'\n"
        "[sources.sim]\nkind = 'sim'\nurl = 'ws://h/ws'\nheartbeat_interval = -1\nlinger = -1\n"
        "[outbox]\npolicy = 'x'\n"
    )
    assert sorted(lines) == sorted(
        [
            "unknown key 'server.prot'",
            "server.port: expected an integer, got 'x'",
            "tiers.a.rate_limit: expected a number, got 'fast'",
            "sources.sim.heartbeat_interval: must be greater than 0, got -1.0",
            "sources.sim.linger: must be 0 or greater, got -1.0",
            "outbox.policy: expected one of 'drop', 'coalesce', 'disconnect', got 'x'",
        ]
    )


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server\nport = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML: .*line 1"):
        load_config(path)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.toml")


def test_non_table_document() -> None:
    with pytest.raises(ConfigError, match=r"^expected a table, got an array$"):
        parse_config([1, 2])  # type: ignore[arg-type]


def test_config_error_is_a_value_error_with_structured_issues() -> None:
    with pytest.raises(ValueError, match=r"^server\.port: ") as info:
        parse_config({"server": {"port": 1 << 20}})
    assert isinstance(info.value, ConfigError)
    [issue] = info.value.issues
    assert (issue.path, issue.message) == (
        "server.port",
        "must be between 0 and 65535, got 1048576",
    )


def test_objects_built_in_python_are_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"^port: must be between 0 and 65535, got -1$"):
        ServerConfig(port=-1)
    with pytest.raises(ConfigError, match=r"^keys\[0\]\.tier: unknown tier 'gold'"):
        RelayConfig(keys=[ApiKey(key="k", tier="gold")])
    with pytest.raises(ConfigError, match=r"^kind: unknown source kind 'x'"):
        SourceConfig(kind="x", url="ws://h/ws")


def test_api_key_repr_hides_the_key() -> None:
    assert "sekrit" not in repr(ApiKey(key="sekrit", tier="default", name="n"))


# ---------------------------------------------------------------------------------------------
# Behaviour


def test_policy_for_first_matching_rule_wins() -> None:
    config = RelayConfig(
        outbox=OutboxConfig(policy="disconnect"),
        backpressure=[
            BackpressureRule(pattern="sim:ticker:BTC-USD", policy="drop"),
            BackpressureRule(pattern="*:ticker:*", policy="coalesce"),
            BackpressureRule(pattern="sim:*", policy="drop"),
        ],
    )
    assert config.policy_for("sim:ticker:BTC-USD") == "drop"
    assert config.policy_for("sim:ticker:ETH-USD") == "coalesce"
    assert config.policy_for("eth:ticker:X") == "coalesce"
    assert config.policy_for("sim:trades:ETH-USD") == "drop"
    assert config.policy_for("eth:blocks") == "disconnect"  # no rule: outbox.policy
    assert config.policy_for("SIM:trades:ETH-USD") == "disconnect"  # case-sensitive


def test_tier_channel_patterns() -> None:
    tier = TierConfig(channels=["sim:trades:*", "eth:blocks"])
    assert tier.allows("sim:trades:BTC-USD")
    assert tier.allows("eth:blocks")
    assert not tier.allows("sim:book:BTC-USD")
    assert not tier.allows("Sim:trades:BTC-USD")
    assert TierConfig().allows("anything:at:all")


@pytest.mark.parametrize(
    ("required", "anonymous_tier", "expected"),
    [
        (False, None, "default"),
        (False, "public", "public"),
        (True, "public", "public"),
        (True, None, None),
    ],
)
def test_anonymous_tier_name(
    required: bool, anonymous_tier: str | None, expected: str | None
) -> None:
    auth = AuthConfig(required=required, anonymous_tier=anonymous_tier)
    assert auth.anonymous_tier_name == expected


def test_demo_config() -> None:
    config = demo_config(port=8000, sim_port=9001)
    assert parse_config(unstructure(config)) == config
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8000)
    source = config.sources["sim"]
    assert (source.kind, source.url, source.rest_url) == (
        "sim",
        "ws://127.0.0.1:9001/ws",
        "http://127.0.0.1:9001",
    )
    anonymous = config.auth.anonymous_tier_name
    assert anonymous is not None
    tier = config.tiers[anonymous]
    assert tier.allows("sim:trades:BTC-USD")
    assert not tier.allows("eth:blocks")
    assert tier.max_connections == config.server.max_connections


def test_demo_config_brackets_an_ipv6_host() -> None:
    config = demo_config(port=0, sim_port=9001, host="::1")
    assert config.server.host == "::1"
    assert config.sources["sim"].url == "ws://[::1]:9001/ws"
    assert config.sources["sim"].rest_url == "http://[::1]:9001"


# ---------------------------------------------------------------------------------------------
# Properties

positive = st.floats(min_value=0, max_value=1e9, exclude_min=True)
non_negative = st.floats(min_value=0, max_value=1e9)
count = st.integers(min_value=1, max_value=2**31)
text = st.text(min_size=1, max_size=12)
source_names = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)
policies = st.sampled_from(POLICIES)

servers = st.builds(
    ServerConfig,
    host=text,
    port=st.integers(0, 65535),
    handshake_timeout=positive,
    heartbeat=positive,
    heartbeat_timeout=positive,
    idle_timeout=positive,
    send_timeout=positive,
    close_timeout=positive,
    max_connections=count,
    max_message_size=count,
    max_head_bytes=count,
)
tiers = st.builds(
    TierConfig,
    max_connections=count,
    max_subscriptions=count,
    channels=st.lists(text, max_size=4),
    rate_limit=positive,
    rate_burst=count,
)
outboxes = st.builds(OutboxConfig, max_messages=count, max_bytes=count, policy=policies)
rules = st.builds(BackpressureRule, pattern=text, policy=policies)
urls = st.builds(
    "{}://{}:{}{}".format,
    st.sampled_from(["ws", "wss"]),
    st.from_regex(r"[a-z][a-z0-9.-]{0,15}", fullmatch=True),
    st.integers(1, 65535),
    st.sampled_from(["", "/", "/ws", "/v1/stream?x=1"]),
)
rest_urls = st.none() | st.builds(
    "{}://{}".format,
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z][a-z0-9.-]{0,15}(:[0-9]{1,4})?", fullmatch=True),
)


@st.composite
def sources(draw: st.DrawFn) -> SourceConfig:
    initial = draw(positive)
    # Kinds whose required keys this strategy can draw (a json spec is tested on its own).
    drawable = sorted(k for k, v in SOURCE_KINDS.items() if v.required <= {"rpc_url", "symbols"})
    kind = draw(st.sampled_from(drawable))
    options: dict[str, Any] = {}
    if "rest_url" in SOURCE_KINDS[kind].options:
        options["rest_url"] = draw(rest_urls)
    if "symbols" in SOURCE_KINDS[kind].options:
        required = "symbols" in SOURCE_KINDS[kind].required
        if required:  # the exchanges: their own symbol rules, all of which take BASE-QUOTE
            pairs = st.from_regex(r"[A-Z][A-Z0-9]{1,4}-[A-Z][A-Z0-9]{1,4}", fullmatch=True)
            options["symbols"] = draw(st.lists(pairs, unique=True, min_size=1, max_size=4))
        else:
            symbols = st.lists(text.filter(lambda s: ":" not in s), unique=True, max_size=4)
            options["symbols"] = draw(st.none() | symbols)
    if "rpc_url" in SOURCE_KINDS[kind].options:
        rpc = rest_urls.filter(lambda url: url is not None)
        options["rpc_url"] = draw(rpc if "rpc_url" in SOURCE_KINDS[kind].required else rest_urls)
    return SourceConfig(
        kind=kind,
        url=draw(urls),
        **options,
        heartbeat_interval=draw(st.none() | positive),
        answer_timeout=draw(positive),
        linger=draw(non_negative),
        connect_timeout=draw(positive),
        backoff_initial=initial,
        backoff_factor=draw(st.floats(min_value=1, max_value=100)),
        backoff_cap=draw(st.floats(min_value=initial, max_value=max(initial, 1e9))),
        backoff_reset_after=draw(non_negative),
        ping_interval=draw(non_negative),
        snapshot_timeout=draw(positive),
    )


@st.composite
def configs(draw: st.DrawFn) -> RelayConfig:
    tier_map = draw(st.dictionaries(text, tiers, max_size=3))
    names = sorted(tier_map)
    keys: list[ApiKey] = []
    if names:
        secrets = st.text(st.characters(exclude_categories=["Z", "Cc"]), min_size=1, max_size=16)
        keys = draw(
            st.lists(
                st.builds(
                    ApiKey,
                    key=secrets,
                    tier=st.sampled_from(names),
                    name=st.text(st.characters(exclude_characters=":")),
                ),
                # Keys are unique, and so are names (the empty one aside).
                unique_by=(lambda k: k.key, lambda k: k.name or k.key),
                max_size=4,
            )
        )
    anonymous = draw(st.none() | st.sampled_from(names)) if names else None
    required = draw(st.booleans())
    if anonymous is None and "default" not in tier_map:
        required = True  # otherwise anonymous clients would need a "default" tier
    return RelayConfig(
        server=draw(servers),
        auth=AuthConfig(required=required, anonymous_tier=anonymous),
        tiers=tier_map,
        keys=keys,
        sources=draw(st.dictionaries(source_names, sources(), max_size=3)),
        outbox=draw(outboxes),
        backpressure=draw(st.lists(rules, max_size=3)),
    )


@given(configs())
def test_round_trip_through_the_converter(config: RelayConfig) -> None:
    assert parse_config(unstructure(config)) == config


def _toml_key(name: str) -> str:
    """How a table name appears in a dotted path: bare if TOML allows, else a basic string."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    return json.dumps(name, ensure_ascii=not name.isprintable())


@given(configs(), st.data())
def test_an_unknown_key_in_any_table_is_named(config: RelayConfig, data: st.DataObject) -> None:
    raw = unstructure(config)
    tables: list[tuple[str, dict[str, Any]]] = [("", raw)]
    tables += [(name, raw[name]) for name in ("server", "auth", "outbox")]
    tables += [(f"tiers.{_toml_key(n)}", t) for n, t in raw["tiers"].items()]
    tables += [(f"sources.{n}", s) for n, s in raw["sources"].items()]
    tables += [(f"keys[{i}]", k) for i, k in enumerate(raw["keys"])]
    tables += [(f"backpressure[{i}]", r) for i, r in enumerate(raw["backpressure"])]
    path, table = data.draw(st.sampled_from(tables))
    table["zz_extra"] = 1
    expected = f"unknown key '{path}.zz_extra'" if path else "unknown key 'zz_extra'"
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).splitlines() == [expected]


def test_a_name_with_a_line_break_stays_on_one_line() -> None:
    """Found by the property above: U+0085 is a line break to str.splitlines."""
    with pytest.raises(ConfigError) as info:
        parse_config({"tiers": {"\x85": {"nope": 1}}})
    assert str(info.value).splitlines() == ["unknown key 'tiers.\"\\u0085\".nope'"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[published.Bad]\n", "published.Bad: source name must match [a-z0-9_-]+"),
        (
            "[sources.app]\nkind = 'sim'\nurl = 'ws://127.0.0.1:1/ws'\n[published.app]\n",
            "published.app: 'app' is also an upstream in [sources]",
        ),
        ("[published.app]\nstate = ['']\n", "published.app.state[0]: must not be empty"),
        (
            "[[keys]]\nkey = 'a1'\ntier = 'default'\nname = 'alice'\n"
            "[[keys]]\nkey = 'a2'\ntier = 'default'\nname = 'alice'\n",
            "keys[1].name: duplicate of keys[0].name",
        ),
        (
            "[[keys]]\nkey = 'a1'\ntier = 'default'\nname = 'team:alice'\n",
            "keys[0].name: must not contain ':'",
        ),
        ("[tiers.a]\npublish = ['']\n", "tiers.a.publish[0]: must not be empty"),
        ("[server]\nmax_publish_bytes = 0\n", "server.max_publish_bytes: must be at least 1"),
    ],
)
def test_published_sources_and_key_names_are_checked(text: str, expected: str) -> None:
    assert any(line.startswith(expected) for line in problems(text)), problems(text)
