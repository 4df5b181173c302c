"""The generic adapter's specifications as the tests use them: the synthetic market's
(``examples/json-sim.toml``, the configuration shown in the docs) and loading a ``[json]``
table the way the configuration does, so a bad table fails with the same issue lines."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cattrs

import relay.config
from relay.adapters.generic import GenericJsonAdapter, JsonSpec
from relay.adapters.sim import SimAdapter
from relay.issues import ConfigError

SIM_TOML = Path(__file__).parents[3] / "examples" / "json-sim.toml"


def sim_document() -> dict[str, Any]:
    """The whole configuration file (``[sources.sim]`` with kind "json")."""
    with SIM_TOML.open("rb") as f:
        return tomllib.load(f)


def sim_table() -> dict[str, Any]:
    """A fresh copy of its ``[sources.sim.json]`` table, to change at will."""
    return copy.deepcopy(sim_document()["sources"]["sim"]["json"])


def load_spec(table: Mapping[str, Any]) -> JsonSpec:
    """Structure a ``[json]`` table with the configuration's own converter; problems come out as
    the configuration reports them, with paths relative to the table."""
    try:
        spec: JsonSpec = relay.config._converter.structure(table, JsonSpec)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise ConfigError(relay.config._issues_from(exc)) from None
    return spec


def issue_lines(table: Mapping[str, Any]) -> list[str]:
    """The lines of the ConfigError a table fails with."""
    try:
        load_spec(table)
    except ConfigError as exc:
        return str(exc).splitlines()
    raise AssertionError("the table was accepted")


def sim_pair(
    symbols: Sequence[str], rest_url: str | None = "http://127.0.0.1:8766", source: str = "sim"
) -> tuple[SimAdapter, GenericJsonAdapter]:
    """The built-in adapter and the generic one configured from ``examples/json-sim.toml``,
    side by side."""
    return (
        SimAdapter(source, symbols, 1.0, rest_url),
        GenericJsonAdapter(source, load_spec(sim_table()), symbols, 1.0, rest_url),
    )
