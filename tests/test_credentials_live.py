"""Credentials changing under live connections, on trio's MockClock (autojump): a token's
expiry (1008 at ``exp`` + leeway, exactly), its refresh with the ``auth`` command, a reload that
revokes keys or narrows tiers, and the key file watcher. The wall clock the relay compares
``exp`` with is a fake that moves with the mock clock, so every moment is deterministic."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
import trio.testing
from wsproto.events import AcceptConnection, RejectConnection, Request

from relay.config import RelayConfig, parse_config
from relay.keyfile import add_key, revoke_key
from relay.server.relay import KEY_FILE_POLL, Relay
from tests.test_session_timeouts import Client

WALL0 = 1_800_000_000.0
SECRET = "a-secret-for-tests-that-is-32-bytes-long"
INLINE = "inline-key-alice"


def config_data(**auth: Any) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "idle_timeout": 1000.0},
        "auth": {"jwt": {"secret": SECRET, "leeway": 2.0}, **auth},
        "tiers": {
            "default": {"channels": ["sim:trades:*"]},
            "pro": {"channels": ["*"], "rate_limit": 50.0, "rate_burst": 60},
        },
        "keys": [
            {"key": INLINE, "tier": "pro", "name": "alice"},
            {"key": "inline-key-bob", "tier": "pro", "name": "bob"},
        ],
        "sources": {"sim": {"kind": "sim", "url": "ws://127.0.0.1:9/ws"}},
    }


def wall() -> float:
    return WALL0 + trio.current_time()


def token(sub: str = "carol", lifetime: float = 30.0, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": wall() + lifetime, **claims}, SECRET, algorithm="HS256")


async def start(config: RelayConfig, nursery: trio.Nursery) -> Relay:
    relay = Relay(config, wall_clock=wall)
    nursery.start_soon(relay.run_timers)
    nursery.start_soon(relay.rounds.run)
    return relay


async def connect(relay: Relay, nursery: trio.Nursery, credential: str | None) -> Client:
    """A client through the front door, with its credential in the query string; it reads
    in the background from then on."""
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server_end)
    client = Client(client_end)
    target = "/ws" if credential is None else f"/ws?api_key={credential}"
    await client.stream.send_all(client.ws.send(Request(host="relay", target=target)))
    while True:
        client.ws.receive_data(await client_end.receive_some())
        events = list(client.ws.events())
        if any(isinstance(e, RejectConnection) for e in events):
            raise AssertionError("refused")
        if any(isinstance(e, AcceptConnection) for e in events):
            break
    nursery.start_soon(client.read_forever)
    return client


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(0.01)


def events(client: Client, name: str) -> list[dict[str, Any]]:
    return [m for m in client.messages if m.get("event") == name]


async def subscribe(client: Client, *channels: str) -> None:
    await client.send({"action": "subscribe", "channels": list(channels), "id": "s"})
    await settle()


# Expiry and refresh ---------------------------------------------------------------------------


async def test_a_token_connection_closes_with_1008_at_exp_plus_leeway(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = await start(parse_config(config_data()), nursery)
    begin = trio.current_time()
    client = await connect(relay, nursery, token(lifetime=30.0))
    await subscribe(client, "sim:trades:BTC-USD")
    assert events(client, "subscribed")
    await trio.sleep(31.9)
    assert client.closed is None
    await trio.sleep(0.2)
    assert client.closed is not None
    assert (client.closed.code, client.closed.reason) == (1008, "token expired")
    assert client.closed_at == pytest.approx(begin + 32.0)
    await trio.sleep(relay.config.server.close_timeout)  # the client never answers the close
    assert not relay.sessions


async def test_auth_refreshes_in_place_moves_the_deadline_and_applies_the_new_claims(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = await start(parse_config(config_data()), nursery)
    begin = trio.current_time()
    client = await connect(relay, nursery, token(tier="pro", lifetime=30.0))
    await subscribe(client, "sim:trades:BTC-USD", "sim:ticker:BTC-USD")
    assert len(events(client, "subscribed")) == 2
    await trio.sleep(20)
    refreshed_at = trio.current_time()
    fresh = token(lifetime=100.0, channels=["sim:ticker:BTC-USD"])  # default tier, one extra
    await client.send({"action": "auth", "token": fresh, "id": 7})
    await settle()
    (authenticated,) = events(client, "authenticated")
    assert authenticated == {
        "event": "authenticated",
        "data": {"expires": jwt.decode(fresh, options={"verify_signature": False})["exp"]},
        "id": 7,
    }
    # The default tier allows trades; the token's channels claim allows this ticker.
    assert not [m for m in events(client, "unsubscribed") if "reason" in m["data"]]
    await subscribe(client, "sim:ticker:ETH-USD")
    assert events(client, "error")[-1]["data"]["code"] == "forbidden"
    await trio.sleep(30)  # past the first token's end
    assert client.closed is None
    await trio.sleep(100)
    assert client.closed is not None and client.closed.code == 1008
    assert client.closed_at == pytest.approx(refreshed_at + 102.0)
    assert refreshed_at > begin + 20


async def test_a_refresh_to_a_narrower_tier_removes_subscriptions_with_an_event(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = await start(parse_config(config_data()), nursery)
    client = await connect(relay, nursery, token(tier="pro"))
    await subscribe(client, "sim:trades:BTC-USD", "sim:ticker:BTC-USD")
    await client.send({"action": "auth", "token": token(), "id": 1})
    await settle()
    revoked = [m for m in events(client, "unsubscribed") if "reason" in m["data"]]
    assert revoked == [
        {
            "event": "unsubscribed",
            "data": {
                "channel": "sim:ticker:BTC-USD",
                "reason": "forbidden",
                "message": "your credentials no longer allow sim:ticker:BTC-USD",
            },
        }
    ]
    (session,) = relay.sessions
    assert relay.hub.registry.channels_of(session) == ["sim:trades:BTC-USD"]
    assert client.closed is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: token(lifetime=-3), "token expired"),
        (lambda: token(sub="mallory"), "another subject's token"),
        (lambda: INLINE, "the auth command takes a JWT"),
        (lambda: "not-a-key", "unknown API key"),
        (lambda: jwt.encode({"sub": "carol", "exp": wall() + 99}, "x" * 40), "Signature"),
    ],
    ids=["expired", "other-subject", "api-key", "garbage", "wrong-secret"],
)
async def test_a_bad_refresh_is_an_error_and_changes_nothing(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, make: Any, message: str
) -> None:
    relay = await start(parse_config(config_data()), nursery)
    begin = trio.current_time()
    client = await connect(relay, nursery, token(tier="pro", lifetime=30.0))
    await subscribe(client, "sim:ticker:BTC-USD")
    await client.send({"action": "auth", "token": make(), "id": "r"})
    await settle()
    error = events(client, "error")[-1]
    assert error["id"] == "r" and error["data"]["code"] == "invalid_credentials"
    assert message in error["data"]["message"]
    (session,) = relay.sessions
    assert session.grant is not None and session.grant.tier == "pro"
    assert relay.hub.registry.channels_of(session) == ["sim:ticker:BTC-USD"]
    await trio.sleep(40)
    assert client.closed is not None and client.closed.code == 1008
    assert client.closed_at == pytest.approx(begin + 32.0)


async def test_auth_on_a_key_or_anonymous_connection_is_a_bad_request(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = await start(parse_config(config_data(anonymous_tier="default")), nursery)
    for credential in (INLINE, None):
        client = await connect(relay, nursery, credential)
        await client.send({"action": "auth", "token": token(), "id": 3})
        await client.send({"action": "auth", "id": 4})
        await settle()
        first, second = events(client, "error")
        assert first["id"] == 3 and first["data"]["code"] == "bad_request"
        assert "did not authenticate with a token" in first["data"]["message"]
        assert second["id"] == 4 and second["data"]["code"] == "bad_request"


# Reload ---------------------------------------------------------------------------------------


async def test_reload_closes_revoked_keys_and_narrows_tiers_without_dropping_others(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "relay")
    relay = await start(parse_config(config_data()), nursery)
    alice = await connect(relay, nursery, INLINE)
    bob = await connect(relay, nursery, "inline-key-bob")
    carol = await connect(relay, nursery, token(tier="pro", lifetime=500))
    for client in (alice, bob, carol):
        await subscribe(client, "sim:trades:BTC-USD", "sim:ticker:BTC-USD")
    data = config_data()
    data["keys"] = [{"key": "inline-key-bob", "tier": "default", "name": "bob"}]
    data["tiers"]["pro"]["channels"] = ["sim:trades:*"]
    data["tiers"]["pro"]["rate_limit"] = 5.0
    assert relay.reload(parse_config(data))
    await settle()
    assert alice.closed is not None
    assert (alice.closed.code, alice.closed.reason) == (1008, "credentials revoked")
    for client in (bob, carol):
        assert client.closed is None
        revoked = [m["data"] for m in events(client, "unsubscribed") if "reason" in m["data"]]
        assert [(r["channel"], r["reason"]) for r in revoked] == [
            ("sim:ticker:BTC-USD", "forbidden")
        ]
    live = [s for s in relay.sessions if s.closing is None and s.grant is not None]
    tiers = sorted((s.grant.tier, s._bucket.rate) for s in live if s.grant)
    assert tiers == [("default", 20.0), ("pro", 5.0)]
    assert relay.hub.registry.refcount("sim:trades:BTC-USD") == 2
    assert relay.hub.registry.refcount("sim:ticker:BTC-USD") == 0
    assert (
        "reloaded: 0 keys added, 1 removed; tiers changed: pro; 1 sessions closed, "
        "2 subscriptions removed" in caplog.text
    )
    assert INLINE not in caplog.text


async def test_reload_removing_anonymous_access_or_jwt_closes_those_connections(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = await start(parse_config(config_data(anonymous_tier="default")), nursery)
    anonymous = await connect(relay, nursery, None)
    carol = await connect(relay, nursery, token())
    alice = await connect(relay, nursery, INLINE)
    data = config_data()
    del data["auth"]["jwt"]
    assert relay.reload(parse_config(data))
    await settle()
    for client in (anonymous, carol):
        assert client.closed is not None and client.closed.code == 1008
    assert alice.closed is None


async def test_a_bad_reload_changes_nothing_and_restart_sections_are_only_logged(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    relay = await start(parse_config(config_data()), nursery)
    alice = await connect(relay, nursery, INLINE)
    before = relay.config
    broken = parse_config(config_data(key_file=str(tmp_path / "missing.toml")))
    assert not relay.reload(broken)
    assert relay.config is before
    assert "reload refused, nothing changed" in caplog.text and "missing.toml" in caplog.text
    data = config_data()
    data["server"]["port"] = 9999
    data["outbox"] = {"max_messages": 10}
    assert relay.reload(parse_config(data))
    assert relay.config.server.port == 0 and relay.config.outbox.max_messages == 1024
    assert "changes to [server], [outbox] need a restart; not applied" in caplog.text
    await settle()
    assert alice.closed is None


async def test_the_key_file_watcher_revokes_within_a_poll(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = str(tmp_path / "keys.toml")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    dave = add_key(path, "dave", "pro", now)
    erin = add_key(path, "erin", "default", now)
    relay = await start(parse_config(config_data(key_file=path)), nursery)
    nursery.start_soon(relay.watch_key_file)
    clients = {name: await connect(relay, nursery, s) for name, s in [("d", dave), ("e", erin)]}
    await trio.sleep(5 * KEY_FILE_POLL)  # unchanged: nothing happens
    assert all(c.closed is None for c in clients.values())
    revoked_at = trio.current_time()
    revoke_key(path, "dave")
    await trio.sleep(KEY_FILE_POLL + 0.01)
    closed = clients["d"].closed
    assert closed is not None and closed.code == 1008
    assert clients["d"].closed_at is not None
    assert clients["d"].closed_at - revoked_at <= KEY_FILE_POLL
    assert clients["e"].closed is None
    # A key added while running works at once after the next poll.
    frank = add_key(path, "frank", "default", now)
    await trio.sleep(KEY_FILE_POLL + 0.01)
    await connect(relay, nursery, frank)
    assert sorted(s.key_name for s in relay.sessions if s.closing is None) == ["erin", "frank"]


async def test_the_watcher_waits_for_a_key_file_a_reload_configures(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    relay = await start(parse_config(config_data()), nursery)
    nursery.start_soon(relay.watch_key_file)
    await trio.sleep(10 * KEY_FILE_POLL)
    path = str(tmp_path / "keys.toml")
    gina = add_key(path, "gina", "pro", datetime(2026, 1, 1, tzinfo=UTC))
    assert relay.reload(parse_config(config_data(key_file=path)))
    client = await connect(relay, nursery, gina)
    revoke_key(path, "gina")
    await trio.sleep(KEY_FILE_POLL + 0.01)
    assert client.closed is not None and client.closed.code == 1008


async def test_losing_every_subscription_restarts_the_idle_clock(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """By a reload (bob) or by a refresh (carol): each is closed 4000 idle_timeout later."""
    relay = await start(parse_config(config_data()), nursery)
    bob = await connect(relay, nursery, "inline-key-bob")
    carol = await connect(relay, nursery, token(lifetime=5000, channels=["sim:ticker:*"]))
    for client in (bob, carol):
        await subscribe(client, "sim:ticker:BTC-USD")
    await trio.sleep(100)
    narrowed = config_data()
    narrowed["tiers"]["pro"]["channels"] = ["sim:trades:*"]
    reloaded_at = trio.current_time()
    assert relay.reload(parse_config(narrowed))
    await trio.sleep(100)
    refreshed_at = trio.current_time()
    await carol.send({"action": "auth", "token": token(lifetime=5000), "id": 1})
    await trio.sleep(2000)
    assert bob.closed is not None and bob.closed.code == 4000
    assert bob.closed_at == pytest.approx(reloaded_at + 1000.0)
    assert carol.closed is not None and carol.closed.code == 4000
    assert carol.closed_at == pytest.approx(refreshed_at + 1000.0, abs=0.01)
