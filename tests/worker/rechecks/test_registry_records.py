"""What the registry stores, lists, enqueues and logs, read back from a real redis-server."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import pytest
import redis as redis_py
from redis.asyncio import Redis
from structlog.testing import capture_logs

from tests.servers.redis import RedisServer
from tests.worker import event_samples as samples
from tests.worker.rechecks.test_registry import (
    CLAIM_TTL_S,
    EVERY_S,
    NOW,
    POLICY,
    STREAM,
    completed,
    registry,
    request,
)
from tests.worker.support import make_settings
from worker.messages import envelope, events, keys, payload
from worker.messages.sealing import Sealer, generate_key
from worker.rechecks.inbox_health import SECONDS_PER_DAY
from worker.rechecks.registry import HEALTH_EVENT_NAMESPACE, Registry, for_settings

WRONG = {"error_code": "AUTH_FAILED", "reason": "INVALID_CREDENTIALS"}
# More inboxes than Redis keeps in a small (listpack) sorted set, so ZSCAN's COUNT matters.
MANY = 300


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(generate_key())


def compact(raw: str) -> str:
    return json.dumps(json.loads(raw), separators=(",", ":"))


async def record(reg: Registry, event: events.TerminalEvent, at: float, maxlen: int = 1_000) -> Any:
    return await reg.record_check(event.subject, event, POLICY, stream_name=STREAM, maxlen=maxlen, now=at)


async def test_register_stores_compact_fields_and_logs_when_the_first_check_comes(
    redis: Redis, sealer: Sealer
) -> None:
    reg = registry(redis, sealer)
    random.seed(5)
    wait = random.uniform(0, 30.0)
    random.seed(5)
    with capture_logs() as logs:
        row = await reg.register(request(account_age_days=5), EVERY_S, spread_s=30.0, now=NOW)
    assert logs == [
        {
            "event": "inbox_registered",
            "log_level": "info",
            "inbox_id": "inbox-0",
            "every_s": EVERY_S,
            "first_check_in_s": round(wait, 1),
        }
    ]
    stored = await redis.hgetall(keys.inbox_key("inbox-0"))
    # a registry of millions keeps these per inbox: no default state, no whitespace
    assert stored["state"] == '{"health":"pending"}'
    assert stored["payload"] == compact(stored["payload"])
    assert "account_age_days" not in json.loads(stored["payload"])["request"]
    assert (stored["registered_at"], stored["age_days"], stored["age_given_at"]) == (str(NOW), "5", str(NOW))
    assert (row.email, row.inbox_type, row.every_s) == ("user0@example.test", "CUSTOM_SMTP", EVERY_S)
    assert row.as_dict()["email"] == "user0@example.test"
    assert row.account_age_days == 5 + int((time.time() - NOW) // SECONDS_PER_DAY)
    # registered again without an age: the old one is forgotten, not kept growing
    again = await reg.register(request(), EVERY_S, spread_s=0, now=NOW)
    assert again.account_age_days is None
    assert await reg.get("inbox-unknown") is None


async def test_a_row_shows_the_last_check_its_failures_and_the_age_since_the_first_success(
    redis: Redis, sealer: Sealer
) -> None:
    reg = registry(redis, sealer)
    now = time.time()
    await reg.register(request(), EVERY_S, spread_s=0, now=now - 3 * SECONDS_PER_DAY)
    await record(reg, completed("inbox-0", "e1"), now - 2 * SECONDS_PER_DAY)
    with capture_logs() as logs:
        await record(reg, completed("inbox-0", "e2", "invalid", **WRONG), now)
    assert logs == [
        {
            "event": "inbox_health_changed",
            "log_level": "info",
            "inbox_id": "inbox-0",
            "previous": "healthy",
            "health": "failing",
            "error_code": "AUTH_FAILED",
        }
    ]
    row = await reg.get("inbox-0")
    assert row is not None
    assert (row.health, row.error_code, row.reason, row.consecutive_failures) == (
        "failing",
        "AUTH_FAILED",
        "INVALID_CREDENTIALS",
        1,
    )
    assert row.last_checked_at == now and row.account_age_days == 2
    assert row.next_check_at == pytest.approx(now + EVERY_S, abs=0.01)
    assert await reg.health_counts() == {"pending": 0, "healthy": 0, "degraded": 0, "failing": 1}


async def test_health_event_ids_follow_the_check_event_and_the_stream_is_trimmed(
    redis: Redis, sealer: Sealer
) -> None:
    # One entry per stream node: Redis's approximate trimming then keeps exactly maxlen entries.
    await redis.config_set("stream-node-max-entries", 1)
    try:
        reg = registry(redis, sealer)
        await reg.register(request(), EVERY_S, spread_s=0, now=NOW)
        expiring = samples.completed(event_id="e1", imap=samples.protocol_result("imap", days_left=5))
        await record(reg, expiring, NOW)
        ids = {f["type"]: json.loads(f["event"])["id"] for _, f in await redis.xrange(STREAM)}
        assert ids == {
            kind: str(uuid.uuid5(HEALTH_EVENT_NAMESPACE, f"e1:{kind}"))
            for kind in (events.HEALTH_CHANGED, events.CERT_EXPIRING)
        }
        for n in range(2, 6):
            status = "valid" if n % 2 else "invalid"
            await record(reg, completed("inbox-0", f"e{n}", status, **WRONG), NOW + n, maxlen=2)
        assert await redis.xlen(STREAM) == 2
    finally:
        await redis.config_set("stream-node-max-entries", 100)


async def test_concurrent_records_each_apply_once(redis: Redis, sealer: Sealer) -> None:
    # A record that finds the inbox changed since it read it applies itself to the new state.
    reg = registry(redis, sealer)
    await reg.register(request(), EVERY_S, spread_s=0, now=NOW)
    timeouts = [
        completed(
            "inbox-0", f"e{n}", "invalid", error_code="TIMEOUT", reason="CONNECT_TIMEOUT", retryable=True
        )
        for n in range(8)
    ]
    await asyncio.gather(*(record(reg, event, NOW) for event in timeouts))
    row = await reg.get("inbox-0")
    assert row is not None and row.consecutive_failures == len(timeouts)


async def test_many_inboxes_registered_listed_in_pages_and_unregistered(redis: Redis, sealer: Sealer) -> None:
    reg = registry(redis, sealer)
    with capture_logs() as logs:
        new = await reg.register_many([request(n) for n in range(MANY)], EVERY_S, spread_s=0)
    assert new == MANY
    assert logs == [{"event": "inboxes_registered", "log_level": "info", "new": MANY, "every_s": EVERY_S}]
    rows, cursor = await reg.list_page()
    assert (len(rows), cursor) == (MANY, 0)
    assert all(row.next_check_at == pytest.approx(time.time(), abs=60) for row in rows)
    assert [row.inbox_id for row in await reg.list_inboxes()] == sorted(f"inbox-{n}" for n in range(MANY))
    await reg.register_many([request(MANY)], EVERY_S, spread_s=0, now=NOW)
    assert (await reg.get(f"inbox-{MANY}")).next_check_at == pytest.approx(NOW, abs=0.01)
    with capture_logs() as logs:
        assert await reg.unregister("inbox-0") and not await reg.unregister("inbox-0")
    assert [(e["event"], e["inbox_id"], e["existed"]) for e in logs] == [
        ("inbox_unregistered", "inbox-0", True),
        ("inbox_unregistered", "inbox-0", False),
    ]


async def test_a_tick_skips_and_forgets_inboxes_gone_meanwhile_and_carries_the_age(
    redis: Redis, sealer: Sealer
) -> None:
    reg = registry(redis, sealer)
    now = time.time()
    for n in range(4):
        await reg.register(request(n, account_age_days=10), EVERY_S, spread_s=0, now=now - 5 - n)
    # Gone between the due set and its hash, as an unregister racing the claim leaves it.
    await redis.delete(keys.inbox_key("inbox-3"))
    assert [row.inbox_id for row in await reg.list_inboxes()] == ["inbox-0", "inbox-1", "inbox-2"]
    with capture_logs() as logs:
        job_ids = await reg.enqueue_due(claim_ttl_s=CLAIM_TTL_S, batch=2, budget_s=60.0, now=now)
    assert len(job_ids) == 3
    assert logs == [{"event": "rechecks_enqueued", "log_level": "info", "count": 3}]
    assert await redis.zscore(keys.INBOXES_DUE_KEY, "inbox-3") is None
    for job_id in job_ids:
        job = envelope.deserialize_job((await redis.get(keys.job_key(job_id))).encode())
        assert job["a"][0]["request"]["account_age_days"] == 10


async def test_a_rotated_refresh_token_is_kept_when_the_inbox_changes_while_it_is_written(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry(redis, queue_name="test:queue", sealer=None, allow_plaintext=True)
    oauth2 = {"refresh_token": "used", "client_id": "app", "token_url": "https://login.example.test/token"}
    await reg.register(request(auth="oauth2", oauth2=oauth2, smtp_password=None), EVERY_S, spread_s=0)
    other = redis_py.Redis(**redis.connection_pool.connection_kwargs)
    replace = payload.replace_secret
    changed: list[int] = []

    def changed_meanwhile(*args: Any) -> Any:
        # Between the WATCH and the EXEC, once: as a health record written at that moment does.
        if not changed:
            changed.append(other.hset(keys.inbox_key("inbox-0"), "health", "changed"))
        return replace(*args)

    monkeypatch.setattr(payload, "replace_secret", changed_meanwhile)
    try:
        assert await reg.keep_refresh_token("inbox-0", "used", "rotated")
    finally:
        other.close()
    assert changed == [1]
    stored = json.loads(await redis.hget(keys.inbox_key("inbox-0"), "payload"))
    assert stored["credentials"]["plain"]["oauth2_refresh_token"] == "rotated"


async def test_a_rotated_refresh_token_is_kept_only_where_the_used_one_is_stored(redis: Redis) -> None:
    reg = Registry(redis, queue_name="test:queue", sealer=None, allow_plaintext=True)
    oauth2 = {"refresh_token": "used", "client_id": "app", "token_url": "https://login.example.test/token"}
    await reg.register(request(auth="oauth2", oauth2=oauth2, smtp_password=None), EVERY_S, spread_s=0)
    # Kept though health records change the inbox's hash while it is being written.
    *_, kept = await asyncio.gather(
        *(record(reg, completed("inbox-0", f"e{n}"), NOW + n) for n in range(8)),
        reg.keep_refresh_token("inbox-0", "used", "rotated"),
    )
    assert kept
    with capture_logs() as logs:
        assert await reg.keep_refresh_token("inbox-0", "rotated", "rotated")
        assert not await reg.keep_refresh_token("inbox-0", "used", "other")  # rotated already
        assert not await reg.keep_refresh_token("inbox-gone", "used", "rotated")
    assert [(e["event"], e["inbox_id"]) for e in logs] == [
        ("refresh_token_kept", "inbox-0"),
        ("refresh_token_not_kept", "inbox-0"),
        ("refresh_token_not_kept", "inbox-gone"),
    ]
    stored = await redis.hget(keys.inbox_key("inbox-0"), "payload")
    assert stored == compact(stored)
    assert json.loads(stored)["credentials"]["plain"]["oauth2_refresh_token"] == "rotated"


async def test_the_registry_of_the_settings_uses_the_workers_queue_and_their_plaintext_rule(
    redis: Redis, shared_redis: RedisServer
) -> None:
    settings = make_settings(shared_redis, secret_key=None, allow_plaintext_credentials=True)
    reg = for_settings(redis, settings)
    await reg.register(request(), EVERY_S, spread_s=0, now=NOW)  # refused without the permission
    [job_id] = await reg.enqueue_due(claim_ttl_s=CLAIM_TTL_S, batch=10, now=NOW)
    assert await redis.zscore(settings.queue_name, job_id) is not None
