"""The health state machine, driven directly with events like the worker writes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.worker.event_samples import completed, failed, protocol_result, rejected
from worker.messages import events
from worker.rechecks.inbox_health import (
    SECONDS_PER_DAY,
    Health,
    HealthPolicy,
    HealthState,
    Verdict,
    account_age_days,
    advance,
    next_delay,
    observe,
)

INTERVAL_S = 3_600.0
POLICY = HealthPolicy(
    interval_s=INTERVAL_S,
    failing_after=3,
    backoff_max_s=8 * INTERVAL_S,
    cert_warning_days=14,
    jitter_fraction=0.0,
)
NOW = 1_700_000_000.0


def event(
    status: str = "valid",
    *,
    error_code: str | None = None,
    reason: str | None = None,
    retryable: bool = False,
    smtp_days: int | None = 200,
    imap_days: int | None = 200,
) -> events.CompletedEvent:
    return completed(
        status,
        error_code=error_code,
        reason=reason,
        retryable=retryable,
        smtp=protocol_result("smtp", days_left=smtp_days),
        imap=protocol_result("imap", days_left=imap_days),
    )


OK = event()
WRONG_PASSWORD = event("invalid", error_code="AUTH_FAILED", reason="INVALID_CREDENTIALS")
TIMEOUT = event("invalid", error_code="TIMEOUT", reason="CONNECT_TIMEOUT", retryable=True)
REFUSED = event("invalid", error_code="CONNECTION_FAILED", reason="CONNECTION_REFUSED", retryable=True)


def run(checks: list[events.TerminalEvent], state: HealthState | None = None) -> list[Any]:
    state = state or HealthState()
    out = []
    for i, item in enumerate(checks):
        transition = advance(state, observe(item, POLICY.cert_warning_days), POLICY, NOW + i)
        out.append(transition)
        state = transition.current
    return out


@pytest.mark.parametrize(
    "reason,code",
    [
        ("INVALID_CREDENTIALS", "AUTH_FAILED"),
        ("APP_PASSWORD_REQUIRED", "AUTH_FAILED"),
        ("SMTP_AUTH_DISABLED", "AUTH_FAILED"),
        ("CERT_EXPIRED", "SSL_ERROR"),
    ],
)
def test_definite_failure_fails_at_once(reason: str, code: str) -> None:
    [first] = run([event("invalid", error_code=code, reason=reason)])
    assert first.current.health is Health.FAILING and first.changed


@pytest.mark.parametrize("reason", ["CONNECT_TIMEOUT", "CONNECTION_REFUSED", "TOO_MANY_ATTEMPTS"])
def test_transient_failures_degrade_then_fail_after_n_in_a_row(reason: str) -> None:
    transient = event("invalid", error_code="CONNECTION_FAILED", reason=reason, retryable=True)
    steps = run([OK, transient, transient, transient])
    assert [s.current.health for s in steps] == [
        Health.HEALTHY,
        Health.DEGRADED,
        Health.DEGRADED,
        Health.FAILING,
    ]
    assert [s.changed for s in steps] == [True, True, False, True]


def test_one_transient_failure_between_successes_never_fails() -> None:
    steps = run([OK, TIMEOUT, OK, TIMEOUT, OK])
    assert Health.FAILING not in {s.current.health for s in steps}
    assert steps[-1].current.consecutive_failures == 0


def test_changed_only_when_health_or_error_code_changes() -> None:
    steps = run([OK, OK, WRONG_PASSWORD, WRONG_PASSWORD, TIMEOUT, OK])
    assert [s.changed for s in steps] == [True, False, True, False, False, True]
    # failing stays failing on a transient, keeping its verdict: a timeout is not news about it
    assert steps[4].current.health is Health.FAILING
    assert steps[4].current.error_code == "AUTH_FAILED"


def test_a_transient_outcome_keeps_a_failing_inbox_failing() -> None:
    # one definite failure, then timeouts: no failing -> degraded -> failing flapping
    steps = run([OK, WRONG_PASSWORD, TIMEOUT, WRONG_PASSWORD, REFUSED, WRONG_PASSWORD])
    assert [s.current.health for s in steps[1:]] == [Health.FAILING] * 5
    assert [s.changed for s in steps] == [True, True, False, False, False, False]
    assert {s.current.error_code for s in steps[1:]} == {"AUTH_FAILED"}
    # the backoff keeps growing through the timeouts; a success recovers
    assert [s.current.failing_checks for s in steps[1:]] == [1, 2, 3, 4, 5]
    [recovered] = run([OK], steps[-1].current)
    assert recovered.current.health is Health.HEALTHY and recovered.changed


def test_classified_by_the_events_retryable_not_its_top_level_reason() -> None:
    # a reason that is retryable on its own, but the engine judged the check definite (e.g.
    # IMAP timed out after SMTP rejected the password): definite
    mixed = event("invalid", error_code="TIMEOUT", reason="CONNECT_TIMEOUT", retryable=False)
    assert observe(mixed, 14).verdict is Verdict.DEFINITE
    # and the other way round: the engine says try again
    throttled = event("invalid", error_code="AUTH_FAILED", reason="INVALID_CREDENTIALS", retryable=True)
    assert observe(throttled, 14).verdict is Verdict.TRANSIENT


def test_failing_inboxes_back_off_up_to_the_cap() -> None:
    steps = run([WRONG_PASSWORD] * 6)
    assert [s.next_check_in_s for s in steps] == [INTERVAL_S * f for f in (1, 2, 4, 8, 8, 8)]
    assert run([OK])[0].next_check_in_s == INTERVAL_S


def test_jitter_spreads_delays_within_the_fraction() -> None:
    policy = HealthPolicy(interval_s=INTERVAL_S, jitter_fraction=0.1)
    rng = random.Random(7)
    delays = {next_delay(HealthState(health=Health.HEALTHY), policy, rng) for _ in range(100)}
    assert len(delays) > 90
    assert all(0.9 * INTERVAL_S <= d <= 1.1 * INTERVAL_S for d in delays)


def test_rejected_is_definite_and_failed_is_transient() -> None:
    assert observe(rejected(), 14).verdict is Verdict.DEFINITE
    assert observe(failed(), 14).verdict is Verdict.TRANSIENT
    [failing] = run([rejected()])
    assert (failing.current.health, failing.current.error_code) == (Health.FAILING, "INVALID_REQUEST")


def test_certificate_expiry_warns_once_per_certificate() -> None:
    soon = event(smtp_days=10)
    steps = run([OK, soon, soon, event(smtp_days=9, imap_days=3)])
    assert [len(s.new_cert_warnings) for s in steps] == [0, 1, 0, 2]
    warning = steps[1].new_cert_warnings[0]
    assert (warning.protocol, warning.days_left) == ("smtp", 10)
    # stored spelled as the event's JSON spells the expiry: tags stored before typed events still match
    assert steps[1].current.warned_certs == ("smtp:2024-01-11T00:00:00Z",)
    assert not any(s.changed for s in steps[1:])  # a warning is not a health change


def test_account_age_clock_starts_at_first_success() -> None:
    steps = run([TIMEOUT, OK, OK])
    first_ok = steps[1].current.first_ok_at
    assert first_ok == NOW + 1 and steps[2].current.first_ok_at == first_ok
    assert account_age_days(None, None, None, NOW) is None
    assert account_age_days(None, None, first_ok, first_ok + 20 * SECONDS_PER_DAY) == 20
    # the producer's age wins, and keeps growing from when it was given
    assert account_age_days(5, NOW, first_ok, NOW + 3 * SECONDS_PER_DAY) == 8


@pytest.mark.parametrize("reason", ["OAUTH_REAUTH_REQUIRED", "OAUTH_CONSENT_REQUIRED"])
def test_an_oauth2_inbox_whose_owner_must_sign_in_again_fails_at_once(reason: str) -> None:
    [first, refused] = run([OK, event("invalid", error_code="AUTH_FAILED", reason=reason)])
    assert (first.current.health, refused.current.health) == (Health.HEALTHY, Health.FAILING)
    assert refused.current.reason == reason


def test_a_recovery_clears_the_verdict_and_restarts_the_backoff() -> None:
    # failing, then a success, then a definite failure again: waits the interval, not a doubled one
    steps = run([WRONG_PASSWORD, WRONG_PASSWORD, OK, WRONG_PASSWORD])
    recovered = steps[2].current
    assert (recovered.error_code, recovered.reason, recovered.failing_checks) == (None, None, 0)
    assert [s.next_check_in_s for s in steps] == [INTERVAL_S, 2 * INTERVAL_S, INTERVAL_S, INTERVAL_S]
    assert [s.current.last_checked_at for s in steps] == [NOW, NOW + 1, NOW + 2, NOW + 3]


def test_a_degraded_inbox_that_fails_backs_off_from_the_interval() -> None:
    # degraded checks do not count towards the failing backoff; failing ones count one each
    steps = run([OK, TIMEOUT, WRONG_PASSWORD, TIMEOUT])
    assert [s.current.failing_checks for s in steps] == [0, 0, 1, 2]
    assert [s.current.consecutive_failures for s in steps] == [0, 1, 2, 3]
    assert [s.next_check_in_s for s in steps] == [INTERVAL_S, INTERVAL_S, INTERVAL_S, 2 * INTERVAL_S]


def test_the_health_change_carries_the_reason_and_a_rejection_its_own() -> None:
    [failing] = run([WRONG_PASSWORD])
    assert failing.current.snapshot().reason == "INVALID_CREDENTIALS"
    [refused] = run([rejected()])
    assert refused.current.snapshot().reason == "SEALED_CREDENTIALS"


@pytest.mark.parametrize("days_left", [0, POLICY.cert_warning_days])
def test_a_certificate_is_warned_about_on_its_last_day_and_at_the_warning_threshold(days_left: int) -> None:
    [warned] = run([event(smtp_days=days_left)])
    assert [w.days_left for w in warned.new_cert_warnings] == [days_left]
    [unwarned] = run([event(smtp_days=POLICY.cert_warning_days + 1)])
    assert unwarned.new_cert_warnings == ()


def test_the_next_check_is_drawn_from_the_given_generator_and_never_under_the_jitter() -> None:
    policy = HealthPolicy(interval_s=1.0, jitter_fraction=0.5)
    draws = [advance(HealthState(), observe(OK, 14), policy, NOW, random.Random(3)) for _ in range(2)]
    expected = 1.0 + random.Random(3).uniform(-0.5, 0.5)
    assert [d.next_check_in_s for d in draws] == [expected, expected]
    # an interval of one second with the largest jitter may come round in half a second
    delays = [next_delay(HealthState(), policy, random.Random(seed)) for seed in range(20)]
    assert min(delays) < 1.0 and all(d >= 0.5 for d in delays)
