"""Resolving a presented credential (relay.core.credentials): API keys by hash, JWTs verified with
the configured algorithms and key only, time checks against the ``now`` passed in, and renewal
after a reload. No clock, no I/O: every case is a call."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.credentials import (
    JWT_ALGORITHMS,
    Credentials,
    Grant,
    JwtVerifier,
    StoredKey,
    hash_secret,
)
from relay.core.protocol import Refusal

SECRET = b"0123456789abcdef0123456789abcdef-hs256"
NOW = 1_800_000_000.0
TIERS = ("default", "pro")

PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC = PRIVATE.public_key()
PUBLIC_PEM = PUBLIC.public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)

ALICE = "rk_alice-secret"
KEYS = [
    StoredKey("alice", "pro", hash_secret(ALICE)),
    StoredKey("bob", "default", hash_secret("b")),
]


def verifier(**overrides: Any) -> JwtVerifier:
    options: dict[str, Any] = {
        "algorithms": ("HS256", "RS256"),
        "secret": SECRET,
        "public_key": PUBLIC,
        "leeway": 5.0,
    }
    options.update(overrides)
    return JwtVerifier(**options)


def credentials(anonymous: str | None = None, **jwt_options: Any) -> Credentials:
    return Credentials(KEYS, TIERS, anonymous, verifier(**jwt_options))


def hs256(claims: dict[str, Any], key: bytes = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm="HS256", headers=headers or None)


def rs256(claims: dict[str, Any], key: rsa.RSAPrivateKey = PRIVATE) -> str:
    return jwt.encode(claims, key, algorithm="RS256")


def claims(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"sub": "carol", "exp": NOW + 60}
    out.update(overrides)
    return out


def refused(creds: Credentials, token: str | None, now: float = NOW) -> Refusal:
    with pytest.raises(Refusal) as caught:
        creds.resolve(token, now)
    return caught.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# API keys ----------------------------------------------------------------------------------


def test_hash_is_sha256_hex_with_its_prefix() -> None:
    digest = hash_secret("abc")
    assert digest == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_an_api_key_resolves_to_its_tier_and_name_and_its_identity_is_not_the_secret() -> None:
    grant = credentials().resolve(ALICE, NOW)
    assert (grant.tier, grant.name, grant.expires, grant.channels) == ("pro", "alice", None, ())
    assert ALICE not in grant.identity and ALICE not in repr(grant)
    assert grant.identity == f"key:{hash_secret(ALICE)}"
    assert not grant.is_token


def test_an_unknown_key_is_401_invalid_credentials() -> None:
    refusal = refused(credentials(), "rk_nobody")
    assert (refusal.status, refusal.code) == (401, "invalid_credentials")


def test_the_hash_itself_is_not_a_key() -> None:
    assert refused(credentials(), hash_secret(ALICE)).code == "invalid_credentials"


def test_no_credentials_is_401_missing_or_the_anonymous_tier() -> None:
    refusal = refused(credentials(), None)
    assert (refusal.status, refusal.code) == (401, "missing_credentials")
    assert refused(credentials(), "").code == "missing_credentials"
    grant = credentials(anonymous="default").resolve(None, NOW)
    assert (grant.identity, grant.tier) == ("anonymous", "default")


def test_a_key_whose_tier_is_not_defined_is_refused() -> None:
    creds = Credentials([StoredKey("x", "gone", hash_secret("x"))], TIERS, None)
    assert "tier" in refused(creds, "x").message


def test_two_keys_with_one_secret_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"^two keys with the same secret: 'b'$"):
        Credentials(
            [StoredKey("a", "pro", hash_secret("s")), StoredKey("b", "pro", hash_secret("s"))],
            TIERS,
            None,
        )


@settings(max_examples=200)
@given(
    secrets=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8, unique=True),
    presented=st.text(max_size=40),
)
def test_a_key_resolves_exactly_when_it_is_one_of_the_stored_secrets(
    secrets: list[str], presented: str
) -> None:
    stored = [StoredKey(f"k{i}", "default", hash_secret(s)) for i, s in enumerate(secrets)]
    creds = Credentials(stored, TIERS, None)
    if presented in secrets and "." not in presented:
        assert creds.resolve(presented, NOW).name == f"k{secrets.index(presented)}"
    elif presented not in secrets:
        with pytest.raises(Refusal):
            creds.resolve(presented, NOW)


# JWT ---------------------------------------------------------------------------------------


def test_an_hs256_token_grants_its_claims() -> None:
    token = hs256(claims(tier="pro", channels=["user:carol:*"]))
    grant = credentials().resolve(token, NOW)
    assert grant == Grant(
        "sub:carol", "pro", "carol", token, ("user:carol:*",), NOW + 60, NOW + 65, owner="carol"
    )
    assert grant.is_token and token not in repr(grant)


def test_an_rs256_token_grants_the_default_tier_without_a_tier_claim() -> None:
    grant = credentials(default_tier="pro").resolve(rs256(claims()), NOW)
    assert (grant.tier, grant.identity, grant.channels) == ("pro", "sub:carol", ())


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (hs256(claims(), key=b"another secret of at least 32 bytes!!"), "Signature verification"),
        (rs256(claims(), key=OTHER_PRIVATE), "Signature verification"),
        (jwt.encode(claims(), None, algorithm="none"), "'none' is not accepted"),
        (jwt.encode(claims(), SECRET * 2, algorithm="HS512"), "'HS512' is not accepted"),
        (hs256(claims(exp=NOW - 5.001)), "token expired"),
        (hs256(claims(nbf=NOW + 5.5)), "not valid yet"),
        (hs256({"sub": "carol"}), "exp"),
        (hs256({"exp": NOW + 60}), "sub"),
        (hs256(claims(sub="")), "sub"),
        (hs256(claims(exp="soon")), "'exp' must be a number"),
        (hs256(claims(tier="gold")), "unknown tier 'gold'"),
        (hs256(claims(tier=3)), "unknown tier 3"),
        (hs256(claims(channels="sim:*")), "'channels' must be a list"),
        (hs256(claims(channels=[""])), "'channels' must be a list"),
        (hs256(claims(iss="someone")), None),
    ],
    ids=[
        "hs256-wrong-secret",
        "rs256-wrong-key",
        "alg-none",
        "alg-not-configured",
        "expired-beyond-leeway",
        "not-yet-valid",
        "no-exp",
        "no-sub",
        "empty-sub",
        "exp-not-a-number",
        "unknown-tier",
        "tier-not-a-string",
        "channels-not-a-list",
        "channels-empty-pattern",
        "iss-unchecked-when-not-configured",
    ],
)
def test_tokens_that_must_not_pass(token: str, message: str | None) -> None:
    creds = credentials()
    if message is None:
        assert creds.resolve(token, NOW).name == "carol"
        return
    refusal = refused(creds, token)
    assert (refusal.status, refusal.code) == (401, "invalid_credentials")
    assert message in refusal.message


def test_expiry_is_exp_plus_leeway_against_the_now_passed_in() -> None:
    creds = credentials(leeway=5.0)
    token = hs256(claims(exp=NOW))
    assert creds.resolve(token, NOW + 5.0).valid_until == NOW + 5.0
    assert refused(creds, token, NOW + 5.01).message == "token expired"
    # A token expired by the real clock is still good at an earlier ``now``: no clock is read.
    assert credentials().resolve(hs256(claims(exp=1000)), 999.0).expires == 1000


def test_issuer_and_audience_are_checked_when_configured() -> None:
    creds = credentials(issuer="https://auth.example", audience="relay")
    good = hs256(claims(iss="https://auth.example", aud="relay"))
    assert creds.resolve(good, NOW).name == "carol"
    assert "issuer" in refused(creds, hs256(claims(iss="evil", aud="relay"))).message.lower()
    assert (
        "audience"
        in refused(creds, hs256(claims(iss="https://auth.example", aud="x"))).message.lower()
    )
    assert "iss" in refused(creds, hs256(claims(aud="relay"))).message


def test_an_rsa_public_key_used_as_an_hmac_secret_is_refused() -> None:
    """Key confusion: a token 'signed' with HS256 using the public key's PEM as the secret,
    sent to a relay configured for RS256 only."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    import hashlib
    import hmac

    signature = hmac.new(PUBLIC_PEM, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"
    creds = Credentials(KEYS, TIERS, None, JwtVerifier(("RS256",), public_key=PUBLIC))
    assert "'HS256' is not accepted" in refused(creds, token).message


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = hs256(claims()).split(".")
    forged = b64(json.dumps(claims(tier="pro", channels=["*"])).encode())
    assert "Signature" in refused(credentials(), f"{header}.{forged}.{signature}").message


def test_a_token_that_is_not_a_jwt_is_tried_as_an_api_key() -> None:
    assert credentials().resolve(ALICE, NOW).name == "alice"
    assert refused(credentials(), "a.b.c").message == "unknown API key"


def test_without_jwt_configured_a_jwt_is_just_an_unknown_key() -> None:
    creds = Credentials(KEYS, TIERS, None)
    assert refused(creds, hs256(claims())).message == "unknown API key"


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), replacement=st.sampled_from("AQgw_-.xyz0"))
def test_changing_any_character_of_a_token_never_grants_anything_else(
    position: int, replacement: str
) -> None:
    token = hs256(claims(tier="default"))
    position %= len(token)
    changed = token[:position] + replacement + token[position + 1 :]
    creds = credentials()
    original = creds.resolve(token, NOW)
    try:
        grant = creds.resolve(changed, NOW)
    except Refusal as refusal:
        assert refusal.status == 401
    else:
        # Only a change base64url ignores (the unused low bits of a last character) can pass.
        assert (grant.identity, grant.tier, grant.channels, grant.expires) == (
            original.identity,
            original.tier,
            original.channels,
            original.expires,
        )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.fixed_dictionaries(
        {},
        optional={
            "sub": _json,
            "exp": _json | st.floats(NOW - 100, NOW + 100),
            "nbf": _json,
            "tier": _json | st.sampled_from(TIERS),
            "channels": _json | st.lists(st.text(max_size=5), max_size=3),
        },
    ),
    now=st.floats(NOW - 100, NOW + 100),
)
def test_any_signed_payload_is_either_a_consistent_grant_or_a_401(
    payload: dict[str, Any], now: float
) -> None:
    creds = credentials(leeway=1.0)
    try:
        grant = creds.resolve(hs256(payload), now)
    except Refusal as refusal:
        assert (refusal.status, refusal.code) == (401, "invalid_credentials")
        return
    assert grant.tier in TIERS
    assert grant.expires == payload["exp"] and now <= payload["exp"] + 1.0
    assert grant.name == payload["sub"] and isinstance(grant.name, str) and grant.name
    assert all(isinstance(c, str) and c for c in grant.channels)


