"""The token step's POST goes where the request says and nowhere else: a redirect is not
followed and a proxy named in the environment is not used, either of which would hand the
refresh token and client secret to another server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from jobs.errors import Reason
from jobs.validate import validate_inbox
from tests.jobs.checks import LOOPBACK, options, request
from tests.servers.fakes import FakeServer, close_on_accept
from tests.servers.oauth import Reply, TokenEndpoint

EMAIL = "ann@inboxcheck.test"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def refresh_request(endpoint: TokenEndpoint) -> Any:
    endpoint.add_client("app-1", "client-secret-value")
    refresh = endpoint.issue_refresh_token(EMAIL, "app-1")
    given = {"refresh_token": refresh, "client_id": "app-1", "client_secret": "client-secret-value"}
    return request(
        email=EMAIL, auth="oauth2", smtp_password=None, oauth2={**given, "token_url": endpoint.token_url}
    )


async def test_a_redirect_from_the_token_endpoint_is_not_followed(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    # 307 keeps the method and body: followed, the form with the secrets would be posted again.
    redirect = Reply(307, b"", content_type="text/plain", headers=(("Location", endpoint.token_url),))
    endpoint.fail_with(redirect, times=1)
    result = await validate_inbox(refresh_request(endpoint), options(ca_file))
    assert len(endpoint.token_requests) == 1
    for part in (result.smtp, result.imap):
        assert (part.failed_step, part.reason) == ("token", Reason.PROTOCOL_ERROR), part.detail
        assert "307" in (part.detail or "")


async def test_a_proxy_named_in_the_environment_is_not_used(
    token_endpoint: Callable[..., TokenEndpoint],
    fake_server: Callable[..., FakeServer],
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = fake_server(close_on_accept)
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, f"http://{LOOPBACK}:{proxy.port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    endpoint = token_endpoint()
    result = await validate_inbox(refresh_request(endpoint), options(ca_file))
    assert len(endpoint.token_requests) == 1 and proxy.connections == 0
    token_step = result.smtp.steps[0]
    assert (token_step.step, token_step.ok) == ("token", True)
