"""Health of a registered inbox: a small state machine fed by each recheck's terminal event.

Pure logic: no Redis, no clock of its own (callers pass `now`), so every rule is unit tested
directly. worker.rechecks.registry stores the state; worker.rechecks.hooks applies it after each recheck.

    pending  --ok-->         healthy
    any      --definite-->   failing      (wrong password, SMTP AUTH off, expired certificate, ...)
    any      --transient-->  degraded     (timeouts, refused connections, too many attempts, ...)
    degraded --transient x N in a row--> failing
    failing  --transient-->  failing      (only a success recovers a failing inbox)
    any      --ok-->         healthy
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

SECONDS_PER_DAY = 86_400
# Event types this module's transitions produce (the envelope is built in worker.rechecks.hooks).
CERT_EXPIRING = "inbox.certificate.expiring"
# Failing inboxes wait interval * BACKOFF_FACTOR ** (failing checks - 1) before the next check.
BACKOFF_FACTOR = 2
# Terminal event statuses that are not a check verdict (see worker.messages.events).
STATUS_REJECTED = "rejected"
STATUS_FAILED = "failed"
PROTOCOLS = ("smtp", "imap")


class Health(StrEnum):
    PENDING = "pending"  # registered, never checked
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILING = "failing"


class Outcome(StrEnum):
    OK = "ok"
    TRANSIENT = "transient"
    DEFINITE = "definite"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """The knobs, from settings (see worker.settings: recheck_*)."""

    interval_s: float
    failing_after: int = 3
    backoff_max_s: float = 7 * SECONDS_PER_DAY
    cert_warning_days: int = 14
    # +/- this fraction of each delay, so inboxes registered together drift apart.
    jitter_fraction: float = 0.1


@dataclass(frozen=True, slots=True)
class CertWarning:
    protocol: str
    host: str
    days_left: int
    not_after: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": "CERT_EXPIRING",
            "protocol": self.protocol,
            "host": self.host,
            "days_left": self.days_left,
            "not_after": self.not_after,
        }


@dataclass(frozen=True, slots=True)
class Observation:
    """What health needs from one terminal event (completed, rejected or failed)."""

    outcome: Outcome
    error_code: str | None
    reason: str | None
    checked_at: datetime
    cert_warnings: tuple[CertWarning, ...] = ()


@dataclass(frozen=True, slots=True)
class HealthState:
    health: Health = Health.PENDING
    error_code: str | None = None
    reason: str | None = None
    consecutive_failures: int = 0
    # Checks in a row that ended failing: drives the backoff of failing inboxes.
    failing_checks: int = 0
    last_checked_at: float | None = None
    last_ok_at: float | None = None
    # The account-age clock when the producer gave no age: the first successful check.
    first_ok_at: float | None = None
    # Certificates already warned about ("protocol:not_after"), so each is announced once.
    warned_certs: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "health": self.health.value,
            "error_code": self.error_code,
            "reason": self.reason,
            "consecutive_failures": self.consecutive_failures,
        }


@dataclass(frozen=True, slots=True)
class Transition:
    previous: HealthState
    current: HealthState
    next_check_in_s: float
    new_cert_warnings: tuple[CertWarning, ...] = field(default=())

    @property
    def changed(self) -> bool:
        """Only a change of health or error code is news; a second identical failure is not."""
        return (
            self.previous.health != self.current.health or self.previous.error_code != self.current.error_code
        )


def cert_warnings(data: dict[str, Any], warning_days: int) -> tuple[CertWarning, ...]:
    """Certificates (SMTP and IMAP) that expire within `warning_days` but still work."""
    found = []
    for protocol in PROTOCOLS:
        part = data.get(protocol) or {}
        tls = part.get("tls") or {}
        days_left = tls.get("cert_days_left")
        if isinstance(days_left, int) and 0 <= days_left <= warning_days:
            found.append(
                CertWarning(protocol, str(part.get("host", "")), days_left, tls.get("cert_not_after"))
            )
    return tuple(found)


def observe(event: dict[str, Any], warning_days: int) -> Observation:
    """Read a terminal event (as written to the stream) into an Observation."""
    data = event.get("data") or {}
    status = data.get("status")
    checked_at = _parse_time(data.get("checked_at") or event.get("time"))
    code, reason = data.get("error_code"), data.get("reason")
    if status == "valid":
        outcome = Outcome.OK
    elif status == STATUS_FAILED:
        outcome = Outcome.TRANSIENT  # the worker itself failed: says nothing about the inbox
    elif status == STATUS_REJECTED:
        outcome = Outcome.DEFINITE  # e.g. credentials sealed with a key no worker has any more
    else:
        # The engine's own verdict on the whole check (tasks retries by the same flag): a top-level
        # reason alone can misjudge a check whose SMTP and IMAP parts failed differently.
        outcome = Outcome.TRANSIENT if data.get("retryable") is True else Outcome.DEFINITE
    return Observation(outcome, code, reason, checked_at, cert_warnings(data, warning_days))


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def next_delay(state: HealthState, policy: HealthPolicy, rng: random.Random | None = None) -> float:
    """Seconds to the next check: the interval, or a growing backoff while failing."""
    delay = policy.interval_s
    if state.health is Health.FAILING:
        delay = min(
            policy.interval_s * BACKOFF_FACTOR ** max(state.failing_checks - 1, 0),
            max(policy.backoff_max_s, policy.interval_s),
        )
    spread = delay * policy.jitter_fraction
    return max(delay + (rng or random).uniform(-spread, spread), 0.0)


def advance(
    state: HealthState, seen: Observation, policy: HealthPolicy, now: float, rng: random.Random | None = None
) -> Transition:
    """Apply one check's observation to the state."""
    if seen.outcome is Outcome.OK:
        current = replace(
            state,
            health=Health.HEALTHY,
            error_code=None,
            reason=None,
            consecutive_failures=0,
            failing_checks=0,
            last_ok_at=now,
            first_ok_at=state.first_ok_at if state.first_ok_at is not None else now,
        )
    elif seen.outcome is Outcome.TRANSIENT and state.health is Health.FAILING:
        # A timeout says nothing new about a failing inbox: it stays failing with the verdict it
        # has (no failing -> degraded -> failing flapping, each a health.changed); only a
        # success recovers it. The backoff keeps growing.
        current = replace(
            state,
            consecutive_failures=state.consecutive_failures + 1,
            failing_checks=state.failing_checks + 1,
        )
    else:
        failures = state.consecutive_failures + 1
        failing = seen.outcome is Outcome.DEFINITE or failures >= policy.failing_after
        health = Health.FAILING if failing else Health.DEGRADED
        current = replace(
            state,
            health=health,
            error_code=seen.error_code,
            reason=seen.reason,
            consecutive_failures=failures,
            failing_checks=state.failing_checks + 1 if failing else 0,
        )
    current = replace(current, last_checked_at=now)
    fresh = tuple(w for w in seen.cert_warnings if _cert_tag(w) not in state.warned_certs)
    if fresh:
        current = replace(current, warned_certs=(*state.warned_certs, *map(_cert_tag, fresh)))
    return Transition(state, current, next_delay(current, policy, rng), fresh)


def _cert_tag(warning: CertWarning) -> str:
    return f"{warning.protocol}:{warning.not_after}"


def account_age_days(
    given_days: int | None, given_at: float | None, first_ok_at: float | None, now: float
) -> int | None:
    """The account's age now: the producer's age plus the time since it was given, or else the
    time since the first successful check; None before either is known."""
    if given_days is not None and given_at is not None:
        return given_days + int(max(now - given_at, 0) // SECONDS_PER_DAY)
    if first_ok_at is not None:
        return int(max(now - first_ok_at, 0) // SECONDS_PER_DAY)
    return None


def changed_data(inbox_id: str, transition: Transition, event_id: str | None) -> dict[str, Any]:
    """The data of an inbox.health.changed event: previous and new state, never a secret."""
    return {
        "inbox_id": inbox_id,
        "previous": transition.previous.as_dict(),
        "current": transition.current.as_dict(),
        "check_event_id": event_id,
        "warnings": [w.as_dict() for w in transition.new_cert_warnings],
    }
