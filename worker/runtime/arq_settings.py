"""arq's settings for inboxcheck: the keyword arguments of the worker `inboxcheck worker` runs,
and `WorkerSettings` for arq's own CLI (`arq worker.runtime.arq_settings.WorkerSettings`).

The arq defaults that matter for this job are set here, each with why.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from arq.connections import RedisSettings
from arq.worker import func

from jobs import goodbyes
from jobs.options import GOODBYE_TIMEOUT_S
from jobs.tls import use_small_tls_read_buffers
from worker.logs import configure_logging
from worker.messages import envelope, keys
from worker.rechecks import hooks
from worker.runtime import redis_pool, redis_target
from worker.runtime.context import as_context
from worker.runtime.inbox_worker import IN_PROGRESS_MARGIN_S
from worker.runtime.job import EMIT_RESERVE_S, Runtime, validate_inbox_job
from worker.settings import Settings, SettingsError, get_settings

log = structlog.get_logger("inboxcheck.worker")

# The job timeout must leave this much room above the check's own deadline, so the check's
# TIMEOUT event is always written before arq would cancel the job (which would emit nothing).
JOB_TIMEOUT_MARGIN_S = 2 * EMIT_RESERVE_S
# arq counts a try each time a job starts, crashes included, and fails a job past max_tries
# *without calling it*: no event. inboxcheck counts attempts itself (settings.max_tries) and
# emits on the last one; arq's own cap is only a backstop far above it.
ARQ_MAX_TRIES_BACKSTOP = 1_000


def check_settings(settings: Settings) -> None:
    """Refuse settings that would let arq cancel a check before it reports, or check an inbox
    twice."""
    # The check's real deadline: a single step is allowed its whole limit (Settings.check_options).
    deadline = settings.check_options().check_timeout
    if settings.job_timeout <= deadline + JOB_TIMEOUT_MARGIN_S:
        raise SettingsError(
            f"INBOXCHECK_JOB_TIMEOUT ({settings.job_timeout:g} s) must be more than the check's deadline "
            f"(INBOXCHECK_CHECK_TIMEOUT, or INBOXCHECK_STEP_TIMEOUT when longer: {deadline:g} s) + "
            f"{JOB_TIMEOUT_MARGIN_S:g} s, so a check that times out still writes its TIMEOUT event "
            "before arq cancels it"
        )
    shortest = shortest_keep_result_s(settings)
    if settings.keep_result < shortest:
        raise SettingsError(
            f"INBOXCHECK_KEEP_RESULT ({settings.keep_result:g} s) must be at least {shortest:g} s "
            f"(twice INBOXCHECK_JOB_TIMEOUT + {IN_PROGRESS_MARGIN_S:g} s): a job's done mark lives "
            "as long as its result, and a job run again after a crash or a Redis failover finds its "
            "event by that mark; a mark gone sooner would check the inbox a second time"
        )
    Runtime.from_settings(settings)  # a malformed secret key fails here, at start-up


def shortest_keep_result_s(settings: Settings) -> float:
    """The shortest result life with which no job is checked twice. A job's done mark is written
    with its event and lives INBOXCHECK_KEEP_RESULT; it must outlive the job (up to job_timeout),
    then arq's bookkeeping after it, which behind Sentinel takes the job off the queue only where
    the mark is and waits up to the in-progress lock's life while Redis refuses writes (a job that
    finds no mark is taken for one lost in a failover and runs again), and a crashed run's
    rerun, which starts once that lock expires."""
    return settings.job_timeout + settings.job_timeout + IN_PROGRESS_MARGIN_S


def redis_settings(settings: Settings, *, conn_retries: int = 0) -> RedisSettings:
    """arq's RedisSettings for the settings' Redis. For a Sentinel URL arq's own Sentinel support
    (used by `arq --check`) reaches the master without the CA file, the hostname check or the
    sentinels' password; the worker `arq` runs gets inboxcheck's own pool instead (WorkerSettings)."""
    target = redis_target.parse_sentinel_url(settings.redis_url)
    if target is not None:
        return RedisSettings(
            host=list(target.sentinels),
            sentinel=True,
            sentinel_master=target.master,
            database=target.db,
            username=target.username,
            password=target.password,
            ssl=target.tls,
            conn_retries=conn_retries,
        )
    parsed = RedisSettings.from_dsn(settings.redis_url)
    if parsed.ssl:  # rediss://: verified as every other client verifies it (redis_target.tls_options)
        parsed.ssl_cert_reqs = "required"
        parsed.ssl_check_hostname = True
        parsed.ssl_ca_certs = str(settings.redis_ca_file) if settings.redis_ca_file else None
    # The supervisor reconnects with backoff; arq's own retries would only delay it.
    parsed.conn_retries = conn_retries
    return parsed


async def on_startup(ctx: dict[str, Any]) -> None:
    context = as_context(ctx)
    quiet_arq_job_lines()
    context["runtime"] = Runtime.from_settings(context["settings"])
    # Pacing, health updates and the metrics endpoint (worker.rechecks.hooks).
    await hooks.startup(context, context["settings"])


async def on_shutdown(ctx: dict[str, Any]) -> None:
    # Each job waits for its own goodbyes; any still going (a job cancelled while it waited) get
    # their bound, then are ended, so no socket outlives the worker's loop half closed.
    await goodbyes.drain(GOODBYE_TIMEOUT_S)
    await hooks.shutdown(ctx)


def worker_kwargs(settings: Settings) -> dict[str, Any]:
    """arq Worker keyword arguments, each chosen on purpose."""
    return {
        "functions": [
            func(validate_inbox_job, name=envelope.FUNCTION_NAME, max_tries=ARQ_MAX_TRIES_BACKSTOP)
        ],
        "queue_name": settings.queue_name,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        # The jobs-in-flight gauge.
        "on_job_start": hooks.job_started,
        "on_job_end": hooks.job_ended,
        # Enqueues due rechecks each tick; unique, so one worker of the fleet runs each tick.
        "cron_jobs": [hooks.cron_job(settings)],
        # The settings the worker was built from, so a worker made in a test uses its own.
        "ctx": {"settings": settings},
        # JSON both ways: pickle would let anyone with Redis write access run code here.
        "job_serializer": envelope.serialize,
        "job_deserializer": envelope.deserialize_job,
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


def quiet_arq_job_lines() -> None:
    # arq logs every job's arguments at INFO: the payload, which in development mode holds
    # plaintext passwords. inboxcheck writes its own structlog line per job instead.
    logging.getLogger("arq.worker").setLevel(logging.WARNING)


def __getattr__(name: str) -> Any:
    """`WorkerSettings`, built when arq asks for it, from the environment at that moment.

    For `arq worker.runtime.arq_settings.WorkerSettings`: arq's CLI runs arq's own Worker on
    arq's own pool (not InboxWorker and its pool), so its in-progress lock is arq's job timeout
    + 10 s, jobs are claimed one at a time, and it exits when Redis goes away. arq's CLI builds
    `Worker` itself (arq.worker.create_worker), with no setting for another class, so behind
    Sentinel it also lacks InboxWorker's done-mark check before a job leaves the queue (README):
    it says so at start. `inboxcheck worker` is the better way to run it.
    """
    if name != "WorkerSettings":
        raise AttributeError(name)
    settings = get_settings()
    check_settings(settings)
    configure_logging(settings.log_format, settings.log_level)
    quiet_arq_job_lines()
    use_small_tls_read_buffers()
    attributes = {**worker_kwargs(settings), "redis_settings": redis_settings(settings, conn_retries=5)}
    if redis_target.parse_sentinel_url(settings.redis_url) is not None:
        # The pool `inboxcheck worker` uses, which follows the master with every TLS check and the
        # sentinels' password; arq connects it on its first command.
        attributes["redis_pool"] = redis_pool.client(settings)
        log.warning(
            "arq_worker_behind_sentinel",
            note="arq's own worker takes a job off the queue even when a failover lost its event; "
            "run `inboxcheck worker` behind Sentinel",
        )
    return type("WorkerSettings", (), attributes)
