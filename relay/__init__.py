"""relay: a Trio WebSocket fan-out relay.

One upstream connection per source, normalized and sequenced messages, fanned out to many
clients with explicit backpressure. Embed it in a Trio program (docs/embedding.md)::

    from relay import load_config, open_relay

    async with open_relay(load_config("relay.toml")) as relay:
        await relay.publish("app:alerts:disk", {"used": "91%"})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.config import ConfigError, RelayConfig, demo_config, load_config, parse_config
    from relay.embed import EmbeddedRelay, open_relay
    from relay.server.relay import Relay

__all__ = [
    "ConfigError",
    "EmbeddedRelay",
    "Relay",
    "RelayConfig",
    "demo_config",
    "load_config",
    "open_relay",
    "parse_config",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the sans-IO core does not import the Trio shell.
    if name == "Relay":
        from relay.server.relay import Relay

        return Relay
    if name in ("open_relay", "EmbeddedRelay"):
        from relay import embed

        return getattr(embed, name)
    if name in __all__:
        from relay import config

        return getattr(config, name)
    raise AttributeError(name)
