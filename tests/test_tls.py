"""TLS on the relay's port without the network: the ``[server.tls]`` table and its checks,
relative paths, reloading the certificate, and the handshake deadline on trio's MockClock over
memory streams (certificates from trustme)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization

from relay.config import ConfigError, TlsConfig, load_config, parse_config
from relay.server.relay import Relay
from tests.certs import Certificates, issue

HANDSHAKE_TIMEOUT = 5.0


def config_with(tls: dict[str, Any], **server: Any) -> dict[str, Any]:
    return {
        "server": {"handshake_timeout": HANDSHAKE_TIMEOUT, "tls": tls, **server},
        "auth": {"required": False},
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value).splitlines()


# --------------------------------------------------------------------------------------------
# Configuration


def test_a_valid_pair_loads(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    config = parse_config(config_with(certs.tls))
    assert config.server.tls == TlsConfig(str(certs.certificate), str(certs.private_key))


def test_both_keys_are_required(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    assert problems(config_with({"certificate": str(certs.certificate)})) == [
        "server.tls.private_key: required key missing"
    ]
    assert problems(config_with({"certificate": "", "private_key": ""})) == [
        "server.tls.certificate: must not be empty",
        "server.tls.private_key: must not be empty",
    ]


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    missing = tmp_path / "missing.pem"
    lines = problems(config_with({**certs.tls, "private_key": str(missing)}))
    assert lines == [f"server.tls.private_key: cannot read '{missing}': No such file or directory"]


def test_a_certificate_file_without_a_certificate(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    lines = problems(config_with({**certs.tls, "certificate": str(certs.private_key)}))
    assert len(lines) == 1
    assert lines[0].startswith("server.tls.certificate: no PEM certificate in")


def test_a_key_of_another_certificate(tmp_path: Path) -> None:
    certs, other = issue(tmp_path), issue(tmp_path, "other")
    lines = problems(config_with({**certs.tls, "private_key": str(other.private_key)}))
    assert lines == [
        f"server.tls.private_key: '{other.private_key}' is not the key of the certificate in "
        f"'{certs.certificate}'"
    ]


def test_a_file_that_is_not_a_key(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    lines = problems(config_with({**certs.tls, "private_key": str(certs.certificate)}))
    assert len(lines) == 1
    assert lines[0].startswith(
        f"server.tls.private_key: no PEM private key in '{certs.certificate}'"
    )


def test_an_encrypted_key_is_refused_without_asking_for_a_passphrase(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    key = serialization.load_pem_private_key(certs.private_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    lines = problems(config_with({**certs.tls, "private_key": str(encrypted)}))
    assert lines == [
        f"server.tls.private_key: '{encrypted}' is encrypted; give the relay an unencrypted "
        "key file"
    ]


def test_relative_paths_are_relative_to_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "etc"
    issue(directory / "tls")
    (directory / "relay.toml").write_text(
        '[server.tls]\ncertificate = "tls/relay-cert.pem"\nprivate_key = "tls/relay-key.pem"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # not the file's directory
    config = load_config("etc/relay.toml")
    assert config.server.tls is not None
    assert config.server.tls.certificate == str(directory / "tls" / "relay-cert.pem")
    assert config.server.tls.private_key == str(directory / "tls" / "relay-key.pem")


def test_absolute_paths_and_wrong_types_are_left_alone(tmp_path: Path) -> None:
    certs = issue(tmp_path / "certs")
    path = tmp_path / "relay.toml"
    path.write_text(
        f'[server.tls]\ncertificate = "{certs.certificate}"\nprivate_key = "{certs.private_key}"\n',
        encoding="utf-8",
    )
    tls = load_config(path).server.tls
    assert tls is not None and tls.certificate == str(certs.certificate)
    path.write_text('[server.tls]\ncertificate = 1\nprivate_key = "k.pem"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"server\.tls\.certificate: expected a string, got 1"):
        load_config(path)


def test_trusted_proxies_are_addresses_or_networks() -> None:
    config = parse_config({"server": {"trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "::1"]}})
    assert config.server.trusted_proxies == ["127.0.0.1", "10.0.0.0/8", "::1"]
    assert config.server.forwarded_header == "x-forwarded-for"
    lines = problems({"server": {"trusted_proxies": ["10.0.0.1/8", "proxy.example"]}})
    assert lines == [
        "server.trusted_proxies[0]: must be an IP address or network: 10.0.0.1/8 has host bits set",
        "server.trusted_proxies[1]: must be an IP address or network: 'proxy.example' does not "
        "appear to be an IPv4 or IPv6 network",
    ]
    assert problems({"server": {"forwarded_header": "x-real-ip"}}) == [
        "server.forwarded_header: expected one of 'x-forwarded-for', 'forwarded', got 'x-real-ip'"
    ]


# --------------------------------------------------------------------------------------------
# Reload


def make_relay(certs: Certificates, **server: Any) -> Relay:
    return Relay(parse_config(config_with(certs.tls, **server)))


def tls_config(certs: Certificates) -> TlsConfig:
    return TlsConfig(str(certs.certificate), str(certs.private_key))


def test_reload_replaces_the_context_and_a_bad_file_keeps_the_old_one(tmp_path: Path) -> None:
    first, second = issue(tmp_path, "first"), issue(tmp_path, "second")
    relay = make_relay(first)
    before = relay._tls
    checked = tls_config(second)
    relay.reload_tls(checked)
    reloaded = relay._tls
    assert reloaded is not None and reloaded is not before
    # The files change on disk after they were checked: the reload refuses them, keeps serving.
    second.private_key.write_bytes(first.private_key.read_bytes())
    with pytest.raises(ConfigError) as caught:
        relay.reload_tls(checked)
    assert [issue.path for issue in caught.value.issues] == ["server.tls.private_key"]
    assert relay._tls is reloaded


def test_reload_cannot_turn_tls_on(tmp_path: Path) -> None:
    relay = Relay(parse_config({"auth": {"required": False}}))
    with pytest.raises(ConfigError, match=r"server\.tls: this relay serves without TLS"):
        relay.reload_tls(tls_config(issue(tmp_path)))
    assert relay._tls is None


def test_files_gone_between_loading_and_starting_are_named_under_server_tls(
    tmp_path: Path,
) -> None:
    certs = issue(tmp_path)
    config = parse_config(config_with(certs.tls))
    certs.certificate.unlink()
    with pytest.raises(ConfigError) as caught:
        Relay(config)
    assert [issue.path for issue in caught.value.issues] == ["server.tls.certificate"]


# --------------------------------------------------------------------------------------------
# The handshake deadline, on MockClock


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def closed_at(stream: trio.abc.ReceiveStream) -> float:
    """When the relay closed the connection (reading and dropping whatever came first); fails
    if it keeps it open for a minute."""
    with trio.fail_after(60):
        while True:
            try:
                if not await stream.receive_some():
                    break
            except trio.BrokenResourceError:
                break
    return trio.current_time()


async def test_a_stalled_tls_handshake_is_cut_at_the_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    relay = make_relay(issue(tmp_path))
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server)
    await client.send_all(b"\x16\x03\x01")  # the start of a ClientHello, and no more
    assert await closed_at(client) == HANDSHAKE_TIMEOUT


async def test_the_tls_handshake_counts_against_the_same_deadline_as_the_head(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    certs = issue(tmp_path)
    relay = make_relay(certs)
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server)
    secure = trio.SSLStream(client, certs.client_context(), server_hostname="127.0.0.1")
    await trio.sleep(3.0)
    await secure.do_handshake()
    await secure.send_all(UPGRADE[:20])  # the rest of the head never comes
    assert await closed_at(secure) == HANDSHAKE_TIMEOUT


async def test_an_upgrade_over_tls_within_the_deadline_is_served(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    certs = issue(tmp_path)
    relay = make_relay(certs)
    nursery.start_soon(relay.rounds.run)
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server)
    secure = trio.SSLStream(client, certs.client_context(), server_hostname="127.0.0.1")
    await secure.send_all(UPGRADE)
    answer = b""
    while b"welcome" not in answer:
        answer += await secure.receive_some()
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert len(relay.sessions) == 1
    await secure.aclose()


async def test_a_failed_tls_handshake_is_logged_at_debug_and_contained(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    certs = issue(tmp_path)
    relay = make_relay(certs)
    caplog.set_level(logging.DEBUG, logger="relay")
    # A plain HTTP request to the TLS port, then a client that does not trust the CA.
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server)
    await client.send_all(UPGRADE)
    assert await closed_at(client) == 0.0
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(relay._handle_tcp, server)
    untrusting = trio.SSLStream(client, ssl.create_default_context(), server_hostname="127.0.0.1")
    with pytest.raises(trio.BrokenResourceError) as caught:
        await untrusting.do_handshake()
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    await client.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == 0.0  # failed, not timed out
    failures = [r for r in caplog.records if r.getMessage().startswith("TLS handshake with")]
    assert len(failures) == 2
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in failures)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
