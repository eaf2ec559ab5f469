"""One POST of one event to one endpoint, what its answer means, and when to try again.

2xx: delivered. A timeout, a connection error, 5xx, 408 or 429: tried again later, after an
exponential backoff with jitter, or after the receiver's Retry-After when it asks for longer
(capped). 410 Gone: the endpoint is disabled. Anything else (other 4xx, a redirect, which is never
followed): failed at once, to the dead letters; sending the same request again would get the same
answer. The response is hostile input: its body is read only up to RESPONSE_BODY_MAX (then the
connection is dropped), and nothing of it is logged.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from enum import StrEnum

import httpx

from jobs import http_client
from jobs.errors import CheckError, Reason
from jobs.options import CheckOptions
from jobs.retry_after import retry_after_s
from worker.webhooks import signing
from worker.webhooks.endpoints import Endpoint

USER_AGENT = "inboxcheck-webhooks/0.1"

# Enough to tell what a receiver said, if anyone ever wants it; nothing of it is kept. httpcore
# reads the socket 64 KiB at a time, so that is what one response can cost in memory.
RESPONSE_BODY_MAX = 4096
RETRIED_STATUSES = frozenset({408, 429})
GONE = 410
HTTP_OK_MIN, HTTP_OK_MAX = 200, 299
HTTP_SERVER_ERROR = 500
# Most characters of a network error's text kept in a detail.
DETAIL_MAX = 120
# Backoff jitter: each delay is drawn from [JITTER_FLOOR, 1] times the doubled base.
JITTER_FLOOR = 0.5
# 2**attempts stops growing here (the cap is far below anyway); keeps the float finite.
MAX_DOUBLINGS = 32


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    status: int | None  # the HTTP status, None when there was no answer
    detail: str  # what happened, for the log and a dead letter: never a secret or the body
    seconds: float
    retry_after_s: float | None = None


def outcome_of(status: int) -> Outcome:
    if HTTP_OK_MIN <= status <= HTTP_OK_MAX:
        return Outcome.DELIVERED
    if status == GONE:
        return Outcome.GONE
    if status in RETRIED_STATUSES or status >= HTTP_SERVER_ERROR:
        return Outcome.RETRY
    return Outcome.FAILED


def next_delay_s(
    attempts: int, base_s: float, cap_s: float, asked_s: float | None, rng: random.Random
) -> float:
    """The wait after the `attempts`-th failed attempt: base doubling with jitter, up to the cap;
    a receiver's Retry-After wins when longer, up to the same cap."""
    backoff = min(cap_s, base_s * 2 ** min(attempts - 1, MAX_DOUBLINGS)) * rng.uniform(JITTER_FLOOR, 1.0)
    if asked_s is not None:
        backoff = max(backoff, min(asked_s, cap_s))
    return backoff


def client(options: CheckOptions, *, timeout_s: float, max_connections: int) -> httpx.AsyncClient:
    """The client of one endpoint: its own pool, so a slow endpoint holds only its own sockets;
    its connections resolved and judged as the checks' are (jobs.http_client)."""
    return http_client.client(
        options,
        max_connections=max_connections,
        timeout_s=timeout_s,
        headers={"user-agent": USER_AGENT, "content-type": "application/json"},
    )


async def _read_bounded(response: httpx.Response) -> None:
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= RESPONSE_BODY_MAX:
            return  # the rest is never read: the connection is closed, not reused


async def post(
    client: httpx.AsyncClient, endpoint: Endpoint, msg_id: str, body: bytes, timeout_s: float
) -> Attempt:
    """POST `body` to `endpoint`, signed; the attempt's outcome. Never raises for what the
    network or the receiver does."""
    headers = signing.headers(msg_id, int(time.time()), body, endpoint.keys)
    started = time.monotonic()

    def attempt(outcome: Outcome, status: int | None, detail: str, asked: float | None = None) -> Attempt:
        return Attempt(outcome, status, detail, time.monotonic() - started, asked)

    status: int | None = None
    asked: float | None = None
    try:
        # One deadline for the whole exchange: httpx's own timeouts are per read, which a
        # receiver dripping a byte at a time would never trip.
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", endpoint.url, content=body, headers=headers) as response:
                status = response.status_code
                asked = retry_after_s(response.headers.get("retry-after"), time.time())
                await _read_bounded(response)
    except CheckError as exc:
        # From the connect (jobs.net): a refused destination stays refused; DNS and the
        # connection may work on the next attempt.
        if exc.reason is Reason.DESTINATION_REFUSED:
            return attempt(Outcome.FAILED, None, exc.detail)
        return attempt(Outcome.RETRY, None, f"connection failed: {exc.detail}"[:DETAIL_MAX])
    except (TimeoutError, httpx.TimeoutException, httpx.TransportError) as exc:
        if status is not None:
            # The status line and headers came: the receiver answered; its slow body is its own.
            return attempt(outcome_of(status), status, f"HTTP {status}", asked)
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return attempt(Outcome.RETRY, None, f"no answer within {timeout_s:g} s")
        # httpcore's texts name the host or the errno, never what was sent.
        reason = str(exc)[:DETAIL_MAX] or type(exc).__name__
        return attempt(Outcome.RETRY, None, f"connection failed: {reason}")
    except httpx.HTTPError as exc:
        return attempt(Outcome.FAILED, None, f"request failed: {type(exc).__name__}")
    return attempt(outcome_of(status), status, f"HTTP {status}", asked)
