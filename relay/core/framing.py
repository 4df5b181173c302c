"""How a subscriber takes its frames, as the one integer the hub keys its shared frames by.

Each message is encoded once; each framing in use on its channel then makes one frame of it,
shared by every subscriber with that framing: the relay's JSON in a plain WebSocket frame, the
same compressed with one server window size, or a Socket.IO packet, in a WebSocket frame or bare
for a long-polling response.
"""

from __future__ import annotations

from typing import Final

PLAIN: Final = 0
"""The relay's protocol in plain WebSocket text frames. 8 to 15: the same, compressed by
permessage-deflate with that server window size (:mod:`relay.core.deflate`)."""
SOCKETIO_WEBSOCKET: Final = 64
"""Socket.IO packets in WebSocket text frames."""
SOCKETIO_POLLING: Final = 65
"""Bare Socket.IO packets (Engine.IO messages), for long-polling responses."""


def is_socketio(framing: int) -> bool:
    return framing >= SOCKETIO_WEBSOCKET
