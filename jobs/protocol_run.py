"""What the SMTP and IMAP checks share: the run under a deadline and the result it becomes."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from jobs import net
from jobs.errors import CheckError, Reason, check_error
from jobs.options import CheckOptions
from jobs.redact import scrub
from jobs.request import Endpoint
from jobs.result import ProtocolResult, TlsInfo
from jobs.steps import TIMEOUT_REASONS, StepLog
from jobs.tls import ssl_error


class Outcome:
    """What a check body learned on its way, kept even when it fails half way."""

    def __init__(self) -> None:
        self.tls: TlsInfo | None = None
        self.auth_mechanism: str | None = None


def find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """Libraries wrap handshake failures in their own errors; the cause says what happened."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def transport_error(exc: BaseException, where: str) -> CheckError | None:
    """The CheckError for socket- and TLS-level failures common to both protocols."""
    ssl_exc = find_ssl_error(exc)
    if ssl_exc is not None:
        return ssl_error(ssl_exc, where)
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return net.connect_error(exc, where)
    return None


async def run_check(
    protocol: Literal["smtp", "imap"],
    endpoint: Endpoint,
    options: CheckOptions,
    secrets: tuple[str, ...],
    steps: StepLog,
    body: Callable[[Outcome], Awaitable[None]],
) -> ProtocolResult:
    """Run `body` under the check's hard deadline and turn how it ended into a ProtocolResult."""
    outcome = Outcome()
    started = time.perf_counter()
    error: CheckError | None = None
    try:
        async with asyncio.timeout(options.check_timeout):
            await body(outcome)
    except CheckError as exc:
        error = exc
    except TimeoutError:
        step = steps.current or "connect"
        error = check_error(
            TIMEOUT_REASONS.get(step, Reason.RESPONSE_TIMEOUT),
            f"the whole {protocol.upper()} check ran past its {options.check_timeout:g}s deadline",
            step=step,
        )
    result = ProtocolResult(
        protocol=protocol,
        status="ok" if error is None else "failed",
        host=endpoint.host,
        port=endpoint.port,
        security=endpoint.security,
        steps=steps.timings,
        tls=outcome.tls,
        auth_mechanism=outcome.auth_mechanism,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    if error is not None:
        reply = error.reply
        result = result.model_copy(
            update={
                "error_code": error.code,
                "reason": error.reason,
                "detail": scrub(error.detail, secrets),
                "failed_step": error.step,
                "retryable": error.retryable,
                "retry_after_s": error.retry_after_s,
                "reply_code": reply.code if reply else None,
                "reply_status": reply.status if reply else None,
                "enhanced_status_code": reply.enhanced_code if reply else None,
                "reply_text": scrub(reply.text, secrets) if reply else None,
            }
        )
    return result
