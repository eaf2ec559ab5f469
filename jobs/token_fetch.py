"""Getting an OAuth2 access token for a request: the form each grant posts, and what the token
endpoint's answer means (jobs.token_errors for its refusals).

client_secret_post: Google and Microsoft both take the client secret as a form field, and a form
is one less encoding to get wrong than HTTP Basic's (RFC 6749 2.3.1 form-encodes inside it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

import jwt

from jobs.errors import Reason, check_error
from jobs.oauth2_request import MAX_TOKEN_CHARS, Grant, OAuth2Credentials
from jobs.options import CheckOptions
from jobs.time_units import SECONDS_PER_DAY
from jobs.token_errors import refusal, unavailable
from jobs.token_http import post_form

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google accepts an assertion valid for at most an hour.
ASSERTION_LIFETIME_S = 3600
HTTP_OK = 200
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500
# A longer lifetime is taken as this: real access tokens live about an hour, and one kept for
# years would never put the grant to the endpoint again (nor fit Redis's expiry, past some size).
MAX_EXPIRES_IN_S = SECONDS_PER_DAY


@dataclass(frozen=True, slots=True)
class FetchedToken:
    """An access token, and a new refresh token when the endpoint rotated it. No repr of secrets."""

    access_token: str = field(repr=False)
    expires_in_s: float | None = None
    refresh_token: str | None = field(default=None, repr=False)
    from_cache: bool = False


def where_of(oauth2: OAuth2Credentials) -> str:
    # The endpoint's URL holds no secret (a user name or password in it is refused).
    return f"token endpoint {oauth2.token_url}"


def token_form(oauth2: OAuth2Credentials, email: str) -> dict[str, str]:
    """The form for the request's grant (client_secret_post)."""
    scope = " ".join(oauth2.scopes or ())
    form: dict[str, str] = {}
    if oauth2.grant is Grant.SERVICE_ACCOUNT:
        form = {"grant_type": JWT_BEARER, "assertion": _assertion(oauth2, email, scope)}
    elif oauth2.grant is Grant.REFRESH_TOKEN:
        assert oauth2.refresh_token is not None
        form = {"grant_type": "refresh_token", "refresh_token": oauth2.refresh_token.get_secret_value()}
    else:
        form = {"grant_type": "client_credentials"}
    if oauth2.grant is not Grant.SERVICE_ACCOUNT:
        assert oauth2.client_id is not None
        form["client_id"] = oauth2.client_id
        if oauth2.client_secret is not None:
            form["client_secret"] = oauth2.client_secret.get_secret_value()
        # Microsoft refuses a refresh without it (AADSTS900144); others accept it.
        if scope:
            form["scope"] = scope
    return form


def _assertion(oauth2: OAuth2Credentials, email: str, scope: str) -> str:
    """Google's domain-wide delegation: a JWT signed with the service account's key, `sub` the
    mailbox."""
    assert oauth2.service_account_key is not None and oauth2.token_url is not None
    key = json.loads(oauth2.service_account_key.get_secret_value())
    now = int(time.time())
    claims = {
        "iss": key["client_email"],
        "sub": email,
        "scope": scope,
        "aud": oauth2.token_url,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_S,
    }
    try:
        return jwt.encode(claims, key["private_key"], algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError):
        # The library's text may quote the key: only the verdict is kept.
        raise check_error(
            Reason.OAUTH_APP_MISCONFIGURED,
            "the service account key's private_key is not an RSA key that can sign; download a new key",
        ) from None


async def fetch_token(
    oauth2: OAuth2Credentials, email: str, options: CheckOptions, secrets: tuple[str, ...]
) -> FetchedToken:
    """A fresh access token from the endpoint, or the CheckError its answer stands for."""
    assert oauth2.token_url is not None
    where = where_of(oauth2)
    form = token_form(oauth2, email)
    answer = await post_form(oauth2.token_url, form, where, options)
    body = _json(answer.body)
    if answer.status == HTTP_TOO_MANY_REQUESTS or answer.status >= HTTP_SERVER_ERROR:
        raise unavailable(answer.status, where, answer.retry_after)
    if body is None and answer.status != HTTP_OK:
        # A 404 from a wrong token_url, a proxy's HTML page, a redirect: asking again won't help.
        raise check_error(
            Reason.PROTOCOL_ERROR,
            f"{where} answered HTTP {answer.status} without an OAuth2 JSON answer: check token_url",
        )
    if body is None:
        raise check_error(
            Reason.SERVICE_UNAVAILABLE, f"{where} answered HTTP {answer.status} with a body that is not JSON"
        )
    if answer.status != HTTP_OK or "error" in body:
        # The form's secrets are the request's and a service account's signed assertion; its
        # other values (grant_type, client_id, scope) are names a refusal rightly quotes.
        raise refusal(answer.status, body, where, oauth2.grant, (*secrets, form.get("assertion", "")))
    token = _token_of(body, where)
    if oauth2.refresh_token is not None and token.refresh_token == oauth2.refresh_token.get_secret_value():
        token = replace(token, refresh_token=None)  # the same one back: nothing rotated
    return token


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _usable(value: Any) -> TypeGuard[str]:
    """A token a request could carry (jobs.oauth2_request): a rotated refresh token goes back into
    the registry or to the producer, and one with a line break in it would make every later
    request for the inbox invalid."""
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_CHARS and value.isprintable()


def _token_of(body: dict[str, Any], where: str) -> FetchedToken:
    token, refresh, expires_in = body.get("access_token"), body.get("refresh_token"), body.get("expires_in")
    if not _usable(token):
        raise check_error(Reason.PROTOCOL_ERROR, f"{where} answered without a usable access_token")
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        # Some endpoints send it as a string; float(), unlike int(), takes any number of digits
        # (too many is inf, capped below).
        expires_in = float(expires_in)
    lifetime_s = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        lifetime_s = float(min(expires_in, MAX_EXPIRES_IN_S))
    return FetchedToken(
        access_token=token, expires_in_s=lifetime_s, refresh_token=refresh if _usable(refresh) else None
    )
