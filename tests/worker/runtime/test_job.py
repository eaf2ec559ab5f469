"""The job in a real arq worker (burst mode) against a real redis-server: retries, exactly one
event, and the payloads a hostile producer could write."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.worker.support import (
    KEY,
    PASSWORD,
    burst,
    make_settings,
    raw_job,
    request,
    scan_for,
    stream_events,
    write_raw,
)
from worker.messages import keys, payload
from worker.messages.events import COMPLETED, REJECTED
from worker.messages.producer import enqueue_validation
from worker.messages.sealing import Sealer, generate_key
from worker.runtime.arq_settings import check_settings
from worker.settings import SettingsError


async def test_retryable_outcome_retried_then_one_event_with_attempts(shared_redis, aredis) -> None:
    settings = make_settings(shared_redis)
    job_id = await enqueue_validation(aredis, request(), settings=settings)
    await burst(settings)
    events = stream_events(shared_redis.client(), settings.events_stream)
    assert len(events) == 1
    data = events[0]["data"]
    assert (events[0]["type"], data["error_code"], data["reason"]) == (
        COMPLETED,
        "CONNECTION_FAILED",
        "CONNECTION_REFUSED",
    )
    assert data["attempts"] == settings.max_tries
    # The arq result is the same event.
    result = json.loads(await aredis.get(keys.result_key(job_id)))
    assert result["r"] == events[0]
    assert result["a"] == []  # the credentials are not kept with the result


async def test_same_request_twice_is_one_job(shared_redis, aredis) -> None:
    settings = make_settings(shared_redis)
    first = await enqueue_validation(aredis, request(), settings=settings)
    port = int(json.loads(await aredis.get(keys.job_key(first)))["a"][0]["request"]["smtp_port"])
    again = await enqueue_validation(aredis, request(port=port), settings=settings)
    assert first == again and await aredis.zcard(settings.queue_name) == 1
    await burst(settings)
    # Fresh result: still the same job, nothing new queued.
    assert await enqueue_validation(aredis, request(port=port), settings=settings) == first
    assert await aredis.zcard(settings.queue_name) == 0
    assert await aredis.xlen(settings.events_stream) == 1


async def test_rerun_after_crash_appends_no_second_event(shared_redis, aredis) -> None:
    settings = make_settings(shared_redis, max_tries=1)
    job_id = await enqueue_validation(aredis, request(), settings=settings)
    raw_job = await aredis.get(keys.job_key(job_id))
    await burst(settings)
    # As if the worker had died after the XADD but before arq recorded the result.
    await aredis.delete(keys.result_key(job_id))
    await aredis.set(keys.job_key(job_id), raw_job)
    await aredis.zadd(settings.queue_name, {job_id: 1})
    await burst(settings)
    events = stream_events(shared_redis.client(), settings.events_stream)
    assert len(events) == 1
    assert json.loads(await aredis.get(keys.result_key(job_id)))["r"]["id"] == events[0]["id"]


async def test_hostile_payloads_end_in_rejected_events(shared_redis, aredis) -> None:
    settings = make_settings(shared_redis)
    good = payload.encode(request("victim"), Sealer(KEY))
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    hostile = {
        "garbage": b"\x80\x81\xfe\xff not json at all \x00",
        "pickle": b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.",
        "huge": raw_job({"v": 1, "request": {"inbox_id": "x" * 200_000}, "credentials": {"plain": {}}}),
        "deep": b'{"t":null,"f":"validate_inbox","a":[' + b"[" * 50_000 + b"]" * 50_000 + b'],"k":{},"et":1}',
        "envelope-types": b'{"t":"1","f":"validate_inbox","a":[{}],"k":{},"et":1}',
        "wrong-function": b'{"t":null,"f":"os.system","a":["rm -rf /"],"k":{},"et":1}',
        "et-string": b'{"t":null,"f":"validate_inbox","a":[{}],"k":{},"et":"soon"}',
        "kwargs": b'{"t":null,"f":"validate_inbox","a":[{}],"k":{"x":1},"et":1}',
        "list-payload": raw_job([1, 2, 3]),
        # The destination as sealed, so the token opens and the request itself is what fails.
        "wrong-types": raw_job({**good, "request": {**good["request"], "account_age_days": ["many"]}}),
        "retargeted": raw_job(
            {**good, "request": {**good["request"], "smtp_security": "none", "allow_insecure_auth": True}}
        ),
        "plaintext-refused": raw_job({**good, "credentials": {"plain": {"smtp_password": "pw"}}}),
        "wrong-key": raw_job(payload.encode(request("victim"), Sealer(generate_key()))),
        "other-inbox": raw_job({**good, "request": {**good["request"], "inbox_id": "thief"}}),
        "tampered": raw_job({**good, "credentials": {"sealed": good["credentials"]["sealed"][:-4] + "AAAA"}}),
        "password-in-request": raw_job({**good, "request": {**good["request"], "smtp_password": "pw"}}),
    }
    for name, raw in hostile.items():
        await write_raw(aredis, settings, f"hostile-{name}", raw)
    await burst(settings)
    events = stream_events(shared_redis.client(), settings.events_stream)
    assert len(events) == len(hostile)
    assert {e["type"] for e in events} == {REJECTED}
    assert {e["data"]["error_code"] for e in events} == {"INVALID_REQUEST"}
    reasons = {
        json.loads(await aredis.get(keys.result_key(f"hostile-{n}")))["r"]["data"]["reason"]
        for n in ("wrong-key", "plaintext-refused", "other-inbox", "tampered", "retargeted")
    }
    assert reasons == {"SEALED_CREDENTIALS"}
    for name in ("garbage", "deep", "wrong-types", "huge"):
        result = json.loads(await aredis.get(keys.result_key(f"hostile-{name}")))
        assert result["r"]["data"]["reason"] == "MALFORMED_PAYLOAD"
    assert not await aredis.zcard(settings.queue_name)


async def test_worker_without_key_refuses_sealed_and_plaintext_needs_permission(shared_redis, aredis) -> None:
    producer_settings = make_settings(shared_redis)
    worker_settings = producer_settings.model_copy(update={"secret_key": None})
    await enqueue_validation(aredis, request("sealed"), settings=producer_settings)
    # A producer without a key writes plaintext only when told it is development.
    plain_settings = producer_settings.model_copy(
        update={"secret_key": None, "allow_plaintext_credentials": True}
    )
    await enqueue_validation(aredis, request("plain"), settings=plain_settings)
    await burst(worker_settings)
    events = {e["subject"]: e for e in stream_events(shared_redis.client(), producer_settings.events_stream)}
    assert events["sealed"]["type"] == REJECTED
    assert "no INBOXCHECK_SECRET_KEY" in events["sealed"]["data"]["problems"][0]
    assert events["plain"]["type"] == REJECTED
    assert events["plain"]["data"]["reason"] == "SEALED_CREDENTIALS"
    # Allowed explicitly, plaintext is checked.
    dev = worker_settings.model_copy(
        update={
            "allow_plaintext_credentials": True,
            "events_stream": producer_settings.events_stream + ":dev",
        }
    )
    await enqueue_validation(aredis, request("plain2"), settings=dev)
    await burst(dev)
    [event] = stream_events(shared_redis.client(), dev.events_stream)
    assert event["type"] == COMPLETED


async def test_no_password_in_redis_in_sealed_mode(shared_redis, aredis) -> None:
    settings = make_settings(shared_redis, max_tries=1)
    for n in range(3):
        await enqueue_validation(aredis, request(f"scan-{n}"), settings=settings)
    assert scan_for(shared_redis.client(), [PASSWORD.encode()]) == []  # queued jobs are sealed
    await burst(settings)
    assert scan_for(shared_redis.client(), [PASSWORD.encode()]) == []


def test_job_timeout_must_exceed_check_deadline(shared_redis) -> None:
    with pytest.raises(SettingsError, match="INBOXCHECK_JOB_TIMEOUT"):
        check_settings(make_settings(shared_redis, check_timeout=30, job_timeout=31))
