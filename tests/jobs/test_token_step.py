"""The token step against a real token endpoint on loopback: each way it ends, and what the
check then says in both sections. No AUTH is sent when it fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from jobs.errors import ErrorCode, Reason
from jobs.options import CheckOptions
from jobs.result import ValidationResult
from jobs.token_fetch import token_form
from jobs.token_http import MAX_RESPONSE_BYTES, post_form
from jobs.token_step import DirectTokens, obtain_token
from jobs.validate import validate_inbox
from tests.jobs.checks import CLOSED_PORT, STEP_TIMEOUT_S, TIMEOUT_SLACK_S, options, request
from tests.servers import oauth
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer
from tests.servers.oauth import Reply, TokenEndpoint
from tests.servers.smtp import SmtpServer

EMAIL = "ann@inboxcheck.test"


def refresh_request(endpoint: TokenEndpoint, token_url: str | None = None, **fields: Any) -> Any:
    client_id, secret = "app-1", "client-secret-value"
    endpoint.add_client(client_id, secret)
    refresh = endpoint.issue_refresh_token(EMAIL, client_id)
    given = {"refresh_token": refresh, "client_id": client_id, "client_secret": secret}
    return request(
        email=EMAIL,
        auth="oauth2",
        smtp_password=None,
        oauth2={**given, "token_url": token_url or endpoint.token_url},
        **fields,
    )


async def check(req: Any, opts: CheckOptions) -> ValidationResult:
    with capture_logs() as logs:
        result = await validate_inbox(req, opts)
    text = result.model_dump_json() + repr(logs)
    for secret in req.secrets:
        assert secret not in text
    return result


def assert_token_failed(result: ValidationResult, reason: Reason) -> None:
    for part in (result.smtp, result.imap):
        assert (part.reason, part.failed_step) == (reason, "token"), part.detail
        assert "no AUTH was sent" in (part.detail or "")
        assert [s.step for s in part.steps] == ["token"]
    assert result.reason is reason


@pytest.mark.parametrize(
    ("reply", "reason", "said"),
    [
        (oauth.GOOGLE_INVALID_GRANT, Reason.OAUTH_REAUTH_REQUIRED, "expired or revoked"),
        (oauth.MS_REFRESH_TOKEN_EXPIRED, Reason.OAUTH_REAUTH_REQUIRED, "90 days unused"),
        (oauth.MS_REFRESH_TOKEN_REVOKED, Reason.OAUTH_REAUTH_REQUIRED, "revoked"),
        (oauth.MS_CONSENT_MISSING, Reason.OAUTH_CONSENT_REQUIRED, "consented"),
        (oauth.MS_MFA_REQUIRED, Reason.OAUTH_CONSENT_REQUIRED, "multi-factor"),
        (oauth.MS_CONDITIONAL_ACCESS, Reason.OAUTH_CONSENT_REQUIRED, "conditional access"),
        (oauth.CONSENT_REQUIRED, Reason.OAUTH_CONSENT_REQUIRED, "consent_required"),
        (oauth.INTERACTION_REQUIRED, Reason.OAUTH_CONSENT_REQUIRED, "interaction_required"),
        (oauth.MS_BAD_CLIENT_SECRET, Reason.OAUTH_APP_MISCONFIGURED, "secret's value"),
        (oauth.MS_CLIENT_SECRET_EXPIRED, Reason.OAUTH_APP_MISCONFIGURED, "has expired"),
        (oauth.MS_UNKNOWN_CLIENT, Reason.OAUTH_APP_MISCONFIGURED, "not registered"),
        (oauth.MS_INVALID_SCOPE, Reason.OAUTH_APP_MISCONFIGURED, "invalid_scope"),
        (oauth.GOOGLE_CLIENT_NOT_FOUND, Reason.OAUTH_APP_MISCONFIGURED, "was not found"),
        (oauth.GOOGLE_UNAUTHORIZED_CLIENT, Reason.OAUTH_APP_MISCONFIGURED, "unauthorized_client"),
        (oauth.GOOGLE_INVALID_SCOPE, Reason.OAUTH_APP_MISCONFIGURED, "invalid_scope"),
    ],
)
async def test_each_refusal_of_the_token_endpoint_has_its_reason(
    token_endpoint: Callable[..., TokenEndpoint],
    smtp_server: Callable[..., SmtpServer],
    ca_file: str,
    reply: Reply,
    reason: Reason,
    said: str,
) -> None:
    endpoint = token_endpoint()
    mail = smtp_server(mode="starttls", auth_mechanisms=["XOAUTH2"], oauth=endpoint)
    endpoint.fail_with(reply)
    result = await check(refresh_request(endpoint, smtp_port=mail.port), options(ca_file))
    assert_token_failed(result, reason)
    assert (result.error_code, result.retryable) == (ErrorCode.AUTH_FAILED, False)
    assert said in (result.smtp.detail or "")
    assert mail.oauth_attempts == [] and len(endpoint.token_requests) == 1
    if reason is Reason.OAUTH_APP_MISCONFIGURED:
        assert "operator" in (result.resolution or "")
        assert result.oauth2_client_id == "app-1"  # app-wide: the event names the app
    else:
        assert result.oauth2_client_id is None


async def test_a_refusal_masks_the_secrets_it_echoes_and_keeps_the_names_it_quotes(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    req = refresh_request(endpoint)
    assert req.oauth2 is not None and req.oauth2.refresh_token is not None
    echoed = req.oauth2.refresh_token.get_secret_value()
    endpoint.fail_with(
        oauth.microsoft_error(
            "invalid_request",
            900144,
            f"The request body must contain the following parameter: 'refresh_token'; app 'app-1' sent '{echoed}'.",
        )
    )
    result = await check(req, options(ca_file))  # no secret anywhere in it
    assert_token_failed(result, Reason.OAUTH_APP_MISCONFIGURED)
    assert "parameter: 'refresh_token'; app 'app-1' sent '***'" in (result.smtp.detail or "")


async def test_a_token_answer_shows_no_token_in_its_repr(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    req = refresh_request(endpoint)
    assert req.oauth2 is not None
    answer = await post_form(
        endpoint.token_url, token_form(req.oauth2, EMAIL), "token endpoint", options(ca_file)
    )
    tokens = json.loads(answer.body)
    assert answer.status == 200 and tokens["access_token"] and tokens["refresh_token"]
    assert tokens["access_token"] not in repr(answer) and tokens["refresh_token"] not in repr(answer)


async def test_a_rotated_refresh_token_no_request_could_carry_is_not_handed_on(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    # Kept, it would make the registry's copy of the inbox (or the producer's next request) invalid.
    endpoint = token_endpoint()
    answer = {"access_token": "a" * 2_000, "token_type": "Bearer", "expires_in": 3_600}
    endpoint.fail_with(oauth.json_reply(200, {**answer, "refresh_token": "new-one\r\nX-Injected: 1"}))
    tokens = DirectTokens()
    outcome = await obtain_token(refresh_request(endpoint), options(ca_file), tokens)
    assert outcome.token is not None and outcome.token.access_token == answer["access_token"]
    assert tokens.rotated_refresh_token is None


@pytest.mark.parametrize(
    ("reply", "reason", "retry_after"),
    [
        (oauth.TEMPORARILY_UNAVAILABLE, Reason.SERVICE_UNAVAILABLE, None),
        (oauth.HTTP_500, Reason.SERVICE_UNAVAILABLE, None),
        (oauth.HTTP_503, Reason.SERVICE_UNAVAILABLE, None),
        (oauth.NOT_JSON, Reason.SERVICE_UNAVAILABLE, None),
        (oauth.RATE_LIMITED, Reason.TOO_MANY_ATTEMPTS, 30.0),
        (oauth.rate_limited(10**30), Reason.TOO_MANY_ATTEMPTS, 86_400.0),
        # A date past datetime's range is no suggestion, not a crash of the check.
        (oauth.rate_limited("Mon, 01 Jan 99999999999 00:00:00 GMT"), Reason.TOO_MANY_ATTEMPTS, None),
    ],
)
async def test_an_endpoint_that_is_down_or_busy_is_worth_another_attempt(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str, reply: Reply, reason: Reason, retry_after: Any
) -> None:
    endpoint = token_endpoint()
    endpoint.fail_with(reply)
    result = await check(refresh_request(endpoint), options(ca_file))
    assert_token_failed(result, reason)
    assert result.retryable
    assert (result.smtp.retry_after_s, result.imap.retry_after_s) == (retry_after, retry_after)


async def test_a_wrong_token_url_is_named_and_not_retried(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    wrong = endpoint.token_url.replace("/token", "/no-such-path")
    result = await check(refresh_request(endpoint, token_url=wrong), options(ca_file))
    assert_token_failed(result, Reason.PROTOCOL_ERROR)
    assert "HTTP 404" in (result.smtp.detail or "") and "token_url" in (result.smtp.detail or "")
    assert not result.retryable


async def test_an_endpoint_that_never_answers_times_out_at_the_token_step(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    endpoint.fail_with(oauth.HANG)
    started = time.monotonic()
    result = await check(refresh_request(endpoint), options(ca_file))
    assert time.monotonic() - started < STEP_TIMEOUT_S + TIMEOUT_SLACK_S
    assert_token_failed(result, Reason.RESPONSE_TIMEOUT)
    assert result.error_code is ErrorCode.TIMEOUT and result.retryable
    for part in (result.smtp, result.imap):  # the time the user waited is the token step's
        assert part.duration_ms == part.steps[0].ms >= STEP_TIMEOUT_S * 1000 / 2


async def test_an_answer_past_the_bound_is_not_read(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    endpoint.fail_with(Reply(200, b'{"access_token": "' + b"x" * (4 * MAX_RESPONSE_BYTES) + b'"}'))
    result = await check(refresh_request(endpoint), options(ca_file))
    assert_token_failed(result, Reason.PROTOCOL_ERROR)
    assert f"more than {MAX_RESPONSE_BYTES} bytes" in (result.smtp.detail or "")


async def test_a_refused_connection_and_a_refused_destination(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    refused = await check(
        refresh_request(endpoint, token_url=f"http://127.0.0.1:{CLOSED_PORT}/token"), options(ca_file)
    )
    assert_token_failed(refused, Reason.CONNECTION_REFUSED)
    public_only = await check(
        refresh_request(endpoint), options(ca_file, destinations=CheckOptions().destinations)
    )
    assert_token_failed(public_only, Reason.DESTINATION_REFUSED)
    assert endpoint.token_requests == []  # nothing reached the refused address


@pytest.mark.parametrize(
    ("cert", "reason"), [("untrusted", Reason.CERT_UNTRUSTED), ("expired", Reason.CERT_EXPIRED)]
)
async def test_the_token_endpoint_certificate_is_verified(
    token_endpoint: Callable[..., TokenEndpoint], pki: PKI, ca_file: str, cert: str, reason: Reason
) -> None:
    endpoint = token_endpoint(ssl_context=pki.cert(cert).ssl_context)  # type: ignore[arg-type]
    result = await check(refresh_request(endpoint), options(ca_file))
    assert_token_failed(result, reason)
    assert f"token endpoint {endpoint.token_url}" in (result.smtp.detail or "")
    assert endpoint.token_requests == []  # the refresh token never left


async def test_a_fresh_token_over_tls_signs_in_and_the_step_is_timed(
    token_endpoint: Callable[..., TokenEndpoint],
    smtp_server: Callable[..., SmtpServer],
    pki: PKI,
    ca_file: str,
) -> None:
    endpoint = token_endpoint(ssl_context=pki.valid.ssl_context)
    mail = smtp_server(mode="starttls", auth_mechanisms=["XOAUTH2"], oauth=endpoint)
    result = await check(
        refresh_request(endpoint, smtp_port=mail.port, smtp_security="starttls"), options(ca_file)
    )
    assert result.smtp.status == "ok", result.smtp.detail
    assert [s.step for s in result.smtp.steps][:2] == ["token", "dns"]
    [sent] = endpoint.token_requests
    assert sent.form["grant_type"] == "refresh_token" and "client_secret" in sent.form  # client_secret_post
    assert sent.headers.get("authorization") is None


async def _endless_chunked_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 16_384
    with contextlib.suppress(ConnectionError):
        while True:  # until the client hangs up
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()


async def _endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\n")
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(b"X-Filler: " + b"y" * 1000 + b"\r\n")
            await writer.drain()


@pytest.mark.parametrize(
    ("handler", "said"),
    [
        (_endless_chunked_body, f"answered more than {MAX_RESPONSE_BYTES} bytes"),
        (_endless_headers, "did not answer in HTTP"),
    ],
    ids=["endless-body", "endless-headers"],
)
async def test_an_endless_answer_is_cut_at_its_bound(
    fake_server: Callable[..., FakeServer], ca_file: str, handler: Any, said: str
) -> None:
    server = fake_server(handler)
    endpoint_url = f"http://127.0.0.1:{server.port}/token"
    started = time.monotonic()
    result = await check(refresh_request_for(endpoint_url), options(ca_file))
    assert time.monotonic() - started < STEP_TIMEOUT_S  # cut by size, not by the time limit
    assert_token_failed(result, Reason.PROTOCOL_ERROR)
    assert f"the OAuth2 token step failed, so no AUTH was sent: token endpoint {endpoint_url} {said}" in (
        result.smtp.detail or ""
    )


def refresh_request_for(token_url: str) -> Any:
    given = {"refresh_token": "rt-value", "client_id": "app-1", "client_secret": "client-secret-value"}
    return request(email=EMAIL, auth="oauth2", smtp_password=None, oauth2={**given, "token_url": token_url})
