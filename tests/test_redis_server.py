"""The Redis of the cluster tests (tests/redis_server.py): it answers on its URL, stops, comes
back on the same port (so a node's redis_url stays valid) and empty (nothing persisted)."""

from __future__ import annotations

from pathlib import Path

import coredis
import pytest

from tests.redis_server import (
    INSTALL_HINT,
    RedisServer,
    answers_ping,
    redis_server_missing,
    require_redis_server,
)


def client(server: RedisServer) -> coredis.Redis[str]:
    return coredis.Redis.from_url(server.url, decode_responses=True)


async def test_it_answers_ping_on_its_url(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}"
    async with client(redis_server) as redis:
        assert await redis.ping() == "PONG"


async def test_it_persists_nothing_on_disk(redis_server: RedisServer) -> None:
    async with client(redis_server) as redis:
        assert await redis.config_get(["save", "appendonly"]) == {"save": "", "appendonly": "no"}
        assert await redis.config_get(["bind"]) == {"bind": "127.0.0.1"}


async def test_a_restart_is_on_the_same_port_and_empty(redis_server: RedisServer) -> None:
    port = redis_server.port
    assert port is not None
    async with client(redis_server) as redis:
        await redis.set("key", "value")
        assert await redis.get("key") == "value"
    redis_server.stop()
    assert not redis_server.running
    assert not answers_ping(port)
    redis_server.start()
    assert redis_server.port == port
    async with client(redis_server) as redis:
        assert await redis.get("key") is None
        assert await redis.ping() == "PONG"


async def test_a_killed_redis_comes_back_too(redis_server: RedisServer) -> None:
    process = redis_server.process
    assert process is not None
    redis_server.kill()
    assert process.returncode == -9
    assert not answers_ping(redis_server.port or 0)
    redis_server.start()
    async with client(redis_server) as redis:
        assert await redis.ping() == "PONG"


def test_starting_a_running_redis_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        redis_server.start()


def test_stop_is_a_clean_shutdown_and_close_removes_the_directory() -> None:
    require_redis_server()
    server = RedisServer()
    server.start()
    process = server.process
    assert process is not None
    server.stop()
    assert process.returncode == 0  # SIGTERM: Redis shuts down cleanly
    assert "ready to exit" in server.log_file.read_text()
    server.close()
    assert not server.directory.exists()


def test_there_is_no_url_before_the_first_start() -> None:
    server = RedisServer()
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.url
    server.close()


def test_without_redis_server_tests_skip_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert redis_server_missing() == INSTALL_HINT
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        require_redis_server()
    monkeypatch.setenv("CI", "true")  # in CI a missing install step must not pass unnoticed
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        require_redis_server()
