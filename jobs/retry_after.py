"""Retry-After (RFC 9110 10.2.3) from an HTTP peer, a token endpoint or a webhook receiver, as
seconds: delta-seconds or an HTTP date. Each caller bounds the wait its own way."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

# ASCII digits only: "²".isdigit() is true and float("²") raises.
_SECONDS = re.compile(r"[0-9]+")


def retry_after_s(header: str | None, now: float) -> float | None:
    """Seconds to wait from `now` (a Unix time): 0 for a date already past, inf for a run of digits
    past float's range; None when the header is absent or neither form."""
    if not header:
        return None
    text = header.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
