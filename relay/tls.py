"""TLS for the relay's port: the server's :class:`ssl.SSLContext`, from PEM files.

One function for both moments the files are read: when the configuration is loaded (so a bad
file is a :class:`ConfigError` naming its key before anything listens) and when the relay
reloads them (so a bad file on reload is refused the same way and the old context stays).
"""

from __future__ import annotations

import ssl

from relay.issues import ConfigError, Issue, raise_issues

__all__ = ["server_context"]


class _EncryptedKey(Exception):
    """Raised from the password callback: the relay has no passphrase to give, and without
    a callback OpenSSL would ask for one on the terminal."""


def _no_password() -> bytes:
    raise _EncryptedKey


def server_context(certificate: str, private_key: str) -> ssl.SSLContext:
    """A server context holding the certificate chain and its key, with the ssl module's
    defaults for a server (``Purpose.CLIENT_AUTH``: the server's cipher preferences, no
    compression) and TLS 1.2 at least.

    Raises :class:`ConfigError` with issues at ``certificate`` or ``private_key``: a file that
    cannot be read, a certificate file without a certificate, a key that does not load or does
    not belong to the certificate, an encrypted key.
    """
    issues: list[Issue] = []
    for name, path in (("certificate", certificate), ("private_key", private_key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            issues.append(Issue(name, f"cannot read {path!r}: {exc.strerror or exc}"))
    raise_issues(issues)
    try:
        # Parses the certificates alone, so that a bad one is named as such rather than
        # reported as the pair failing to load.
        ssl.create_default_context().load_verify_locations(cafile=certificate)
    except ssl.SSLError as exc:
        raise ConfigError(
            [Issue("certificate", f"no PEM certificate in {certificate!r} ({_reason(exc)})")]
        ) from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(certificate, private_key, password=_no_password)
    except _EncryptedKey:
        message = f"{private_key!r} is encrypted; give the relay an unencrypted key file"
        raise ConfigError([Issue("private_key", message)]) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            message = f"{private_key!r} is not the key of the certificate in {certificate!r}"
        else:
            message = f"no PEM private key in {private_key!r} ({_reason(exc)})"
        raise ConfigError([Issue("private_key", message)]) from None
    return context


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc)
