"""How a worker waits and polls: an idle worker waits for work on the queue's wake list, not in a
sleep, so a job enqueued through the producer starts at once, however long the poll delay; a job
enqueued without the wake-up is still started by the next poll; and a job running on another
worker is not claimed again at every poll. Real redis-server, real worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from jobs.time_units import MS_PER_S
from tests.servers.redis import RedisServer
from tests.worker.support import in_process_worker, make_settings, request
from worker.messages import envelope, keys, payload
from worker.messages.producer import JOB_EXPIRES_MS, enqueue_validation
from worker.messages.sealing import sealer_for
from worker.settings import Settings

# Far longer than the deadline below: a job that waited for the next poll would miss it.
LONG_POLL_DELAY_S = 60.0
DEADLINE_S = 10.0
POLL_S = 0.01
POLLS = 30
# Long enough that the worker is seen blocked between two polls, and far within the deadline.
SHORT_POLL_DELAY_S = 1.0


async def blocked_in_blpop(redis: Redis) -> bool:
    """Whether some client is blocked in BLPOP right now (Redis's own view of its clients)."""
    return any(c.get("cmd") == "blpop" and "b" in c.get("flags", "") for c in await redis.client_list())


async def idle_worker_runs(
    settings: Settings, redis: Redis, enqueue: Callable[[], Awaitable[object]], stalled: str
) -> None:
    """Start a worker, wait until it idles blocked for a wake-up, `enqueue`, and wait (within
    DEADLINE_S, else fail saying `stalled`) for the job's event."""
    worker = await in_process_worker(settings, cron_jobs=[])
    main = asyncio.ensure_future(worker.main())
    try:
        deadline = time.monotonic() + DEADLINE_S
        # Idle: it has polled the empty queue and now waits, blocked, for a wake-up.
        while not await blocked_in_blpop(redis):
            assert time.monotonic() < deadline and not main.done()
            await asyncio.sleep(POLL_S)
        await enqueue()
        while not await redis.xlen(settings.events_stream):
            assert time.monotonic() < deadline, stalled
            assert not main.done(), "the worker stopped"
            await asyncio.sleep(POLL_S)
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
        await worker.close()
    assert worker.jobs_complete == 1


async def test_a_new_job_wakes_an_idle_worker_within_its_poll_delay(
    shared_redis: RedisServer, aredis: Redis
) -> None:
    settings = make_settings(shared_redis, poll_delay=LONG_POLL_DELAY_S, max_tries=1, metrics_port=0)
    await idle_worker_runs(
        settings,
        aredis,
        lambda: enqueue_validation(aredis, request(), settings=settings),
        "the job waited for the next poll",
    )


async def test_a_job_enqueued_without_the_wake_up_is_started_by_the_next_poll(
    shared_redis: RedisServer, aredis: Redis
) -> None:
    settings = make_settings(shared_redis, poll_delay=SHORT_POLL_DELAY_S, max_tries=1, metrics_port=0)
    await idle_worker_runs(
        settings,
        aredis,
        lambda: enqueue_without_wake_up(aredis, settings),
        "a job without a wake-up was never polled",
    )


async def enqueue_without_wake_up(redis: Redis, settings: Settings) -> None:
    """The job's two writes, as a producer in another language may leave it (README: the wake-up
    is optional)."""
    req = request()
    sealer = sealer_for(settings.secret_key)
    body = payload.encode(req, sealer, allow_plaintext=False)
    job_id = payload.job_id_for(req, sealer, settings.queue_name)
    now_ms = int(time.time() * MS_PER_S)
    await redis.psetex(keys.job_key(job_id), JOB_EXPIRES_MS, envelope.job_bytes(body, now_ms))
    await redis.zadd(settings.queue_name, {job_id: now_ms})


async def test_a_job_running_elsewhere_is_not_claimed_at_every_poll(
    shared_redis: RedisServer, aredis: Redis
) -> None:
    settings = make_settings(shared_redis, poll_delay=POLL_S, metrics_port=0)
    job_id = "running-elsewhere"
    # As another worker leaves it: queued and due, its in-progress lock held.
    await aredis.zadd(settings.queue_name, {job_id: int(time.time() * 1_000)})
    await aredis.set(keys.in_progress_key(job_id), "1", ex=60)
    worker = await in_process_worker(settings, cron_jobs=[])
    await aredis.config_resetstat()
    main = asyncio.ensure_future(worker.main())
    try:
        deadline = time.monotonic() + DEADLINE_S
        while await polls(aredis) < POLLS:
            assert time.monotonic() < deadline and not main.done()
            await asyncio.sleep(POLL_S)
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
        await worker.close()
    stats = await aredis.info("commandstats")
    polled = stats["cmdstat_zrangebyscore"]["calls"]
    # Listed by every poll, claimed at the first and then once per REFUSED_SKIP_S (the polls take
    # about a third of a second): not at each of them.
    assert polled >= POLLS and stats["cmdstat_evalsha"]["calls"] < polled / 3
    assert worker.jobs_complete == 0


async def polls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_zrangebyscore", {}).get("calls", 0))
