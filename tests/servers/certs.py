"""Test certificates made with trustme: one trusted CA and a few server certs.

Good and bad server certificates are all made once per session, so every
certificate test runs against the same files. Clients under test get only
``PKI.ca_file``; the "untrusted" cert is signed by a second CA whose PEM is
written out too, but which no client is given.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import trustme

CertName = Literal["valid", "wrong_host", "expired", "untrusted"]
CERT_NAMES: tuple[CertName, ...] = ("valid", "wrong_host", "expired", "untrusted")

# Names the valid certs cover: what tests connect to.
SERVER_IDENTITIES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class ServerCert:
    """A server certificate as files (for Dovecot) and as a context (for Python servers)."""

    name: str
    cert_file: Path  # leaf first, then the chain up to (excluding) the root
    key_file: Path
    ssl_context: ssl.SSLContext  # server side, ready to pass to a listener


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side SSLContext that presents ``cert_file`` and asks nothing of clients."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class PKI:
    """A trusted CA, a rogue CA, and server certs: valid, wrong_host, expired, untrusted."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._ca = trustme.CA(organization_name="inboxcheck test CA")
        # Signs the "untrusted" cert; no client is ever told about it.
        self._rogue_ca = trustme.CA(organization_name="inboxcheck rogue CA")

        self.ca_file = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        self.rogue_ca_file = directory / "rogue-ca.pem"
        self._rogue_ca.cert_pem.write_to_path(str(self.rogue_ca_file))

        now = dt.datetime.now(dt.UTC)
        self.valid = self._issue("valid", self._ca, SERVER_IDENTITIES)
        self.wrong_host = self._issue("wrong_host", self._ca, ("wrong.example",))
        self.expired = self._issue(
            "expired",
            self._ca,
            SERVER_IDENTITIES,
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        )
        self.untrusted = self._issue("untrusted", self._rogue_ca, SERVER_IDENTITIES)

    def cert(self, name: CertName | ServerCert) -> ServerCert:
        """Look a server cert up by name; a ServerCert is passed through."""
        if isinstance(name, ServerCert):
            return name
        if name not in CERT_NAMES:
            raise ValueError(f"unknown cert {name!r}; expected one of {CERT_NAMES}")
        cert: ServerCert = getattr(self, name)
        return cert

    def server_cert(self, name: str, *identities: str) -> ServerCert:
        """A valid cert from the trusted CA for other names (a provider's hosts, reached
        through --resolve)."""
        return self._issue(name, self._ca, identities)

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _issue(
        self,
        name: str,
        ca: trustme.CA,
        identities: tuple[str, ...],
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> ServerCert:
        leaf = ca.issue_cert(*identities, not_before=not_before, not_after=not_after)
        cert_file = self.directory / f"{name}.crt.pem"
        key_file = self.directory / f"{name}.key.pem"
        cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_file))
        key_file.chmod(0o600)  # owner-only, as servers expect of a private key
        return ServerCert(name, cert_file, key_file, server_context(cert_file, key_file))
