"""Checking one inbox: both protocols at once, one verdict."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from jobs.errors import Reason
from jobs.goodbyes import Goodbyes
from jobs.imap_check import check_imap
from jobs.limits import daily_limit
from jobs.options import CheckOptions
from jobs.providers import identify
from jobs.request import ValidationRequest
from jobs.resolutions import resolution
from jobs.result import ProtocolResult, RecommendedRange, ValidationResult
from jobs.smtp_check import check_smtp
from jobs.time_units import MS_PER_S
from jobs.token_step import (
    DirectTokens,
    TokenSource,
    cached_token_refused,
    obtain_token,
    retry_with_fresh_token,
    token_failed,
    with_token_step,
)

log = structlog.get_logger("inboxcheck.check")


async def validate_inbox(
    request: ValidationRequest,
    options: CheckOptions,
    tokens: TokenSource | None = None,
    goodbyes: Goodbyes | None = None,
) -> ValidationResult:
    """Prove SMTP and IMAP concurrently; a failure of one never hides the other. An OAuth2 request
    that fetches its token gets it first, from `tokens` (DirectTokens: fetched every time).
    QUIT and LOGOUT are still going on in `goodbyes` when this returns (jobs.goodbyes)."""
    goodbyes = goodbyes or Goodbyes()
    checked_at = datetime.now(UTC)
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(inbox_id=request.inbox_id):
        smtp, imap = await _check_both(request, options, tokens or DirectTokens(), goodbyes)
        for part in (smtp, imap):
            log.info(
                "protocol_checked",
                protocol=part.protocol,
                status=part.status,
                error_code=part.error_code,
                reason=part.reason,
                failed_step=part.failed_step,
                duration_ms=part.duration_ms,
            )
    return summarise(request, smtp, imap, checked_at, round((time.perf_counter() - started) * MS_PER_S, 2))


async def _check_both(
    request: ValidationRequest, options: CheckOptions, tokens: TokenSource, goodbyes: Goodbyes
) -> tuple[ProtocolResult, ProtocolResult]:
    signed, outcome, kept_token = request, None, False
    if request.oauth2 is not None and request.oauth2.fetches_token:
        outcome = await obtain_token(request, options, tokens)
        if outcome.token is None:
            return token_failed(request, outcome)
        signed, kept_token = request.with_access_token(outcome.token.access_token), outcome.token.from_cache
        # The token step's time comes out of the checks' deadline (each step still gets its own
        # full limit), so a job's time budget holds for OAuth2 inboxes too.
        spent_s = sum(step.ms for step in outcome.steps) / MS_PER_S
        options = replace(options, check_timeout=max(options.check_timeout - spent_s, options.step_timeout))
    smtp, imap = await asyncio.gather(
        check_smtp(signed, options, goodbyes), check_imap(signed, options, goodbyes)
    )
    if outcome is None:
        return smtp, imap
    smtp, imap = with_token_step(smtp, outcome), with_token_step(imap, outcome)
    if kept_token and (cached_token_refused(smtp) or cached_token_refused(imap)):
        await tokens.discard(request)
        smtp, imap = retry_with_fresh_token(smtp), retry_with_fresh_token(imap)
    return smtp, imap


def summarise(
    request: ValidationRequest,
    smtp: ProtocolResult,
    imap: ProtocolResult,
    checked_at: datetime,
    duration_ms: float,
) -> ValidationResult:
    # SMTP's failure leads: an inbox that cannot send is the first thing to fix.
    failed = smtp if smtp.status == "failed" else imap if imap.status == "failed" else None
    valid = failed is None
    hosts = [host for host in (request.smtp_host, request.imap_host) if host is not None]
    limit = daily_limit(request.inbox_type, request.account_age_days, valid, hosts)
    provider = identify(request.inbox_type, [(part.host, part.port) for part in (failed or smtp, imap, smtp)])
    return ValidationResult(
        inbox_id=request.inbox_id or request.email,
        inbox_type=request.inbox_type,
        provider=provider,
        email=request.email,
        status="valid" if valid else "invalid",
        error_code=failed.error_code if failed else None,
        reason=failed.reason if failed else None,
        resolution=resolution(failed.reason, provider) if failed and failed.reason else None,
        retryable=all(p.retryable for p in (smtp, imap) if p.status == "failed") and not valid,
        smtp=smtp,
        imap=imap,
        max_daily_limit=limit.max_daily_limit,
        recommended_daily_limit=limit.recommended,
        recommended_range=RecommendedRange(low=limit.range_low, high=limit.range_high),
        checked_at=checked_at,
        duration_ms=duration_ms,
        oauth2_client_id=(
            request.oauth2.app_id
            if failed and failed.reason is Reason.OAUTH_APP_MISCONFIGURED and request.oauth2
            else None
        ),
    )
