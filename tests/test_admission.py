"""Per-address admission, the Origin allow-list and the refusal log: sans-IO decisions with the
clock passed in, then the relay's front door on trio's MockClock over memory streams."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from relay.config import ConfigError, ServerConfig, demo_config, parse_config
from relay.core.admission import (
    AddressLimiter,
    AddressLimits,
    RateRefusal,
    RefusalLog,
    normalize_origin,
    origin_allowed,
    origin_set,
)
from relay.core.protocol import Refusal
from relay.server.relay import Relay

A, B = "192.0.2.1", "192.0.2.2"


def limiter(max_connections: int = 100, rate: float = 1.0, burst: int = 3) -> AddressLimiter:
    return AddressLimiter(AddressLimits(max_connections, rate, burst))


def refusal(limits: AddressLimiter, address: str, now: float) -> Refusal:
    with pytest.raises(Refusal) as caught:
        limits.check(address, now)
    return caught.value


# --------------------------------------------------------------------------------------------
# Connection rate


def test_burst_then_refused_with_retry_after_then_refilled() -> None:
    limits = limiter(rate=1.0, burst=3)
    for _ in range(3):
        limits.check(A, 10.0)
    refused = refusal(limits, A, 10.0)
    assert isinstance(refused, RateRefusal)
    assert (refused.status, refused.code, refused.retry_after) == (429, "connection_rate", 1)
    assert isinstance(refusal(limits, A, 10.5), RateRefusal)  # half a token: still refused
    limits.check(A, 11.0)  # one token back after 1 s
    assert isinstance(refusal(limits, A, 11.0), RateRefusal)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    limits = limiter(rate=0.25, burst=1)  # one token every 4 s
    limits.check(A, 0.0)
    refused = refusal(limits, A, 0.0)
    assert isinstance(refused, RateRefusal) and refused.retry_after == 4
    refused = refusal(limits, A, 1.5)  # 2.5 s left
    assert isinstance(refused, RateRefusal) and refused.retry_after == 3
    refused = refusal(limits, A, 3.99)  # 0.01 s left: never "0"
    assert isinstance(refused, RateRefusal) and refused.retry_after == 1
    limits.check(A, 4.0)


def test_refused_attempts_do_not_spend_tokens() -> None:
    limits = limiter(rate=1.0, burst=1)
    limits.check(A, 0.0)
    for t in (0.1, 0.2, 0.3):
        refusal(limits, A, t)
    limits.check(A, 1.0)  # the refusals did not push the refill back


def test_addresses_are_independent() -> None:
    limits = limiter(rate=1.0, burst=1)
    limits.check(A, 0.0)
    refusal(limits, A, 0.0)
    limits.check(B, 0.0)


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    limits = limiter(rate=1.0, burst=1)
    limits.check(A, 5.0)
    refusal(limits, A, 4.0)
    refusal(limits, A, 5.5)
    limits.check(A, 6.0)


# --------------------------------------------------------------------------------------------
# Concurrent connections


def test_concurrent_limit_counts_opened_and_released() -> None:
    limits = limiter(max_connections=2, rate=100.0, burst=100)
    for _ in range(2):
        limits.check(A, 0.0)
        limits.opened(A)
    refused = refusal(limits, A, 0.0)
    assert not isinstance(refused, RateRefusal)
    assert (refused.status, refused.code) == (429, "too_many_connections")
    assert "at most 2 connections" in refused.message
    limits.check(B, 0.0)  # another address is not affected
    limits.release(A)
    limits.check(A, 0.0)
    assert limits.open_connections(A) == 1


def test_an_attempt_at_the_connection_limit_spends_a_token() -> None:
    limits = limiter(max_connections=1, rate=1.0, burst=2)
    limits.check(A, 0.0)
    limits.opened(A)
    assert refusal(limits, A, 0.0).code == "too_many_connections"
    assert refusal(limits, A, 0.0).code == "connection_rate"


def test_release_never_goes_below_zero() -> None:
    limits = limiter()
    limits.release(A)
    limits.check(A, 0.0)
    limits.opened(A)
    limits.release(A)
    limits.release(A)
    assert limits.open_connections(A) == 0


def test_idle_addresses_are_forgotten_open_ones_kept() -> None:
    limits = limiter(rate=1.0, burst=2)  # refills in 2 s
    limits.check(A, 0.0)
    limits.check(B, 0.0)
    limits.opened(B)
    assert len(limits) == 2
    limits.check("192.0.2.3", 2.0)  # sweeps: A is full again and has nothing open
    assert len(limits) == 2
    assert limits.open_connections(B) == 1
    limits.check(A, 2.0)  # a forgotten address starts with a full bucket
    limits.check(A, 2.0)
    refusal(limits, A, 2.0)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        AddressLimiter(AddressLimits(0, 1.0, 1))
    with pytest.raises(ValueError):
        AddressLimiter(AddressLimits(1, 0.0, 1))


# --------------------------------------------------------------------------------------------
# Origin


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        ("https://evil.example", [], True),  # no list: no check
        (None, ["https://app.example"], True),  # not a browser
        ("https://app.example", ["https://app.example"], True),
        ("HTTPS://App.Example", ["https://app.example/"], True),
        ("https://evil.example", ["https://app.example"], False),
        ("http://app.example", ["https://app.example"], False),  # scheme matters
        ("https://app.example:8443", ["https://app.example"], False),  # port matters
        ("null", ["https://app.example"], False),  # sandboxed or file:// pages
        ("https://app.example, https://evil.example", ["https://app.example"], False),
    ],
)
def test_origin_allowed(origin: str | None, allowed: list[str], expected: bool) -> None:
    assert origin_allowed(origin, origin_set(allowed)) is expected


@pytest.mark.parametrize(
    "origin",
    [
        "app.example.com",
        "ftp://app.example",
        "https://",
        "https://a.example/path",
        "https://a:99999",
    ],
)
def test_config_refuses_what_is_not_an_origin(origin: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.allowed_origins\[1\]: must be an origin"):
        parse_config({"server": {"allowed_origins": ["https://ok.example", origin]}})


def test_config_checks_the_per_address_limits() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "server": {
                    "max_connections_per_address": 0,
                    "connection_rate_per_address": 0,
                    "connection_burst_per_address": 0,
                }
            }
        )
    paths = sorted(issue.path for issue in caught.value.issues)
    assert paths == [
        "server.connection_burst_per_address",
        "server.connection_rate_per_address",
        "server.max_connections_per_address",
    ]


def test_demo_config_per_address_limits_do_not_get_in_the_way() -> None:
    server = demo_config(port=0, sim_port=1).server
    assert server.max_connections_per_address == server.max_connections
    assert server.connection_burst_per_address == server.max_connections
    assert server.connection_rate_per_address >= server.max_connections
    assert server.allowed_origins == []
    defaults = ServerConfig()
    assert (
        defaults.max_connections_per_address,
        defaults.connection_rate_per_address,
        defaults.connection_burst_per_address,
    ) == (1000, 100.0, 500)


# --------------------------------------------------------------------------------------------
# Refusal log


def test_refusal_log_one_line_per_address_per_interval_with_the_count() -> None:
    log = RefusalLog(interval=1.0)
    assert log.record(A, 0.0) == 0
    assert log.record(A, 0.1) is None
    assert log.record(A, 0.9) is None
    assert log.record(B, 0.5) == 0  # addresses are independent
    assert log.record(A, 1.0) == 2  # the next line reports the two left out
    assert log.record(A, 1.5) is None
    assert log.record(A, 2.5) == 1


def test_refusal_log_sweep_reports_leftover_counts_and_forgets() -> None:
    log = RefusalLog(interval=1.0)
    log.record(A, 0.0)
    log.record(A, 0.5)
    log.record(B, 0.0)
    assert log.sweep(0.5) == []  # nothing is an interval old yet
    assert log.sweep(1.2) == []  # at most one sweep per interval
    assert log.sweep(1.5) == [(A, 1)]
    assert len(log) == 1  # B forgotten; A kept, its closing line counts for this interval
    assert log.record(A, 2.0) is None
    assert log.sweep(2.5) == [(A, 1)]
    assert log.sweep(3.5) == []
    assert len(log) == 0


# --------------------------------------------------------------------------------------------
# The relay's front door, on MockClock


def upgrade(origin: str | None = None) -> bytes:
    lines = [
        "GET /ws HTTP/1.1",
        "Host: relay.test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def make_relay(**server: Any) -> Relay:
    config = {
        "server": server,
        "auth": {"required": False},
        "tiers": {"default": {"max_connections": 1000}},
    }
    return Relay(parse_config(config))


async def attempt(
    relay: Relay, nursery: trio.Nursery, origin: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One upgrade through the front door; answers the status, headers and body (empty for a
    101, whose connection is then closed by the client)."""
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server)
    await client.send_all(upgrade(origin))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await client.receive_some(65536)
        assert chunk
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    if status != 101:
        while chunk := await client.receive_some(65536):
            body += chunk
    await client.aclose()
    return status, headers, body


