"""Recommended daily sending limits: the reference's warm-up table, capped by the provider."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from jobs.presets import PRESETS, InboxType, provider_of


@dataclass(frozen=True, slots=True)
class Band:
    """A stretch of account age and the daily volume the product recommends during it."""

    from_day: int
    low: int
    high: int


# The reference's table: 0-2 weeks 20-30, 2-4 weeks 50-80, 4+ weeks 80-100+.
BANDS: tuple[Band, ...] = (Band(0, 20, 30), Band(14, 50, 80), Band(28, 80, 100))
# How long an account in the last band takes to climb from its low to its high end.
LAST_BAND_RAMP_DAYS = 14


@dataclass(frozen=True, slots=True)
class DailyLimit:
    max_daily_limit: int
    recommended: int
    range_low: int
    range_high: int


def _band(age_days: int) -> tuple[Band, int]:
    """The band an age falls in and how many days that band lasts."""
    for band, following in pairwise(BANDS):
        if age_days < following.from_day:
            return band, following.from_day - band.from_day
    return BANDS[-1], LAST_BAND_RAMP_DAYS


def max_daily_limit(inbox_type: InboxType, hosts: Iterable[str] = ()) -> int:
    """The inbox type's maximum, or a provider's lower one when any of the inbox's hosts is that
    provider's (presets.PROVIDER_DOMAINS): the lowest cap that applies, so a type that does not
    match the servers never raises it."""
    caps = [PRESETS[inbox_type].max_daily_limit]
    caps += [PRESETS[p].max_daily_limit for p in map(provider_of, hosts) if p is not None]
    return min(caps)


def daily_limit(
    inbox_type: InboxType, account_age_days: int | None, valid: bool, hosts: Iterable[str] = ()
) -> DailyLimit:
    """The limit for an inbox whose SMTP and IMAP servers are `hosts`; an unknown age counts as a
    new account, an invalid inbox sends 0.

    Within a band the recommendation climbs linearly from its low to its high end, so an inbox
    rechecked daily ramps up smoothly instead of jumping at each band edge.
    """
    cap = max_daily_limit(inbox_type, hosts)
    age = account_age_days or 0
    band, length = _band(age)
    # Every provider maximum today (2,000 and up) is far above the bands' top (100), so this
    # clipping changes no recommendation yet; it holds for a provider whose maximum is lower.
    low, high = min(band.low, cap), min(band.high, cap)
    progress = min(age - band.from_day, length - 1) / max(length - 1, 1)
    recommended = round(low + (high - low) * progress) if valid else 0
    return DailyLimit(max_daily_limit=cap, recommended=recommended, range_low=low, range_high=high)
