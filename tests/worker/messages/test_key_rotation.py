"""Rotating INBOXCHECK_SECRET_KEY as the README's Operations section says, with a real arq worker
(burst mode) and a real redis-server: workers on `new,old` open both keys' tokens and seal with
the new one; a registered inbox sealed only with a key since removed goes to failing."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.worker.support import burst, make_settings, request, stream_events
from worker.messages import keys
from worker.messages.events import COMPLETED, REJECTED
from worker.messages.producer import enqueue_validation
from worker.messages.sealing import USE_JOB, Sealer, destination_digest, generate_key
from worker.rechecks.registry import Registry

OLD, NEW = generate_key(), generate_key()
LATER_S = 120.0  # past any registration's first check


def verdicts(server: RedisServer, stream: str) -> dict[str, dict[str, Any]]:
    return {
        e["subject"]: e
        for e in stream_events(server.client(), stream)
        if e["type"].startswith("inbox.validation.")
    }


async def test_workers_on_new_and_old_open_both_and_reseal_with_new(
    shared_redis: RedisServer, redis: Redis, aredis: Redis
) -> None:
    # `redis` flushes the server first: the registry's keys are not per queue.
    rotating = make_settings(shared_redis, max_tries=1, secret_key=f"{NEW},{OLD}")
    # A producer not yet given the new key, and one that has it.
    await enqueue_validation(aredis, request("queued-old"), settings=rotating, sealer=Sealer(OLD))
    await enqueue_validation(aredis, request("queued-new"), settings=rotating, sealer=Sealer(NEW))
    old_registry = Registry(aredis, queue_name=rotating.queue_name, sealer=Sealer(OLD))
    await old_registry.register(request("registered-old"), 60.0, spread_s=0)
    scheduler = Registry(aredis, queue_name=rotating.queue_name, sealer=Sealer(f"{NEW},{OLD}"))
    [recheck] = await scheduler.enqueue_due(claim_ttl_s=60, batch=10, now=time.time() + LATER_S)
    # The recheck's job token is sealed afresh with the first key: it opens with NEW alone.
    queued = (await aredis.get(keys.job_key(recheck))).decode()
    body = json.loads(queued)["a"][0]
    Sealer(NEW).open(
        body["credentials"]["sealed"], "registered-old", destination_digest(body["request"]), use=USE_JOB
    )
    await burst(rotating)
    events = verdicts(shared_redis, rotating.events_stream)
    assert {subject: e["type"] for subject, e in events.items()} == {
        "queued-old": COMPLETED,  # checked (the port refuses), not rejected
        "queued-new": COMPLETED,
        "registered-old": COMPLETED,
    }


async def test_an_inbox_sealed_only_with_a_removed_key_goes_to_failing(
    shared_redis: RedisServer, redis: Redis, aredis: Redis
) -> None:
    # `redis` flushes the server first: the registry's keys are not per queue.
    rotated = make_settings(shared_redis, max_tries=1, secret_key=NEW)  # `old` dropped
    await Registry(aredis, queue_name=rotated.queue_name, sealer=Sealer(OLD)).register(
        request("left-behind"), 60.0, spread_s=0
    )
    registry = Registry(aredis, queue_name=rotated.queue_name, sealer=Sealer(NEW))
    assert await registry.enqueue_due(claim_ttl_s=60, batch=10, now=time.time() + LATER_S)
    await burst(rotated)
    event = verdicts(shared_redis, rotated.events_stream)["left-behind"]
    assert (event["type"], event["data"]["reason"]) == (REJECTED, "SEALED_CREDENTIALS")
    row = await registry.get("left-behind")
    assert row is not None and (row.health, row.error_code) == ("failing", "INVALID_REQUEST")
