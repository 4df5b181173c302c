"""Fixtures for tests against a real Ethereum node: ganache on loopback (see ganache.py).

Without ganache installed these tests skip, with the command that installs it; in CI (``CI``
set) they fail instead, so that a missing install step cannot pass unnoticed."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.ci import fold_skip, skip_or_fail
from tests.ethereum.ganache import GANACHE, INSTALL_COMMAND, Ganache, ganache_executable

_NODES = pytest.StashKey[list[Ganache]]()


def ganache_missing() -> str | None:
    """Why ganache cannot run here, or None when it can."""
    if ganache_executable() is not None:
        return None
    if GANACHE.exists() and not shutil.which("node"):
        return "ganache needs node, which is not on PATH: install Node.js"
    return f"ganache is not installed: run `{INSTALL_COMMAND}` (or `nox -s tests`, which does it)"


def require_ganache() -> None:
    """Skip the calling test when ganache cannot run here; fail it in CI."""
    skip_or_fail(ganache_missing(), "Ethereum tests")


@pytest.fixture
def ganache_installed() -> Path:
    """ganache's executable; skips (fails in CI) without it. A synchronous fixture: a skip
    raised inside a Trio test or fixture reaches pytest wrapped in an exception group, and is
    reported as an error or as a skip without its reason."""
    require_ganache()
    return GANACHE


@asynccontextmanager
async def running_ganache(
    directory: Path, request: pytest.FixtureRequest | None = None, **options: Any
) -> AsyncIterator[Ganache]:
    """A node on a database in ``directory`` (its log beside it), stopped on exit. With
    ``request``, a failing test's report ends with the node's log. A test that calls it should
    request the ``ganache_installed`` fixture."""
    node = Ganache(directory / "chain", log_path=directory / "ganache.log", **options)
    if request is not None:
        request.node.stash.setdefault(_NODES, []).append(node)
    async with node:
        yield node


@pytest.fixture
async def ganache(
    ganache_installed: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Ganache]:
    """A fresh node: deterministic accounts, blocks mined only on demand."""
    async with running_ganache(tmp_path, request) as node:
        yield node


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    fold_skip(report, ganache_missing(), require_ganache)
    if report.failed:
        for node in item.stash.get(_NODES, []):
            report.sections.append((f"ganache log: {node.log_path}", node.log_tail(60)))
    return report
