"""A token endpoint's refusal as the user reads it: the reason, and a detail that quotes the
endpoint's error, the first line of its description and Microsoft's advice, bounded and scrubbed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from jobs.errors import Reason
from jobs.oauth2_request import Grant
from jobs.token_errors import DESCRIPTION_CHARS, refusal, retry_after_s, unavailable

WHERE = "login.example.com"


def _refused(
    body: dict[str, Any], grant: Grant | None = Grant.REFRESH_TOKEN, secrets: tuple[str, ...] = ()
) -> tuple[Reason, str]:
    error = refusal(400, body, WHERE, grant, secrets)
    return error.reason, error.detail


def test_the_detail_quotes_error_first_description_line_and_advice() -> None:
    body = {
        "error": "invalid_grant",
        "error_description": "AADSTS70008: The provided grant has expired.\r\nTrace ID: 1\r\nTimestamp: 2",
        "error_codes": [70008],
    }
    assert _refused(body) == (
        Reason.OAUTH_REAUTH_REQUIRED,
        f"{WHERE} answered HTTP 400 invalid_grant: AADSTS70008: The provided grant has expired. "
        "(the refresh token has expired)",
    )


@pytest.mark.parametrize("codes", [None, [], ["65001"]])
def test_the_aadsts_number_is_read_from_the_description_without_usable_error_codes(codes: object) -> None:
    body: dict[str, object] = {
        "error": "invalid_grant",
        "error_description": "AADSTS65001: The user has not consented.",
    }
    if codes is not None:
        body["error_codes"] = codes
    reason, detail = _refused(body)
    assert reason is Reason.OAUTH_CONSENT_REQUIRED
    assert detail.endswith("(nobody consented to the app for this user or tenant)")


def test_the_error_codes_list_names_the_aadsts_number_when_the_description_does_not() -> None:
    reason, detail = _refused(
        {"error": "invalid_grant", "error_description": "expired", "error_codes": [70008]}
    )
    assert (reason, detail) == (
        Reason.OAUTH_REAUTH_REQUIRED,
        f"{WHERE} answered HTTP 400 invalid_grant: expired (the refresh token has expired)",
    )


def test_an_aadsts_number_without_advice_adds_none() -> None:
    reason, detail = _refused({"error": "invalid_grant", "error_description": "no", "error_codes": [12345]})
    assert (reason, detail) == (Reason.OAUTH_REAUTH_REQUIRED, f"{WHERE} answered HTTP 400 invalid_grant: no")


def test_microsofts_suberror_decides_when_it_is_text() -> None:
    assert (
        _refused({"error": "invalid_grant", "suberror": "consent_required"})[0]
        is Reason.OAUTH_CONSENT_REQUIRED
    )
    assert _refused({"error": "invalid_grant", "suberror": "bad_token"})[0] is Reason.OAUTH_REAUTH_REQUIRED
    assert _refused({"error": "invalid_grant", "suberror": 7})[0] is Reason.OAUTH_REAUTH_REQUIRED
    assert (
        _refused({"error": "invalid_grant", "suberror": ["consent_required"]})[0]
        is Reason.OAUTH_REAUTH_REQUIRED
    )
    assert _refused({"error": "invalid_grant", "suberror": "unheard_of"})[0] is Reason.OAUTH_REAUTH_REQUIRED


def test_invalid_grant_for_an_app_only_grant_is_the_apps_configuration() -> None:
    reason, _ = _refused({"error": "invalid_grant"}, grant=Grant.CLIENT_CREDENTIALS)
    assert reason is Reason.OAUTH_APP_MISCONFIGURED


def test_an_answer_without_a_known_error_is_a_protocol_error_that_says_so() -> None:
    assert _refused({}) == (
        Reason.PROTOCOL_ERROR,
        f"{WHERE} answered HTTP 400 without an error code; an error this check does not know",
    )
    assert _refused({"error": "e" * 100, "error_description": 5}) == (
        Reason.PROTOCOL_ERROR,
        f"{WHERE} answered HTTP 400 {'e' * 61}...; an error this check does not know",
    )


def test_the_description_is_bounded_and_scrubbed() -> None:
    body = {
        "error": "invalid_client",
        "error_description": "client secret s3cr3t-value is wrong " + "x" * 500,
    }
    reason, detail = _refused(body, secrets=("s3cr3t-value",))
    assert reason is Reason.OAUTH_APP_MISCONFIGURED
    description = detail.removeprefix(f"{WHERE} answered HTTP 400 invalid_client: ")
    assert description.startswith("client secret *** is wrong xxx")
    assert len(description) == DESCRIPTION_CHARS
    assert "s3cr3t" not in detail


def test_rate_limiting_passes_on_the_suggested_wait_and_an_outage_says_so() -> None:
    limited = unavailable(429, WHERE, "30")
    assert (limited.reason, limited.detail, limited.retry_after_s) == (
        Reason.TOO_MANY_ATTEMPTS,
        f"{WHERE} is rate limiting token requests (HTTP 429)",
        30.0,
    )
    down = unavailable(503, WHERE, "30")
    assert (down.reason, down.detail) == (
        Reason.SERVICE_UNAVAILABLE,
        f"{WHERE} answered HTTP 503: the token endpoint is down",
    )


def test_a_retry_after_date_counts_from_the_clock_when_no_time_is_given() -> None:
    header = format_datetime(datetime.now(UTC) + timedelta(minutes=10), usegmt=True)
    wait = retry_after_s(header)
    assert wait is not None and 500 < wait <= 600
