"""The arq job: one payload in, exactly one terminal event out (or a Retry while tries remain)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import structlog
from arq import Retry
from redis.exceptions import RedisError

from jobs.errors import Reason
from jobs.goodbyes import Goodbyes
from jobs.options import CheckOptions
from jobs.request import ValidationRequest
from jobs.result import ValidationResult
from jobs.time_units import MS_PER_S
from jobs.token_step import DirectTokens
from jobs.validate import validate_inbox
from worker.messages import events, keys, scripts, stream
from worker.messages.payload import PayloadRejected, decode
from worker.messages.producer import JOB_EXPIRES_MS
from worker.messages.sealing import Sealer
from worker.rechecks import hooks
from worker.rechecks.pacing import AlreadyDone, Held, TriesUsedUp
from worker.rechecks.registry import Registry, is_recheck
from worker.runtime.context import WorkerContext, as_context
from worker.runtime.rotated_tokens import keep_rotated, rotated_sealed
from worker.runtime.token_cache import RedisTokens
from worker.runtime.write_refusals import WriteRefusals, refusal, retried_while_refused
from worker.settings import Settings

log = structlog.get_logger("inboxcheck.worker")

# Doubling backoff between attempts stops growing here, whatever the server suggests.
MAX_RETRY_DEFER_S = 300.0
# Redis hiccups while writing the event: try again soon, the check result is not the problem.
REDIS_RETRY_DEFER_S = 1.0
# Time kept back from arq's job timeout for writing the event after the check's own deadline.
EMIT_RESERVE_S = 1.0
# The failed event's reason when every attempt ran and none could be recorded.
TRIES_USED_UP = "TriesUsedUp"
# How long a refresh lock outlives the token step's limit (worker.runtime.token_cache).
TOKEN_LOCK_SLACK_S = 1.0
# Event ids are UUIDv5 of the job id and enqueue time in this namespace: a rerun gets the same id.
EVENT_ID_NAMESPACE = uuid.UUID("6b3f9c9e-3a55-4c1e-9a53-5e0d7c7f1a10")

REJECTION_RESOLUTIONS = {
    Reason.MALFORMED_PAYLOAD: "Fix the producer: the payload must match `inboxcheck schema request` "
    "and the payload format in the README.",
    Reason.SEALED_CREDENTIALS: "Seal the passwords with the same INBOXCHECK_SECRET_KEY the workers "
    "have (or allow plaintext credentials in development).",
}


@dataclass(frozen=True, slots=True)
class Runtime:
    """What every job needs, built once when the worker starts."""

    settings: Settings
    sealer: Sealer | None
    options: CheckOptions
    writes: WriteRefusals = field(default_factory=WriteRefusals)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        from worker.messages.sealing import sealer_for

        return cls(settings, sealer_for(settings.secret_key), settings.check_options())


def event_id(job_id: str, enqueue_time_ms: int) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{job_id}:{enqueue_time_ms}"))


def attempts_ttl_s(settings: Settings) -> float:
    """How long a job's attempt count is kept: as long as the job itself can be queued (a day,
    waits for a paused host included) plus its result's life, so a long wait never resets it."""
    return JOB_EXPIRES_MS / MS_PER_S + settings.keep_result


def retry_defer(settings: Settings, job_try: int, result: ValidationResult | None = None) -> float:
    defer = settings.retry_backoff * 2 ** (job_try - 1)
    if result is not None:
        suggested = [p.retry_after_s for p in (result.smtp, result.imap) if p.retry_after_s]
        defer = max([defer, *suggested])
    return min(defer, MAX_RETRY_DEFER_S)


def _rejection_event(exc: PayloadRejected, job_try: int, eid: str) -> events.TerminalEvent:
    rejection = events.Rejection(
        inbox_id=exc.inbox_id,
        reason=exc.reason.value,
        resolution=REJECTION_RESOLUTIONS[exc.reason],
        problems=[exc.message, *exc.problems],
        attempts=job_try,
    )
    return events.rejected(rejection, eid)


