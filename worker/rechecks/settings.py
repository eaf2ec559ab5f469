"""The settings of rechecks and pacing: a group of fields that worker.settings.Settings
takes in, so one Settings object (read from INBOXCHECK_* variables) carries everything a worker uses."""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, PositiveInt
from pydantic_settings import NoDecode

from jobs.hosts import canonical_host
from jobs.time_units import SECONDS_PER_DAY, SECONDS_PER_HOUR, SECONDS_PER_MINUTE, UNIT_SECONDS
from worker.rechecks.pacing import DEFAULT_HOST_LIMIT, DEFAULT_HOST_LIMITS, PacingPolicy

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from 90, "90", "90s", "15m", "6h" or "1d"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration such as 90s, 15m, 6h or 1d")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]


Duration = Annotated[float, BeforeValidator(parse_duration)]


def divides_a_minute(seconds: int) -> int:
    """A cron tick that divides the minute, so ticks come evenly (7 would tick at :56 and :00)."""
    if SECONDS_PER_MINUTE % seconds:
        raise ValueError(f"must divide {SECONDS_PER_MINUTE} (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60)")
    return seconds


def parse_json_object(value: object) -> object:
    """A JSON object from an environment variable's text; pydantic checks what it holds. Decoded
    here, not by pydantic-settings, whose own error on bad JSON names no variable."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value) if value.strip() else {}
    except (ValueError, RecursionError):
        raise ValueError('is not a JSON object such as {"smtp.example.com": 5}') from None


HostLimits = Annotated[dict[str, PositiveInt], NoDecode, BeforeValidator(parse_json_object)]


class RecheckSettings(BaseModel):
    """Rechecks and pacing (the README's settings table says what each does)."""

    # Rechecks
    recheck_every: Duration = Field(default=6.0 * SECONDS_PER_HOUR, ge=1)
    # How often the cron looks for due inboxes; a divisor of a minute (tests use 1).
    recheck_tick: Annotated[int, AfterValidator(divides_a_minute)] = Field(
        default=SECONDS_PER_MINUTE, ge=1, le=SECONDS_PER_MINUTE
    )
    # A newly registered inbox's first check lands at a random point this far ahead (capped by
    # its interval): a thousand registered at once are spread over it instead of one second.
    recheck_spread: Duration = Field(default=300.0, ge=0)
    # +/- fraction of every later interval, so checks registered together drift apart.
    recheck_jitter: float = Field(default=0.1, ge=0, le=0.5)
    # Inboxes one claim (one Lua call, one pipeline of enqueues) takes at most; a tick claims
    # again until nothing is due or half the tick has passed.
    recheck_batch: int = Field(default=500, ge=1)
    # A claimed inbox whose recheck never reported (job lost) is claimed again after this.
    recheck_claim_ttl: Duration = Field(default=1_800.0, ge=1)
    failing_after: int = Field(default=3, ge=1, le=100)
    failing_backoff_max: Duration = Field(default=7.0 * SECONDS_PER_DAY, ge=1)
    cert_warning_days: int = Field(default=14, ge=0, le=365)

    # Pacing
    host_limits: HostLimits = Field(default_factory=dict)
    default_host_limit: int = Field(default=DEFAULT_HOST_LIMIT, ge=1)
    host_backoff: Duration = Field(default=300.0, ge=0)
    # Longest a job waits for a host slot before handing itself back to the queue; also bounded
    # by what the job timeout leaves after the check's own deadline.
    pacing_wait: Duration = Field(default=10.0, ge=0)

    def pacing_policy(self, lease_s: float) -> PacingPolicy:
        # The policy looks hosts up by their canonical form, so the keys must be in it too.
        limits = {**DEFAULT_HOST_LIMITS, **{canonical_host(h): n for h, n in self.host_limits.items()}}
        return PacingPolicy(
            host_limits=limits,
            default_limit=self.default_host_limit,
            lease_s=lease_s,
            backoff_s=self.host_backoff,
        )
