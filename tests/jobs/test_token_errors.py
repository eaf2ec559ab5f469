"""Retry-After as a token endpoint may send it: seconds or an HTTP date, bounded either way."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobs.token_errors import retry_after_s

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
