"""Configuration problems, kept structured: every class that checks its own values reports
them as :class:`Issue` s, so that a nested table's problems get their dotted path prefixed.

A module of its own because adapters describe their own configuration tables (the generic
adapter's, for one), and the configuration module imports the adapters.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

UNKNOWN_KEY = "unknown key"


@attrs.frozen
class Issue:
    """One problem in a configuration, kept structured so nested paths can be prefixed."""

    path: str
    """Dotted path of the offending key (``sources.sim.backoff_cap``); empty for the whole file."""
    message: str

    def __str__(self) -> str:
        if self.message == UNKNOWN_KEY:
            return f"{UNKNOWN_KEY} '{self.path}'"
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """An invalid configuration; the message lists every problem found, one per line.

    A ValueError so that callers that already treat bad input as ValueError keep working.
    """

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def raise_issues(issues: list[Issue]) -> None:
    """Raise the issues found, if any, as one ConfigError."""
    if issues:
        raise ConfigError(issues)