# Renewal after a reload ---------------------------------------------------------------------


def test_renew_follows_the_new_configuration() -> None:
    old = credentials(anonymous="default")
    alice = old.resolve(ALICE, NOW)
    anonymous = old.resolve(None, NOW)
    token = old.resolve(hs256(claims(exp=NOW + 10)), NOW)

    moved = Credentials(
        [StoredKey("alice", "default", hash_secret(ALICE))], TIERS, "pro", verifier()
    )
    assert moved.renew(alice, NOW).tier == "default"
    assert moved.renew(anonymous, NOW).tier == "pro"
    assert moved.renew(token, NOW).tier == "default"

    revoked = Credentials([], TIERS, None)
    assert refused_renew(revoked, alice).message == "API key revoked"
    assert refused_renew(revoked, anonymous).code == "missing_credentials"
    assert refused_renew(revoked, token).message == "tokens are no longer accepted"
    other_secret = Credentials([], TIERS, None, verifier(secret=b"x" * 32))
    assert "Signature" in refused_renew(other_secret, token).message
    assert refused_renew(credentials(), token, NOW + 16).message == "token expired"


def refused_renew(creds: Credentials, grant: Grant, now: float = NOW) -> Refusal:
    with pytest.raises(Refusal) as caught:
        creds.renew(grant, now)
    return caught.value


