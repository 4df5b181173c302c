"""Everything :class:`~relay.core.credentials.Credentials` needs from files: the key file, the
JWT secret or public key. Read at start and on every reload; any problem is a
:class:`ConfigError` naming the key and the file, so a bad file at reload changes nothing.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from relay.config import JwtConfig, RelayConfig
from relay.core.credentials import MIN_HMAC_SECRET, Credentials, JwtVerifier, StoredKey, hash_secret
from relay.issues import ConfigError, Issue, raise_issues
from relay.keyfile import read_key_file

__all__ = ["load_credentials"]


def load_credentials(config: RelayConfig) -> Credentials:
    """The configuration's credentials: inline ``[[keys]]`` (hashed here) and the key file's,
    and the JWT verifier."""
    issues: list[Issue] = []
    keys = [StoredKey(k.name, k.tier, hash_secret(k.key)) for k in config.keys]
    key_file = config.auth.key_file
    if key_file is not None:
        try:
            entries = read_key_file(key_file)
        except OSError as exc:
            issues.append(Issue("auth.key_file", f"cannot read {key_file}: {exc.strerror}"))
        except ConfigError as exc:
            issues.extend(exc.issues)
        else:
            inline = {key.hash for key in keys}
            for i, entry in enumerate(entries):
                if entry.tier not in config.tiers:
                    defined = ", ".join(config.tiers)
                    issues.append(
                        Issue(
                            f"{key_file}: keys[{i}].tier",
                            f"unknown tier {entry.tier!r} (defined: {defined})",
                        )
                    )
                if entry.hash in inline:
                    issues.append(
                        Issue(f"{key_file}: keys[{i}]", "the same secret as one of [[keys]]")
                    )
            keys.extend(entry.stored() for entry in entries)
    verifier = None
    if config.auth.jwt is not None:
        verifier = _verifier(config.auth.jwt, issues)
    raise_issues(issues)
    return Credentials(keys, config.tiers, config.auth.anonymous_tier_name, verifier)


def _verifier(jwt: JwtConfig, issues: list[Issue]) -> JwtVerifier | None:
    found = len(issues)
    secret = None if jwt.secret is None else jwt.secret.encode()
    if jwt.secret_file is not None:
        try:
            with open(jwt.secret_file, "rb") as f:
                secret = f.read().strip()
        except OSError as exc:
            issues.append(
                Issue("auth.jwt.secret_file", f"cannot read {jwt.secret_file}: {exc.strerror}")
            )
        else:
            if len(secret) < MIN_HMAC_SECRET:
                issues.append(
                    Issue(
                        "auth.jwt.secret_file",
                        f"must hold at least {MIN_HMAC_SECRET} bytes",
                    )
                )
    public_key = None
    if jwt.public_key_file is not None:
        try:
            with open(jwt.public_key_file, "rb") as f:
                public_key = load_pem_public_key(f.read())
        except OSError as exc:
            issues.append(
                Issue(
                    "auth.jwt.public_key_file",
                    f"cannot read {jwt.public_key_file}: {exc.strerror}",
                )
            )
        except ValueError:
            issues.append(
                Issue("auth.jwt.public_key_file", f"{jwt.public_key_file} is not a PEM public key")
            )
        else:
            if not isinstance(public_key, RSAPublicKey):
                issues.append(
                    Issue("auth.jwt.public_key_file", f"{jwt.public_key_file} is not an RSA key")
                )
    if len(issues) > found:
        return None
    return JwtVerifier(
        tuple(jwt.algorithms),
        secret,
        public_key,
        jwt.issuer,
        jwt.audience,
        jwt.leeway,
        jwt.default_tier,
    )
