"""Tests that need a tool installed apart from the Python packages (ganache, Node's ws): they
skip where it is missing, saying how to install it, and fail in CI, where a missing install
step must not pass unnoticed."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(missing: str | None, tests: str) -> None:
    """Skip the calling test when ``missing`` says why it cannot run here (fail it in CI, as
    one of ``tests``); do nothing when it is None."""
    if missing is None:
        return
    if in_ci():
        pytest.fail(f"{missing} (CI must run the {tests})", pytrace=False)
    pytest.skip(missing)


def fold_skip(report: pytest.TestReport, missing: str | None, where: Callable[[], None]) -> None:
    """Report a skip for ``missing`` at the function ``where`` that raised it, so that pytest
    gives all of them one summary line, where it would give one per test."""
    if missing is None or not report.skipped or not isinstance(report.longrepr, tuple):
        return
    if report.longrepr[2].endswith(missing):
        code = where.__code__
        report.longrepr = (code.co_filename, code.co_firstlineno, missing)
