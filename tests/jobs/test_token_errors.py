"""What a token endpoint's refusal means (the OAuth error field decides), and Retry-After as it
may send it: seconds or an HTTP date, bounded either way."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobs.errors import Reason
from jobs.oauth2_request import Grant
from jobs.token_errors import reason_for, retry_after_s

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        ("Thu, 03 Dec 2026 12:02:00 GMT", 120.0),
        ("Thu, 03 Dec 2026 11:00:00 GMT", None),  # in the past: no wait to honour
        ("9" * 400, 86_400.0),
        ("-5", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_in_seconds_or_as_a_date(header: str, seconds: float | None) -> None:
    assert retry_after_s(header, NOW) == seconds


@pytest.mark.parametrize(
    ("error", "suberror", "aadsts", "grant", "reason"),
    [
        ("invalid_grant", None, 700082, Grant.REFRESH_TOKEN, Reason.OAUTH_REAUTH_REQUIRED),
        ("invalid_grant", "consent_required", None, Grant.REFRESH_TOKEN, Reason.OAUTH_CONSENT_REQUIRED),
        ("invalid_grant", None, 53003, Grant.REFRESH_TOKEN, Reason.OAUTH_CONSENT_REQUIRED),
        # No user token to be dead: the app's delegation or key is wrong.
        ("invalid_grant", None, None, Grant.SERVICE_ACCOUNT, Reason.OAUTH_APP_MISCONFIGURED),
        ("invalid_grant", None, None, Grant.CLIENT_CREDENTIALS, Reason.OAUTH_APP_MISCONFIGURED),
        # The AADSTS number alone never decides: invalid_client stays the app's, whatever it says.
        ("invalid_client", None, 700082, Grant.REFRESH_TOKEN, Reason.OAUTH_APP_MISCONFIGURED),
        ("temporarily_unavailable", None, None, Grant.REFRESH_TOKEN, Reason.SERVICE_UNAVAILABLE),
        ("something_new", None, None, Grant.REFRESH_TOKEN, None),
    ],
)
def test_the_verdict_follows_the_error_field(
    error: str, suberror: str | None, aadsts: int | None, grant: Grant, reason: Reason | None
) -> None:
    assert reason_for(error, suberror, aadsts, grant) is reason
