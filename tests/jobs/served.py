"""Serving one provider reply to the checks, under the provider's own host name.

A server on loopback presents a certificate for the provider's hosts (smtp.gmail.com,
imap.mail.me.com, ...) and --resolve (CheckOptions.pins) points the name at it: TLS verifies
the name, and the name identifies the provider, exactly as against the provider itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from jobs.imap_check import check_imap
from jobs.pins import parse_pins
from jobs.providers import DOMAINS, Provider
from jobs.result import ProtocolResult
from jobs.smtp_check import check_smtp
from jobs.steps import Step
from tests.jobs.checks import LOOPBACK, options, request
from tests.servers.certs import PKI, ServerCert
from tests.servers.fakes import FakeServer
from tests.servers.replies import ReplyAt

PASSWORD = "Served-Pa55word"
# A host no provider table knows, for replies of any provider.
ANY_HOST = "mail.example.net"


def provider_host(provider: Provider | None, protocol: str) -> str:
    """A host name of the provider's, as its users would configure it (smtp.gmail.com)."""
    if provider is None:
        return ANY_HOST
    domain = next(domain for domain, owner in DOMAINS.items() if owner is provider)
    return f"{protocol}.{domain}"


@pytest.fixture(scope="session")
def provider_cert(pki: PKI) -> ServerCert:
    """One certificate for every host right below a provider's domain (smtp.gmail.com,
    outlook.office365.com) and ANY_HOST."""
    return pki.server_cert("providers", ANY_HOST, *sorted(f"*.{domain}" for domain in DOMAINS))


async def serve_reply(
    fake_server: Callable[..., FakeServer],
    cert: ServerCert,
    ca_file: str,
    protocol: str,
    step: Step,
    reply: str,
    host: str,
    **fields: Any,
) -> tuple[ProtocolResult, ReplyAt]:
    """Check `protocol` at `host` (pinned to a ReplyAt server answering `reply` at `step`)."""
    script = ReplyAt(protocol, step, reply, hostname=host)
    server = fake_server(script, ssl_context=cert.ssl_context)
    pinned = options(ca_file, pins=parse_pins([f"{host}:{server.port}:{LOOPBACK}"]))
    fields.setdefault("smtp_password", PASSWORD)
    if protocol == "smtp":
        endpoint = {"smtp_host": host, "smtp_port": server.port, "smtp_security": "ssl"}
        return await check_smtp(request(**endpoint, **fields), pinned), script
    endpoint = {"imap_host": host, "imap_port": server.port, "imap_use_ssl": True}
    return await check_imap(request(**endpoint, **fields), pinned), script
