"""Result events in a CloudEvents 1.0 envelope: what producers and consumers read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from jobs.result import SCHEMA_VERSION, ValidationResult

SOURCE = "inboxcheck"
COMPLETED = "inbox.validation.completed"
REJECTED = "inbox.validation.rejected"
FAILED = "inbox.validation.failed"
HEALTH_CHANGED = "inbox.health.changed"


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


class Event(BaseModel):
    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str = SOURCE
    type: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: ValidationResult | Rejection | Failure | dict[str, Any]


def completed(result: ValidationResult, event_id: str | None = None) -> Event:
    return Event(id=event_id or str(uuid.uuid4()), type=COMPLETED, subject=result.inbox_id, data=result)


def rejected(rejection: Rejection, event_id: str | None = None) -> Event:
    return Event(id=event_id or str(uuid.uuid4()), type=REJECTED, subject=rejection.inbox_id, data=rejection)


def failed(failure: Failure, event_id: str | None = None) -> Event:
    return Event(id=event_id or str(uuid.uuid4()), type=FAILED, subject=failure.inbox_id, data=failure)
