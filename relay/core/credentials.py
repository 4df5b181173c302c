"""Who a client is: a presented token resolved to a :class:`Grant`, or refused with 401.

Two kinds of credentials, both presented the same way (``Authorization: Bearer`` or
``?api_key=``):

- **API keys**, looked up by a hash of the secret (``sha256:<hex>``). The secrets ``relay keys
  add`` makes are 256 random bits, so a fast hash is as good as a slow one (there is no
  dictionary to attack) and the relay never needs to keep a secret in clear; the match is
  confirmed with :func:`hmac.compare_digest`.
- **JWTs** (PyJWT), when the configuration has a JWT section: the signature is checked with the
  configured algorithms only (never the token's choice), ``iss`` and ``aud`` when configured,
  and ``exp`` is required. Time checks use a ``now`` passed in, so this module reads no clock.

A token that is not shaped like a JWT is tried as an API key. No I/O here: the shell reads
the key file and the JWT keys and hands them over (``relay.server.credentials``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import attrs
import jwt

from relay.core.protocol import Refusal

__all__ = [
    "HASH_PREFIX",
    "HMAC_ALGORITHMS",
    "JWT_ALGORITHMS",
    "MIN_HMAC_SECRET",
    "RSA_ALGORITHMS",
    "Credentials",
    "Grant",
    "JwtVerifier",
    "StoredKey",
    "hash_secret",
]

HASH_PREFIX: Final = "sha256:"

ANONYMOUS: Final = "anonymous"


def hash_secret(secret: str) -> str:
    """How an API key is stored and looked up: ``sha256:<hex>`` of its UTF-8 bytes."""
    return HASH_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


@attrs.frozen
class StoredKey:
    """An API key as the relay keeps it: its hash, never the secret."""

    name: str
    tier: str
    hash: str = attrs.field(repr=False)


@attrs.frozen
class Grant:
    """What a connection may do, from the credential it presented."""

    identity: str
    """What connections are counted by, for the tier's per-key limit: the key's hash, the
    token's subject, or ``anonymous``; never a secret."""
    tier: str
    name: str
    """The key's name or the token's subject, for logs."""
    credential: str = attrs.field(repr=False)
    """What :meth:`Credentials.renew` resolves again: the key's hash, the JWT itself, or ``""``
    for an anonymous connection."""
    channels: tuple[str, ...] = ()
    """Patterns allowed beyond the tier's (a token's ``channels`` claim)."""
    expires: int | float | None = None
    """A token's ``exp`` (seconds since the epoch); None for keys and anonymous access."""
    valid_until: float | None = None
    """``exp`` plus the configured leeway: when the connection is closed unless refreshed."""
    owner: str | None = None
    """What ``{key}`` in the tier's patterns stands for: the key's configured name or the
    token's ``sub``; None for anonymous access and unnamed keys, which have no private
    channels (they would share them)."""

    @property
    def is_token(self) -> bool:
        return self.expires is not None


HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512"})
JWT_ALGORITHMS: Final = HMAC_ALGORITHMS | RSA_ALGORITHMS
MIN_HMAC_SECRET: Final = 32
"""Bytes: an HMAC key shorter than the hash output weakens it (RFC 7518, section 3.2)."""


