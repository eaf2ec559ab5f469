"""Registered inboxes in a real redis-server: sealed storage, due-set claims, health records."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from jobs.request import parse_request
from tests.worker import event_samples as samples
from worker.messages import envelope, events, keys, payload
from worker.messages.sealing import Sealer, generate_key
from worker.rechecks.inbox_health import SECONDS_PER_DAY, Health, HealthPolicy
from worker.rechecks.registry import Registry, RegistryError, is_recheck

QUEUE = "test:queue"
STREAM = "test:events"
PASSWORD = "hunter2-very-secret"
EVERY_S = 60.0
CLAIM_TTL_S = 600.0
WORKERS = 10
INBOXES = 50
NOW = 1_700_000_000.0
POLICY = HealthPolicy(interval_s=EVERY_S, failing_after=3, jitter_fraction=0.0)


def request(n: int = 0, **extra: Any) -> Any:
    return parse_request(
        {
            "inbox_id": f"inbox-{n}",
            "inbox_type": "CUSTOM_SMTP",
            "email": f"user{n}@example.test",
            "smtp_host": "127.0.0.1",
            "smtp_port": 2525,
            "imap_host": "127.0.0.1",
            "imap_port": 1993,
            "smtp_password": PASSWORD,
            **extra,
        }
    )


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(generate_key())


def registry(redis: Redis, sealer: Sealer | None) -> Registry:
    return Registry(redis, queue_name=QUEUE, sealer=sealer)


def completed(inbox_id: str, event_id: str, status: str = "valid", **data: Any) -> events.CompletedEvent:
    return samples.completed(status, inbox_id=inbox_id, event_id=event_id, **data)


async def test_register_stores_sealed_credentials_only(redis: Redis, sealer: Sealer) -> None:
    reg = registry(redis, sealer)
    row = await reg.register(request(), EVERY_S, spread_s=0, now=NOW)
    assert (row.inbox_id, row.health, row.every_s) == ("inbox-0", "pending", EVERY_S)
    for key in await redis.keys("*"):
        dump = json.dumps(await redis.hgetall(key)) if await redis.type(key) == "hash" else ""
        assert PASSWORD not in dump
    stored = json.loads(await redis.hget(keys.inbox_key("inbox-0"), "payload"))
    with pytest.raises(payload.PayloadRejected, match="sealed for registry, not for job"):
        payload.decode(stored, sealer, allow_plaintext=False)  # a stored token is no job's token
    opened = payload.decode(payload.reseal(stored, sealer), sealer, allow_plaintext=False)
    assert opened.smtp_password is not None and opened.smtp_password.get_secret_value() == PASSWORD
    assert [r.inbox_id for r in await reg.list_inboxes()] == ["inbox-0"]
    assert await reg.unregister("inbox-0") and await reg.list_inboxes() == []
    assert not await reg.unregister("inbox-0")


async def test_register_without_a_key_is_refused(redis: Redis) -> None:
    with pytest.raises(RegistryError):
        await registry(redis, None).register(request(), EVERY_S, spread_s=0)


async def test_first_checks_are_spread(redis: Redis, sealer: Sealer) -> None:
    reg = registry(redis, sealer)
    spread_s = 300.0
    rows = await asyncio.gather(
        *(reg.register(request(n), 3_600, spread_s=spread_s, now=NOW) for n in range(200))
    )
    offsets = sorted(r.next_check_at - NOW for r in rows)
    assert 0 <= offsets[0] and offsets[-1] <= spread_s
    assert len({int(o) for o in offsets}) > 100  # not one second for all


async def test_many_workers_enqueue_each_due_inbox_once(
    redis: Redis, sealer: Sealer, shared_redis: Any
) -> None:
    reg = registry(redis, sealer)
    for n in range(INBOXES):
        await reg.register(request(n), EVERY_S, spread_s=0, now=NOW)
    clients = [Redis.from_url(shared_redis.url) for _ in range(WORKERS)]
    try:
        batches = await asyncio.gather(
            *(
                Registry(c, queue_name=QUEUE, sealer=sealer).enqueue_due(
                    claim_ttl_s=CLAIM_TTL_S, batch=1_000, now=NOW + 1
                )
                for c in clients
            )
        )
    finally:
        for c in clients:
            await c.aclose()
    job_ids = [j for batch in batches for j in batch]
    assert len(job_ids) == len(set(job_ids)) == INBOXES and all(map(is_recheck, job_ids))
    assert await redis.zcard(QUEUE) == INBOXES
    # claimed: nothing more is due until the claim lapses or the check reports
    assert await reg.enqueue_due(claim_ttl_s=CLAIM_TTL_S, batch=1_000, now=NOW + 2) == []
    lapsed = await reg.enqueue_due(claim_ttl_s=CLAIM_TTL_S, batch=1_000, now=NOW + 2 + CLAIM_TTL_S)
    assert len(lapsed) == INBOXES and not set(lapsed) & set(job_ids)
    raw = await redis.get(keys.job_key(job_ids[0]))
    job = envelope.deserialize_job(raw.encode())
    assert PASSWORD not in raw
    assert (
        payload.decode(job["a"][0], sealer, allow_plaintext=False).smtp_password.get_secret_value()
        == PASSWORD
    )


async def test_record_check_applies_each_event_once(redis: Redis, sealer: Sealer) -> None:
    reg = registry(redis, sealer)
    await reg.register(request(), EVERY_S, spread_s=0, now=NOW)

    async def record(event: events.TerminalEvent, at: float) -> Any:
        return await reg.record_check("inbox-0", event, POLICY, stream_name=STREAM, maxlen=1_000, now=at)

    first = await record(completed("inbox-0", "e1"), NOW)
    assert first.current.health is Health.HEALTHY and first.changed
    assert await record(completed("inbox-0", "e1"), NOW) is None  # replay after a crash
    await record(completed("inbox-0", "e2"), NOW + 10)
    wrong = completed("inbox-0", "e3", "invalid", error_code="AUTH_FAILED", reason="INVALID_CREDENTIALS")
    assert (await record(wrong, NOW + 20)).current.health is Health.FAILING
    entries = await redis.xrange(STREAM)
    changes = [json.loads(f["event"]) for _, f in entries if f["type"] == events.HEALTH_CHANGED]
    assert [(c["data"]["previous"]["health"], c["data"]["current"]["health"]) for c in changes] == [
        ("pending", "healthy"),
        ("healthy", "failing"),
    ]
    assert changes[1]["data"]["current"]["error_code"] == "AUTH_FAILED"
    row = await reg.get("inbox-0")
    assert row.health == "failing" and row.next_check_at == pytest.approx(NOW + 20 + EVERY_S)
    assert (await reg.health_counts())["failing"] == 1


async def test_account_age_ramps_from_first_success(redis: Redis, sealer: Sealer) -> None:
    reg = registry(redis, sealer)
    await reg.register(request(), EVERY_S, spread_s=0, now=NOW)
    await reg.record_check(
        "inbox-0", completed("inbox-0", "e1"), POLICY, stream_name=STREAM, maxlen=1_000, now=NOW
    )
    later = NOW + 20 * SECONDS_PER_DAY
    [job_id] = await reg.enqueue_due(claim_ttl_s=CLAIM_TTL_S, batch=10, now=later)
    job = envelope.deserialize_job((await redis.get(keys.job_key(job_id))).encode())
    assert job["a"][0]["request"]["account_age_days"] == 20


async def test_health_events_written_by_the_registry_parse_as_their_models(
    redis: Redis, sealer: Sealer
) -> None:
    reg = registry(redis, sealer)
    await reg.register(request(), EVERY_S, spread_s=0, now=NOW)
    expiring = samples.protocol_result("imap", days_left=5)
    check = samples.completed(event_id="e1", imap=expiring)
    await reg.record_check("inbox-0", check, POLICY, stream_name=STREAM, maxlen=1_000, now=NOW)
    written = {fields["type"]: fields["event"] for _, fields in await redis.xrange(STREAM)}
    changed = events.parse_event(written[events.HEALTH_CHANGED])
    assert isinstance(changed, events.HealthChangedEvent)
    assert changed.subject == "inbox-0" and changed.data.check_event_id == "e1"
    assert (changed.data.previous.health, changed.data.current.health) == (Health.PENDING, Health.HEALTHY)
    expiry = events.parse_event(written[events.CERT_EXPIRING])
    assert isinstance(expiry, events.CertificateExpiringEvent)
    [warning] = expiry.data.warnings
    assert (warning.protocol, warning.days_left, warning.not_after) == (
        "imap",
        5,
        expiring.tls.cert_not_after,
    )
    # the same JSON as before typed events: the consumer's fields, nothing else
    assert json.loads(written[events.CERT_EXPIRING])["data"] == {
        "inbox_id": "inbox-0",
        "previous": {"health": "pending", "error_code": None, "reason": None, "consecutive_failures": 0},
        "current": {"health": "healthy", "error_code": None, "reason": None, "consecutive_failures": 0},
        "check_event_id": "e1",
        "warnings": [
            {
                "code": "CERT_EXPIRING",
                "protocol": "imap",
                "host": samples.HOST,
                "days_left": 5,
                "not_after": "2024-01-06T00:00:00Z",
            }
        ],
    }
    for raw in written.values():
        assert events.EVENT.dump_json(events.parse_event(raw)).decode() == raw
