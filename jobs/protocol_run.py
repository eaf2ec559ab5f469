"""What the SMTP and IMAP checks share: the run under a deadline and the result it becomes."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import structlog

from jobs import net
from jobs.errors import CheckError, Reason, check_error
from jobs.options import CheckOptions
from jobs.redact import scrub
from jobs.request import Endpoint
from jobs.result import ProtocolResult, TlsInfo
from jobs.steps import TIMEOUT_REASONS, Step, StepLog
from jobs.time_units import MS_PER_S
from jobs.tls import ssl_error

log = structlog.get_logger("inboxcheck.check")


class Findings:
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


def _closed_by_peer(exc: BaseException) -> bool:
    """Whether `exc`, or what it wraps, is the peer closing or resetting the connection, with no
    TLS alert or non-TLS bytes said first."""
    found = False
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, ssl.SSLEOFError):
            return False
        if isinstance(
            seen, ConnectionResetError | ConnectionAbortedError | BrokenPipeError | ssl.SSLEOFError
        ):
            found = True
        seen = seen.__cause__ or seen.__context__
    return found


def closed_before_tls(where: str) -> str:
    return (
        f"{where} closed the connection without a byte of TLS (nobody spoke TLS there): the mail "
        "service behind the port may be down, or the port is wrong"
    )


def transport_error(exc: BaseException, where: str, step: Step) -> CheckError | None:
    """The CheckError for socket- and TLS-level failures common to both protocols."""
    if step is Step.TLS and _closed_by_peer(exc):
        # On an implicit-TLS port the client speaks first. A peer that hangs up with no alert is
        # taken for one that never spoke TLS (a service down behind its port); mode_probe's
        # closes_unasked tells it from a TLS server that dropped this handshake.
        return check_error(Reason.CONNECTION_CLOSED, closed_before_tls(where))
    ssl_exc = find_ssl_error(exc)
    if ssl_exc is not None:
        return ssl_error(ssl_exc, where)
    if isinstance(exc, ConnectionResetError) and step is Step.STARTTLS:
        # After the server's own go-ahead, a reset is its answer to the handshake: some servers
        # that dislike it (no shared protocol or cipher) reset instead of sending an alert.
        return check_error(
            Reason.TLS_HANDSHAKE_FAILED, f"{where} dropped the connection during the TLS handshake"
        )
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return net.connect_error(exc, where)
    return None


async def run_check(
    protocol: Literal["smtp", "imap"],
    endpoint: Endpoint,
    options: CheckOptions,
    secrets: tuple[str, ...],
    steps: StepLog,
    body: Callable[[Findings], Awaitable[None]],
) -> ProtocolResult:
    """Run `body` under the check's hard deadline and turn how it ended into a ProtocolResult."""
    findings = Findings()
    started = time.perf_counter()
    error: CheckError | None = None
    try:
        async with asyncio.timeout(options.check_timeout):
            await body(findings)
    except CheckError as exc:
        error = exc
    except TimeoutError:
        step = steps.current or Step.CONNECT
        error = check_error(
            TIMEOUT_REASONS.get(step, Reason.RESPONSE_TIMEOUT),
            f"the whole {protocol.upper()} check ran past its {options.check_timeout:g}s deadline",
            step=step,
        )
    except Exception as exc:  # noqa: BLE001
        # Something no translator foresaw (a library's own error on a reply it could not place):
        # still a verdict for this protocol, never a crash that hides the other one. Only the
        # type is kept, since library texts may quote what was sent.
        step = steps.current or Step.CONNECT
        log.warning("unexpected_check_error", protocol=protocol, step=step, error=type(exc).__name__)
        error = check_error(
            Reason.PROTOCOL_ERROR,
            f"{protocol.upper()} server {endpoint.host}:{endpoint.port} answered in a way the client "
            f"could not follow ({type(exc).__name__}) during {step}",
            step=step,
        )
    result = ProtocolResult(
        protocol=protocol,
        status="ok" if error is None else "failed",
        host=endpoint.host,
        port=endpoint.port,
        security=endpoint.security,
        steps=steps.timings,
        tls=findings.tls,
        auth_mechanism=findings.auth_mechanism,
        duration_ms=round((time.perf_counter() - started) * MS_PER_S, 2),
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
