"""Events as the worker writes them, built from the real models, for the tests of their consumers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jobs.result import ProtocolResult, RecommendedRange, StepTiming, TlsInfo, ValidationResult
from worker.messages import events

CHECKED_AT = datetime(2024, 1, 1, tzinfo=UTC)
HOST = "mail.example"


def protocol_result(
    protocol: str,
    *,
    days_left: int | None = 200,
    steps: list[StepTiming] | None = None,
    duration_ms: float = 0.0,
    **extra: Any,
) -> ProtocolResult:
    """One protocol's part; its certificate expires `days_left` days after CHECKED_AT."""
    not_after = CHECKED_AT + timedelta(days=days_left) if days_left is not None else None
    fields: dict[str, Any] = {
        "protocol": protocol,
        "status": "ok",
        "host": HOST,
        "port": 465 if protocol == "smtp" else 993,
        "security": "ssl",
        "tls": TlsInfo(version="TLSv1.3", cert_not_after=not_after, cert_days_left=days_left),
        "steps": steps or [],
        "duration_ms": duration_ms,
    }
    return ProtocolResult.model_validate({**fields, **extra})


def completed(
    status: str = "valid",
    *,
    inbox_id: str = "inbox-0",
    event_id: str = "e1",
    error_code: str | None = None,
    reason: str | None = None,
    retryable: bool = False,
    resolution: str | None = None,
    smtp: ProtocolResult | None = None,
    imap: ProtocolResult | None = None,
) -> events.CompletedEvent:
    result = ValidationResult(
        inbox_id=inbox_id,
        inbox_type="CUSTOM_SMTP",
        email=f"{inbox_id}@example.test",
        status=status,
        error_code=error_code,
        reason=reason,
        retryable=retryable,
        resolution=resolution,
        smtp=smtp or protocol_result("smtp"),
        imap=imap or protocol_result("imap"),
        max_daily_limit=50,
        recommended_daily_limit=20,
        recommended_range=RecommendedRange(low=10, high=30),
        checked_at=CHECKED_AT,
        duration_ms=12.5,
    )
    return events.completed(result, event_id)


def rejected(inbox_id: str = "inbox-0", event_id: str = "e1") -> events.RejectedEvent:
    rejection = events.Rejection(
        inbox_id=inbox_id, reason="SEALED_CREDENTIALS", resolution="Seal with the workers' key."
    )
    return events.rejected(rejection, event_id)


def failed(inbox_id: str = "inbox-0", event_id: str = "e1") -> events.FailedEvent:
    return events.failed(events.Failure(inbox_id=inbox_id, reason="RuntimeError", attempts=3), event_id)