@attrs.frozen
class JwtVerifier:
    """The configured JWT rules, with the key material already read.

    The key for a token is chosen by the configured algorithm family the token's header names
    (HMAC secret or RSA public key); an algorithm not configured is refused before any key is
    used, so ``alg: none`` and key confusion (an RSA public key used as an HMAC secret) cannot
    happen.
    """

    algorithms: tuple[str, ...]
    secret: bytes | None = attrs.field(default=None, repr=False)
    public_key: Any = attrs.field(default=None, repr=False)
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 0.0
    default_tier: str = "default"

    def __attrs_post_init__(self) -> None:
        unknown = set(self.algorithms) - JWT_ALGORITHMS
        if not self.algorithms or unknown:
            raise ValueError(f"algorithms must be among {sorted(JWT_ALGORITHMS)}")
        if HMAC_ALGORITHMS & set(self.algorithms) and not self.secret:
            raise ValueError("HMAC algorithms need a secret")
        if RSA_ALGORITHMS & set(self.algorithms) and self.public_key is None:
            raise ValueError("RSA algorithms need a public key")

    def claims(self, token: str, now: float) -> dict[str, Any]:
        """The verified claims, or :class:`Refusal` 401 ``invalid_credentials``."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise _invalid("not a valid JWT") from None
        if algorithm not in self.algorithms:
            raise _invalid(f"token algorithm {algorithm!r} is not accepted")
        key: Any = self.secret if algorithm in HMAC_ALGORITHMS else self.public_key
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                options={
                    "require": ["exp", "sub"],
                    # Times are checked below against the ``now`` passed in.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": self.issuer is not None,
                    "verify_aud": self.audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise _invalid(f"token rejected: {exc}") from None
        exp = claims["exp"]
        if not _is_time(exp):
            raise _invalid("token claim 'exp' must be a number")
        if now > exp + self.leeway:
            raise _invalid("token expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _is_time(nbf):
                raise _invalid("token claim 'nbf' must be a number")
            if now < nbf - self.leeway:
                raise _invalid("token not valid yet")
        return claims


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _invalid(message: str) -> Refusal:
    return Refusal(401, "invalid_credentials", message)


class Credentials:
    """Resolves what a client presents, under one configuration (replaced whole on reload)."""

    def __init__(
        self,
        keys: Iterable[StoredKey],
        tiers: Collection[str],
        anonymous_tier: str | None,
        jwt_verifier: JwtVerifier | None = None,
    ) -> None:
        self._by_hash: dict[str, StoredKey] = {}
        for key in keys:
            if key.hash in self._by_hash:
                raise ValueError(f"two keys with the same secret: {key.name!r}")
            self._by_hash[key.hash] = key
        self._tiers = frozenset(tiers)
        self.anonymous_tier = anonymous_tier
        self.jwt = jwt_verifier

    @property
    def keys(self) -> Mapping[str, StoredKey]:
        """The keys by hash (for reload reports)."""
        return self._by_hash

    def resolve(self, token: str | None, now: float) -> Grant:
        """The grant for a presented token (None or empty: no credentials), or raises
        :class:`Refusal` (401 ``missing_credentials`` or ``invalid_credentials``)."""
        if not token:
            if self.anonymous_tier is None:
                raise Refusal(401, "missing_credentials", "an API key is required")
            return Grant(ANONYMOUS, self.anonymous_tier, ANONYMOUS, "")
        if self.jwt is not None and _looks_like_jwt(token):
            return self._token_grant(token, now)
        digest = hash_secret(token)
        key = self._by_hash.get(digest)
        if key is None or not hmac.compare_digest(key.hash, digest):
            raise _invalid("unknown API key")
        return self._key_grant(key)

    def renew(self, grant: Grant, now: float) -> Grant:
        """The same credential resolved again under this configuration (after a reload), or
        :class:`Refusal` when it no longer resolves: a revoked key, anonymous access removed,
        a token that no longer verifies."""
        if grant.is_token:
            if self.jwt is None:
                raise _invalid("tokens are no longer accepted")
            return self._token_grant(grant.credential, now)
        if grant.identity == ANONYMOUS:
            return self.resolve(None, now)
        key = self._by_hash.get(grant.credential)
        if key is None:
            raise _invalid("API key revoked")
        return self._key_grant(key)

    def _key_grant(self, key: StoredKey) -> Grant:
        if key.tier not in self._tiers:
            raise _invalid(f"the key's tier {key.tier!r} is not defined")
        return Grant(
            f"key:{key.hash}", key.tier, key.name or "unnamed key", key.hash, owner=key.name or None
        )

    def _token_grant(self, token: str, now: float) -> Grant:
        verifier = self.jwt
        assert verifier is not None
        claims = verifier.claims(token, now)
        subject = claims["sub"]
        if not subject:
            raise _invalid("token claim 'sub' must not be empty")
        tier = claims.get("tier", verifier.default_tier)
        if not isinstance(tier, str) or tier not in self._tiers:
            raise _invalid(f"unknown tier {tier!r} in token")
        channels = claims.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
            raise _invalid("token claim 'channels' must be a list of non-empty strings")
        exp = claims["exp"]
        return Grant(
            f"sub:{subject}",
            tier,
            subject,
            token,
            tuple(channels),
            exp,
            exp + verifier.leeway,
            owner=subject,
        )


def _looks_like_jwt(token: str) -> bool:
    """A compact JWS: three dot-separated parts whose first decodes to a JSON header."""
    if token.count(".") != 2:
        return False
    try:
        jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return False
    return True
