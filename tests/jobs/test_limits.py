"""Recommended daily limits: the reference's warm-up table, capped by each provider."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jobs.limits import daily_limit, max_daily_limit
from jobs.presets import PRESETS, InboxType


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
    # The maximum as reported. That it caps the recommendation cannot show with these numbers
    # (the bands top out at 100 a day): see the lowered maximum below.
    assert daily_limit(inbox_type, 100, True).max_daily_limit == cap


@pytest.mark.parametrize(
    ("inbox_type", "hosts", "cap"),
    [
        (InboxType.CUSTOM_SMTP, ["smtp.gmail.com", "imap.gmail.com"], 2_000),
        (InboxType.CUSTOM_SMTP, ["SMTP.GMAIL.COM.", "mail.example"], 2_000),  # one host is enough
        (InboxType.CUSTOM_SMTP, ["smtp-relay.gmail.com"], 2_000),
        (InboxType.CUSTOM_SMTP, ["aspmx.l.google.com"], 2_000),
        (InboxType.CUSTOM_SMTP, ["imap.googlemail.com"], 2_000),
        (InboxType.CUSTOM_SMTP, ["smtp.office365.com", "outlook.office365.com"], 5_000),
        (InboxType.CUSTOM_SMTP, ["smtp-mail.outlook.com"], 5_000),
        (InboxType.CUSTOM_SMTP, ["evilgmail.com", "gmail.com.mail.example"], 100_000),  # label-wise
        (InboxType.CUSTOM_SMTP, ["mail.example"], 100_000),
        (InboxType.GOOGLE_WORKSPACE, ["relay.example"], 2_000),  # the type's own cap still applies
        (InboxType.OUTLOOK_365, ["smtp.gmail.com"], 2_000),  # the lower of two that apply
    ],
)
def test_the_maximum_follows_the_provider_the_hosts_belong_to(
    inbox_type: InboxType, hosts: list[str], cap: int
) -> None:
    assert max_daily_limit(inbox_type, hosts) == cap
    assert daily_limit(inbox_type, 100, True, hosts).max_daily_limit == cap


def test_a_provider_maximum_below_the_bands_caps_the_recommendation(monkeypatch: pytest.MonkeyPatch) -> None:
    # No provider's maximum today is below the bands' top (100 a day), so no preset can show the
    # clipping; a Google maximum lowered for this test does, reached through the host alone.
    monkeypatch.setitem(
        PRESETS, InboxType.GOOGLE_WORKSPACE, replace(PRESETS[InboxType.GOOGLE_WORKSPACE], max_daily_limit=60)
    )
    limit = daily_limit(InboxType.CUSTOM_SMTP, 900, True, ["smtp.gmail.com"])
    assert (limit.max_daily_limit, limit.range_low, limit.range_high, limit.recommended) == (60, 60, 60, 60)
    young = daily_limit(InboxType.CUSTOM_SMTP, 20, True, ["smtp.gmail.com"])
    assert (young.range_low, young.range_high) == (50, 60) and young.recommended <= 60
