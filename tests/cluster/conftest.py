"""The cluster tests' Redis: the shared ``redis_server`` fixture (tests/conftest.py), by URL."""

from __future__ import annotations

import pytest

from tests.redis_server import RedisServer


@pytest.fixture
def redis_server_url(redis_server: RedisServer) -> str:
    return redis_server.url
