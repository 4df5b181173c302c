"""Whether the tests run in CI, where a test that needs a tool missing here fails instead of
skipping: a missing install step must not pass unnoticed."""

from __future__ import annotations

import os


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
