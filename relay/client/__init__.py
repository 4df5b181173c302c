"""A Trio client for the relay that never silently loses its place (docs/client.md)."""

from relay.client.buffer import BufferPolicy
from relay.client.connection import ClientRefused, ClientUnreachable, RelayClient, open_client
from relay.client.events import ClientEvent, Data, Gap, ServerError, Snapshot, Status, Subscribed

__all__ = [
    "BufferPolicy",
    "ClientEvent",
    "ClientRefused",
    "ClientUnreachable",
    "Data",
    "Gap",
    "RelayClient",
    "ServerError",
    "Snapshot",
    "Status",
    "Subscribed",
    "open_client",
]
