"""What an endpoint is sent: every type when it named none, and only what was appended after
the first endpoint was added, never the stream's history; what is kept of what it refused; and
log lines that name it by id, never by its URL."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.servers.webhook_receiver import Answer, WebhookReceiver
from tests.worker.webhooks.support import (
    add_endpoint,
    append,
    batch_of,
    health_event,
    running,
    unsettled,
    wait_async,
    wait_async_redis,
    webhook_settings,
)
from worker.webhooks.dispatcher import ledger_for

DEAD_LETTERS_MAX = 3
QUERY_TOKEN = "query-token-0f3c"


async def test_history_is_not_sent_and_an_endpoint_without_types_gets_every_type(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis)
    history = await append(redis, settings, *batch_of(3), health_event("inbox-before"))
    hook = receiver()
    _, hook.secret = await add_endpoint(redis, settings, hook.url)  # no types: every type
    # Appended before `inboxcheck webhooks` first runs, but after the endpoint was added: owed.
    owed = await append(redis, settings, *batch_of(2), health_event("inbox-after"))
    async with running(settings):
        owed += await append(redis, settings, *batch_of(1), health_event("inbox-later"))
        await wait_async(lambda: hook.verified_ids() >= set(owed), 5, "every event since the endpoint")
        await wait_async_redis(lambda: unsettled(redis, settings), 0)
    assert hook.verified_ids() == set(owed)
    assert not set(history) & {request.event_id for request in hook.received}


async def test_dead_letters_are_kept_newest_first_up_to_their_bound(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    # One POST at a time, so the order the receiver saw is the order they became dead letters.
    settings = webhook_settings(
        shared_redis, webhook_dead_letters_max=DEAD_LETTERS_MAX, webhook_concurrency=1
    )
    hook = receiver()
    hook.default = Answer(404)  # a dead letter at once
    _, hook.secret = await add_endpoint(redis, settings, hook.url)
    async with running(settings):
        ids = await append(redis, settings, *batch_of(DEAD_LETTERS_MAX + 2))
        await wait_async(lambda: len(hook.received) == len(ids), 5, "every event refused")
        await wait_async_redis(lambda: unsettled(redis, settings), 0)
    refused = [request.event_id for request in hook.received]
    assert sorted(refused) == sorted(ids)
    letters = await ledger_for(redis, settings).dead_letters()
    assert [letter.event_id for _, letter in letters] == refused[::-1][:DEAD_LETTERS_MAX]
    assert all(letter.event for _, letter in letters)  # each keeps its event


async def test_log_lines_name_the_endpoint_by_id_never_by_its_url(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis, webhook_concurrency=1)
    hook = receiver()
    hook.plan(Answer(500), Answer(200), Answer(404))  # retried, delivered, a dead letter
    url = f"{hook.url}?token={QUERY_TOKEN}"  # a query may carry a token
    endpoint, hook.secret = await add_endpoint(redis, settings, url)
    with structlog.testing.capture_logs() as logs:
        async with running(settings):
            ids = await append(redis, settings, *batch_of(2))
            await wait_async(lambda: len(hook.received) == len(ids) + 1, 5, "a retry and two answers")
            await wait_async_redis(lambda: unsettled(redis, settings), 0)
    about_it = [line for line in logs if line.get("endpoint") == endpoint.id]
    assert {line["event"] for line in about_it} >= {"webhook_retry", "webhook_delivered", "webhook_failed"}, (
        logs
    )
    assert QUERY_TOKEN not in repr(logs) and hook.url not in repr(logs)
