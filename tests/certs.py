"""Certificates for TLS tests: a throwaway CA (trustme) and a server certificate for the
loopback address, written to PEM files as the relay's configuration names them."""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs
import trustme


@attrs.frozen
class Certificates:
    ca_file: Path
    """The CA's certificate: what a client must trust."""
    certificate: Path
    """The server's certificate chain (leaf first)."""
    private_key: Path

    @property
    def tls(self) -> dict[str, str]:
        """The ``[server.tls]`` table."""
        return {"certificate": str(self.certificate), "private_key": str(self.private_key)}

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def issue(directory: Path, name: str = "relay") -> Certificates:
    """A new CA and a certificate for 127.0.0.1 and localhost signed by it, in ``directory``
    as NAME-ca.pem, NAME-cert.pem and NAME-key.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = Certificates(
        directory / f"{name}-ca.pem", directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    )
    ca.cert_pem.write_to_path(str(files.ca_file))
    files.certificate.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.private_key))
    return files
