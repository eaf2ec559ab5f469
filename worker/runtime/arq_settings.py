"""arq's WorkerSettings for inboxcheck: `arq worker.arq_settings.WorkerSettings` or `inboxcheck worker`.

Every arq default was looked at; the ones that matter for this job are set here, with why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any

from arq.connections import RedisSettings
from arq.utils import timestamp_ms
from arq.worker import Worker, func

from jobs.time_units import MS_PER_S
from worker.logs import configure_logging
from worker.messages import envelope as serialization
from worker.messages import keys
from worker.rechecks import hooks as recheck
from worker.rechecks.settings import get_ops_settings
from worker.runtime import redis_pool
from worker.runtime.job import EMIT_RESERVE_S, STATE_KEY, Runtime, validate_inbox_job
from worker.settings import Settings, SettingsError, get_settings

# The job timeout must leave this much room above the check's own deadline, so the check's
# TIMEOUT event is always written before arq would cancel the job (which would emit nothing).
JOB_TIMEOUT_MARGIN_S = 2 * EMIT_RESERVE_S
# arq counts a try each time a job starts, crashes included, and fails a job past max_tries
# *without calling it*: no event. inboxcheck counts attempts itself (settings.max_tries) and
# emits on the last one; arq's own cap is only a backstop far above it.
ARQ_MAX_TRIES_BACKSTOP = 1_000
# A crashed worker's in-progress lock must outlast the longest run of the job it held (so no
# second worker starts it while the first still runs), and not much more (so the job is handed
# back soon). arq adds 10 s to the job timeout; the job itself cannot outrun job_timeout.
IN_PROGRESS_MARGIN_S = 2.0
SETTINGS_KEY = "inboxcheck_settings"
# A worker's liveness key outlives this many health-check intervals: one slow poll is not death.
LIVENESS_TTL_FACTOR = 3


def check_settings(settings: Settings) -> None:
    """Refuse settings that would let arq cancel a check before it reports."""
    if settings.job_timeout <= settings.check_timeout + JOB_TIMEOUT_MARGIN_S:
        raise SettingsError(
            f"INBOXCHECK_JOB_TIMEOUT ({settings.job_timeout:g} s) must be more than "
            f"INBOXCHECK_CHECK_TIMEOUT ({settings.check_timeout:g} s) + {JOB_TIMEOUT_MARGIN_S:g} s, "
            "so a check that times out still writes its TIMEOUT event before arq cancels it"
        )
    Runtime.from_settings(settings)  # a malformed secret key fails here, at start-up


def redis_settings(settings: Settings, *, conn_retries: int = 0) -> RedisSettings:
    parsed = RedisSettings.from_dsn(settings.redis_url)
    # The supervisor in worker.runtime.supervisor reconnects with backoff; arq's own retries would only delay it.
    parsed.conn_retries = conn_retries
    return parsed


async def on_startup(ctx: dict[str, Any]) -> None:
    quiet_arq_job_lines()
    redis_pool.concurrent(ctx["redis"])  # before any job: no pool-wide lock per command
    ctx[STATE_KEY] = Runtime.from_settings(ctx.get(SETTINGS_KEY) or get_settings())
    # Pacing, health updates and the metrics endpoint (worker.rechecks.hooks).
    await recheck.startup(ctx, ctx[STATE_KEY].settings)


def worker_kwargs(settings: Settings) -> dict[str, Any]:
    """arq Worker keyword arguments, each chosen on purpose."""
    return {
        "functions": [
            func(validate_inbox_job, name=serialization.FUNCTION_NAME, max_tries=ARQ_MAX_TRIES_BACKSTOP)
        ],
        "queue_name": settings.queue_name,
        "on_startup": on_startup,
        "on_shutdown": recheck.shutdown,
        # The jobs-in-flight gauge.
        "on_job_start": recheck.job_started,
        "on_job_end": recheck.job_ended,
        # Enqueues due rechecks each tick; unique, so one worker of the fleet runs each tick.
        "cron_jobs": [recheck.cron_job(get_ops_settings())],
        # The settings the worker was built from, so a worker made in a test uses its own.
        "ctx": {SETTINGS_KEY: settings},
        # JSON both ways: pickle would let anyone with Redis write access run code here.
        "job_serializer": serialization.serialize,
        "job_deserializer": serialization.deserialize_job,
        # arq polls the queue every 0.5 s by default, which caps a worker near 200 jobs/s and
        # adds up to half a second to every job; a ZRANGEBYSCORE every 50 ms costs Redis little.
        "poll_delay": settings.poll_delay,
        "max_jobs": settings.max_jobs,
        # Above the check's deadline (validated by check_settings), so arq never cancels a check.
        "job_timeout": settings.job_timeout,
        "max_tries": ARQ_MAX_TRIES_BACKSTOP,
        # The result (the event) stays this long; while it does, enqueueing the same request
        # returns the same job instead of checking again: the idempotency freshness window.
        "keep_result": settings.keep_result,
        "health_check_interval": settings.health_check_interval,
        "health_check_key": keys.health_check_key(settings.queue_name),
        # Retry and cancellation (SIGTERM, lost Redis) put the job back instead of failing it.
        "retry_jobs": True,
        # Results are events: the structlog line per job already says what happened.
        "log_results": False,
    }


class InboxWorker(Worker):
    """arq's Worker with the in-progress lock sized for this job (see IN_PROGRESS_MARGIN_S),
    and arq's job claim made in one round trip per poll instead of four per job (worker.runtime.redis_pool)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_progress_timeout_s = self.job_timeout_s + IN_PROGRESS_MARGIN_S

    async def record_health(self) -> None:
        """arq's health record, plus this process's own liveness key (what `inboxcheck health`
        checks for this host): written from the same poll loop, so a hung worker lets it expire
        even while other workers keep the queue's key alive."""
        before = self._last_health_check
        await super().record_health()
        if self._last_health_check != before:  # arq wrote its record this round
            ttl_ms = int(self.health_check_interval * LIVENESS_TTL_FACTOR * MS_PER_S)
            await self.pool.psetex(
                keys.worker_alive_key(socket.gethostname(), os.getpid()), ttl_ms, self.queue_name
            )

    async def close(self) -> None:
        """arq deletes its health key when it closes: so does this process with its own."""
        if getattr(self, "_pool", None) is not None:
            with contextlib.suppress(Exception):
                await self.pool.delete(keys.worker_alive_key(socket.gethostname(), os.getpid()))
        await super().close()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs, same claim and bookkeeping, every job of the poll in one pipeline."""
        batch = [job_id.decode() for job_id in job_ids[: max(self.max_jobs - self.job_counter, 0)]]
        if not batch:
            return
        for _ in batch:  # never waits: the semaphore holds max_jobs + 1 and the batch fits
            await self.sem.acquire()
        self.job_counter += len(batch)
        now, lock_ms = timestamp_ms(), int(self.in_progress_timeout_s * MS_PER_S)
        try:
            async with self.pool.pipeline(transaction=False) as pipe:
                for job_id in batch:
                    pipe.eval(
                        redis_pool.CLAIM_JOB,
                        2,
                        keys.in_progress_key(job_id),
                        self.queue_name,
                        job_id,
                        now,
                        lock_ms,
                    )
                scores = await pipe.execute()
        except BaseException:
            self.job_counter -= len(batch)
            for _ in batch:
                self.sem.release()
            raise
        for job_id, score in zip(batch, scores):
            if score is None:  # running elsewhere, finished, or deferred meanwhile: as arq skips it
                self.job_counter -= 1
                self.sem.release()
                continue
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task


def quiet_arq_job_lines() -> None:
    # arq logs every job's arguments at INFO: the payload, which in development mode holds
    # plaintext passwords. inboxcheck writes its own structlog line per job instead.
    logging.getLogger("arq.worker").setLevel(logging.WARNING)


def __getattr__(name: str) -> Any:
    """`WorkerSettings`, built when arq asks for it, from the environment at that moment.

    For `arq worker.arq_settings.WorkerSettings` (arq's CLI cannot use InboxWorker, so its
    in-progress lock is arq's job timeout + 10 s, and it exits when Redis goes away).
    `inboxcheck worker` is the better way to run it.
    """
    if name != "WorkerSettings":
        raise AttributeError(name)
    settings = get_settings()
    check_settings(settings)
    configure_logging(settings.log_format, settings.log_level)
    quiet_arq_job_lines()
    return type(
        "WorkerSettings",
        (),
        {**worker_kwargs(settings), "redis_settings": redis_settings(settings, conn_retries=5)},
    )
