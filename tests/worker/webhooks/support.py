"""Helpers of the webhook tests: settings fast enough for a test, events on the stream as the
worker writes them, endpoints, and the webhooks process run in this process."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until
from tests.worker.support import KEY, REPO, make_settings, worker_env
from worker.messages import events
from worker.messages.stream import FIELD_EVENT, FIELD_INBOX_ID, FIELD_TYPE
from worker.settings import Settings
from worker.webhooks import dispatcher
from worker.webhooks.endpoints import Endpoint
from worker.webhooks.metrics import WebhookMetrics
from worker.webhooks.process import WebhookProcess

POLL_S = 0.02
# Small enough that retries and take-overs happen within a test's few seconds.
FAST: dict[str, Any] = dict(
    webhook_timeout=1.0,
    webhook_retry_backoff=0.02,
    webhook_retry_max_delay=0.2,
    webhook_poll=0.05,
    webhook_claim_idle=0.5,
    webhook_metrics_port=0,
    reconnect_delay=0.05,
    reconnect_max_delay=0.2,
)


def webhook_settings(server: RedisServer, **changes: Any) -> Settings:
    return make_settings(server, **{**FAST, **changes})


def failed_event(inbox_id: str = "inbox-1") -> events.FailedEvent:
    return events.failed(events.Failure(inbox_id=inbox_id, reason="TriesUsedUp"))


def health_event(inbox_id: str = "inbox-1") -> events.HealthChangedEvent:
    snapshot = events.HealthSnapshot(
        health=events.Health.HEALTHY, error_code=None, reason=None, consecutive_failures=0
    )
    return events.HealthChangedEvent(
        subject=inbox_id,
        data=events.HealthChange(
            inbox_id=inbox_id, previous=snapshot, current=snapshot, check_event_id=None, warnings=[]
        ),
    )


async def append(redis: Redis, settings: Settings, *batch: events.EventBase) -> list[str]:
    """XADD each event as the worker does; returns their ids."""
    for event in batch:
        await redis.xadd(
            settings.events_stream,
            {
                FIELD_EVENT: event.model_dump_json(),
                FIELD_TYPE: event.type,
                FIELD_INBOX_ID: event.subject or "",
            },
        )
    return [event.id for event in batch]


async def add_endpoint(redis: Redis, settings: Settings, url: str, *types: str) -> tuple[Endpoint, str]:
    endpoint, secret = await dispatcher.add_endpoint(redis, settings, url, types)
    return endpoint, secret.reveal()


@contextlib.asynccontextmanager
async def running(
    settings: Settings, metrics: WebhookMetrics | None = None, consumer: str | None = None
) -> AsyncIterator[WebhookProcess]:
    """`inboxcheck webhooks` in this process's loop, stopped (as by SIGTERM) at the end."""
    process = WebhookProcess(settings, metrics, consumer)
    task = asyncio.ensure_future(process.run())
    try:
        yield process
    finally:
        process.stopping.set()
        await asyncio.wait_for(task, 10)


async def pending(redis: Redis, settings: Settings) -> int:
    """Entries of the stream read by the webhooks group and not yet acknowledged."""
    return int((await redis.xpending(settings.events_stream, settings.webhook_group))["pending"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def unsettled(redis: Redis, settings: Settings) -> int:
    """Entries not yet both read by the group and acknowledged (0: every endpoint is done)."""
    [(last, _)] = await redis.xrevrange(settings.events_stream, count=1)
    groups = await redis.xinfo_groups(settings.events_stream)
    [group] = [g for g in groups if _text(g["name"]) == settings.webhook_group]
    unread = 0 if _text(group["last-delivered-id"]) == _text(last) else 1
    return unread + int(group["pending"])


def batch_of(count: int) -> list[events.EventBase]:
    return [failed_event(f"inbox-{n}-{uuid.uuid4().hex[:6]}") for n in range(count)]


def webhooks_process(
    settings: Settings, log_file: Path, metrics_port: int = 0, **extra_env: str
) -> subprocess.Popen[bytes]:
    """`inboxcheck webhooks` as a real subprocess, with `settings`' webhook timings."""
    env = worker_env(
        settings.redis_url,
        settings.queue_name,
        settings.events_stream,
        INBOXCHECK_SECRET_KEY=KEY,
        INBOXCHECK_WEBHOOK_TIMEOUT=str(settings.webhook_timeout),
        INBOXCHECK_WEBHOOK_POLL=str(settings.webhook_poll),
        INBOXCHECK_WEBHOOK_CLAIM_IDLE=str(settings.webhook_claim_idle),
        INBOXCHECK_WEBHOOK_RETRY_BACKOFF=str(settings.webhook_retry_backoff),
        INBOXCHECK_WEBHOOK_CONCURRENCY=str(settings.webhook_concurrency),
        INBOXCHECK_WEBHOOK_METRICS_PORT=str(metrics_port),
        **extra_env,
    )
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "webhooks"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def wait_async(probe: Callable[[], bool], limit_s: float, what: str) -> None:
    await asyncio.to_thread(wait_until, probe, timeout=limit_s, what=what)


async def wait_async_redis(read: Callable[[], Awaitable[int]], value: int, limit_s: float = 5.0) -> None:
    """Until `read()` (a Redis read, on this loop) gives `value`."""
    deadline = time.monotonic() + limit_s
    while (current := await read()) != value:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{current} instead of {value} after {limit_s} s")
        await asyncio.sleep(POLL_S)
