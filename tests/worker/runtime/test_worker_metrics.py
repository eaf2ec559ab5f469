"""The worker serves its Prometheus metrics on INBOXCHECK_METRICS_HOST:INBOXCHECK_METRICS_PORT
while it runs, counting the checks it finishes."""

from __future__ import annotations

import asyncio
import urllib.request

from redis.asyncio import Redis

from tests.servers.ports import LOOPBACK, free_port
from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until
from tests.worker.support import in_process_worker, make_settings, request
from worker.messages.producer import enqueue_validation

DEADLINE_S = 10.0
# The closed port the request names: what the finished check is counted under.
COUNTED = 'inboxcheck_checks_total{error_code="CONNECTION_FAILED",outcome="invalid"} 1.0'


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=DEADLINE_S) as reply:
        return str(reply.read().decode())


async def test_the_worker_serves_its_metrics_on_the_configured_port(
    shared_redis: RedisServer, aredis: Redis
) -> None:
    port = free_port()
    settings = make_settings(shared_redis, metrics_port=port, metrics_host=LOOPBACK, max_tries=1)
    await enqueue_validation(aredis, request(), settings=settings)
    worker = await in_process_worker(settings, cron_jobs=[])
    main = asyncio.ensure_future(worker.main())
    seen: list[str] = []

    def counted() -> bool:
        assert not main.done(), "the worker stopped"
        seen[:] = [scrape(port)]
        return COUNTED in seen[0]

    try:
        await asyncio.to_thread(
            wait_until,
            counted,
            timeout=DEADLINE_S,
            what="the check counted on /metrics",
            details=lambda: "".join(seen),
        )
    finally:
        await worker.close()
        main.cancel()
    assert "inboxcheck_queue_depth" in seen[0]
