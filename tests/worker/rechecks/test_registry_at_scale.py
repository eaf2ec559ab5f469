"""The registry's costs follow what is asked, not what is stored: health counters kept exact as
health changes, a tick that drains whatever is due in bounded claims, `list` a page at a time.
Against a real redis-server."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.worker import event_samples as samples
from tests.worker.rechecks.test_registry import EVERY_S, NOW, POLICY, STREAM, registry, request
from worker.messages import keys
from worker.messages.sealing import Sealer, generate_key
from worker.rechecks.inbox_health import Health

CLAIM_TTL_S = 600.0
# More than one claim's worth, and past the size at which Redis stops keeping the due set as
# one compact list (128), so ZSCAN pages through a real hash table.
BACKLOG = 300
BATCH = 40
PAGE = 50


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(generate_key())


async def counted_from_states(redis: Redis) -> dict[str, int]:
    """The ground truth the counters must equal: every stored state read one by one."""
    found = Counter({health.value: 0 for health in Health})
    async for key in redis.scan_iter(match=keys.INBOX_KEY_PREFIX + "*"):
        found[json.loads(await redis.hget(key, "state"))["health"]] += 1
    return dict(found)


async def register_many(redis: Redis, sealer: Sealer, count: int) -> Any:
    reg = registry(redis, sealer)
    for n in range(count):
        await reg.register(request(n), EVERY_S, spread_s=0, now=NOW)
    return reg


async def test_health_counts_stay_exact_through_register_checks_and_unregister(
    redis: Redis, sealer: Sealer
) -> None:
    reg = await register_many(redis, sealer, 6)
    await reg.register(request(0), EVERY_S, spread_s=0, now=NOW)  # again: still one inbox
    assert (
        await reg.health_counts()
        == await counted_from_states(redis)
        == {
            "pending": 6,
            "healthy": 0,
            "degraded": 0,
            "failing": 0,
        }
    )

    async def check(n: int, event_id: str, status: str = "valid", **data: Any) -> None:
        event = samples.completed(status, inbox_id=f"inbox-{n}", event_id=event_id, **data)
        await reg.record_check(f"inbox-{n}", event, POLICY, stream_name=STREAM, maxlen=1_000, now=NOW)

    for n in range(4):
        await check(n, f"ok-{n}")
    await check(0, "ok-0")  # the same event replayed: applied once, counted once
    await check(1, "ok-again")  # healthy stays healthy
    await check(2, "wrong", "invalid", error_code="AUTH_FAILED", reason="INVALID_CREDENTIALS")
    await check(3, "slow", "invalid", error_code="TIMEOUT", reason="CONNECT_TIMEOUT", retryable=True)
    assert (
        await reg.health_counts()
        == await counted_from_states(redis)
        == {
            "pending": 2,
            "healthy": 2,
            "degraded": 1,
            "failing": 1,
        }
    )
    for n in (2, 4, 5):
        assert await reg.unregister(f"inbox-{n}")
    assert not await reg.unregister("inbox-2")  # gone already: nothing counted twice
    assert (
        await reg.health_counts()
        == await counted_from_states(redis)
        == {
            "pending": 0,
            "healthy": 2,
            "degraded": 1,
            "failing": 0,
        }
    )


async def test_one_tick_drains_a_backlog_larger_than_one_claim(redis: Redis, sealer: Sealer) -> None:
    reg = await register_many(redis, sealer, BACKLOG)
    job_ids = await reg.enqueue_due(claim_ttl_s=CLAIM_TTL_S, batch=BATCH, now=NOW + 1)
    assert len(set(job_ids)) == BACKLOG and await redis.zcard(reg.queue_name) == BACKLOG
    assert await redis.zcount(keys.INBOXES_DUE_KEY, "-inf", (NOW + 1) * 1_000) == 0


async def test_a_spent_budget_leaves_the_rest_for_the_next_tick(redis: Redis, sealer: Sealer) -> None:
    reg = await register_many(redis, sealer, 3 * BATCH)
    first = await reg.enqueue_due(claim_ttl_s=CLAIM_TTL_S, batch=BATCH, budget_s=0, now=NOW + 1)
    assert len(first) == BATCH  # one claim, then the budget is spent
    rest = await reg.enqueue_due(claim_ttl_s=CLAIM_TTL_S, batch=BATCH, now=NOW + 2)
    assert len(rest) == 2 * BATCH and not set(first) & set(rest)


async def test_list_pages_cover_every_inbox_once(redis: Redis, sealer: Sealer) -> None:
    reg = await register_many(redis, sealer, BACKLOG)
    seen: list[str] = []
    pages, cursor = 0, 0
    while True:
        rows, cursor = await reg.list_page(cursor, count=PAGE)
        seen += [row.inbox_id for row in rows]
        pages += 1
        if not cursor:
            break
    assert pages > BACKLOG // (2 * PAGE)  # really paged, not one read of everything
    assert sorted(seen) == sorted(f"inbox-{n}" for n in range(BACKLOG))


async def test_bulk_registration_stores_what_register_stores(redis: Redis, sealer: Sealer) -> None:
    reg = registry(redis, sealer)
    assert await reg.register_many([request(n) for n in range(BATCH)], EVERY_S, spread_s=0, now=NOW) == BATCH
    # again, overlapping: only the new ones are new, and counted once
    again = [request(n) for n in range(BATCH // 2, BATCH + BATCH // 2)]
    assert await reg.register_many(again, EVERY_S, spread_s=0, now=NOW) == BATCH // 2
    assert await reg.health_counts() == await counted_from_states(redis)
    assert (await reg.health_counts())["pending"] == BATCH + BATCH // 2
    await reg.register(request(BATCH * 2), EVERY_S, spread_s=0, now=NOW)
    bulk, single = keys.inbox_key("inbox-0"), keys.inbox_key(f"inbox-{BATCH * 2}")
    assert sorted(await redis.hkeys(bulk)) == sorted(await redis.hkeys(single))
    [job_id, *_] = await reg.enqueue_due(claim_ttl_s=CLAIM_TTL_S, batch=BATCH, now=NOW + 1)
    assert await redis.exists(keys.job_key(job_id))