def test_the_owner_of_private_channels_is_a_named_key_or_a_tokens_subject() -> None:
    """``{key}`` in a tier's patterns stands for the owner; connections that would share their
    private channels (anonymous ones, unnamed keys) have none."""
    named = Credentials(
        [StoredKey("alice", "pro", hash_secret("k1")), StoredKey("", "pro", hash_secret("k2"))],
        ["pro"],
        "pro",
    )
    assert named.resolve("k1", NOW).owner == "alice"
    assert named.resolve("k2", NOW).owner is None
    assert named.resolve(None, NOW).owner is None


# Exact refusals and boundaries ----------------------------------------------------------------

FAR = 4_000_000_000  # seconds since the epoch, in 2096: later than any real clock reads today


def test_only_the_now_passed_in_is_compared_with_exp_nbf_and_iat() -> None:
    """A token valid at ``now`` but not yet valid by the real clock passes: PyJWT's own checks
    against the system clock are off."""
    token = hs256(claims(exp=FAR + 100, nbf=FAR, iat=FAR))
    assert credentials().resolve(token, FAR + 1).expires == FAR + 100


def test_nbf_is_checked_with_the_leeway_to_the_boundary() -> None:
    creds = credentials(leeway=5.0)
    assert creds.resolve(hs256(claims(nbf=NOW + 5)), NOW).name == "carol"
    assert creds.resolve(hs256(claims(nbf=NOW + 4)), NOW).name == "carol"
    assert refused(creds, hs256(claims(nbf=NOW + 5.5))).message == "token not valid yet"


