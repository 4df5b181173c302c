"""Which address a client connects from, when reverse proxies stand in between.

Behind a proxy the TCP peer is the proxy. A proxy appends the address it received the request
from to ``X-Forwarded-For`` (or a ``for=`` element to ``Forwarded``, RFC 7239), so the header
lists every hop, the nearest last; anything to the left of what the proxies themselves wrote
came from the client and may be forged. :class:`TrustedProxies` therefore believes the header
only from a peer it trusts, and reads it from the right: each trusted address is a proxy of
ours and is skipped, the first untrusted one is the client (if every address is trusted, the
leftmost). A value it cannot read where it has to read one means the peer's address is used:
garbage is never trusted, and never crashes the front door.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["TrustedProxies", "forwarded_for", "parse_address", "x_forwarded_for"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PAIR = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*")
_IPV4_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})")
_BRACKETED = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?")


def parse_address(text: str) -> Address | None:
    """One hop's address as proxies write it: ``192.0.2.7``, ``192.0.2.7:4711``,
    ``2001:db8::1``, ``[2001:db8::1]`` or ``[2001:db8::1]:4711``; None for anything else (RFC
    7239's ``unknown`` and obfuscated identifiers included). IPv4-mapped IPv6 addresses are
    their IPv4 address, as a dual-stack socket reports IPv4 peers that way."""
    text = text.strip()
    bracketed = _BRACKETED.fullmatch(text)
    match = bracketed or _IPV4_PORT.fullmatch(text)
    if match is not None:
        text, port = match[1], match[2]
        if port is not None and int(port) > 65535:
            return None
        if bracketed and ":" not in text:
            return None  # brackets are for IPv6 only
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def x_forwarded_for(value: str) -> list[str]:
    """The hops of an ``X-Forwarded-For`` value, left to right, unparsed."""
    return value.split(",")


def forwarded_for(value: str) -> list[str | None] | None:
    """The ``for=`` value of each element of a ``Forwarded`` value, left to right (None for an
    element without one); None when the value is not RFC 7239 syntax at all (then nothing in
    it can be attributed to a hop: a quote or a comma may have been forged anywhere)."""
    hops: list[str | None] = []
    position, end = 0, len(value)
    while True:
        found: str | None = None
        while True:  # the pairs of one element, separated by ";"
            pair = _PAIR.match(value, position)
            if pair is None:
                return None
            position = pair.end()
            if pair[1].lower() == "for":
                raw = pair[2]
                found = _unquote(raw) if raw.startswith('"') else raw
            if position < end and value[position] == ";":
                position += 1
                continue
            break
        hops.append(found)
        if position == end:
            return hops
        if value[position] != ",":
            return None
        position += 1


def _unquote(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])


@attrs.frozen
class TrustedProxies:
    """The proxies whose forwarding header is believed, and the header they set."""

    networks: tuple[Network, ...]
    header: str = "x-forwarded-for"
    """``x-forwarded-for`` or ``forwarded``: the one header these proxies write. Reading one
    header only matters: a proxy that sets one passes the other through as the client wrote
    it."""

    @classmethod
    def parse(cls, proxies: Iterable[str], header: str = "x-forwarded-for") -> TrustedProxies:
        """From addresses and networks as the configuration gives them (``10.0.0.0/8``);
        raises ValueError for one that is neither."""
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(f"unknown forwarding header {header!r}")
        return cls(tuple(ipaddress.ip_network(p) for p in proxies), header)

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client_address(self, peer: str, headers: Mapping[str, str]) -> str:
        """The client's address: ``peer`` itself, unless ``peer`` is a trusted proxy that gave
        a readable address in its header (``headers``: lower-case names, repeated headers
        joined with ", "). Always ``peer`` or the normalized text of one of the header's hops.
        """
        value = headers.get(self.header)
        if value is None or not self.networks or not self.trusts(parse_address(peer)):
            return peer
        hops = x_forwarded_for(value) if self.header == "x-forwarded-for" else forwarded_for(value)
        if not hops:
            return peer
        leftmost: Address | None = None
        for hop in reversed(hops):
            address = None if hop is None else parse_address(hop)
            if address is None:
                return peer  # a hop a trusted proxy wrote, or the first untrusted one, unreadable
            if not self.trusts(address):
                return str(address)
            leftmost = address
        return str(leftmost)