async def validate_inbox_job(
    ctx: dict[str, Any], payload: Any = None, *, unreadable: str | None = None
) -> dict[str, Any]:
    context = as_context(ctx)
    runtime = context["runtime"]
    job_id: str = context["job_id"]
    job_try: int = context["job_try"]
    enqueue_ms = round(context["enqueue_time"].timestamp() * MS_PER_S)
    done_key = keys.done_key(job_id, enqueue_ms)
    eid = event_id(job_id, enqueue_ms)
    started = time.perf_counter()
    rechecks = context.get("rechecks")
    with structlog.contextvars.bound_contextvars(job_id=job_id, attempt=job_try):
        # Decoding touches no state, so it can come first: a paced check then reads its done mark
        # in the round trip that takes its lock and slots (Pacer.check), not in one of its own.
        decoded = _decode(runtime, payload, unreadable)
        # A paced check that ran keeps its lock and slots until its event is appended, which
        # releases them in the same round trip; any other way out releases them here. A slot
        # counts a connection until it is closed: when the check's QUIT or LOGOUT is still going
        # on at the append (jobs.goodbyes), the job gives its slots back here, after it.
        held = Held()
        goodbyes = Goodbyes()
        finished = False
        try:
            result = await _check_and_append(
                context, runtime, decoded, job_try, eid, done_key, rechecks, held, goodbyes, started
            )
            finished = True
            recorded = context.get("recorded")
            if recorded is not None:  # behind Sentinel, the worker finishes the job only where this is
                recorded[job_id] = done_key
            return result
        finally:
            # Bounded by the goodbyes' own limit, and by what is left of the job's time less the
            # reserve, which leaves the release below its time before arq would cancel the job.
            await goodbyes.closed(_left_s(runtime.settings, started))
            if held.pending is not None and rechecks is not None:
                pending, held.pending = held.pending, None
                await _release(runtime, rechecks, pending, started, finished=finished)


def _left_s(settings: Settings, started: float) -> float:
    """What is left of the job's time less the reserve for writing its event (never negative)."""
    return max(started + settings.job_timeout - EMIT_RESERVE_S - time.perf_counter(), 0.0)


async def _release(
    runtime: Runtime,
    rechecks: hooks.RecheckState,
    pending: tuple[list[str], list[Any]],
    started: float,
    *,
    finished: bool,
) -> None:
    """Give back the check's lock and slots after its goodbyes, tried again while Redis refuses
    writes (a failover's read-only replica) within the job's time. Once the job has its event,
    a release that still fails must not send it back to the queue: its rerun would only wait on
    its own lock, so the lock and leases are left to expire."""

    def release() -> Awaitable[None]:
        return rechecks.pacer.finish(pending)

    try:
        await retried_while_refused(release, runtime.writes, _left_s(runtime.settings, started))
    except RedisError as exc:
        if not finished:
            raise Retry(defer=REDIS_RETRY_DEFER_S) from None
        log.warning("release_failed", error=type(exc).__name__, note="the inbox lock and host slots expire")


async def _check_and_append(
    ctx: WorkerContext,
    runtime: Runtime,
    decoded: ValidationRequest | PayloadRejected,
    job_try: int,
    eid: str,
    done_key: str,
    rechecks: hooks.RecheckState | None,
    held: Held,
    goodbyes: Goodbyes,
    started: float,
) -> dict[str, Any]:
    job_id: str = ctx["job_id"]
    try:
        if rechecks is None or isinstance(decoded, PayloadRejected):
            already = await stream.recorded(ctx["redis"], done_key)
            if already is not None:
                return await _already_done(ctx, job_id, already)
        event = await _run(
            runtime,
            decoded,
            job_try,
            eid,
            rechecks=rechecks,
            redis=ctx["redis"],
            done_key=done_key,
            held=held,
            goodbyes=goodbyes,
            registry=rechecks.registry if rechecks is not None and is_recheck(job_id) else None,
        )
    except AlreadyDone as done:
        return await _already_done(ctx, job_id, events.parse_terminal_event(done.event))
    except RedisError:
        raise Retry(defer=REDIS_RETRY_DEFER_S) from None
    written = await _append(ctx, runtime, event, done_key, held, goodbyes, started)
    data = written.data
    log.info(
        "job_finished",
        inbox_id=written.subject,
        event_id=written.id,
        type=written.type,
        status=data.status,
        error_code=data.error_code,
        reason=data.reason,
        attempts=data.attempts,
        duration_ms=round((time.perf_counter() - started) * MS_PER_S, 1),
    )
    await _after_event(ctx, job_id, written)
    return _arq_result(written)


