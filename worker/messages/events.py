"""Events in a CloudEvents 1.0 envelope: what producers and consumers read.

One model per event type, each with its own data model. `Event` is their union, discriminated on
`type`: `parse_event` reads any event back from its JSON (a stream entry), `parse_terminal_event`
a job's own event (its done mark, its arq result). The JSON is what the models dump, so parsing
an event and dumping it again gives the same JSON.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from jobs.result import SCHEMA_VERSION, ValidationResult

SOURCE = "inboxcheck"
COMPLETED: Final = "inbox.validation.completed"
REJECTED: Final = "inbox.validation.rejected"
FAILED: Final = "inbox.validation.failed"
HEALTH_CHANGED: Final = "inbox.health.changed"
CERT_EXPIRING: Final = "inbox.certificate.expiring"


class Rejection(BaseModel):
    """The data of a rejected event: a payload that could not be used as a request."""

    schema_version: int = SCHEMA_VERSION
    inbox_id: str | None = None
    status: Literal["rejected"] = "rejected"
    error_code: Literal["INVALID_REQUEST"] = "INVALID_REQUEST"
    reason: str
    resolution: str
    problems: list[str] = []
    attempts: int = 1


class Failure(BaseModel):
    """The data of a failed event: the worker itself could not finish the check (a bug or an
    outage), after every attempt. Rare; says what failed without any input value."""

    schema_version: int = SCHEMA_VERSION
    inbox_id: str | None = None
    status: Literal["failed"] = "failed"
    error_code: Literal["INTERNAL_ERROR"] = "INTERNAL_ERROR"
    reason: str
    resolution: str = "Enqueue the request again later; if it keeps failing, report it with the event id."
    attempts: int = 1
    # As in a completed event (jobs.result): a refresh token the provider rotated during an
    # attempt, sealed; the producer stores it whatever the job ended in.
    oauth2_refresh_token_sealed: str | None = None


class Health(StrEnum):
    """A registered inbox's health (the state machine is worker.rechecks.inbox_health); here
    because health events publish it."""

    PENDING = "pending"  # registered, never checked
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILING = "failing"


class HealthSnapshot(BaseModel):
    """An inbox's health before or after a check, as health events carry it."""

    health: Health
    error_code: str | None
    reason: str | None
    consecutive_failures: int


class ExpiringCertificate(BaseModel):
    """A server certificate that still works but expires within the warning window."""

    model_config = ConfigDict(frozen=True)

    code: Literal["CERT_EXPIRING"] = "CERT_EXPIRING"
    protocol: Literal["smtp", "imap"]
    host: str
    days_left: int
    not_after: datetime | None


class HealthChange(BaseModel):
    """The data of an inbox.health.changed event: previous and new state, never a secret."""

    inbox_id: str
    previous: HealthSnapshot
    current: HealthSnapshot
    check_event_id: str | None
    warnings: list[ExpiringCertificate]


class CertificateExpiry(HealthChange):
    """The data of an inbox.certificate.expiring event: the same record of the check as its
    health change, `warnings` naming the certificates."""


class EventBase(BaseModel):
    """The CloudEvents envelope every event shares."""

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str = SOURCE
    type: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"


# Each `type` Literal spells out its constant above: the discriminator needs the literal itself.
class CompletedEvent(EventBase):
    type: Literal["inbox.validation.completed"] = COMPLETED
    data: ValidationResult


class RejectedEvent(EventBase):
    type: Literal["inbox.validation.rejected"] = REJECTED
    data: Rejection


class FailedEvent(EventBase):
    type: Literal["inbox.validation.failed"] = FAILED
    data: Failure


class HealthChangedEvent(EventBase):
    type: Literal["inbox.health.changed"] = HEALTH_CHANGED
    data: HealthChange


class CertificateExpiringEvent(EventBase):
    type: Literal["inbox.certificate.expiring"] = CERT_EXPIRING
    data: CertificateExpiry


# What a job ends in, exactly one per job.
TerminalEvent = Annotated[CompletedEvent | RejectedEvent | FailedEvent, Field(discriminator="type")]
# What the health of a registered inbox adds to the stream.
HealthEvent = Annotated[HealthChangedEvent | CertificateExpiringEvent, Field(discriminator="type")]
Event = Annotated[
    CompletedEvent | RejectedEvent | FailedEvent | HealthChangedEvent | CertificateExpiringEvent,
    Field(discriminator="type"),
]

EVENT: TypeAdapter[Event] = TypeAdapter(Event)
TERMINAL_EVENT: TypeAdapter[TerminalEvent] = TypeAdapter(TerminalEvent)


def parse_event(raw: str | bytes) -> Event:
    """Any event from its JSON; pydantic's ValidationError when it is none of them."""
    return EVENT.validate_json(raw)


def parse_terminal_event(raw: str | bytes | dict[str, Any]) -> TerminalEvent:
    """A job's event from its JSON, or from JSON already decoded (an arq result's `r`)."""
    if isinstance(raw, dict):
        return TERMINAL_EVENT.validate_python(raw)
    return TERMINAL_EVENT.validate_json(raw)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every event: one object of the union, told apart by `type`."""
    return {"title": "Event", "type": "object", **EVENT.json_schema(mode="serialization")}


def completed(result: ValidationResult, event_id: str | None = None) -> CompletedEvent:
    return CompletedEvent(id=event_id or str(uuid.uuid4()), subject=result.inbox_id, data=result)


def rejected(rejection: Rejection, event_id: str | None = None) -> RejectedEvent:
    return RejectedEvent(id=event_id or str(uuid.uuid4()), subject=rejection.inbox_id, data=rejection)


def failed(failure: Failure, event_id: str | None = None) -> FailedEvent:
    return FailedEvent(id=event_id or str(uuid.uuid4()), subject=failure.inbox_id, data=failure)
