"""The client address behind trusted proxies: examples, then properties over generated proxy
chains and hostile headers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.forwarded import TrustedProxies, forwarded_for, parse_address

PROXY = "10.0.0.5"
INNER = "10.1.2.3"
CLIENT = "203.0.113.7"
FORGED = "198.51.100.66"

trusted = TrustedProxies.parse(["10.0.0.0/8", "::1"])
trusted_rfc7239 = TrustedProxies.parse(["10.0.0.0/8", "::1"], "forwarded")


def xff(value: str, peer: str = PROXY) -> str:
    return trusted.client_address(peer, {"x-forwarded-for": value})


def fwd(value: str, peer: str = PROXY) -> str:
    return trusted_rfc7239.client_address(peer, {"forwarded": value})


# --------------------------------------------------------------------------------------------
# Examples


def test_the_nearest_untrusted_hop_is_the_client() -> None:
    assert xff(CLIENT) == CLIENT
    assert xff(f"{CLIENT}, {INNER}") == CLIENT  # through two proxies of ours
    assert xff(f"{FORGED}, {CLIENT}") == CLIENT  # what the client wrote itself is ignored
    assert xff(f"{FORGED},{CLIENT} , {INNER}") == CLIENT


def test_every_hop_trusted_gives_the_leftmost() -> None:
    assert xff(f"{INNER}, 10.9.9.9") == INNER


def test_the_header_is_ignored_from_an_untrusted_peer() -> None:
    assert xff(CLIENT, peer=FORGED) == FORGED
    assert xff(CLIENT, peer="unknown") == "unknown"
    assert TrustedProxies.parse([]).client_address(PROXY, {"x-forwarded-for": CLIENT}) == PROXY


def test_without_the_header_the_peer_is_the_client() -> None:
    assert trusted.client_address(PROXY, {}) == PROXY
    # Only the configured header is read: the other one may be the client's own.
    assert trusted.client_address(PROXY, {"forwarded": f"for={CLIENT}"}) == PROXY
    assert trusted_rfc7239.client_address(PROXY, {"x-forwarded-for": CLIENT}) == PROXY


@pytest.mark.parametrize(
    "value",
    ["", " ", "garbage", f"{CLIENT}, nonsense", "unknown", "300.1.1.1", f"{CLIENT};x", ","],
)
def test_an_unreadable_hop_where_one_must_be_read_gives_the_peer(value: str) -> None:
    assert xff(value) == PROXY


def test_garbage_left_of_the_client_does_not_matter() -> None:
    assert xff(f"garbage, {CLIENT}") == CLIENT


def test_ports_brackets_and_ipv6() -> None:
    assert xff(f"{CLIENT}:4711") == CLIENT
    assert xff("[2001:db8::1]:4711") == "2001:db8::1"
    assert xff("2001:DB8::1") == "2001:db8::1"
    assert xff(CLIENT, peer="::1") == CLIENT
    # A dual-stack listener sees IPv4 peers as mapped IPv6 addresses.
    assert xff(CLIENT, peer=f"::ffff:{PROXY}") == CLIENT
    assert xff(f"::ffff:{CLIENT}") == CLIENT
    assert xff("[203.0.113.7]") == PROXY  # brackets are for IPv6


def test_forwarded_rfc7239() -> None:
    assert fwd(f"for={CLIENT}") == CLIENT
    assert fwd(f'for={FORGED}, for="{CLIENT}:4711";proto=https;by={PROXY}') == CLIENT
    assert fwd('For="[2001:db8:cafe::17]:4711"') == "2001:db8:cafe::17"
    assert fwd(f"for={CLIENT}, for={INNER}") == CLIENT
    assert fwd(f"proto=https;for={CLIENT} , for={INNER}") == CLIENT


@pytest.mark.parametrize(
    "value",
    [
        "for=unknown",
        "for=_hidden",
        f"proto=https, for={INNER}",  # the hop left of ours says nothing of the client
        f'for="{CLIENT}',  # an unclosed quote: nothing can be attributed to a hop
        f"for={CLIENT} for={INNER}",
        f"for={CLIENT},,for={INNER}",
        f"{CLIENT}",
        "",
    ],
)
def test_forwarded_that_cannot_be_read_gives_the_peer(value: str) -> None:
    assert fwd(value) == PROXY


def test_forwarded_syntax() -> None:
    assert forwarded_for('for="a\\"b";by=x, proto=h') == ['a"b', None]
    assert forwarded_for('for="a,b"') == ["a,b"]
    assert forwarded_for("for=a;") is None
    assert forwarded_for("=a") is None


def test_parse_address() -> None:
    assert parse_address(" 192.0.2.1 ") == ipaddress.ip_address("192.0.2.1")
    assert parse_address("192.0.2.1:99999") is None
    assert parse_address("[::1]:80") == ipaddress.ip_address("::1")
    assert parse_address("example.com") is None


def test_every_port_up_to_65535_is_read_and_none_above() -> None:
    assert parse_address("192.0.2.1:65535") == ipaddress.ip_address("192.0.2.1")
    assert parse_address("[::1]:65535") == ipaddress.ip_address("::1")
    assert parse_address("192.0.2.1:65536") is None
    assert parse_address("[::1]:65536") is None


def test_parse_keeps_the_header_it_is_given() -> None:
    proxies = TrustedProxies.parse(["10.0.0.0/8"], "forwarded")
    assert proxies.header == "forwarded"
    assert proxies.client_address(PROXY, {"forwarded": f"for={CLIENT}"}) == CLIENT
    assert proxies.client_address(PROXY, {"x-forwarded-for": CLIENT}) == PROXY
    assert TrustedProxies.parse(["10.0.0.0/8"]).header == "x-forwarded-for"


def test_parse_refuses_what_is_not_a_network() -> None:
    with pytest.raises(ValueError):
        TrustedProxies.parse(["10.0.0.1/8"])
    with pytest.raises(ValueError):
        TrustedProxies.parse(["proxy.example"])
    with pytest.raises(ValueError, match=r"^unknown forwarding header 'x-real-ip'$"):
        TrustedProxies.parse([], "x-real-ip")


# --------------------------------------------------------------------------------------------
# Properties

ipv4 = st.ip_addresses(v=4)
ip = st.ip_addresses()
trusted_hop = st.builds(
    lambda n: ipaddress.ip_address(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"),
    st.integers(0, 2**24 - 1),
)
untrusted_hop = ip.filter(lambda a: not trusted.trusts(a) and not _mapped(a))


def _mapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None


def written(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(address)


hostile = st.one_of(
    st.text(max_size=30),
    ip.map(str),
    st.sampled_from(['"', ",", ";", "for=", "unknown", "[::1", 'for="1.2.3.4']),
)


@given(
    forged=st.lists(hostile, max_size=5),
    client=untrusted_hop,
    proxies=st.lists(trusted_hop, max_size=4),
)
def test_an_address_the_client_prepends_never_wins(
    forged: list[str],
    client: ipaddress.IPv4Address | ipaddress.IPv6Address,
    proxies: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> None:
    """Whatever the client sends in the header, our proxies append its real address and then
    their own: the relay finds the real one."""
    hops = [*forged, str(client), *map(written, proxies)]
    assert xff(", ".join(hops)) == str(client)


@given(
    forged=st.lists(st.one_of(ip.map(str), st.sampled_from(["unknown", "_x"])), max_size=5),
    client=untrusted_hop,
    proxies=st.lists(trusted_hop, max_size=4),
)
def test_an_address_the_client_prepends_never_wins_rfc7239(
    forged: list[str],
    client: ipaddress.IPv4Address | ipaddress.IPv6Address,
    proxies: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> None:
    def element(address: str) -> str:
        return f'for="[{address}]"' if ":" in address else f"for={address}"

    hops = [*forged, str(client), *map(written, proxies)]
    assert fwd(", ".join(element(h) for h in hops)) == str(client)


@given(
    peer=ip, value=st.text(max_size=60), header=st.sampled_from(["x-forwarded-for", "forwarded"])
)
def test_the_answer_is_the_peer_or_a_hop_of_the_header(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, value: str, header: str
) -> None:
    proxies = TrustedProxies.parse(["0.0.0.0/0", "::/0"], header)
    answer = proxies.client_address(str(peer), {header: value})
    if answer == str(peer):
        return
    hops = value.split(",") if header == "x-forwarded-for" else forwarded_for(value)
    assert hops is not None
    assert any(h is not None and str(parse_address(h)) == answer for h in hops)


@given(peer=ip.filter(lambda a: not trusted.trusts(a)), value=st.text(max_size=60))
def test_an_untrusted_peer_is_always_the_client(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, value: str
) -> None:
    if _mapped(peer):
        return
    assert xff(value, peer=str(peer)) == str(peer)
    assert fwd(value, peer=str(peer)) == str(peer)