def test_an_audience_claim_is_not_checked_when_none_is_configured() -> None:
    assert credentials().resolve(hs256(claims(aud="someone")), NOW).name == "carol"


@pytest.mark.parametrize(
    ("token_claims", "message"),
    [
        (claims(exp=True), "token claim 'exp' must be a number"),
        (claims(exp=float("inf")), "token claim 'exp' must be a number"),
        (claims(nbf="soon"), "token claim 'nbf' must be a number"),
        (claims(nbf=False), "token claim 'nbf' must be a number"),
        (claims(sub=""), "token claim 'sub' must not be empty"),
        (claims(tier="gold"), "unknown tier 'gold' in token"),
        (claims(channels=[1]), "token claim 'channels' must be a list of non-empty strings"),
        ({"sub": "carol"}, 'token rejected: Token is missing the "exp" claim'),
    ],
)
def test_each_bad_claim_is_refused_with_its_own_message(
    token_claims: dict[str, Any], message: str
) -> None:
    refusal = refused(credentials(), hs256(token_claims))
    assert (refusal.status, refusal.code, refusal.message) == (401, "invalid_credentials", message)


def test_a_bad_signature_or_algorithm_is_refused_with_its_own_message() -> None:
    wrong_key = hs256(claims(), key=b"another secret of at least 32 bytes!!")
    assert refused(credentials(), wrong_key).message == (
        "token rejected: Signature verification failed"
    )
    hs512 = jwt.encode(claims(), SECRET * 2, algorithm="HS512")
    assert refused(credentials(), hs512).message == "token algorithm 'HS512' is not accepted"


def test_a_token_credential_that_is_not_a_jwt_is_refused_on_renewal() -> None:
    grant = Grant("sub:carol", "default", "carol", "not-a-jwt", expires=NOW + 60)
    with pytest.raises(Refusal) as caught:
        credentials().renew(grant, NOW)
    assert (caught.value.code, caught.value.message) == ("invalid_credentials", "not a valid JWT")


def test_a_secret_with_two_dots_that_is_no_jwt_is_an_api_key() -> None:
    creds = Credentials([StoredKey("dotted", "pro", hash_secret("a.b.c"))], TIERS, None, verifier())
    assert creds.resolve("a.b.c", NOW).name == "dotted"


def test_an_unnamed_key_is_named_for_logs_and_has_no_private_channels() -> None:
    creds = Credentials([StoredKey("", "pro", hash_secret("s"))], TIERS, None)
    grant = creds.resolve("s", NOW)
    assert grant == Grant(f"key:{hash_secret('s')}", "pro", "unnamed key", hash_secret("s"))
    assert credentials().resolve(ALICE, NOW).owner == "alice"


def test_anonymous_access_is_one_shared_identity_with_no_credential() -> None:
    assert credentials(anonymous="default").resolve(None, NOW) == Grant(
        "anonymous", "default", "anonymous", ""
    )
    assert refused(credentials(), None).message == "an API key is required"
    key = Credentials([StoredKey("x", "gone", hash_secret("x"))], TIERS, None)
    assert refused(key, "x").message == "the key's tier 'gone' is not defined"
    assert refused(credentials(), "rk_nobody").message == "unknown API key"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithms": ()}, f"algorithms must be among {sorted(JWT_ALGORITHMS)}"),
        ({"algorithms": ("none",)}, f"algorithms must be among {sorted(JWT_ALGORITHMS)}"),
        ({"algorithms": ("HS256", "none")}, f"algorithms must be among {sorted(JWT_ALGORITHMS)}"),
        ({"algorithms": ("HS256",), "secret": None}, "HMAC algorithms need a secret"),
        ({"algorithms": ("HS256",), "secret": b""}, "HMAC algorithms need a secret"),
        ({"algorithms": ("RS256",), "public_key": None}, "RSA algorithms need a public key"),
    ],
)
def test_an_incomplete_verifier_setup_says_what_is_missing(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        verifier(**options)
    assert str(caught.value) == message


def test_a_verifier_needs_only_the_key_of_its_own_algorithms() -> None:
    assert JwtVerifier(("HS256",), secret=SECRET).claims(hs256(claims()), NOW)["sub"] == "carol"
    assert JwtVerifier(("RS256",), public_key=PUBLIC).claims(rs256(claims()), NOW)["sub"] == "carol"
