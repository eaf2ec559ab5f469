"""What the token step makes of each answer a token endpoint (real, on loopback) can give: the
lifetime it keeps, the tokens it refuses, the bound on the answer's size, the form and headers
it sends, and the exact text a user reads when it fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jobs.errors import CheckError, Reason
from jobs.oauth2_request import MAX_TOKEN_CHARS
from jobs.result import ProtocolResult
from jobs.steps import Step
from jobs.token_fetch import ASSERTION_LIFETIME_S, MAX_EXPIRES_IN_S, FetchedToken, token_form
from jobs.token_http import MAX_RESPONSE_BYTES
from jobs.token_step import (
    CACHED_TOKEN_REFUSED,
    DirectTokens,
    TokenOutcome,
    obtain_token,
    retry_with_fresh_token,
)
from tests.jobs.checks import CLOSED_PORT, options, request
from tests.servers import oauth
from tests.servers.fakes import FakeServer, reset_on_accept
from tests.servers.oauth import Reply, TokenEndpoint

EMAIL = "ann@inboxcheck.test"
ACCESS = "access-token-value"


def refresh_request(endpoint: TokenEndpoint | None = None, token_url: str | None = None) -> Any:
    given = {"refresh_token": "rt-value", "client_id": "app-1", "client_secret": "client-secret-value"}
    if endpoint is not None:
        endpoint.add_client("app-1", "client-secret-value")
        given["refresh_token"] = endpoint.issue_refresh_token(EMAIL, "app-1")
        token_url = endpoint.token_url
    return request(email=EMAIL, auth="oauth2", smtp_password=None, oauth2={**given, "token_url": token_url})


async def outcome_of(endpoint: TokenEndpoint, reply: Reply, ca_file: str) -> TokenOutcome:
    endpoint.fail_with(reply, times=1)
    return await obtain_token(refresh_request(endpoint), options(ca_file), DirectTokens())


def error_of(outcome: TokenOutcome) -> CheckError:
    assert outcome.error is not None and outcome.token is None
    return outcome.error


@pytest.mark.parametrize(
    ("expires_in", "kept"),
    [
        (3600, 3600.0),
        ("3600", 3600.0),  # some endpoints send a string
        (1, 1.0),
        (10**30, float(MAX_EXPIRES_IN_S)),  # years would never put the grant to the endpoint again
        ("9" * 400, float(MAX_EXPIRES_IN_S)),
        (0, None),
        (-5, None),
        (True, None),
        ("soon", None),
        (None, None),
    ],
)
async def test_the_lifetime_kept_is_the_endpoints_bounded_or_none(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str, expires_in: Any, kept: float | None
) -> None:
    answer: dict[str, Any] = {"access_token": ACCESS, "token_type": "Bearer"}
    if expires_in is not None:
        answer["expires_in"] = expires_in
    outcome = await outcome_of(token_endpoint(), oauth.json_reply(200, answer), ca_file)
    assert outcome.token == FetchedToken(ACCESS, kept)


@pytest.mark.parametrize("length", [1, MAX_TOKEN_CHARS])
async def test_an_access_token_of_any_length_up_to_the_bound_is_taken(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str, length: int
) -> None:
    access = "a" * length
    outcome = await outcome_of(token_endpoint(), oauth.json_reply(200, {"access_token": access}), ca_file)
    assert outcome.token is not None and outcome.token.access_token == access


@pytest.mark.parametrize("access", ["", "a" * (MAX_TOKEN_CHARS + 1), "tok\r\nen", 12345, None])
async def test_an_access_token_no_request_could_carry_is_refused(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str, access: Any
) -> None:
    endpoint = token_endpoint()
    outcome = await outcome_of(endpoint, oauth.json_reply(200, {"access_token": access}), ca_file)
    error = error_of(outcome)
    assert error.reason is Reason.PROTOCOL_ERROR
    assert error.detail == f"token endpoint {endpoint.token_url} answered without a usable access_token"


async def test_the_same_refresh_token_back_is_no_rotation(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    req = refresh_request(endpoint)
    same = req.oauth2.refresh_token.get_secret_value()
    endpoint.fail_with(oauth.json_reply(200, {"access_token": ACCESS, "refresh_token": same}))
    tokens = DirectTokens()
    outcome = await obtain_token(req, options(ca_file), tokens)
    assert outcome.token == FetchedToken(ACCESS, None, refresh_token=None)
    assert tokens.rotated_refresh_token is None


async def test_no_rotated_refresh_token_is_told_when_the_step_fails(ca_file: str) -> None:
    tokens = DirectTokens()
    outcome = await obtain_token(
        refresh_request(token_url=f"http://127.0.0.1:{CLOSED_PORT}/token"), options(ca_file), tokens
    )
    assert error_of(outcome).reason is Reason.CONNECTION_REFUSED
    assert f"token endpoint http://127.0.0.1:{CLOSED_PORT}/token" in (outcome.error.detail or "")
    assert tokens.rotated_refresh_token is None


async def test_an_error_with_http_200_is_still_a_refusal(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    body = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    error = error_of(await outcome_of(endpoint, oauth.json_reply(200, body), ca_file))
    assert error.reason is Reason.OAUTH_REAUTH_REQUIRED
    assert error.detail == (
        f"token endpoint {endpoint.token_url} answered HTTP 200 invalid_grant: Token has been expired or revoked."
    )


async def test_a_refusal_that_quotes_no_secret_is_shown_word_for_word(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    body = {"error": "unauthorized_client", "error_description": "Client XXXX-1 is not allowed ***"}
    error = error_of(await outcome_of(endpoint, oauth.json_reply(401, body), ca_file))
    assert error.reason is Reason.OAUTH_APP_MISCONFIGURED
    assert error.detail is not None and error.detail.startswith(
        f"token endpoint {endpoint.token_url} answered HTTP 401 unauthorized_client: "
        "Client XXXX-1 is not allowed ***"
    )


@pytest.mark.parametrize(
    ("reply", "reason", "said"),
    [
        (
            oauth.json_reply(200, ["access_token"]),
            Reason.SERVICE_UNAVAILABLE,
            "answered HTTP 200 with a body that is not JSON",
        ),
        (oauth.HTTP_503, Reason.SERVICE_UNAVAILABLE, "answered HTTP 503: the token endpoint is down"),
        (oauth.RATE_LIMITED, Reason.TOO_MANY_ATTEMPTS, "is rate limiting token requests (HTTP 429)"),
        # Labelled as compressed (not asked for, so not decoded): no token is read from it.
        (
            Reply(
                200, json.dumps({"access_token": ACCESS}).encode(), headers=(("Content-Encoding", "gzip"),)
            ),
            Reason.SERVICE_UNAVAILABLE,
            "answered HTTP 200 with a body that is not JSON",
        ),
    ],
    ids=["json-list", "503", "429", "gzip-label"],
)
async def test_each_failure_names_the_endpoint(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str, reply: Reply, reason: Reason, said: str
) -> None:
    endpoint = token_endpoint()
    error = error_of(await outcome_of(endpoint, reply, ca_file))
    assert (error.reason, error.detail) == (reason, f"token endpoint {endpoint.token_url} {said}")


def _padded(size: int) -> bytes:
    head = json.dumps({"access_token": ACCESS, "pad": ""}).encode()
    return head[:-2] + b"x" * (size - len(head)) + head[-2:]


async def test_an_answer_of_exactly_the_bound_is_read_and_one_byte_more_is_not(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    at_bound = _padded(MAX_RESPONSE_BYTES)
    assert len(at_bound) == MAX_RESPONSE_BYTES
    outcome = await outcome_of(endpoint, Reply(200, at_bound), ca_file)
    assert outcome.token is not None and outcome.token.access_token == ACCESS
    error = error_of(await outcome_of(endpoint, Reply(200, _padded(MAX_RESPONSE_BYTES + 1)), ca_file))
    assert (error.reason, error.detail) == (
        Reason.PROTOCOL_ERROR,
        f"token endpoint {endpoint.token_url} answered more than {MAX_RESPONSE_BYTES} bytes; the rest was not read",
    )


async def _declares_a_huge_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{")
    with contextlib.suppress(ConnectionError):
        await writer.drain()
        await reader.read()  # until the client hangs up, which it does without reading on


async def test_a_declared_length_past_the_bound_is_refused_before_reading(
    fake_server: Callable[..., FakeServer], ca_file: str
) -> None:
    url = f"http://127.0.0.1:{fake_server(_declares_a_huge_body).port}/token"
    outcome = await obtain_token(refresh_request(token_url=url), options(ca_file), DirectTokens())
    error = error_of(outcome)
    assert (error.reason, error.detail) == (
        Reason.PROTOCOL_ERROR,
        f"token endpoint {url} answered more than {MAX_RESPONSE_BYTES} bytes; the rest was not read",
    )


async def _reset_after_the_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await reset_on_accept(reader, writer)


async def test_a_connection_reset_instead_of_an_answer_is_a_closed_connection(
    fake_server: Callable[..., FakeServer], ca_file: str
) -> None:
    url = f"http://127.0.0.1:{fake_server(_reset_after_the_request).port}/token"
    outcome = await obtain_token(refresh_request(token_url=url), options(ca_file), DirectTokens())
    error = error_of(outcome)
    assert (error.reason, error.detail) == (
        Reason.CONNECTION_CLOSED,
        f"token endpoint {url} closed the connection",
    )


async def test_the_request_asks_for_plain_json_as_inboxcheck(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint()
    outcome = await obtain_token(refresh_request(endpoint), options(ca_file), DirectTokens())
    assert outcome.token is not None
    [sent] = endpoint.token_requests
    assert (
        sent.method,
        sent.headers["accept"],
        sent.headers["accept-encoding"],
        sent.headers["user-agent"],
    ) == (
        "POST",
        "application/json",
        "identity",
        "inboxcheck",
    )


# -- service accounts -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account(token_url: str, private_key: str, scopes: list[str] | None = None) -> Any:
    key = json.dumps(
        {"type": "service_account", "client_email": "svc@project.test", "private_key": private_key}
    )
    oauth2: dict[str, Any] = {"grant": "service_account", "service_account_key": key, "token_url": token_url}
    if scopes is not None:
        oauth2["scopes"] = scopes
    return request(email=EMAIL, auth="oauth2", smtp_password=None, oauth2=oauth2)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_the_assertion_names_the_account_the_mailbox_the_scopes_and_the_endpoint(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    url = "https://oauth2.example.test/token"
    req = service_account(url, pem(signing_key), scopes=["https://mail.google.com/", "openid"])
    form = token_form(req.oauth2, EMAIL)
    claims = jwt.decode(form["assertion"], signing_key.public_key(), algorithms=["RS256"], audience=url)
    assert {k: claims[k] for k in ("iss", "sub", "scope", "aud")} == {
        "iss": "svc@project.test",
        "sub": EMAIL,
        "scope": "https://mail.google.com/ openid",
        "aud": url,
    }
    assert claims["exp"] - claims["iat"] == ASSERTION_LIFETIME_S


async def test_a_key_that_cannot_sign_is_the_apps_to_fix(ca_file: str) -> None:
    req = service_account(f"http://127.0.0.1:{CLOSED_PORT}/token", "-----BEGIN PRIVATE KEY-----\nnot a key\n")
    error = error_of(await obtain_token(req, options(ca_file), DirectTokens()))
    assert (error.reason, error.detail) == (
        Reason.OAUTH_APP_MISCONFIGURED,
        "the service account key's private_key is not an RSA key that can sign; download a new key",
    )


async def _echoes_the_assertion(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    form = dict(pair.split("=", 1) for pair in (await reader.readexactly(length)).decode().split("&"))
    body = json.dumps({"error": "invalid_grant", "error_description": f"Invalid JWT: {form['assertion']}"})
    writer.write(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def test_a_refusal_that_echoes_the_signed_assertion_shows_it_masked(
    fake_server: Callable[..., FakeServer], signing_key: rsa.RSAPrivateKey, ca_file: str
) -> None:
    url = f"http://127.0.0.1:{fake_server(_echoes_the_assertion).port}/token"
    error = error_of(
        await obtain_token(service_account(url, pem(signing_key)), options(ca_file), DirectTokens())
    )
    assert error.detail == f"token endpoint {url} answered HTTP 400 invalid_grant: Invalid JWT: ***"
    assert error.reason is Reason.OAUTH_APP_MISCONFIGURED  # no person signs in for a service account


# -- what the source and the mail server's verdict make of it -----------------------------------


async def test_the_source_is_asked_for_the_requests_token(
    token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    asked: list[Any] = []

    class Recording(DirectTokens):
        async def get(self, request: Any, fetch: Any) -> FetchedToken:
            asked.append(request)
            return await super().get(request, fetch)

    endpoint = token_endpoint()
    req = refresh_request(endpoint)
    outcome = await obtain_token(req, options(ca_file), Recording())
    assert outcome.token is not None and asked == [req]


def failed_part(reason: Reason, step: Step, detail: str | None) -> ProtocolResult:
    return ProtocolResult(
        protocol="imap",
        status="failed",
        host="127.0.0.1",
        port=993,
        security="ssl",
        reason=reason,
        failed_step=step,
        detail=detail,
        retryable=False,
    )


@pytest.mark.parametrize("step", [Step.AUTH, Step.LOGIN])
@pytest.mark.parametrize("detail", ["the server said NO", None])
def test_a_refused_kept_token_is_retried_with_the_servers_words_kept(step: Step, detail: str | None) -> None:
    part = retry_with_fresh_token(failed_part(Reason.INVALID_CREDENTIALS, step, detail))
    assert part.retryable and part.detail == (detail or "") + CACHED_TOKEN_REFUSED


@pytest.mark.parametrize(
    ("reason", "step"), [(Reason.SERVICE_UNAVAILABLE, Step.LOGIN), (Reason.INVALID_CREDENTIALS, Step.TOKEN)]
)
def test_any_other_failure_is_left_as_it_is(reason: Reason, step: Step) -> None:
    part = failed_part(reason, step, "as said")
    assert retry_with_fresh_token(part) == part
