"""Health of a registered inbox: a small state machine fed by each recheck's terminal event.

Pure logic: no Redis, no clock of its own (callers pass `now`), so every rule is unit tested
directly. worker.rechecks.registry stores the state; worker.rechecks.hooks applies it after each recheck.

    pending  --ok-->         healthy
    any      --definite-->   failing      (wrong password, SMTP AUTH off, expired certificate,
                                           an OAuth2 sign-in the owner must redo, ...)
    any      --transient-->  degraded     (timeouts, refused connections, too many attempts, ...)
    degraded --transient x N in a row--> failing
    failing  --transient-->  failing      (only a success recovers a failing inbox)
    any      --ok-->         healthy
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from jobs.result import ValidationResult
from worker.messages.events import (
    CertificateExpiry,
    CompletedEvent,
    ExpiringCertificate,
    FailedEvent,
    Health,
    HealthChange,
    HealthSnapshot,
    TerminalEvent,
)

SECONDS_PER_DAY = 86_400
# Failing inboxes wait interval * BACKOFF_FACTOR ** (failing checks - 1) before the next check.
BACKOFF_FACTOR = 2


class Verdict(StrEnum):
    """What one check says about the inbox (not jobs.protocol_run's Outcome of a protocol run)."""

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


# The wire model serves as the state machine's own record of a warning too.
CertWarning = ExpiringCertificate


@dataclass(frozen=True, slots=True)
class Observation:
    """What health needs from one terminal event (completed, rejected or failed)."""

    verdict: Verdict
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

    def snapshot(self) -> HealthSnapshot:
        return HealthSnapshot(
            health=self.health,
            error_code=self.error_code,
            reason=self.reason,
            consecutive_failures=self.consecutive_failures,
        )


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


def cert_warnings(result: ValidationResult, warning_days: int) -> tuple[CertWarning, ...]:
    """Certificates (SMTP and IMAP) that expire within `warning_days` but still work."""
    found = []
    for part in (result.smtp, result.imap):
        tls = part.tls
        if tls is not None and tls.cert_days_left is not None and 0 <= tls.cert_days_left <= warning_days:
            found.append(
                CertWarning(
                    protocol=part.protocol,
                    host=part.host,
                    days_left=tls.cert_days_left,
                    not_after=tls.cert_not_after,
                )
            )
    return tuple(found)


def observe(event: TerminalEvent, warning_days: int) -> Observation:
    """Read a job's terminal event into an Observation."""
    if isinstance(event, CompletedEvent):
        result = event.data
        if result.status == "valid":
            verdict = Verdict.OK
        else:
            # The engine's own verdict on the whole check (the job retries by the same flag): a
            # top-level reason alone can misjudge a check whose SMTP and IMAP parts failed differently.
            verdict = Verdict.TRANSIENT if result.retryable else Verdict.DEFINITE
        return Observation(
            verdict,
            _plain(result.error_code),
            _plain(result.reason),
            result.checked_at,
            cert_warnings(result, warning_days),
        )
    if isinstance(event, FailedEvent):
        verdict = Verdict.TRANSIENT  # the worker itself failed: says nothing about the inbox
    else:
        verdict = Verdict.DEFINITE  # rejected, e.g. credentials sealed with a key no worker has any more
    return Observation(verdict, event.data.error_code, event.data.reason, event.time)


def _plain(value: str | None) -> str | None:
    # The engine's codes are StrEnums; the state stores and compares plain text.
    return None if value is None else str(value)


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
    if seen.verdict is Verdict.OK:
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
    elif seen.verdict is Verdict.TRANSIENT and state.health is Health.FAILING:
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
        failing = seen.verdict is Verdict.DEFINITE or failures >= policy.failing_after
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
    # Spelled with the expiry as the event's JSON has it: the tags already stored stay valid.
    return f"{warning.protocol}:{warning.model_dump(mode='json')['not_after']}"


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


def _change_fields(inbox_id: str, transition: Transition, event_id: str | None) -> dict[str, object]:
    return {
        "inbox_id": inbox_id,
        "previous": transition.previous.snapshot(),
        "current": transition.current.snapshot(),
        "check_event_id": event_id,
        "warnings": list(transition.new_cert_warnings),
    }


def changed_data(inbox_id: str, transition: Transition, event_id: str | None) -> HealthChange:
    """The data of an inbox.health.changed event: previous and new state, never a secret."""
    return HealthChange.model_validate(_change_fields(inbox_id, transition, event_id))


def expiring_data(inbox_id: str, transition: Transition, event_id: str | None) -> CertificateExpiry:
    """The data of an inbox.certificate.expiring event: the same record as changed_data."""
    return CertificateExpiry.model_validate(_change_fields(inbox_id, transition, event_id))
