"""Each way to fetch a token, end to end: the token endpoint stand-in issues it, Dovecot (passdb
oauth2, asking the same endpoint) and aiosmtpd accept it, and the inbox is valid."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from jobs.errors import Reason
from jobs.token_fetch import FetchedToken
from jobs.token_step import DirectTokens
from jobs.validate import validate_inbox
from tests.jobs.checks import options, request
from tests.servers.dovecot import Dovecot
from tests.servers.oauth import JWT_BEARER, OAuthAccount, TokenEndpoint
from tests.servers.smtp import SmtpServer


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account_key(client_email: str, key: rsa.RSAPrivateKey) -> str:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps({"type": "service_account", "client_email": client_email, "private_key": pem})


def oauth2_for(
    grant: str, user: OAuthAccount, provider: TokenEndpoint, key: rsa.RSAPrivateKey
) -> dict[str, Any]:
    if grant == "refresh_token":
        return {
            "refresh_token": user.refresh_token,
            "client_id": user.client_id,
            "client_secret": user.client_secret,
        }
    if grant == "client_credentials":
        app_id = f"app-{user.client_id}"
        provider.add_client(app_id, "app-secret", app_mailbox=user.email)
        # CUSTOM_SMTP has no default scope; Microsoft's app-only one would be ".default".
        return {
            "grant": grant,
            "client_id": app_id,
            "client_secret": "app-secret",
            "scopes": ["mail.default"],
        }
    issuer = f"svc-{user.client_id}@project.iam.inboxcheck.test"
    provider.add_jwt_key(issuer, key.public_key())
    return {"grant": grant, "service_account_key": service_account_key(issuer, key)}


@pytest.mark.parametrize("grant", ["refresh_token", "client_credentials", "service_account"])
async def test_each_grant_signs_in_on_both_protocols(
    smtp_server: Callable[..., SmtpServer],
    oauth_dovecot: Dovecot,
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    signing_key: rsa.RSAPrivateKey,
    ca_file: str,
    grant: str,
) -> None:
    mail = smtp_server(mode="starttls", auth_mechanisms=["XOAUTH2", "OAUTHBEARER"], oauth=oauth_provider)
    oauth2 = {
        **oauth2_for(grant, oauth_user, oauth_provider, signing_key),
        "token_url": oauth_provider.token_url,
    }
    req = request(
        email=oauth_user.email,
        auth="oauth2",
        smtp_password=None,
        oauth2=oauth2,
        smtp_port=mail.port,
        smtp_security="starttls",
        imap_port=oauth_dovecot.imaps_port,
    )
    fetches = len(oauth_provider.token_requests)
    tokens = DirectTokens()
    with capture_logs() as logs:
        result = await validate_inbox(req, options(ca_file), tokens)
    assert result.status == "valid", (result.smtp.detail, result.imap.detail)
    assert len(oauth_provider.token_requests) == fetches + 1  # one token serves both protocols
    sent = oauth_provider.token_requests[-1]
    if grant == "service_account":
        assert sent.form["grant_type"] == JWT_BEARER
    # The stand-in rotates refresh tokens as Microsoft does: the new one is handed back.
    assert (tokens.rotated_refresh_token is not None) == (grant == "refresh_token")
    output = result.model_dump_json() + repr(logs)
    for secret in (*req.secrets, tokens.rotated_refresh_token or "unrotated"):
        assert secret not in output


class KeptTokens:
    """A source that hands out one kept token (as the worker's cache would) and records discards."""

    def __init__(self, token: str, from_cache: bool) -> None:
        self.token, self.from_cache = token, from_cache
        self.discarded: list[Any] = []

    async def get(self, request: Any, fetch: Any) -> FetchedToken:
        return FetchedToken(self.token, 3600.0, from_cache=self.from_cache)

    async def discard(self, request: Any) -> None:
        self.discarded.append(request)


@pytest.mark.parametrize("from_cache", [True, False], ids=["kept", "fresh"])
async def test_a_refused_kept_token_is_dropped_and_retried_a_fresh_one_is_final(
    oauth_dovecot: Dovecot,
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
    from_cache: bool,
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email)
    oauth_provider.revoke(token)  # revoked early, as a password change does
    oauth2 = oauth2_for("refresh_token", oauth_user, oauth_provider, None)  # type: ignore[arg-type]
    req = request(
        email=oauth_user.email,
        auth="oauth2",
        smtp_password=None,
        oauth2={**oauth2, "token_url": oauth_provider.token_url},
        imap_port=oauth_dovecot.imaps_port,
    )
    tokens = KeptTokens(token, from_cache)
    result = await validate_inbox(req, options(ca_file), tokens)
    assert (result.imap.reason, result.imap.failed_step) == (Reason.INVALID_CREDENTIALS, "login")
    assert result.imap.retryable is from_cache
    # The request as given: the cache knows the inbox by it, not by the token just refused.
    assert tokens.discarded == ([req] if from_cache else [])
