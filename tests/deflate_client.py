"""The client side of a permessage-deflate the relay agreed to, for tests that read the
relay's compressed frames."""

from __future__ import annotations

from wsproto.extensions import Extension, PerMessageDeflate


def agreed_deflate(bits: int) -> list[Extension]:
    """A client's extensions once permessage-deflate was agreed with ``bits`` as the server
    window and no server context takeover, as the relay always answers; none for 0 (a client
    that did not offer it)."""
    if not bits:
        return []
    extension = PerMessageDeflate()
    extension.finalize(
        f"permessage-deflate; server_no_context_takeover; server_max_window_bits={bits}"
    )
    return [extension]
