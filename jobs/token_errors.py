"""What an OAuth2 token endpoint's refusal means: a table on the OAuth `error` field.

Providers reword their descriptions and Microsoft asks clients not to depend on its AADSTS
numbers, so the verdict follows `error` (RFC 6749 5.2, plus OpenID Connect's consent and
interaction errors) and Microsoft's `suberror`; the AADSTS numbers only choose the advice added to
the detail. The one exception the reference names: Microsoft's `invalid_grant` that stands for
missing consent, multi-factor or conditional access (65001, 50076, 50079, 53003), since
`invalid_grant` alone would wrongly say the refresh token is dead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jobs.errors import CheckError, Reason, check_error
from jobs.oauth2_request import Grant
from jobs.redact import excerpt, scrub
from jobs.replies import MAX_BACKOFF_S, bounded_backoff_s
from jobs.retry_after import retry_after_s as http_retry_after_s

OAUTH_ERROR_REASONS: Mapping[str, Reason] = {
    "invalid_grant": Reason.OAUTH_REAUTH_REQUIRED,
    "consent_required": Reason.OAUTH_CONSENT_REQUIRED,
    "interaction_required": Reason.OAUTH_CONSENT_REQUIRED,
    "login_required": Reason.OAUTH_CONSENT_REQUIRED,
    "access_denied": Reason.OAUTH_CONSENT_REQUIRED,
    "invalid_client": Reason.OAUTH_APP_MISCONFIGURED,
    "unauthorized_client": Reason.OAUTH_APP_MISCONFIGURED,
    "invalid_scope": Reason.OAUTH_APP_MISCONFIGURED,
    "unsupported_grant_type": Reason.OAUTH_APP_MISCONFIGURED,
    "invalid_request": Reason.OAUTH_APP_MISCONFIGURED,
    "temporarily_unavailable": Reason.SERVICE_UNAVAILABLE,
    "server_error": Reason.SERVICE_UNAVAILABLE,
}
# Microsoft's suberror names the same cases in words.
SUBERROR_REASONS: Mapping[str, Reason] = {
    "consent_required": Reason.OAUTH_CONSENT_REQUIRED,
    "basic_action": Reason.OAUTH_CONSENT_REQUIRED,
    "additional_action": Reason.OAUTH_CONSENT_REQUIRED,
    "message_only": Reason.OAUTH_CONSENT_REQUIRED,
    "user_password_expired": Reason.OAUTH_CONSENT_REQUIRED,
    "bad_token": Reason.OAUTH_REAUTH_REQUIRED,
    "token_expired": Reason.OAUTH_REAUTH_REQUIRED,
}
# invalid_grant that means "a person must act", not "the token is dead" (see the docstring).
CONSENT_AADSTS = frozenset({65001, 50076, 50079, 53003})
# With an app-only grant there is no user token to be dead: invalid_grant means the app's
# delegation or key is wrong, or the mailbox is unknown to it.
APP_ONLY_GRANTS = frozenset({Grant.CLIENT_CREDENTIALS, Grant.SERVICE_ACCOUNT})

AADSTS_ADVICE: Mapping[int, str] = {
    700082: "the refresh token expired after 90 days unused",
    70008: "the refresh token has expired",
    50173: "the refresh token was revoked (a password change or a sign-out everywhere)",
    70043: "the refresh token expired under a sign-in frequency policy",
    65001: "nobody consented to the app for this user or tenant",
    50076: "multi-factor authentication is required",
    50079: "the user must enrol in multi-factor authentication",
    53003: "a conditional access policy blocks the sign-in",
    7000215: "the client secret is wrong (give the secret's value, not its id)",
    7000222: "the client secret has expired",
    700016: "the app is not registered in this tenant",
    70011: "a scope is not valid for this app",
    900144: "a required parameter is missing (usually the scope)",
}
_AADSTS = re.compile(r"\bAADSTS([0-9]{4,8})\b")
# What of a provider's description is kept in the detail.
DESCRIPTION_CHARS = 300


def _aadsts(body: Mapping[str, Any]) -> int | None:
    codes = body.get("error_codes")
    if isinstance(codes, list) and codes and isinstance(codes[0], int):
        return codes[0]
    match = _AADSTS.search(str(body.get("error_description", "")))
    return int(match.group(1)) if match else None


def reason_for(error: str, suberror: str | None, aadsts: int | None, grant: Grant | None) -> Reason | None:
    """The reason for an OAuth error answer, or None when `error` is none this table knows."""
    reason = OAUTH_ERROR_REASONS.get(error)
    if reason is Reason.OAUTH_REAUTH_REQUIRED:
        if suberror is not None and suberror in SUBERROR_REASONS:
            reason = SUBERROR_REASONS[suberror]
        elif aadsts in CONSENT_AADSTS:
            reason = Reason.OAUTH_CONSENT_REQUIRED
        if grant in APP_ONLY_GRANTS:
            reason = Reason.OAUTH_APP_MISCONFIGURED
    return reason


def refusal(
    status: int, body: Mapping[str, Any], where: str, grant: Grant | None, secrets: tuple[str, ...]
) -> CheckError:
    """The CheckError for a token endpoint's OAuth error answer (HTTP 4xx with a JSON body)."""
    error = str(body.get("error", ""))
    suberror = body.get("suberror") if isinstance(body.get("suberror"), str) else None
    aadsts = _aadsts(body)
    reason = reason_for(error, suberror, aadsts, grant)
    said = f"{where} answered HTTP {status} {excerpt(scrub(error, secrets), 64) or 'without an error code'}"
    description = body.get("error_description")
    if isinstance(description, str) and description:
        # The first line: Microsoft's trace and correlation ids follow on lines of their own.
        said += f": {excerpt(scrub(description.splitlines()[0], secrets), DESCRIPTION_CHARS)}"
    if aadsts is not None and aadsts in AADSTS_ADVICE:
        said += f" ({AADSTS_ADVICE[aadsts]})"
    if reason is None:
        return check_error(Reason.PROTOCOL_ERROR, f"{said}; an error this check does not know")
    return check_error(reason, said)


def unavailable(status: int, where: str, retry_after: str | None) -> CheckError:
    """The retryable CheckError for a 429 or a 5xx."""
    if status == 429:
        return check_error(
            Reason.TOO_MANY_ATTEMPTS,
            f"{where} is rate limiting token requests (HTTP 429)",
            retry_after_s=retry_after_s(retry_after),
        )
    return check_error(
        Reason.SERVICE_UNAVAILABLE, f"{where} answered HTTP {status}: the token endpoint is down"
    )


def retry_after_s(header: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now, bounded as a mail server's suggestion is; a date already
    past, or anything else, is no suggestion."""
    seconds = http_retry_after_s(header, (now or datetime.now(UTC)).timestamp())
    return None if seconds is None else bounded_backoff_s(min(seconds, MAX_BACKOFF_S))