async def test_relay_refuses_a_burst_then_admits_after_retry_after(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay(connection_rate_per_address=0.5, connection_burst_per_address=2)
    nursery.start_soon(relay.rounds.run)
    for _ in range(2):
        status, _, _ = await attempt(relay, nursery)
        assert status == 101
    status, headers, body = await attempt(relay, nursery)
    assert status == 429
    assert headers["retry-after"] == "2"  # one token every 2 s
    assert orjson.loads(body)["error"] == "connection_rate"
    await trio.sleep(1.0)
    status, headers, _ = await attempt(relay, nursery)
    assert (status, headers["retry-after"]) == (429, "1")
    await trio.sleep(1.0)
    status, _, _ = await attempt(relay, nursery)
    assert status == 101
    assert relay.rejected[429] == 2


async def test_relay_counts_open_connections_per_address(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay(max_connections_per_address=1)
    nursery.start_soon(relay.rounds.run)
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server)
    await client.send_all(upgrade())
    assert (await client.receive_some(65536)).startswith(b"HTTP/1.1 101")
    status, headers, body = await attempt(relay, nursery)
    assert status == 429 and "retry-after" not in headers
    assert orjson.loads(body)["error"] == "too_many_connections"
    await client.aclose()  # the first connection ends: its place is free again
    await trio.sleep(1.0)
    assert relay.addresses.open_connections("unknown") == 0
    status, _, _ = await attempt(relay, nursery)
    assert status == 101


async def test_relay_origin_check_and_logged_refusals(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = make_relay(allowed_origins=["https://app.example"])
    nursery.start_soon(relay.rounds.run)
    caplog.set_level(logging.INFO, logger="relay")
    assert (await attempt(relay, nursery, "https://app.example"))[0] == 101
    assert (await attempt(relay, nursery))[0] == 101  # no Origin: not a browser
    for _ in range(5):
        status, _, body = await attempt(relay, nursery, "https://evil.example")
        assert status == 403
        assert orjson.loads(body)["error"] == "forbidden_origin"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    # Five refusals within a second: one line, naming the address.
    assert lines == ["refused unknown: 403 forbidden_origin: this origin may not connect"]
    await trio.sleep(1.0)
    await attempt(relay, nursery, "https://evil.example")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert lines[-1].endswith("(4 more from this address not logged)")
    assert lines[-1].startswith("refused unknown: 403")


@pytest.mark.parametrize(
    "limits",
    [
        AddressLimits(0, 1.0, 1),
        AddressLimits(1, 0.0, 1),
        AddressLimits(1, -1.0, 1),
        AddressLimits(1, float("nan"), 1),
        AddressLimits(1, 1.0, 0),
    ],
)
def test_each_per_address_limit_is_checked(limits: AddressLimits) -> None:
    with pytest.raises(ValueError, match=r"^max_connections and burst must be >= 1, rate > 0$"):
        AddressLimiter(limits)


def test_the_smallest_per_address_limits_are_accepted() -> None:
    limits = AddressLimiter(AddressLimits(1, 1e-9, 1))
    limits.check(A, 0.0)
    assert refusal(limits, A, 0.0).code == "connection_rate"


def test_a_connection_counted_without_a_check_is_counted_all_the_same() -> None:
    limits = limiter(max_connections=1, rate=1.0, burst=1)
    limits.opened(A)
    assert limits.open_connections(A) == 1 and len(limits) == 1
    # Its bucket is full: the refusal is for the connection count, not the rate.
    assert refusal(limits, A, 0.0).code == "too_many_connections"


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_the_refusal_log_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match=r"^interval must be > 0$"):
        RefusalLog(interval)


@pytest.mark.parametrize(
    ("origin", "normal"),
    [
        ("HTTPS://Example.COM/", "https://example.com"),
        ("  https://app.example.com//  ", "https://app.example.com"),
        ("http://BOX", "http://box"),
    ],
)
def test_an_origin_is_normalized_to_lower_case_without_trailing_slashes(
    origin: str, normal: str
) -> None:
    assert normalize_origin(origin) == normal


def test_the_rate_refusal_says_the_limits_and_the_wait() -> None:
    limits = limiter(rate=0.5, burst=2)
    limits.check(A, 0.0)
    limits.check(A, 0.0)
    refused = refusal(limits, A, 0.0)
    assert isinstance(refused, RateRefusal) and refused.retry_after == 2
    expected = (
        "more than 2 new connections at once or 0.5 per second from this address; retry in 2 s"
    )
    assert refused.message == str(refused) == expected
    assert RateRefusal(3, "wait").message == "wait"


def test_an_address_never_seen_has_no_open_connections() -> None:
    limits = limiter()
    assert limits.open_connections(A) == 0
    assert len(limits) == 0


def test_an_address_still_refilling_is_not_forgotten_by_a_sweep() -> None:
    limits = limiter(rate=1.0, burst=2)  # refills in 2 s
    limits.check(B, 10.0)  # the first sweep is now
    limits.check(A, 11.0)
    limits.check(A, 11.0)  # A's bucket is empty
    limits.check("192.0.2.3", 12.0)  # sweeps: B is full again, A has refilled one token
    assert len(limits) == 2
    limits.check(A, 12.0)
    assert refusal(limits, A, 12.0).code == "connection_rate"


def test_a_connection_counted_without_a_check_leaves_its_bucket_refilling() -> None:
    limits = limiter(rate=1.0, burst=1)
    limits.opened(A)
    limits.check(A, 5.0)
    assert refusal(limits, A, 5.0).code == "connection_rate"
    limits.check(A, 6.0)  # one second later the token is back


def test_the_refusal_log_defaults_to_one_line_a_second() -> None:
    log = RefusalLog()
    assert log.interval == 1.0
    assert log.record(A, 0.0) == 0
    assert log.record(A, 0.99) is None
    assert log.record(A, 1.0) == 1


def test_a_sweep_keeps_addresses_logged_within_the_interval() -> None:
    log = RefusalLog(interval=1.0)
    assert log.record(A, 10.0) == 0
    assert log.sweep(10.5) == []
    assert len(log) == 1
    assert log.record(A, 10.6) is None  # still within A's interval
