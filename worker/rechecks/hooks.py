"""The worker's side of rechecks, pacing and metrics: what worker.runtime calls.

- `cron_job`: arq's cron entry that enqueues due rechecks each tick (unique across workers).
- `paced`: runs a check holding the inbox lock and one slot per connection on each host, and
  backs a host off when it says "try again later".
- `after_event`: counts a job's terminal event and, for rechecks, updates the inbox's health.
- `startup`/`shutdown`, `job_started`/`job_ended`: the metrics endpoint and gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from arq import Retry
from arq.cron import CronJob, cron
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs.errors import Reason
from jobs.request import ValidationRequest
from jobs.result import ValidationResult
from jobs.time_units import SECONDS_PER_MINUTE
from worker.messages import envelope
from worker.messages import events as event_types
from worker.rechecks.inbox_health import HealthPolicy
from worker.rechecks.pacing import Held, HostBusy, InboxBusy, Pacer
from worker.rechecks.registry import Registry, for_settings, is_recheck
from worker.runtime.context import WorkerContext, as_context
from worker.runtime.metrics import Metrics, refresh_forever, serve
from worker.settings import Settings

log = structlog.get_logger("inboxcheck.recheck")

CRON_NAME = envelope.RECHECK_CRON_FUNCTION
# Left between the end of the slot wait plus the check's own deadline and arq's job timeout,
# for writing the event (four times the reserve worker.runtime.job keeps: the append and the
# health update may each wait on Redis).
EMIT_MARGIN_S = 4.0
# A job waiting for a paused host or inbox looks again at least this often.
MAX_PACING_DEFER_S = 300.0
# A second check of the same inbox comes back after about this long (it is usually short).
INBOX_BUSY_DEFER_S = 5.0
# A tick claims due inboxes for at most this fraction of the tick (or of the job timeout, when
# shorter); what is still due then waits for the next tick.
TICK_BUDGET_FRACTION = 0.5
# Replies that mean "you are going too fast": the host pauses, not just this inbox.
THROTTLE_REASONS = frozenset({Reason.TOO_MANY_ATTEMPTS})
# Too many connections open to one account (Gmail: 15 IMAP per account): a per-account limit,
# so only this inbox waits; the host's other inboxes are not affected.
INBOX_THROTTLE_REASONS = frozenset({Reason.TOO_MANY_CONNECTIONS})


@dataclass
class RecheckState:
    """The worker's rechecks, pacing and metrics, built when it starts (ctx["rechecks"])."""

    settings: Settings
    registry: Registry
    pacer: Pacer
    metrics: Metrics
    policy: HealthPolicy
    refresher: asyncio.Task[None] | None = None
    server: Any = None


def health_policy(settings: Settings) -> HealthPolicy:
    return HealthPolicy(
        interval_s=settings.recheck_every,
        failing_after=settings.failing_after,
        backoff_max_s=settings.failing_backoff_max,
        cert_warning_days=settings.cert_warning_days,
        jitter_fraction=settings.recheck_jitter,
    )


def slot_wait_s(settings: Settings) -> float:
    """How long a job may wait for host slots and still finish its check before arq's timeout."""
    room = settings.job_timeout - settings.check_timeout - EMIT_MARGIN_S
    return max(min(settings.pacing_wait, room), 0.0)


def build(redis: Redis, settings: Settings, metrics: Metrics | None = None) -> RecheckState:
    registry = for_settings(redis, settings)
    # A lease outlives the whole job, so a live check never loses its slot to expiry.
    pacer = Pacer(redis, settings.pacing_policy(lease_s=settings.job_timeout))
    return RecheckState(settings, registry, pacer, metrics or Metrics(), health_policy(settings))


def cron_job(settings: Settings) -> CronJob:
    """Every recheck_tick seconds (every minute by default); unique, so one worker runs each."""
    seconds = (
        0
        if settings.recheck_tick >= SECONDS_PER_MINUTE
        else set(range(0, SECONDS_PER_MINUTE, settings.recheck_tick))
    )
    return cron(enqueue_due_rechecks, name=CRON_NAME, second=seconds, unique=True, run_at_startup=False)


def tick_budget_s(settings: Settings) -> float:
    """How long one tick may go on claiming: it ends well before the next tick, and long before
    arq's job timeout would cancel it."""
    return TICK_BUDGET_FRACTION * min(settings.recheck_tick, settings.job_timeout)


async def enqueue_due_rechecks(ctx: dict[str, Any]) -> int:
    context = as_context(ctx)
    rechecks = context["rechecks"]
    job_ids = await rechecks.registry.enqueue_due(
        claim_ttl_s=rechecks.settings.recheck_claim_ttl,
        batch=rechecks.settings.recheck_batch,
        budget_s=tick_budget_s(rechecks.settings),
    )
    return len(job_ids)


