"""A Trio client for the relay that never silently loses its place (docs/client.md)."""

from relay.client.buffer import BufferPolicy
from relay.client.connection import ClientRefused, RelayClient, open_client
from relay.client.events import ClientEvent, Data, Gap, ServerError, Snapshot, Status

__all__ = [
    "BufferPolicy",
    "ClientEvent",
    "ClientRefused",
    "Data",
    "Gap",
    "RelayClient",
    "ServerError",
    "Snapshot",
    "Status",
    "open_client",
]
