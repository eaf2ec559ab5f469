"""The worker serves its Prometheus metrics on INBOXCHECK_METRICS_HOST:INBOXCHECK_METRICS_PORT
while it runs, counting the checks it finishes; a port of 0 (that setting's, or the webhooks
process's INBOXCHECK_WEBHOOK_METRICS_PORT) serves nothing: the process listens on no port at all,
not on one the system picked."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path

from redis.asyncio import Redis

from tests.servers.ports import LOOPBACK, free_port, listening_ports
from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until
from tests.worker.support import (
    KEY,
    WorkerProcess,
    in_process_worker,
    make_settings,
    request,
    wait_for_events,
    worker_env,
)
from tests.worker.webhooks.support import webhook_settings, webhooks_process
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


async def test_a_metrics_port_of_0_leaves_the_worker_listening_on_nothing(
    shared_redis: RedisServer, aredis: Redis, tmp_path: Path
) -> None:
    settings = make_settings(shared_redis, max_tries=1)
    env = worker_env(
        shared_redis.url,
        settings.queue_name,
        settings.events_stream,
        INBOXCHECK_SECRET_KEY=KEY,
        INBOXCHECK_MAX_TRIES="1",
        INBOXCHECK_METRICS_PORT="0",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        await enqueue_validation(aredis, request(), settings=settings)
        # A job done: the worker's start-up, where the endpoint would be started, is long over.
        await asyncio.to_thread(
            wait_for_events, shared_redis.client(), settings.events_stream, 1, DEADLINE_S, worker.alive
        )
        assert listening_ports(worker.proc.pid) == set()
        assert not worker.log_has("metrics_serving")
        worker.signal(signal.SIGTERM)
        assert worker.wait(DEADLINE_S) == 0
    finally:
        worker.kill()


def test_a_webhook_metrics_port_of_0_leaves_the_webhooks_process_listening_on_nothing(
    shared_redis: RedisServer, tmp_path: Path
) -> None:
    log_file = tmp_path / "webhooks.log"
    process = webhooks_process(webhook_settings(shared_redis), log_file, metrics_port=0)

    def started() -> bool:
        assert process.poll() is None, log_file.read_text()
        # Logged once it runs: the endpoint, had there been one, was started before.
        return "webhooks_started" in log_file.read_text()

    try:
        wait_until(started, timeout=DEADLINE_S, what="the webhooks process", details=log_file.read_text)
        assert listening_ports(process.pid) == set()
        assert "metrics_serving" not in log_file.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(DEADLINE_S) == 0
    finally:
        process.kill()
        process.wait()
