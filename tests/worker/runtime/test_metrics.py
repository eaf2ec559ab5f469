"""Metrics: what a finished job counts, the gauges read from Redis, the HTTP endpoint."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from redis.asyncio import Redis

from jobs.result import StepTiming
from tests.servers.ports import LOOPBACK
from tests.worker.event_samples import completed, failed, protocol_result
from worker.messages import keys
from worker.rechecks.registry import Registry
from worker.runtime.metrics import Metrics, refresh_forever, serve

QUEUE = "test:queue"
DEADLINE_S = 5.0
POLL_S = 0.01
EVENT = completed(
    "invalid",
    error_code="AUTH_FAILED",
    reason="INVALID_CREDENTIALS",
    smtp=protocol_result(
        "smtp",
        steps=[StepTiming(step="connect", ms=20.0, ok=True), StepTiming(step="auth", ms=100.0, ok=False)],
        duration_ms=120.0,
    ),
    imap=protocol_result("imap", steps=[StepTiming(step="login", ms=30.0, ok=True)], duration_ms=30.0),
)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=DEADLINE_S) as reply:
        return reply.read().decode()


async def test_endpoint_serves_checks_durations_and_gauges(redis: Redis) -> None:
    metrics = Metrics()
    metrics.observe_event(EVENT)
    metrics.in_flight.inc()
    server = serve(metrics, LOOPBACK, 0)
    try:
        await redis.zadd(QUEUE, {"a": 1, "b": 2})
        await redis.hset(keys.INBOXES_COUNTS_KEY, mapping={"healthy": 1, "failing": 2})
        health_counts = Registry(redis, queue_name=QUEUE, sealer=None).health_counts
        refresher = asyncio.create_task(
            refresh_forever(metrics, lambda: redis.zcard(QUEUE), health_counts, every_s=POLL_S)
        )
        deadline = time.monotonic() + DEADLINE_S
        # The gauges change inside a background task: polled, with a deadline.
        while (  # noqa: ASYNC110
            metrics.registry.get_sample_value("inboxcheck_queue_depth") != 2
            or metrics.registry.get_sample_value("inboxcheck_registered_inboxes", {"health": "failing"}) != 2
        ) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        refresher.cancel()
        text = await asyncio.to_thread(scrape, server.server_port)
    finally:
        server.shutdown()
    assert 'inboxcheck_checks_total{error_code="AUTH_FAILED",outcome="invalid"} 1.0' in text
    assert 'inboxcheck_check_duration_seconds_count{protocol="smtp",step="auth"} 1.0' in text
    assert 'inboxcheck_check_duration_seconds_sum{protocol="smtp",step="total"} 0.12' in text
    assert 'inboxcheck_events_written_total{type="inbox.validation.completed"} 1.0' in text
    assert "inboxcheck_jobs_in_flight 1.0" in text
    assert "inboxcheck_queue_depth 2.0" in text
    assert 'inboxcheck_registered_inboxes{health="failing"} 2.0' in text


def test_each_worker_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.event_written("inbox.health.changed")
    assert (
        second.registry.get_sample_value("inboxcheck_events_written_total", {"type": "inbox.health.changed"})
        is None
    )


def test_rejected_and_failed_events_count_without_timings() -> None:
    metrics = Metrics()
    metrics.observe_event(failed())
    assert (
        metrics.registry.get_sample_value(
            "inboxcheck_checks_total", {"outcome": "failed", "error_code": "INTERNAL_ERROR"}
        )
        == 1
    )
    assert (
        metrics.registry.get_sample_value(
            "inboxcheck_events_written_total", {"type": "inbox.validation.failed"}
        )
        == 1
    )
    assert (
        metrics.registry.get_sample_value(
            "inboxcheck_check_duration_seconds_count", {"protocol": "smtp", "step": "total"}
        )
        is None
    )


def test_a_refused_oauth2_app_is_counted_by_its_client_id() -> None:
    metrics = Metrics()
    refused = completed("invalid", error_code="AUTH_FAILED", reason="OAUTH_APP_MISCONFIGURED")
    for _ in range(2):
        metrics.observe_event(
            refused.model_copy(update={"data": refused.data.model_copy(update={"oauth2_client_id": "app-1"})})
        )
    metrics.observe_event(EVENT)
    assert (
        metrics.registry.get_sample_value("inboxcheck_oauth2_app_failures_total", {"client_id": "app-1"}) == 2
    )
