"""The typed events: each type reads back from its JSON as its own model and dumps to the same
JSON, so consumers can parse what is on the stream and producers' JSON never changes."""

from __future__ import annotations

import json
import typing

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from jobs.result import StepTiming
from tests.worker import event_samples as samples
from worker.messages import envelope, events, keys, producer
from worker.rechecks.inbox_health import HealthPolicy, HealthState, advance, observe
from worker.rechecks.registry import health_events

POLICY = HealthPolicy(interval_s=60.0, cert_warning_days=14, jitter_fraction=0.0)
ALL_TYPES = {
    member.model_fields["type"].default for member in typing.get_args(typing.get_args(events.Event)[0])
}


def every_event() -> list[events.Event]:
    smtp = samples.protocol_result(
        "smtp",
        days_left=3,
        steps=[StepTiming(step="auth", ms=0.1, ok=False)],
        duration_ms=1e-7,
        status="failed",
        error_code="AUTH_FAILED",
        reason="INVALID_CREDENTIALS",
        reply_code=535,
        reply_text="5.7.8 Benutzername und Passwort nicht akzeptiert: «ü»",
    )
    invalid = samples.completed(
        "invalid", error_code="AUTH_FAILED", reason="INVALID_CREDENTIALS", smtp=smtp, event_id="e-invalid"
    )
    transition = advance(HealthState(), observe(invalid, POLICY.cert_warning_days), POLICY, 1_700_000_000.0)
    return [
        samples.completed(),
        invalid,
        samples.rejected(),
        samples.failed(),
        *health_events("inbox-0", transition, invalid.id),
    ]


def test_the_samples_cover_every_event_type() -> None:
    assert (
        {event.type for event in every_event()}
        == ALL_TYPES
        == {
            events.COMPLETED,
            events.REJECTED,
            events.FAILED,
            events.HEALTH_CHANGED,
            events.CERT_EXPIRING,
        }
    )


@pytest.mark.parametrize("event", every_event(), ids=lambda e: f"{e.type}:{e.id}")
def test_every_event_type_round_trips_through_the_union(event: events.Event) -> None:
    raw = event.model_dump_json()
    parsed = events.parse_event(raw)
    assert type(parsed) is type(event)
    assert parsed == event
    assert events.EVENT.dump_json(parsed).decode() == raw
    # and from JSON already decoded, as an arq result hands it over
    if event.type in (events.COMPLETED, events.REJECTED, events.FAILED):
        assert events.parse_terminal_event(json.loads(raw)).model_dump_json() == raw


def test_a_health_event_is_not_a_jobs_event() -> None:
    [changed, _expiring] = [
        e for e in every_event() if e.type not in (events.COMPLETED, events.REJECTED, events.FAILED)
    ]
    with pytest.raises(ValidationError):
        events.parse_terminal_event(changed.model_dump_json())
    with pytest.raises(ValidationError):
        events.parse_event(json.dumps({**json.loads(changed.model_dump_json()), "type": "inbox.unknown"}))


def test_the_event_schema_describes_the_union() -> None:
    schema = events.json_schema()
    assert schema["type"] == "object"
    assert set(schema["discriminator"]["mapping"]) == ALL_TYPES
    assert len(schema["oneOf"]) == len(ALL_TYPES)


async def test_producer_results_parse_the_arq_result_at_the_edge(redis: Redis) -> None:
    event = samples.completed("invalid", error_code="TIMEOUT", reason="CONNECT_TIMEOUT", retryable=True)
    stored = event.model_dump(mode="json")
    for job_id, r in (("good", stored), ("foreign", {"type": events.COMPLETED, "data": {}})):
        await redis.set(
            keys.result_key(job_id),
            envelope.serialize({"t": 1, "f": "validate_inbox", "a": [], "k": {}, "s": True, "r": r}),
        )
    found = await producer.results(redis, ["good", "missing"])
    assert list(found) == ["good"] and found["good"] == event
    assert json.loads(producer.event_line(found["good"])) == stored
    with pytest.raises(envelope.ResultError):
        await producer.results(redis, ["foreign"])
