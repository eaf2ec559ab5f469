"""The HTTP client of the token step and of webhooks: its connections are resolved the way the
mail hosts' are, and the optional sniffio is looked for once, not on every lock httpcore takes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs import http_client
from jobs.validate import validate_inbox
from tests.jobs.checks import LOOPBACK, options, request
from tests.servers.certs import PKI
from tests.servers.dns import DnsServer
from tests.servers.oauth import TokenEndpoint

EMAIL = "ann@inboxcheck.test"
# Only the test's DNS server knows this name; the machine's resolver does not (.test is reserved).
TOKEN_HOST = "tokens.inboxcheck.test"


async def test_the_token_endpoint_is_resolved_through_the_dns_servers_setting(
    token_endpoint: Callable[..., TokenEndpoint],
    dns_server: Callable[..., DnsServer],
    pki: PKI,
    ca_file: str,
) -> None:
    endpoint = token_endpoint(ssl_context=pki.server_cert("tokens", TOKEN_HOST).ssl_context)
    endpoint.add_client("app-1", "client-secret-value")
    refresh = endpoint.issue_refresh_token(EMAIL, "app-1")
    dns = dns_server({TOKEN_HOST: [LOOPBACK]})
    oauth2 = {
        "refresh_token": refresh,
        "client_id": "app-1",
        "client_secret": "client-secret-value",
        "token_url": f"https://{TOKEN_HOST}:{endpoint.port}/token",
    }
    inbox = request(email=EMAIL, auth="oauth2", smtp_password=None, oauth2=oauth2)
    result = await validate_inbox(inbox, options(ca_file, dns_servers=(dns.address,)))
    token_step = result.smtp.steps[0]
    assert (token_step.step, token_step.ok) == ("token", True), token_step.detail
    assert len(endpoint.token_requests) == 1
    assert (TOKEN_HOST, "A") in dns.questions


@pytest.fixture
def importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An import path holding nothing but what the test writes, and no sniffio loaded."""
    # Set, then removed: teardown puts back what was there before, an absence included, so no
    # test's fake sniffio is left for httpcore in the same process.
    monkeypatch.setitem(sys.modules, "sniffio", None)
    monkeypatch.delitem(sys.modules, "sniffio")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    return tmp_path


def test_a_missing_sniffio_is_marked_missing(importable: Path) -> None:
    http_client.remember_missing_sniffio()
    assert "sniffio" in sys.modules and sys.modules["sniffio"] is None
    with pytest.raises(ImportError):
        import sniffio  # noqa: F401


def test_an_installed_sniffio_is_left_importable(importable: Path) -> None:
    (importable / "sniffio.py").write_text("FOUND = True\n")
    http_client.remember_missing_sniffio()
    assert "sniffio" not in sys.modules
    import sniffio

    assert sniffio.FOUND


def test_an_imported_sniffio_is_left_alone(importable: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = type(sys)("sniffio")
    monkeypatch.setitem(sys.modules, "sniffio", loaded)
    http_client.remember_missing_sniffio()
    assert sys.modules["sniffio"] is loaded
