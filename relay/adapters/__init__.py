"""Every kind of source the relay can connect to, in one registry.

The configuration's list of kinds is derived from :data:`SOURCE_KINDS`, so adding a kind is
adding its adapter module and one entry here; nothing else in the relay names a kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from relay.adapters.base import Adapter
from relay.adapters.sim import SimAdapter

if TYPE_CHECKING:
    from relay.config import SourceConfig


@attrs.frozen
class SourceKind:
    """One kind of upstream: how to build its adapter from a source's configuration."""

    name: str
    build: Callable[[str, SourceConfig], Adapter]
    """``build(source_name, config)``: the adapter for one configured source."""


def _sim(name: str, config: SourceConfig) -> Adapter:
    return SimAdapter(name, config.symbols, config.heartbeat_interval, config.rest_url)


SOURCE_KINDS: dict[str, SourceKind] = {kind.name: kind for kind in (SourceKind("sim", _sim),)}


def make_adapter(name: str, config: SourceConfig) -> Adapter:
    """The adapter for a configured source (its kind was validated with the configuration)."""
    return SOURCE_KINDS[config.kind].build(name, config)
