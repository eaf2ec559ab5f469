"""An idle worker waits for work on the queue's wake list, not in a sleep: a job enqueued through
the producer starts at once, however long the poll delay. Real redis-server, real worker."""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.worker.support import in_process_worker, make_settings, request
from worker.messages import keys
from worker.messages.producer import enqueue_validation

# Far longer than the deadline below: a job that waited for the next poll would miss it.
LONG_POLL_DELAY_S = 60.0
DEADLINE_S = 10.0
POLL_S = 0.01


async def blocked_on(redis: Redis, key: str) -> bool:
    """Whether some client is blocked in BLPOP right now (Redis's own view of its clients)."""
    return any(c.get("cmd") == "blpop" and "b" in c.get("flags", "") for c in await redis.client_list())


async def test_a_new_job_wakes_an_idle_worker_within_its_poll_delay(
    shared_redis: RedisServer, aredis: Redis
) -> None:
    settings = make_settings(shared_redis, poll_delay=LONG_POLL_DELAY_S, max_tries=1, metrics_port=0)
    worker = await in_process_worker(settings, cron_jobs=[])
    main = asyncio.ensure_future(worker.main())
    try:
        deadline = time.monotonic() + DEADLINE_S
        # Idle: it has polled the empty queue and now waits, blocked, for a wake-up.
        while not await blocked_on(aredis, keys.wake_key(settings.queue_name)):
            assert time.monotonic() < deadline and not main.done()
            await asyncio.sleep(POLL_S)
        await enqueue_validation(aredis, request(), settings=settings)
        while not await aredis.xlen(settings.events_stream):
            assert time.monotonic() < deadline, "the job waited for the next poll"
            await asyncio.sleep(POLL_S)
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
        await worker.close()
    assert worker.jobs_complete == 1
