"""Time units: arq and Redis count milliseconds, Python's clocks and the settings seconds."""

from __future__ import annotations

MS_PER_S = 1000
SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3_600
SECONDS_PER_DAY = 86_400
