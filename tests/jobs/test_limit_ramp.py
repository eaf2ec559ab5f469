"""The recommended daily volume, day by day: it climbs within each band from its low to its high
end, reaching the high end on the band's last day."""

from __future__ import annotations

import pytest

from jobs.limits import daily_limit
from jobs.presets import InboxType


@pytest.mark.parametrize(
    ("age", "recommended"),
    [(0, 20), (7, 25), (13, 30), (14, 50), (20, 64), (27, 80), (28, 80), (35, 91), (41, 100), (500, 100)],
)
def test_the_recommendation_on_each_day(age: int, recommended: int) -> None:
    assert daily_limit(InboxType.CUSTOM_SMTP, age, valid=True).recommended == recommended
