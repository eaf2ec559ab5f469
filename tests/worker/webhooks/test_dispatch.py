"""The webhooks process against real receivers on loopback and the shared redis-server."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.servers.webhook_receiver import Answer, WebhookReceiver
from tests.worker.webhooks.support import (
    add_endpoint,
    append,
    batch_of,
    failed_event,
    health_event,
    pending,
    running,
    unsettled,
    wait_async,
    wait_async_redis,
    webhook_settings,
)
from worker.messages import events, keys
from worker.webhooks.dispatcher import ledger_for
from worker.webhooks.endpoints import registry_for
from worker.webhooks.metrics import WebhookMetrics


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


async def test_a_slow_endpoint_never_holds_up_another_and_the_entry_waits_for_both(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis, webhook_timeout=5.0, webhook_concurrency=2)
    slow, fast = receiver(), receiver()
    release = threading.Event()
    slow.default = Answer(200, release=release)
    _, slow.secret = await add_endpoint(redis, settings, slow.url)
    _, fast.secret = await add_endpoint(redis, settings, fast.url)
    async with running(settings):
        ids = await append(redis, settings, *batch_of(20))
        await wait_async(lambda: fast.verified_ids() == set(ids), 5, "the fast endpoint has every event")
        # The slow one holds its two slots; the rest of its events wait in Redis, not in memory.
        assert len(slow.received) == settings.webhook_concurrency
        assert await pending(redis, settings) == len(ids)
        release.set()
        await wait_async(lambda: slow.verified_ids() == set(ids), 5, "the slow endpoint has every event")
        await wait_async_redis(lambda: unsettled(redis, settings), 0)


async def test_an_endpoint_gets_only_the_types_it_subscribed_to(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis)
    hook = receiver()
    _, hook.secret = await add_endpoint(redis, settings, hook.url, events.HEALTH_CHANGED)
    async with running(settings):
        skipped = await append(redis, settings, *batch_of(3))
        [wanted] = await append(redis, settings, health_event())
        await wait_async(lambda: wanted in hook.verified_ids(), 5, "the health event")
        await wait_async_redis(lambda: unsettled(redis, settings), 0)
    assert not set(skipped) & {r.event_id for r in hook.received}


async def test_5xx_429_and_timeouts_are_retried_with_the_same_id_until_delivered(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis, webhook_timeout=0.3)
    hook = receiver()
    endpoint, hook.secret = await add_endpoint(redis, settings, hook.url)
    hook.plan(Answer(500), Answer(429), hook.hang(), Answer(503))
    metrics = WebhookMetrics()
    with structlog.testing.capture_logs() as logs:
        async with running(settings, metrics):
            [event_id] = await append(redis, settings, failed_event())
            await wait_async(lambda: event_id in hook.verified_ids(), 5, "delivered after four failures")
    assert [e["event"] for e in logs].count("webhook_retry") == 4
    assert hook.secret.removeprefix("whsec_") not in repr(logs)
    attempts = hook.requests_for(event_id)
    assert len(attempts) == 5 and all(r.verified for r in attempts)
    # Signed afresh per attempt, the timestamps never go backwards.
    stamps = [int(r.headers["webhook-timestamp"]) for r in attempts]
    assert stamps == sorted(stamps)
    assert metrics.sample("inboxcheck_webhook_deliveries_total", endpoint=endpoint.id, outcome="retried") == 4
    assert (
        metrics.sample("inboxcheck_webhook_deliveries_total", endpoint=endpoint.id, outcome="delivered") == 1
    )
    assert metrics.sample("inboxcheck_webhook_delivery_latency_seconds_count", endpoint=endpoint.id) == 1


async def test_retry_after_is_honoured(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis, webhook_retry_max_delay=5.0)
    hook = receiver()
    _, hook.secret = await add_endpoint(redis, settings, hook.url)
    hook.plan(Answer(429, headers={"retry-after": "1"}))
    async with running(settings):
        [event_id] = await append(redis, settings, failed_event())
        await wait_async(lambda: event_id in hook.verified_ids(), 5, "delivered after the wait asked for")
    first, second = hook.requests_for(event_id)
    assert second.at - first.at >= 1.0  # the backoff alone would have been 20 ms
    # A second or more apart, so a retry signed with its first attempt's time would show.
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])


async def test_other_4xx_are_not_retried_and_go_to_the_dead_letters_which_replay_sends_again(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis)
    hook = receiver()
    endpoint, hook.secret = await add_endpoint(redis, settings, hook.url)
    hook.plan(Answer(404))
    async with running(settings) as process:
        [event_id] = await append(redis, settings, failed_event())
        await wait_async_redis(lambda: unsettled(redis, settings), 0)
        ledger = ledger_for(redis, settings)
        [(raw, letter)] = await ledger.dead_letters()
        assert (letter.endpoint_id, letter.event_id, letter.status, letter.attempts) == (
            endpoint.id,
            event_id,
            404,
            1,
        )
        assert len(hook.requests_for(event_id)) == 1
        assert (
            process.metrics.sample(
                "inboxcheck_webhook_deliveries_total", endpoint=endpoint.id, outcome="failed"
            )
            == 1
        )
        await ledger.replay(raw, letter)
        await wait_async(lambda: event_id in hook.verified_ids(), 5, "the replayed event")
    assert await ledger.dead_letters() == []


async def test_a_delivery_failing_past_the_give_up_time_is_a_dead_letter(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis, webhook_give_up_after=0.3)
    hook = receiver()
    hook.default = Answer(500)
    await add_endpoint(redis, settings, hook.url)
    async with running(settings):
        await append(redis, settings, failed_event())
        await wait_async_redis(lambda: unsettled(redis, settings), 0)
    [(_, letter)] = await ledger_for(redis, settings).dead_letters()
    assert letter.reason.startswith("gave up after") and letter.attempts == len(hook.received) > 1


async def test_410_disables_the_endpoint_and_its_queue_goes_to_the_dead_letters(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis, webhook_concurrency=1)
    hook, other = receiver(), receiver()
    gone, hook.secret = await add_endpoint(redis, settings, hook.url)
    _, other.secret = await add_endpoint(redis, settings, other.url)
    hook.default = Answer(410)
    async with running(settings):
        ids = await append(redis, settings, *batch_of(5))
        await wait_async_redis(lambda: unsettled(redis, settings), 0)
        later = await append(redis, settings, *batch_of(2))
        await wait_async(lambda: other.verified_ids() == set(ids + later), 5, "the other endpoint has all")
    registry = registry_for(redis, settings.secret_key)
    assert (await registry.get(gone.id)).disabled.startswith("410 Gone")  # type: ignore[union-attr]
    assert len(hook.received) == 1
    ledger = ledger_for(redis, settings)
    dead = await ledger.dead_letters()
    assert sorted(letter.event_id for _, letter in dead) == sorted(ids)
    # Back (`webhook enable`), its dead letters replayed (`webhook replay`): it gets them all.
    hook.default = Answer(200)
    assert await registry.enable(gone.id)
    for raw, letter in dead:
        await ledger.replay(raw, letter)
    async with running(settings):
        await wait_async(lambda: hook.verified_ids() == set(ids), 5, "the replayed events")


async def test_an_endpoint_whose_secret_does_not_open_gets_nothing_its_deliveries_wait(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis)
    hook, elsewhere = receiver(), receiver()
    endpoint, hook.secret = await add_endpoint(redis, settings, hook.url)
    # Someone with write access to Redis points the endpoint elsewhere: its seal no longer opens.
    await redis.hset(keys.webhook_endpoint_key(endpoint.id), "url", elsewhere.url)
    ledger = ledger_for(redis, settings)
    with structlog.testing.capture_logs() as logs:
        async with running(settings):
            [event_id] = await append(redis, settings, failed_event())
            await wait_async_redis(lambda: ledger.queued(endpoint.id), 1)
    assert elsewhere.received == [] and hook.received == []
    assert any(e["event"] == "webhook_secret_unusable" for e in logs)
    # Put back, a process with the key delivers what waited.
    await redis.hset(keys.webhook_endpoint_key(endpoint.id), "url", hook.url)
    async with running(settings):
        await wait_async(lambda: event_id in hook.verified_ids(), 5, "the event that waited")


async def test_past_its_queue_bound_an_endpoint_gets_dead_letters_and_the_entry_is_acknowledged(
    redis: Redis, shared_redis: RedisServer
) -> None:
    settings = webhook_settings(shared_redis, webhook_queue_max=1)
    endpoint, _ = await add_endpoint(redis, settings, "https://hooks.example/x")
    ledger = ledger_for(redis, settings)
    ids = await append(redis, settings, *batch_of(2))
    [(_, entries)] = await redis.xreadgroup(settings.webhook_group, "c", {settings.events_stream: ">"})
    for (entry_id, fields), event_id in zip(entries, ids, strict=True):
        await ledger.fan_out(entry_id, entry_id, fields["event"], fields["type"], event_id, [endpoint.id])
    assert await ledger.queued(endpoint.id) == 1
    [(_, letter)] = await ledger.dead_letters()
    assert (letter.event_id, letter.reason, letter.attempts) == (ids[1], "queue full", 0)
    assert letter.event == entries[1][1]["event"]
    assert await pending(redis, settings) == 1  # the second entry needed nothing more


async def test_several_processes_share_the_work_and_deliver_each_event_once_per_endpoint(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis)
    hooks = [receiver(), receiver()]
    endpoint_ids = []
    for hook in hooks:
        endpoint, hook.secret = await add_endpoint(redis, settings, hook.url)
        endpoint_ids.append(endpoint.id)
    metrics = [WebhookMetrics(), WebhookMetrics()]
    async with running(settings, metrics[0], "host-a"), running(settings, metrics[1], "host-b"):
        ids = await append(redis, settings, *batch_of(40))
        await wait_async(lambda: all(h.verified_ids() == set(ids) for h in hooks), 10, "every event, both")
        await wait_async_redis(lambda: unsettled(redis, settings), 0)
    for hook in hooks:
        assert sorted(r.event_id for r in hook.received) == sorted(ids)  # no event sent twice
    delivered = [
        sum(
            m.sample("inboxcheck_webhook_deliveries_total", endpoint=e, outcome="delivered") or 0
            for e in endpoint_ids
        )
        for m in metrics
    ]
    assert sum(delivered) == 2 * len(ids), delivered
