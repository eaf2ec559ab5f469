"""The outcome of a check: per protocol, and for the inbox as a whole."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from jobs.errors import ErrorCode, Reason
from jobs.presets import InboxType
from jobs.providers import Provider
from jobs.request import Security
from jobs.steps import Step, StepTiming

SCHEMA_VERSION = 1


class TlsInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str | None = None
    cipher: str | None = None
    cert_not_after: datetime | None = None
    cert_days_left: int | None = None


class ProtocolResult(BaseModel):
    """One protocol's verdict. Reply texts are scrubbed of secrets before they get here."""

    protocol: Literal["smtp", "imap"]
    status: Literal["ok", "failed"]
    host: str
    port: int
    security: Security
    error_code: ErrorCode | None = None
    reason: Reason | None = None
    detail: str | None = None
    failed_step: Step | None = None
    reply_code: int | None = None
    reply_status: str | None = None
    enhanced_status_code: str | None = None
    reply_text: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None
    auth_mechanism: str | None = None
    steps: list[StepTiming] = []
    tls: TlsInfo | None = None
    duration_ms: float = 0.0


class RecommendedRange(BaseModel):
    low: int
    high: int


class ValidationResult(BaseModel):
    """The verdict on one inbox: the data of its completed event."""

    schema_version: int = SCHEMA_VERSION
    inbox_id: str
    inbox_type: InboxType
    # Who runs the servers, from the host names and the inbox type (jobs.providers); None for a
    # host no table knows. What the resolution's advice is specific to.
    provider: Provider | None = None
    email: str
    status: Literal["valid", "invalid"]
    error_code: ErrorCode | None = None
    reason: Reason | None = None
    resolution: str | None = None
    retryable: bool = False
    smtp: ProtocolResult
    imap: ProtocolResult
    max_daily_limit: int
    recommended_daily_limit: int
    recommended_range: RecommendedRange
    checked_at: datetime
    duration_ms: float
    attempts: int = 1
    # OAUTH_APP_MISCONFIGURED: the app the provider refused; every inbox using it fails alike.
    oauth2_client_id: str | None = None
    # A refresh token the provider issued in place of the one sent, sealed with the shared key
    # ({"oauth2_refresh_token": ...}, use "rotated"): the producer stores it for the next request.
    oauth2_refresh_token_sealed: str | None = None
