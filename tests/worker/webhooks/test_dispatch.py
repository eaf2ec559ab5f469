"""The webhooks process against real receivers on loopback and the shared redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until
from tests.servers.webhook_receiver import WebhookReceiver
from tests.worker.webhooks.support import add_endpoint, append, batch_of, pending, running, webhook_settings


async def wait_async(probe: Callable[[], bool], timeout: float, what: str) -> None:
    await asyncio.to_thread(wait_until, probe, timeout=timeout, what=what)


async def test_every_event_of_a_batch_reaches_a_healthy_receiver_signed(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis)
    hook = receiver()
    _, hook.secret = await add_endpoint(redis, settings, hook.url)
    async with running(settings):
        ids = await append(redis, settings, *batch_of(50))
        await wait_async(lambda: hook.verified_ids() >= set(ids), 10, "every event delivered")
    assert hook.verified_ids() == set(ids)
    assert await pending(redis, settings) == 0
