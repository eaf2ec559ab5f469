"""The producer side for Python services: enqueue a validation, wait for its event.

Writes exactly what arq's enqueue_job writes (the job key with a JSON envelope, the queue's
sorted-set entry) but with JSON instead of pickle, from any redis.asyncio client, and pushes a
wake-up token an idle worker blocks on (keys.wake_key).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from jobs.request import ValidationRequest
from jobs.time_units import MS_PER_S, SECONDS_PER_DAY
from worker.messages import envelope, keys, payload, scripts
from worker.messages.events import Event, TerminalEvent, parse_terminal_event
from worker.messages.sealing import Sealer, sealer_for
from worker.settings import Settings, get_settings

# A job not started within a day is dropped by arq (its key expires): same as arq's default.
JOB_EXPIRES_MS = SECONDS_PER_DAY * MS_PER_S
# How often a waiting producer looks for results: a GET per job, cheap.
RESULT_POLL_S = 0.1


async def enqueue_validation(
    redis: Redis,
    request: ValidationRequest,
    *,
    settings: Settings | None = None,
    sealer: Sealer | None = None,
) -> str:
    """Enqueue a check of `request`; return its job id.

    The id is derived from the request, so enqueueing the same request again while its job is
    pending, or its result fresh, returns the same id and adds no job. Without a key the
    passwords would sit in Redis in plaintext: refused (payload.PlaintextRefused) unless
    settings.allow_plaintext_credentials says this is development.
    """
    settings = settings or get_settings()
    if sealer is None:
        sealer = sealer_for(settings.secret_key)
    body = payload.encode(request, sealer, allow_plaintext=settings.allow_plaintext_credentials)
    job_id = payload.job_id_for(request, sealer, settings.queue_name)
    await enqueue_payload(redis, settings.queue_name, job_id, body)
    return job_id


async def enqueue_payload(redis: Redis, queue_name: str, job_id: str, body: dict[str, Any]) -> bool:
    """Enqueue a ready payload under `job_id` unless that job is pending or its result fresh;
    True when this call enqueued it. (Also how worker.rechecks.registry enqueues rechecks.)

    One round trip (scripts.ENQUEUE_JOB), which also wakes one idle worker."""
    job_keys, args = enqueue_job_call(queue_name, job_id, body)
    return bool(await scripts.of(redis).enqueue_job(keys=job_keys, args=args))


def enqueue_job_call(
    queue_name: str, job_id: str, body: dict[str, Any], now_ms: int | None = None
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of scripts.ENQUEUE_JOB for one job (pipelines send many at once)."""
    now_ms = int(time.time() * MS_PER_S) if now_ms is None else now_ms
    return (
        [keys.job_key(job_id), keys.result_key(job_id), queue_name, keys.wake_key(queue_name)],
        [job_id, envelope.job_bytes(body, now_ms), JOB_EXPIRES_MS, now_ms],
    )


async def results(redis: Redis, job_ids: list[str]) -> dict[str, TerminalEvent]:
    """The events of those jobs that have finished (arq's result key holds the event's JSON)."""
    if not job_ids:
        return {}
    found: dict[str, TerminalEvent] = {}
    raws = await redis.mget([keys.result_key(job_id) for job_id in job_ids])
    for job_id, raw in zip(job_ids, raws, strict=True):
        if raw:
            result = envelope.deserialize_result(raw)
            if result.get("s") and isinstance(result.get("r"), dict):
                found[job_id] = _event_of(result["r"])
    return found


def _event_of(value: dict[str, Any]) -> TerminalEvent:
    try:
        return parse_terminal_event(value)
    except ValidationError:
        # pydantic's message would quote the values it read; which key is wrong is enough.
        raise envelope.ResultError("a job result in Redis is not an inboxcheck event") from None


# `timeout` is a poll deadline, not a cancellation scope, and callers pass it by that name.
async def wait_for_event(redis: Redis, job_id: str, timeout: float) -> TerminalEvent | None:  # noqa: ASYNC109
    """The job's event, or None when it has not arrived within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = await results(redis, [job_id])
        if job_id in found:
            return found[job_id]
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(RESULT_POLL_S)


def event_line(event: Event | dict[str, Any]) -> str:
    """One JSON line: the job id, or an event, through json.dumps (non-ASCII as escapes, the
    format scripts reading `--json` parse)."""
    value = event if isinstance(event, dict) else event.model_dump(mode="json")
    return json.dumps(value, separators=(",", ":"))
