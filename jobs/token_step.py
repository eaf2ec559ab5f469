"""The token step: one OAuth2 access token per check, fetched before either protocol and shared
by both. When it fails neither protocol connects (so no AUTH is sent), and both sections carry the
token step's verdict.

Where tokens come from is a TokenSource: `DirectTokens` fetches every time (`inboxcheck
validate`); the worker's source caches them in Redis and lets one refresh run per inbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

from jobs.errors import CheckError, Reason, check_error
from jobs.options import CheckOptions
from jobs.protocol_run import transport_error
from jobs.redact import scrub
from jobs.request import Endpoint, ValidationRequest
from jobs.result import ProtocolResult
from jobs.steps import Step, StepLog, StepTiming, Translator
from jobs.token_fetch import FetchedToken, fetch_token, where_of

Fetch = Callable[[], Awaitable[FetchedToken]]


class TokenSource(Protocol):
    async def get(self, request: ValidationRequest, fetch: Fetch) -> FetchedToken:
        """A token for `request`: kept from before, or `fetch()`ed now."""
        ...

    async def discard(self, request: ValidationRequest) -> None:
        """Forget a kept token the mail server refused, so the next check fetches a fresh one."""
        ...


class DirectTokens:
    """Fetches a token for every check and keeps none; remembers a rotated refresh token."""

    def __init__(self) -> None:
        self.rotated_refresh_token: str | None = None

    async def get(self, request: ValidationRequest, fetch: Fetch) -> FetchedToken:
        token = await fetch()
        self.rotated_refresh_token = token.refresh_token
        return token

    async def discard(self, request: ValidationRequest) -> None:
        return None


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    token: FetchedToken | None
    error: CheckError | None
    steps: list[StepTiming]


def _translator(where: str) -> Translator:
    def translate(exc: BaseException, step: Step) -> CheckError | None:
        found = transport_error(exc, where, step)
        if found is not None:
            return found
        if isinstance(exc, httpx.RemoteProtocolError):
            return check_error(Reason.PROTOCOL_ERROR, f"{where} did not answer in HTTP")
        if isinstance(exc, httpx.TransportError):
            return check_error(Reason.CONNECTION_CLOSED, f"{where} closed the connection")
        if isinstance(exc, httpx.HTTPError):
            return check_error(Reason.PROTOCOL_ERROR, f"{where} could not be asked ({type(exc).__name__})")
        return None

    return translate


async def obtain_token(
    request: ValidationRequest, options: CheckOptions, source: TokenSource
) -> TokenOutcome:
    """Run the token step under its time limit; the token, or the CheckError it ended in."""
    oauth2 = request.oauth2
    assert oauth2 is not None and oauth2.fetches_token
    # Not mutated: without its time limit the step waits on a silent endpoint using no CPU, so
    # mutmut's CPU limit never ends the run (as net.connect's blocking switch).
    steps = StepLog(options.step_timeout, _translator(where_of(oauth2)))  # pragma: no mutate

    async def fetch() -> FetchedToken:
        return await fetch_token(oauth2, request.email, options, request.secrets)

    try:
        async with steps.step(Step.TOKEN):
            token = await source.get(request, fetch)
    except CheckError as exc:
        return TokenOutcome(None, exc, steps.timings)
    return TokenOutcome(token, None, steps.timings)


def with_token_step(part: ProtocolResult, outcome: TokenOutcome) -> ProtocolResult:
    """A protocol's result with the token step it signed in after, first in its steps."""
    return part.model_copy(update={"steps": [*outcome.steps, *part.steps]})


def token_failed(request: ValidationRequest, outcome: TokenOutcome) -> tuple[ProtocolResult, ProtocolResult]:
    """Both protocols' results when the token step failed: neither connected."""
    error = outcome.error
    assert error is not None
    detail = scrub(f"the OAuth2 token step failed, so no AUTH was sent: {error.detail}", request.secrets)

    def failed(protocol: Literal["smtp", "imap"], endpoint: Endpoint) -> ProtocolResult:
        return ProtocolResult(
            protocol=protocol,
            status="failed",
            host=endpoint.host,
            port=endpoint.port,
            security=endpoint.security,
            error_code=error.code,
            reason=error.reason,
            detail=detail,
            failed_step=Step.TOKEN,
            retryable=error.retryable,
            retry_after_s=error.retry_after_s,
            steps=outcome.steps,
            duration_ms=sum(step.ms for step in outcome.steps),
        )

    return failed("smtp", request.smtp), failed("imap", request.imap)


# A refused token that came from a cache is most likely one the provider revoked early: the next
# attempt fetches a fresh one. A fresh one refused is the user's or app's to fix.
CACHED_TOKEN_REFUSED = "; it was a kept token, dropped now, so the next attempt fetches a fresh one"


def cached_token_refused(part: ProtocolResult) -> bool:
    return part.reason is Reason.INVALID_CREDENTIALS and part.failed_step in (Step.AUTH, Step.LOGIN)


def retry_with_fresh_token(part: ProtocolResult) -> ProtocolResult:
    if not cached_token_refused(part):
        return part
    return part.model_copy(update={"retryable": True, "detail": (part.detail or "") + CACHED_TOKEN_REFUSED})