async def _append(
    ctx: WorkerContext,
    runtime: Runtime,
    event: events.TerminalEvent,
    done_key: str,
    held: Held,
    goodbyes: Goodbyes,
    started: float,
) -> events.TerminalEvent:
    """Append the job's event once. While Redis refuses writes the job keeps its verdict and
    tries again within its time (a rerun would log in again), then goes back to the queue.
    The append gives back the check's lock and slots too, unless a goodbye still holds a
    connection open; once refused, it waits for the goodbyes, so that its next try does."""
    settings = runtime.settings
    carried = False  # whether the last try released the check's lock and slots

    async def append() -> events.TerminalEvent:
        nonlocal carried
        # Worked out on every try: the goodbyes may have ended since the last one.
        release = held.pending if not goodbyes.pending else None
        carried = release is not None
        try:
            written = await stream.append_once(
                ctx["redis"],
                stream=settings.events_stream,
                maxlen=settings.events_maxlen,
                done_key=done_key,
                done_ttl_s=settings.keep_result,
                event=event,
                release=release,
            )
        except RedisError as exc:
            if release is None and held.pending is not None and refusal(exc) is not None:
                # At maxmemory Redis lets a script write only once it has freed memory (the
                # release's ZREM and DEL come before the XADD): without the release the append
                # is refused for as long as Redis is full, so the next try waits to carry it.
                await goodbyes.closed(_left_s(settings, started))
            raise
        if release is not None:
            held.pending = None  # released by the append's script
        return written

    def shows_accepting() -> bool:
        # At maxmemory the append that released first got through while Redis is still full.
        return not (carried and runtime.writes.code == "OOM")

    try:
        return await retried_while_refused(
            append, runtime.writes, _left_s(settings, started), shows_accepting=shows_accepting
        )
    except RedisError as exc:
        if refusal(exc) is None:  # a refusal is logged once for the worker, not per job
            log.warning("event_write_failed", error=type(exc).__name__, retry_in_s=REDIS_RETRY_DEFER_S)
        raise Retry(defer=REDIS_RETRY_DEFER_S) from None


async def _already_done(ctx: WorkerContext, job_id: str, already: events.TerminalEvent) -> dict[str, Any]:
    # A run that crashed after writing its event: hand arq the same event, append nothing.
    log.info("job_already_done", event_id=already.id, inbox_id=already.subject)
    await _after_event(ctx, job_id, already, written_now=False)
    return _arq_result(already)


def _arq_result(event: events.TerminalEvent) -> dict[str, Any]:
    # arq's result stays the event's JSON (envelope.serialize), for clients in any language.
    return event.model_dump(mode="json")


async def _after_event(
    ctx: WorkerContext, job_id: str, event: events.TerminalEvent, *, written_now: bool = True
) -> None:
    """Metrics, and a recheck's health update; a Redis hiccup reruns the job, whose replay
    finds its event already written and applies the (idempotent) health update again."""
    try:
        await hooks.after_event(ctx, job_id, event, written_now=written_now)
    except RedisError as exc:
        log.warning("health_update_failed", error=type(exc).__name__, retry_in_s=REDIS_RETRY_DEFER_S)
        raise Retry(defer=REDIS_RETRY_DEFER_S) from None


class AttemptCounter:
    """How many times this job's check has really started (kept in Redis across runs)."""

    def __init__(self, redis: Any, key: str, ttl_s: float, fallback: int) -> None:
        self._redis, self._key, self._ttl_ms = redis, key, int(ttl_s * MS_PER_S)
        self.value = fallback

    async def start(self, max_tries: int) -> None:
        """Count one more check, before it starts; TriesUsedUp (nothing counted) when
        `max_tries` checks already ran."""
        counted = int(
            await scripts.of(self._redis).count_attempt(keys=[self._key], args=[self._ttl_ms, max_tries])
        )
        if counted < 0:
            raise TriesUsedUp(-counted)
        self.value = counted


def _decode(runtime: Runtime, payload: Any, unreadable: str | None) -> ValidationRequest | PayloadRejected:
    try:
        if unreadable is not None:
            raise PayloadRejected(Reason.MALFORMED_PAYLOAD, unreadable)
        return decode(
            payload,
            runtime.sealer,
            allow_plaintext=runtime.settings.allow_plaintext_credentials,
            max_age_s=runtime.settings.sealed_max_age,
        )
    except PayloadRejected as exc:
        log.info("payload_rejected", inbox_id=exc.inbox_id, reason=exc.reason.value)
        return exc


