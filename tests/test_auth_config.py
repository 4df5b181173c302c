"""``[auth]`` key_file and ``[auth.jwt]``: validated at load with one line per mistake, file keys
relative to the configuration file, and key material read (and refused) when the relay starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from relay.config import ConfigError, load_config, parse_config
from relay.server.credentials import load_credentials
from relay.server.relay import Relay

SECRET = "s" * 32


def jwt_config(**jwt: Any) -> dict[str, Any]:
    return {"auth": {"jwt": jwt}, "tiers": {"default": {}}}


@pytest.mark.parametrize(
    ("jwt", "line"),
    [
        ({"algorithms": []}, "auth.jwt.algorithms: must not be empty"),
        (
            {"algorithms": ["HS256", "none"], "secret": SECRET},
            "auth.jwt.algorithms[1]: must be one of HS256, HS384, HS512, RS256, RS384, RS512, "
            "got 'none'",
        ),
        ({}, "auth.jwt.secret: secret or secret_file is required for HS algorithms"),
        (
            {"secret": SECRET, "secret_file": "f"},
            "auth.jwt.secret: give secret or secret_file, not both",
        ),
        ({"secret": "short"}, "auth.jwt.secret: must be at least 32 bytes"),
        ({"algorithms": ["RS256"]}, "auth.jwt.public_key_file: is required for RS algorithms"),
        (
            {"algorithms": ["RS256"], "public_key_file": "k.pem", "secret": SECRET},
            "auth.jwt.secret: is only used with HS algorithms",
        ),
        (
            {"secret": SECRET, "public_key_file": "k.pem"},
            "auth.jwt.public_key_file: is only used with RS algorithms",
        ),
        ({"secret": SECRET, "leeway": -1}, "auth.jwt.leeway: must be 0 or greater, got -1.0"),
        ({"secret": SECRET, "issuer": ""}, "auth.jwt.issuer: must not be empty"),
        (
            {"secret": SECRET, "default_tier": "gold"},
            "auth.jwt.default_tier: unknown tier 'gold' (defined: default)",
        ),
        ({"secret": SECRET, "colour": 1}, "unknown key 'auth.jwt.colour'"),
    ],
)
def test_jwt_mistakes_are_one_clear_line_each(jwt: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(jwt_config(**jwt))
    assert str(caught.value) == line
    assert SECRET not in str(caught.value) and "short" not in str(caught.value)


def test_an_empty_key_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"auth\.key_file: must not be empty"):
        parse_config({"auth": {"key_file": ""}})


def _write_rsa_public(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def test_jwt_files_are_relative_to_the_configuration_and_read_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    _write_rsa_public(tmp_path / "public.pem")
    config_path = tmp_path / "relay.toml"
    config_path.write_text(
        '[auth.jwt]\nalgorithms = ["HS256", "RS256"]\nsecret_file = "secret"\n'
        'public_key_file = "public.pem"\n[tiers.default]\n'
    )
    monkeypatch.chdir("/")
    config = load_config(config_path)
    assert config.auth.jwt is not None
    assert config.auth.jwt.secret_file == str(tmp_path / "secret")
    assert config.auth.jwt.public_key_file == str(tmp_path / "public.pem")
    verifier = load_credentials(config).jwt
    assert verifier is not None and verifier.secret == SECRET.encode()
    assert isinstance(verifier.public_key, rsa.RSAPublicKey)


def test_absolute_file_keys_are_kept(tmp_path: Path) -> None:
    config_path = tmp_path / "relay.toml"
    config_path.write_text('[auth]\nkey_file = "/etc/relay/keys.toml"\n')
    assert load_config(config_path).auth.key_file == "/etc/relay/keys.toml"


def test_bad_key_material_is_a_config_error_when_the_relay_starts(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("too short")
    (tmp_path / "junk.pem").write_text("not a key")
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "ec.pem").write_bytes(
        ec_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    cases = {
        "short": ("auth.jwt.secret_file: must hold at least 32 bytes", {"secret_file": "short"}),
        "missing": (
            "auth.jwt.public_key_file: cannot read",
            {"algorithms": ["RS256"], "public_key_file": "nowhere.pem"},
        ),
        "junk": (
            "is not a PEM public key",
            {"algorithms": ["RS256"], "public_key_file": "junk.pem"},
        ),
        "ec": ("is not an RSA key", {"algorithms": ["RS256"], "public_key_file": "ec.pem"}),
    }
    for expected, jwt in cases.values():
        jwt = {k: str(tmp_path / v) if k.endswith("_file") else v for k, v in jwt.items()}
        config = parse_config(jwt_config(**jwt))
        with pytest.raises(ConfigError, match=expected):
            Relay(config)
