"""Hypothesis profiles. ``relay``, every run's, has no deadline: unit tests assert no timings,
and a deadline is one (on a loaded machine, a benchmark beside the suite, an example may pass
hypothesis's 200 ms). ``mutation`` is the one ``tools/mutation.py`` runs every mutant under:
``relay``'s, with the same examples for every mutant (derandomized, no example database carried
between mutants), so a mutant's verdict does not depend on the order the mutants ran in.

The ``redis_server`` fixture: a real Redis for the tests of cluster mode (tests/redis_server.py).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.ci import fold_skip
from tests.redis_server import RedisServer, redis_server_missing, require_redis_server

settings.register_profile("relay", deadline=None)
settings.register_profile(
    "mutation",
    parent=settings.get_profile("relay"),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("relay")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running ``redis-server`` of the test's own (``.url``), stopped and removed after it.
    Skips without ``redis-server`` on PATH, and fails in CI."""
    require_redis_server()
    with RedisServer() as server:
        yield server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    fold_skip(report, redis_server_missing(), require_redis_server)
    return report
