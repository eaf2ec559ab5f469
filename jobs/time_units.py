"""Time-unit constants: every conversion between microseconds, milliseconds, seconds and days."""

from __future__ import annotations

from types import MappingProxyType

# arq and Redis count time in milliseconds; Python's clocks give seconds.
MS_PER_S = 1000
# Redis TIME answers seconds and microseconds.
US_PER_MS = 1000
SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 60 * SECONDS_PER_MINUTE
SECONDS_PER_DAY = 24 * SECONDS_PER_HOUR
# Seconds per suffix of a duration setting such as 90s, 15m, 6h or 1d (none means seconds).
UNIT_SECONDS = MappingProxyType(
    {"s": 1, "m": SECONDS_PER_MINUTE, "h": SECONDS_PER_HOUR, "d": SECONDS_PER_DAY}
)
