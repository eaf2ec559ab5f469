"""Sealed credentials go only where they were sealed for, as an attacker with write access to Redis
(but not the key) would try otherwise: a real worker, a real Redis, a listening "attacker" server
that counts every connection it gets."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from cryptography.fernet import Fernet
from redis.asyncio import Redis

from jobs.time_units import SECONDS_PER_DAY
from tests.servers.fakes import FakeServer, silent
from tests.servers.redis import RedisServer
from tests.worker.support import (
    KEY,
    PASSWORD,
    burst,
    closed_port,
    make_settings,
    raw_job,
    request,
    stream_events,
    write_raw,
)
from worker.messages import keys, payload
from worker.messages.producer import enqueue_validation
from worker.messages.sealing import Sealer
from worker.rechecks.registry import Registry

THREE_DAYS_S = 3 * SECONDS_PER_DAY


def verdicts(server: RedisServer, stream: str) -> list[dict[str, Any]]:
    """The jobs' events (a recheck's health change follows its own)."""
    return [e for e in stream_events(server.client(), stream) if e["type"].startswith("inbox.validation.")]


async def queued_payload(aredis: Redis, job_id: str) -> dict[str, Any]:
    return json.loads(await aredis.get(keys.job_key(job_id)))["a"][0]


def retargeted(body: dict[str, Any], port: int) -> dict[str, Any]:
    """The victim's request sent to the attacker's port, in clear, AUTH allowed without TLS."""
    request = {**body["request"], "smtp_port": port, "imap_port": port}
    return {**body, "request": {**request, "smtp_security": "none", "allow_insecure_auth": True}}


async def test_a_queued_token_copied_onto_a_request_for_another_server_sends_nothing(
    shared_redis: RedisServer, aredis: Redis, fake_server: Callable[..., FakeServer]
) -> None:
    settings = make_settings(shared_redis, max_tries=2)
    attacker = fake_server(silent)
    victim_job = await enqueue_validation(aredis, request("victim"), settings=settings)
    stolen = await queued_payload(aredis, victim_job)
    await aredis.delete(keys.job_key(victim_job))
    await aredis.zrem(settings.queue_name, victim_job)
    await write_raw(aredis, settings, "attacker-job", raw_job(retargeted(stolen, attacker.port)))
    await burst(settings)
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    assert (event["type"], event["data"]["reason"]) == ("inbox.validation.rejected", "SEALED_CREDENTIALS")
    assert "not the one the credentials were sealed for" in event["data"]["problems"][0]
    assert attacker.connections == 0


async def test_a_rewritten_registry_entry_is_refused_at_its_recheck(
    shared_redis: RedisServer, redis: Redis, aredis: Redis, fake_server: Callable[..., FakeServer]
) -> None:
    # `redis` flushes the server first: the registry's keys are not per queue.
    settings = make_settings(shared_redis)
    attacker = fake_server(silent)
    registry = Registry(aredis, queue_name=settings.queue_name, sealer=Sealer(KEY))
    await registry.register(request("registered"), 60.0, spread_s=0)
    stored = json.loads(await aredis.hget(keys.inbox_key("registered"), "payload"))
    await aredis.hset(keys.inbox_key("registered"), "payload", json.dumps(retargeted(stored, attacker.port)))
    assert await registry.enqueue_due(claim_ttl_s=60, batch=10, now=time.time() + 120)
    await burst(settings)
    [event] = verdicts(shared_redis, settings.events_stream)
    assert (event["type"], event["data"]["reason"]) == ("inbox.validation.rejected", "SEALED_CREDENTIALS")
    assert attacker.connections == 0
    row = await registry.get("registered")
    assert row is not None and (row.health, row.error_code) == ("failing", "INVALID_REQUEST")


async def test_an_old_queued_token_is_refused_and_a_registered_one_is_sealed_afresh(
    shared_redis: RedisServer, redis: Redis, aredis: Redis
) -> None:
    # `redis` flushes the server first: the registry's keys are not per queue.
    settings = make_settings(shared_redis, max_tries=1)
    body = payload.encode(request("old"), Sealer(KEY))
    sealed_long_ago = Fernet(KEY).decrypt(body["credentials"]["sealed"].encode())
    old_token = Fernet(KEY).encrypt_at_time(sealed_long_ago, int(time.time() - THREE_DAYS_S)).decode()
    await write_raw(aredis, settings, "old-job", raw_job({**body, "credentials": {"sealed": old_token}}))
    # The same three-day-old token stored in the registry: its recheck gets a token sealed now.
    registry = Registry(aredis, queue_name=settings.queue_name, sealer=Sealer(KEY))
    await registry.register(request("registered-old"), 60.0, spread_s=0)
    stored = json.loads(await aredis.hget(keys.inbox_key("registered-old"), "payload"))
    stored_old = Fernet(KEY).encrypt_at_time(
        Fernet(KEY).decrypt(stored["credentials"]["sealed"].encode()), int(time.time() - THREE_DAYS_S)
    )
    stored["credentials"]["sealed"] = stored_old.decode()
    await aredis.hset(keys.inbox_key("registered-old"), "payload", json.dumps(stored))
    [recheck] = await registry.enqueue_due(claim_ttl_s=60, batch=10, now=time.time() + 120)
    fresh = (await queued_payload(aredis, recheck))["credentials"]["sealed"]
    assert time.time() - Fernet(KEY).extract_timestamp(fresh.encode()) < settings.sealed_max_age
    await burst(settings)
    events = {e["subject"]: e for e in verdicts(shared_redis, settings.events_stream)}
    assert events["old"]["data"]["reason"] == "SEALED_CREDENTIALS"
    assert "INBOXCHECK_SEALED_MAX_AGE" in events["old"]["data"]["problems"][0]
    assert events["registered-old"]["type"] == "inbox.validation.completed"


async def test_a_queued_token_planted_in_the_registry_is_not_sealed_afresh(
    shared_redis: RedisServer, redis: Redis, aredis: Redis
) -> None:
    # `redis` flushes the server first: the registry's keys are not per queue.
    settings = make_settings(shared_redis, max_tries=1)
    registry = Registry(aredis, queue_name=settings.queue_name, sealer=Sealer(KEY))
    await registry.register(request("planted"), 60.0, spread_s=0)
    job_body = payload.encode(request("planted"), Sealer(KEY))
    expired = Fernet(KEY).encrypt_at_time(
        Fernet(KEY).decrypt(job_body["credentials"]["sealed"].encode()), int(time.time() - THREE_DAYS_S)
    )
    stored = json.loads(await aredis.hget(keys.inbox_key("planted"), "payload"))
    stored["credentials"]["sealed"] = expired.decode()
    await aredis.hset(keys.inbox_key("planted"), "payload", json.dumps(stored))
    [recheck] = await registry.enqueue_due(claim_ttl_s=60, batch=10, now=time.time() + 120)
    assert (await queued_payload(aredis, recheck))["credentials"]["sealed"] == expired.decode()
    await burst(settings)
    [event] = verdicts(shared_redis, settings.events_stream)
    assert (event["type"], event["data"]["reason"]) == ("inbox.validation.rejected", "SEALED_CREDENTIALS")


def test_a_token_in_the_old_format_is_refused_not_silently_accepted() -> None:
    body = payload.encode(request("v1"), Sealer(KEY))
    v1 = json.dumps({"inbox_id": "v1", "secrets": {"smtp_password": PASSWORD}}).encode()
    old = {**body, "credentials": {"sealed": Fernet(KEY).encrypt(v1).decode()}}
    try:
        payload.decode(old, Sealer(KEY), allow_plaintext=False)
    except payload.PayloadRejected as rejected:
        assert "old format" in rejected.message
    else:
        raise AssertionError("a token without its destination was accepted")


async def test_a_job_built_by_hand_from_the_readme_format_is_accepted(
    shared_redis: RedisServer, aredis: Redis
) -> None:
    """What a producer in another language writes, from the README alone: no project encoder."""
    settings = make_settings(shared_redis, max_tries=1)
    port = closed_port()
    # Every field the digest covers, so the whole order and the spelling of booleans count.
    fields: dict[str, Any] = {
        "inbox_id": "by-hand",
        "inbox_type": "CUSTOM_SMTP",
        "email": "ann@corp.example",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_use_tls": False,
        "smtp_security": "none",
        "allow_insecure_auth": True,
        "smtp_username": "ann-smtp",
        "imap_host": "127.0.0.1",
        "imap_port": port,
        "imap_use_ssl": True,
        "imap_username": "ann-imap",
        "auth": "password",
    }
    lines = (
        f"inbox_type=CUSTOM_SMTP\nemail=ann@corp.example\nsmtp_host=127.0.0.1\nsmtp_port={port}\n"
        "smtp_use_tls=false\nsmtp_security=none\nallow_insecure_auth=true\nsmtp_username=ann-smtp\n"
        f"imap_host=127.0.0.1\nimap_port={port}\nimap_use_ssl=true\nimap_username=ann-imap\nauth=password\n"
    )
    sealed = json.dumps(
        {
            "v": 2,
            "use": "job",
            "inbox_id": "by-hand",
            "destination": hashlib.sha256(lines.encode()).hexdigest(),
            "secrets": {"smtp_password": PASSWORD},
        }
    )
    job = {
        "v": 1,
        "request": fields,
        "credentials": {"sealed": Fernet(KEY).encrypt(sealed.encode()).decode()},
    }
    envelope = {"t": None, "f": "validate_inbox", "a": [job], "k": {}, "et": int(time.time() * 1000)}
    await aredis.psetex(keys.job_key("by-hand-job"), 86_400_000, json.dumps(envelope))
    await aredis.zadd(settings.queue_name, {"by-hand-job": int(time.time() * 1000)})
    await burst(settings)
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    assert event["type"] == "inbox.validation.completed", event  # checked (the port refuses), not rejected
    assert event["data"]["reason"] == "CONNECTION_REFUSED"
