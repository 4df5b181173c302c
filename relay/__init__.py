"""relay: a Trio WebSocket fan-out relay.

One upstream connection per source, normalized and sequenced messages, fanned out to many
clients with explicit backpressure. Embed it in a Trio program::

    from relay import Relay, load_config

    async with trio.open_nursery() as nursery:
        port = await nursery.start(Relay(load_config("relay.toml")).serve)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.config import ConfigError, RelayConfig, demo_config, load_config, parse_config
    from relay.server.relay import Relay

__all__ = ["ConfigError", "Relay", "RelayConfig", "demo_config", "load_config", "parse_config"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the sans-IO core does not import the Trio shell.
    if name == "Relay":
        from relay.server.relay import Relay

        return Relay
    if name in __all__:
        from relay import config

        return getattr(config, name)
    raise AttributeError(name)
