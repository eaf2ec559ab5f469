"""Signing in with an OAuth2 access token: XOAUTH2 and OAUTHBEARER against a real Dovecot that
checks tokens with an introspection endpoint, and aiosmtpd imitating Gmail's and Microsoft's
answers; tokens of a realistic size (2-3 KB)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.request import RequestError
from jobs.smtp_check import check_smtp
from jobs.validate import validate_inbox
from tests.jobs.checks import CLOSED_PORT, LOOPBACK, options, request
from tests.servers.dovecot import Dovecot
from tests.servers.oauth import OAuthAccount, TokenEndpoint
from tests.servers.smtp import SmtpServer

# A rejected token is answered within a round trip or two, never at the step limit.
REJECTED_WITHIN_S = 1.0
TOKEN_CHARS = 2_800


def oauth_request(email: str, token: str, **fields: Any) -> Any:
    base: dict[str, Any] = {"smtp_password": None}
    return request(email=email, auth="oauth2", oauth2={"access_token": token}, **{**base, **fields})


def smtp_with_oauth(
    smtp_server: Callable[..., SmtpServer],
    tokens: dict[str, str],
    style: str = "gmail",
    mechanisms: tuple[str, ...] = ("PLAIN", "XOAUTH2"),
) -> SmtpServer:
    return smtp_server(mode="starttls", auth_mechanisms=list(mechanisms), oauth=tokens, oauth_style=style)


async def test_imap_signs_in_with_a_token_on_dovecot(
    oauth_dovecot: Dovecot, oauth_provider: TokenEndpoint, oauth_user: OAuthAccount, ca_file: str
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email, size=TOKEN_CHARS)
    result = await check_imap(
        oauth_request(oauth_user.email, token, imap_port=oauth_dovecot.imaps_port), options(ca_file)
    )
    assert (result.status, result.auth_mechanism) == ("ok", "XOAUTH2"), result.detail
    assert {"login", "examine"} <= {s.step for s in result.steps}


async def test_a_rejected_token_is_invalid_credentials_at_once_on_imap(
    oauth_dovecot: Dovecot, oauth_provider: TokenEndpoint, oauth_user: OAuthAccount, ca_file: str
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email, size=TOKEN_CHARS)
    oauth_provider.revoke(token)
    started = time.monotonic()
    result = await check_imap(
        oauth_request(oauth_user.email, token, imap_port=oauth_dovecot.imaps_port), options(ca_file)
    )
    assert time.monotonic() - started < REJECTED_WITHIN_S
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.AUTH_FAILED,
        Reason.INVALID_CREDENTIALS,
        "login",
    )
    assert "status 401" in (result.detail or "")  # the error challenge's JSON, kept as detail
    assert token not in result.model_dump_json()


async def test_smtp_sends_a_long_token_on_the_continuation_line(
    smtp_server: Callable[..., SmtpServer], ca_file: str
) -> None:
    token = "t" * TOKEN_CHARS
    server = smtp_with_oauth(smtp_server, {token: "ann@inboxcheck.test"})
    result = await check_smtp(
        oauth_request("ann@inboxcheck.test", token, smtp_port=server.port, smtp_security="starttls"),
        options(ca_file),
    )
    assert (result.status, result.auth_mechanism) == ("ok", "XOAUTH2"), result.detail
    [attempt] = server.oauth_attempts
    assert (attempt.mechanism, attempt.via, attempt.user) == (
        "XOAUTH2",
        "continuation",
        "ann@inboxcheck.test",
    )


async def test_smtp_sends_a_short_token_inline(smtp_server: Callable[..., SmtpServer], ca_file: str) -> None:
    server = smtp_with_oauth(smtp_server, {"short-token": "ann@inboxcheck.test"})
    result = await check_smtp(
        oauth_request("ann@inboxcheck.test", "short-token", smtp_port=server.port, smtp_security="starttls"),
        options(ca_file),
    )
    assert result.status == "ok", result.detail
    assert [a.via for a in server.oauth_attempts] == ["inline"]


@pytest.mark.parametrize("style", ["gmail", "microsoft"])
async def test_a_rejected_token_is_one_auth_and_invalid_credentials_on_smtp(
    smtp_server: Callable[..., SmtpServer], ca_file: str, style: str
) -> None:
    token = "r" * TOKEN_CHARS
    server = smtp_with_oauth(smtp_server, {"another-token": "ann@inboxcheck.test"}, style=style)
    started = time.monotonic()
    result = await check_smtp(
        oauth_request("ann@inboxcheck.test", token, smtp_port=server.port, smtp_security="starttls"),
        options(ca_file),
    )
    assert time.monotonic() - started < REJECTED_WITHIN_S
    assert (result.error_code, result.reason) == (ErrorCode.AUTH_FAILED, Reason.INVALID_CREDENTIALS)
    assert len(server.oauth_attempts) == 1  # never a second AUTH within one check
    if style == "gmail":
        assert "status 401" in (result.detail or "") and "scope https://mail.google.com/" in (
            result.detail or ""
        )
        assert server.oauth_attempts[0].error_answer is not None  # the challenge was answered
    else:
        assert result.enhanced_status_code == "5.7.3"
    assert token not in result.model_dump_json()


async def test_oauthbearer_when_it_is_all_the_server_offers(
    smtp_server: Callable[..., SmtpServer], ca_file: str
) -> None:
    server = smtp_with_oauth(smtp_server, {"bearer": "ann@inboxcheck.test"}, mechanisms=("OAUTHBEARER",))
    result = await check_smtp(
        oauth_request("ann@inboxcheck.test", "bearer", smtp_port=server.port, smtp_security="starttls"),
        options(ca_file),
    )
    assert (result.status, result.auth_mechanism) == ("ok", "OAUTHBEARER"), result.detail


async def test_no_oauth_mechanism_offered_sends_no_token(
    smtp_server: Callable[..., SmtpServer], ca_file: str
) -> None:
    server = smtp_server(mode="starttls", users={"ann@inboxcheck.test": "pw"})
    result = await check_smtp(
        oauth_request("ann@inboxcheck.test", "token", smtp_port=server.port, smtp_security="starttls"),
        options(ca_file),
    )
    assert (result.reason, result.failed_step) == (Reason.AUTH_MECHANISM_UNSUPPORTED, "auth")
    assert server.logins == []


async def test_both_protocols_with_one_token_give_a_valid_inbox(
    oauth_mail: dict[str, Any], oauth_provider: TokenEndpoint, oauth_user: OAuthAccount, ca_file: str
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email, size=TOKEN_CHARS)
    result = await validate_inbox(oauth_request(oauth_user.email, token, **oauth_mail), options(ca_file))
    assert result.status == "valid", (result.smtp.detail, result.imap.detail)


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"auth": "oauth2", "oauth2": {"access_token": "t"}}, "smtp_password", "one way to sign in"),
        ({"auth": "oauth2", "smtp_password": None}, "oauth2", "is required with auth oauth2"),
        ({"oauth2": {"access_token": "t"}}, "oauth2", 'needs "auth": "oauth2"'),
        ({"smtp_password": None}, "smtp_password", "is required"),
        (
            {"auth": "oauth2", "smtp_password": None, "oauth2": {"access_token": ""}},
            "oauth2.access_token",
            "at least 1",
        ),
    ],
)
def test_one_way_to_sign_in_per_request(fields: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(RequestError) as info:
        request(imap_port=CLOSED_PORT, smtp_host=LOOPBACK, **fields)
    found = {p.field: p.problem for p in info.value.problems}
    assert problem in found[field], found