async def startup(ctx: WorkerContext, settings: Settings) -> None:
    """Metrics endpoint and gauges; called from the worker's on_startup."""
    rechecks = build(ctx["redis"], settings)
    ctx["rechecks"] = rechecks
    if rechecks.settings.metrics_port:
        try:
            rechecks.server = serve(
                rechecks.metrics, rechecks.settings.metrics_host, rechecks.settings.metrics_port
            )
        except OSError as exc:
            # Another worker on this machine has the port: it still works, just unscraped.
            log.warning("metrics_port_busy", port=rechecks.settings.metrics_port, error=type(exc).__name__)
    rechecks.refresher = asyncio.ensure_future(
        refresh_forever(
            rechecks.metrics,
            lambda: ctx["redis"].zcard(settings.queue_name),
            rechecks.registry.health_counts,
            rechecks.settings.metrics_refresh,
        )
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    context = as_context(ctx)
    rechecks = context.get("rechecks")
    if rechecks is None:
        return
    if rechecks.refresher is not None:
        rechecks.refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rechecks.refresher
    if rechecks.server is not None:
        rechecks.server.shutdown()
        rechecks.server.server_close()


async def job_started(ctx: dict[str, Any]) -> None:
    context = as_context(ctx)
    if "rechecks" in context:
        context["rechecks"].metrics.in_flight.inc()


async def job_ended(ctx: dict[str, Any]) -> None:
    context = as_context(ctx)
    if "rechecks" in context:
        context["rechecks"].metrics.in_flight.dec()


async def paced(
    rechecks: RecheckState,
    request: ValidationRequest,
    check: Callable[[int | None], Awaitable[ValidationResult]],
    *,
    done_key: str,
    attempts_key: str,
    attempts_ttl_s: float,
    max_tries: int,
    held: Held | None = None,
) -> ValidationResult:
    """Run `check` within the pacing rules; raise arq's Retry when it must wait its turn.

    The job's done mark is read and its attempt counted in the same round trip that takes the
    inbox lock and the host slots (Pacer.check); `check` gets the attempt count, or None when it
    must count the attempt itself. Raises AlreadyDone when the job's event is already written,
    TriesUsedUp when `max_tries` checks already ran.
    With `held`, the lock and slots outlive this call when the check ends normally (Pacer.check)."""
    assert request.inbox_id is not None
    hosts = [str(request.smtp_host), str(request.imap_host)]
    try:
        async with rechecks.pacer.check(
            request.inbox_id,
            hosts,
            slot_wait_s(rechecks.settings),
            done_key=done_key,
            attempts_key=attempts_key,
            attempts_ttl_s=attempts_ttl_s,
            max_tries=max_tries,
            held=held,
        ) as attempts:
            result = await check(attempts)
    except InboxBusy as exc:
        rechecks.metrics.pacing_waits.labels(why="inbox_backed_off" if exc.retry_in_s else "inbox_busy").inc()
        defer = min(exc.retry_in_s or INBOX_BUSY_DEFER_S, MAX_PACING_DEFER_S)
        log.info("inbox_busy", backed_off=bool(exc.retry_in_s), retry_in_s=round(defer, 2))
        raise Retry(defer=defer) from None
    except HostBusy as exc:
        rechecks.metrics.pacing_waits.labels(why="backed_off" if exc.backed_off else "host_full").inc()
        log.info("host_busy", host=exc.host, backed_off=exc.backed_off, retry_in_s=round(exc.retry_in_s, 2))
        # A pause may last a day: the job looks again well within its own life in the queue.
        raise Retry(defer=min(exc.retry_in_s, MAX_PACING_DEFER_S)) from None
    for part in (result.smtp, result.imap):
        # Best-effort: the check ran, and a pause that cannot be written must not cost its
        # verdict. Raising would send the job round to log in again, at a host that just asked
        # for fewer logins; the job's own retry still honours the suggestion (retry_defer).
        try:
            if part.status == "failed" and part.reason in THROTTLE_REASONS:
                await rechecks.pacer.back_off(part.host, part.retry_after_s)
            elif part.status == "failed" and part.reason in INBOX_THROTTLE_REASONS:
                await rechecks.pacer.back_off_inbox(request.inbox_id, part.retry_after_s)
        except RedisError as exc:
            log.warning("back_off_failed", host=part.host, reason=part.reason, error=type(exc).__name__)
    return result


async def after_event(
    ctx: WorkerContext, job_id: str, event: event_types.TerminalEvent, *, written_now: bool = True
) -> None:
    """Count the job's terminal event (when this run wrote it); for a recheck, apply it to the
    inbox's health (once per event, however often a crashed job is replayed)."""
    rechecks = ctx.get("rechecks")
    if rechecks is None:
        return
    if written_now:
        rechecks.metrics.observe_event(event)
    inbox_id = event.subject
    if not is_recheck(job_id) or not inbox_id:
        return
    transition = await rechecks.registry.record_check(
        inbox_id,
        event,
        rechecks.policy,
        stream_name=rechecks.settings.events_stream,
        maxlen=rechecks.settings.events_maxlen,
    )
    if transition is None:
        return
    if transition.changed:
        rechecks.metrics.event_written(event_types.HEALTH_CHANGED)
    if transition.new_cert_warnings:
        rechecks.metrics.event_written(event_types.CERT_EXPIRING)