async def _run(
    runtime: Runtime,
    decoded: ValidationRequest | PayloadRejected,
    job_try: int,
    eid: str,
    *,
    rechecks: hooks.RecheckState | None = None,
    redis: Any = None,
    done_key: str,
    held: Held | None = None,
    goodbyes: Goodbyes | None = None,
    registry: Registry | None = None,
) -> events.TerminalEvent:
    """The terminal event for this attempt; raises Retry when the outcome is worth another,
    AlreadyDone when pacing found this job's event already written."""
    settings = runtime.settings
    if isinstance(decoded, PayloadRejected):
        return _rejection_event(decoded, job_try, eid)
    request = decoded

    structlog.contextvars.bind_contextvars(inbox_id=request.inbox_id)
    # arq's job_try also counts runs that never checked (pacing waits, crashes before the check),
    # so the attempts that count against max_tries are counted here, when a check really starts.
    # Counted before the check runs and never undone, each attempt that may reach the server is
    # counted whatever fails after it; a run that finds max_tries counted does not check again.
    attempts = AttemptCounter(redis, keys.attempts_key(eid), attempts_ttl_s(settings), job_try)
    fetches_token = request.oauth2 is not None and request.oauth2.fetches_token
    tokens = _token_source(runtime, redis)

    async def check(counted: int | None = None) -> ValidationResult:
        if counted is None:
            await attempts.start(settings.max_tries)
        else:  # pacing counted it in the round trip that took the lock and slots
            attempts.value = counted
        try:
            result = await validate_inbox(request, runtime.options, tokens, goodbyes)
            if counted is None and rechecks is not None and goodbyes is not None:
                # Pacing's slower way in (a host was full) gives the slots back the moment this
                # returns (Pacer.hosts), not with the event: they count the connections until
                # QUIT and LOGOUT have closed them, so this verdict waits for that.
                await goodbyes.closed()
            return result
        finally:
            # Kept whatever the check ends in, a bug included: the refresh token sent may be dead
            # already, and this is the only copy of the new one.
            if tokens.rotated_refresh_token is not None:
                await keep_rotated(
                    redis,
                    runtime.sealer,
                    request,
                    tokens.rotated_refresh_token,
                    registry=registry,
                    event_id=eid,
                    ttl_s=attempts_ttl_s(settings),
                )

    async def rotated() -> str | None:
        # A one-off job's rotated refresh token rides on the event that ends it, whichever that is.
        return await rotated_sealed(redis, eid) if fetches_token else None

    try:
        # The engine keeps its own deadline (check_timeout); this outer one only guards against a
        # bug there, and leaves time to write the event before arq's job timeout would cancel.
        # With pacing (in the worker), the check waits its turn for the inbox and its hosts.
        paced = (
            hooks.paced(
                rechecks,
                request,
                check,
                done_key=done_key,
                attempts_key=keys.attempts_key(eid),
                attempts_ttl_s=attempts_ttl_s(settings),
                max_tries=settings.max_tries,
                held=held,
            )
            if rechecks
            else check()
        )
        result = await asyncio.wait_for(paced, settings.job_timeout - EMIT_RESERVE_S)
    except (Retry, AlreadyDone):
        raise  # pacing: not this check's turn yet, or nothing left to do; not a failure
    except TriesUsedUp as used:
        # The last check ran but its event was never written (Redis failed after it, or the
        # worker died during it) and its verdict is gone: the job ends here, in a failed event,
        # rather than in one more login.
        log.error("tries_used_up", attempts=used.attempts)
        failure = events.Failure(
            inbox_id=request.inbox_id,
            reason=TRIES_USED_UP,
            attempts=used.attempts,
            oauth2_refresh_token_sealed=await rotated(),
        )
        return events.failed(failure, eid)
    except RedisError:
        raise Retry(defer=REDIS_RETRY_DEFER_S) from None
    except Exception as exc:  # noqa: BLE001 - any bug must still end in an event
        last_try = attempts.value >= settings.max_tries
        log.error("check_crashed", error=type(exc).__name__, last_try=last_try)
        if not last_try:
            raise Retry(defer=retry_defer(settings, attempts.value)) from None
        failure = events.Failure(
            inbox_id=request.inbox_id,
            reason=type(exc).__name__,
            attempts=attempts.value,
            oauth2_refresh_token_sealed=await rotated(),
        )
        return events.failed(failure, eid)

    if result.retryable and attempts.value < settings.max_tries:
        defer = retry_defer(settings, attempts.value, result)
        log.info("check_retry", error_code=result.error_code, reason=result.reason, retry_in_s=defer)
        raise Retry(defer=defer)
    return events.completed(
        result.model_copy(
            update={"attempts": attempts.value, "oauth2_refresh_token_sealed": await rotated()}
        ),
        eid,
    )


def _token_source(runtime: Runtime, redis: Any) -> RedisTokens | DirectTokens:
    """Kept tokens need Redis and a key to seal them; otherwise each check fetches its own."""
    if runtime.sealer is None or redis is None:
        return DirectTokens()
    # The refresh lock outlives the token step's own limit only briefly, should its holder die.
    return RedisTokens(redis, runtime.sealer, lock_ttl_s=runtime.options.step_timeout + TOKEN_LOCK_SLACK_S)
