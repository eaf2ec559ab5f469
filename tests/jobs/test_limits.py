"""Recommended daily limits: the reference's warm-up table, capped by each provider."""

from __future__ import annotations

import pytest

from jobs.limits import daily_limit
from jobs.presets import InboxType


@pytest.mark.parametrize(
    ("age", "low", "high"),
    [(None, 20, 30), (0, 20, 30), (13, 20, 30), (14, 50, 80), (27, 50, 80), (28, 80, 100), (900, 80, 100)],
)
def test_age_bands_follow_the_reference(age: int | None, low: int, high: int) -> None:
    limit = daily_limit(InboxType.CUSTOM_SMTP, age, valid=True)
    assert (limit.range_low, limit.range_high) == (low, high)
    assert low <= limit.recommended <= high


def test_recommendation_ramps_up_with_age_and_never_drops() -> None:
    values = [daily_limit(InboxType.GOOGLE_WORKSPACE, age, True).recommended for age in range(60)]
    assert values == sorted(values)
    assert values[0] == 20 and values[-1] == 100


def test_invalid_inbox_gets_zero() -> None:
    assert daily_limit(InboxType.OUTLOOK_365, 400, valid=False).recommended == 0


@pytest.mark.parametrize(
    ("inbox_type", "cap"),
    [(InboxType.GOOGLE_WORKSPACE, 2_000), (InboxType.OUTLOOK_365, 5_000), (InboxType.CUSTOM_SMTP, 100_000)],
)
def test_provider_maximum(inbox_type: InboxType, cap: int) -> None:
    limit = daily_limit(inbox_type, 100, True)
    assert limit.max_daily_limit == cap
    assert limit.recommended <= cap
