"""At least once through crashes: the webhooks process killed mid-delivery, Redis restarted with
a retry pending, an entry whose reader died before queueing it. No event is lost."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import structlog
from redis.asyncio import Redis

from tests.servers.ports import free_port
from tests.servers.redis import RedisServer
from tests.servers.webhook_receiver import Answer, WebhookReceiver
from tests.worker.support import scan_for
from tests.worker.webhooks.support import (
    add_endpoint,
    append,
    batch_of,
    failed_event,
    running,
    unsettled,
    wait_async,
    wait_async_redis,
    webhook_settings,
    webhooks_process,
)


def read_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_a_killed_process_loses_no_event_its_successor_sends_them(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver], tmp_path: Path
) -> None:
    settings = webhook_settings(shared_redis)
    hook = receiver()
    hook.default = hook.hang()  # the first process's POSTs never get an answer
    endpoint, hook.secret = await add_endpoint(redis, settings, hook.url)
    ids = await append(redis, settings, *batch_of(12))
    log_file = tmp_path / "webhooks.log"
    first = webhooks_process(settings, log_file)
    try:
        await wait_async(lambda: len(hook.received) >= settings.webhook_concurrency, 10, "POSTs in flight")
        first.send_signal(signal.SIGKILL)
        first.wait(5)
    finally:
        first.kill()
    hook.default = Answer(200)
    metrics_port = free_port()
    second = webhooks_process(settings, log_file, metrics_port)
    try:
        await wait_async(lambda: hook.verified_ids() == set(ids), 10, "every event, after the restart")
        await wait_async_redis(lambda: unsettled(redis, settings), 0)
        scraped = await asyncio.to_thread(read_metrics, metrics_port)
        delivered = f'inboxcheck_webhook_deliveries_total{{endpoint="{endpoint.id}",outcome="delivered"}}'
        assert f"{delivered} {len(ids)}.0" in scraped
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
    finally:
        second.kill()
    log_text = log_file.read_text()
    assert "webhook_delivered" in log_text and hook.secret not in log_text
    assert (
        scan_for(shared_redis.client(), [hook.secret.encode(), hook.secret.removeprefix("whsec_").encode()])
        == []
    )


async def test_an_entry_whose_reader_died_before_queueing_it_is_taken_over(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis, webhook_claim_idle=0.2)
    hook = receiver()
    _, hook.secret = await add_endpoint(redis, settings, hook.url)
    [event_id] = await append(redis, settings, failed_event())
    # A process read it and died at once: pending for a consumer that will never come back.
    await redis.xreadgroup(settings.webhook_group, "dead-host-1", {settings.events_stream: ">"})
    with structlog.testing.capture_logs() as logs:
        async with running(settings):
            await wait_async(lambda: event_id in hook.verified_ids(), 5, "the taken-over event")
            await wait_async_redis(lambda: unsettled(redis, settings), 0)
    assert any(entry["event"] == "webhook_entry_taken_over" for entry in logs)


async def test_a_retry_pending_across_a_redis_restart_is_still_sent(
    tmp_path: Path, receiver: Callable[..., WebhookReceiver]
) -> None:
    server = RedisServer(tmp_path / "redis", persistent=True).start()
    try:
        settings = webhook_settings(server, webhook_retry_backoff=1.0, webhook_retry_max_delay=2.0)
        redis = Redis.from_url(server.url)
        hook = receiver()
        _, hook.secret = await add_endpoint(redis, settings, hook.url)
        hook.plan(Answer(500))
        with structlog.testing.capture_logs() as logs:
            async with running(settings):
                [event_id] = await append(redis, settings, failed_event())
                await wait_async(lambda: len(hook.received) == 1, 5, "the first attempt (500)")
                await redis.aclose()
                server.stop()  # the retry is due in 0.5-1 s: it is in Redis only
                server.start()
                restarted_at = time.monotonic()
                redis = Redis.from_url(server.url)
                later = await append(redis, settings, *batch_of(3))
                await wait_async(
                    lambda: hook.verified_ids() == {event_id, *later}, 10, "all, after the restart"
                )
                await wait_async_redis(lambda: unsettled(redis, settings), 0)
        assert any(entry["event"] == "redis_connection_lost" for entry in logs)
        assert [r.answered for r in hook.requests_for(event_id)] == [500, 200]
        assert hook.requests_for(event_id)[1].at > restarted_at
        await redis.aclose()
    finally:
        server.stop()
