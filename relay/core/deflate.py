"""permessage-deflate (RFC 7692): choosing what to answer a client's offer, inflating what it
sends under the message cap, and compressing each fan-out message once for every client.

The relay always answers with ``server_no_context_takeover``: every message it sends is then
compressed on its own, so one compressed frame is valid for every client that agreed to the
same window, and the fan-out compresses a message once per window size (in practice once),
never once per client. It asks for ``client_no_context_takeover`` too, so that a client's
messages are also compressed on their own and no inflate state has to outlive a message: an
idle connection holds no zlib object.

wsproto's :class:`~wsproto.extensions.PerMessageDeflate` does the framing (RSV1, the
``00 00 ff ff`` tail) and zlib the compressing; this module adds what wsproto leaves out: the
RFC's rules for offers, a bound on inflation (a compression bomb would otherwise be inflated
whole before any size check could run) and a compression level.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

import attrs
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from relay.core.channels import matches_any

NAME: Final = PerMessageDeflate.name

_WINDOW_BITS = re.compile(r'(?P<quote>"?)(?P<bits>9|1[0-5])(?P=quote)')
"""RFC 7692 section 7.1.2: a decimal integer from 8 to 15, without leading zeros, as a token or
a quoted string. 8 is declined: zlib cannot deflate with a window that small (it uses 9), and
wsproto refuses it for inflating."""

_NO_VALUE: Final = frozenset({"server_no_context_takeover", "client_no_context_takeover"})
_KNOWN: Final = _NO_VALUE | {"server_max_window_bits", "client_max_window_bits"}


@attrs.frozen
class CompressionPolicy:
    """Which messages the fan-out compresses, and how hard."""

    min_bytes: int = 128
    """Smaller messages go out plain: deflate's own framing eats the gain below this."""
    level: int = 1
    """zlib's level (see :class:`relay.config.CompressionConfig` for why 1)."""
    exclude: tuple[str, ...] = ()
    """Channel patterns (fnmatch) always sent plain: latency-critical channels."""

    def compresses(self, channel: str) -> bool:
        return not matches_any(channel, self.exclude)


def _parameters(offer: str) -> dict[str, str | None] | None:
    """An offer's parameters (quotes removed), or None when RFC 7692 says to decline it:
    an unknown or repeated parameter, or a value that is missing, extra or out of range."""
    found: dict[str, str | None] = {}
    for part in offer.split(";")[1:]:
        name, equals, value = (p.strip() for p in part.partition("="))
        if name not in _KNOWN or name in found:
            return None
        if not equals:
            if name == "server_max_window_bits":
                return None  # its value is required
            found[name] = None
            continue
        bits = _WINDOW_BITS.fullmatch(value)
        if name in _NO_VALUE or bits is None:
            return None
        found[name] = bits["bits"]
    return found


def negotiate(header: str | None, max_message_size: int) -> tuple[str, InboundDeflate] | None:
    """The answer to the first acceptable permessage-deflate offer of a
    ``Sec-WebSocket-Extensions`` header (the client lists them in its order of preference), and
    the extension that then reads the connection's frames; None to answer without it.

    An 8-bit window is declined (see ``_WINDOW_BITS``)."""
    if not header:
        return None
    for offer in header.split(","):
        if offer.partition(";")[0].strip() != NAME:
            continue
        parameters = _parameters(offer)
        if parameters is None:
            continue
        extension = InboundDeflate(max_message_size)
        normalized = "; ".join(
            [NAME, *(k if v is None else f"{k}={v}" for k, v in parameters.items())]
        )
        answer = extension.accept(normalized)
        if isinstance(answer, str):
            return f"{NAME}; {answer}", extension
    return None


class InboundDeflate(PerMessageDeflate):
    """A connection's permessage-deflate: inflates what the client sends, never more than
    ``max_message_size`` bytes of one message (1009 past it, the rest not inflated).

    The header-time size check of :mod:`relay.core.websocket` counts compressed bytes; this is
    the check of what they inflate to. wsproto inflates a frame's data in one unbounded call,
    so that call is replaced by one with ``max_length``; and it takes a ping amid a compressed
    message's frames for the message's end (python-hyper/wsproto#205), which is kept from it.
    The rest is wsproto's."""

    def __init__(self, max_message_size: int) -> None:
        super().__init__(client_no_context_takeover=True, server_no_context_takeover=True)
        self.max_message_size = max_message_size
        self._inflated = 0
        """What the compressed message being received has inflated to so far."""

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        decompressor = self._decompressor
        if decompressor is None or not (self._inbound_compressed and self._inbound_is_compressible):
            return data  # a message sent plain, or a control frame amid a compressed one
        room = self.max_message_size - self._inflated
        try:
            # One byte over the room is enough to know; zlib keeps the rest uninflated.
            inflated = decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        return self._counted(inflated)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self._inbound_compressed and not self._inbound_is_compressible:
            # A ping or pong amid a compressed message's frames (RFC 6455 section 5.4): the
            # message goes on after it. wsproto would forget here that it is compressed, and
            # pass its next frames on uninflated.
            return None
        tail = super().frame_inbound_complete(proto, fin)
        if not isinstance(tail, bytes):
            return tail  # no compressed message ended with this frame
        counted = self._counted(tail)
        self._inflated = 0  # the next message starts from nothing
        return counted

    def _counted(self, inflated: bytes) -> bytes | CloseReason:
        self._inflated += len(inflated)
        if self._inflated > self.max_message_size:
            return CloseReason.MESSAGE_TOO_BIG
        return inflated


class _LeveledDeflate(PerMessageDeflate):
    """wsproto's extension compressing at a chosen zlib level (wsproto's own is always 6): it
    sets up the compressor wsproto would, before each message, with the level."""

    def __init__(self, level: int) -> None:
        super().__init__(server_no_context_takeover=True)
        self.level = level

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if self._compressor is None:  # a new message (no context is taken over)
            bits = self.server_max_window_bits
            self._compressor = zlib.compressobj(self.level, zlib.DEFLATED, -bits)
        return super().frame_outbound(proto, opcode, rsv, data, fin)


class CompressedFramer:
    """Compressed server text frames, by the window the client agreed to.

    Server frames are unmasked and, with ``server_no_context_takeover``, each message is
    compressed on its own: one frame serves every client with that window. One wsproto
    connection per window size frames them, as :class:`relay.core.hub.Framer` does plain ones.
    """

    def __init__(self, level: int) -> None:
        self.level = level
        self._by_bits: dict[int, Connection] = {}

    def text(self, payload: bytes, window_bits: int) -> bytes:
        connection = self._by_bits.get(window_bits)
        if connection is None:
            extension = _LeveledDeflate(self.level)
            extension.accept(f"{NAME}; server_max_window_bits={window_bits}")
            connection = Connection(ConnectionType.SERVER, extensions=[extension])
            self._by_bits[window_bits] = connection
        return connection.send(TextMessage(data=payload.decode()))
