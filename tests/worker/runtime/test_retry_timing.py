"""When a job runs again, through a real arq worker (burst mode) and a real redis-server: the
doubling backoff, a provider's longer suggested wait winning, the 300 s cap, and a worker bug
ending in `inbox.validation.failed` only after the last attempt."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.time_units import MS_PER_S
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript
from tests.servers.redis import RedisServer
from tests.worker.support import burst, make_settings, request, stream_events
from worker.messages import keys
from worker.messages.events import FAILED
from worker.messages.producer import enqueue_validation
from worker.runtime import job
from worker.runtime.job import MAX_RETRY_DEFER_S
from worker.settings import Settings

# How far a deferred job's score may trail the moment the test read the clock: the worker's run
# and Redis round trips on a loaded machine.
SLACK_S = 1.5


async def deferred_by(aredis: Redis, settings: Settings, job_id: str, since: float) -> float:
    """How long after `since` the queue holds the job back (arq's score is its due time, ms)."""
    score = await aredis.zscore(settings.queue_name, job_id)
    assert score is not None, "the job is not queued"
    return score / MS_PER_S - since


async def one_run(settings: Settings, aredis: Redis, job_id: str) -> float:
    """Make the job due now, run it once, and say how long its retry was deferred."""
    await aredis.zadd(settings.queue_name, {job_id: int(time.time() * MS_PER_S)})
    started = time.time()
    worker = await burst(settings, max_burst_jobs=1)
    assert worker.jobs_retried == 1
    return await deferred_by(aredis, settings, job_id, started)


async def test_retries_back_off_doubling_and_at_most_300_s(shared_redis: RedisServer, aredis: Redis) -> None:
    settings = make_settings(shared_redis, retry_backoff=2.0, max_tries=4)
    job_id = await enqueue_validation(aredis, request("backoff"), settings=settings)  # a closed port
    for expected in (2.0, 4.0, 8.0):
        assert expected <= await one_run(settings, aredis, job_id) <= expected + SLACK_S
    capped = make_settings(shared_redis, retry_backoff=1_000.0, max_tries=2)
    job_id = await enqueue_validation(aredis, request("capped"), settings=capped)
    assert MAX_RETRY_DEFER_S <= await one_run(capped, aredis, job_id) <= MAX_RETRY_DEFER_S + SLACK_S


@pytest.mark.parametrize(
    ("backoff_s", "suggested_ms", "expected_s"),
    [(0.01, 30_000, 30.0), (10.0, 1_000, 10.0)],
    ids=["suggestion-longer", "backoff-longer"],
)
async def test_a_providers_suggested_wait_wins_when_longer(
    shared_redis: RedisServer,
    aredis: Redis,
    fake_server: Any,
    pki: PKI,
    ca_file: str,
    unpaused_loopback: None,
    backoff_s: float,
    suggested_ms: int,
    expected_s: float,
) -> None:
    smtp: FakeServer = fake_server(SmtpScript(auth_reply="235 2.7.0 Authentication successful"))
    throttled = f"BAD Request is throttled. Suggested Backoff Time: {suggested_ms} milliseconds"
    imap: FakeServer = fake_server(ImapScript(login_reply=throttled), ssl_context=pki.valid.ssl_context)
    settings = make_settings(
        shared_redis, retry_backoff=backoff_s, max_tries=2, tls_ca_file=ca_file, metrics_port=0
    )
    fields = dict(smtp_port=smtp.port, imap_port=imap.port, smtp_use_tls=False, allow_insecure_auth=True)
    job_id = await enqueue_validation(aredis, request("throttled", **fields), settings=settings)
    assert expected_s <= await one_run(settings, aredis, job_id) <= expected_s + SLACK_S


async def test_a_bug_in_the_worker_is_retried_then_ends_in_one_failed_event(
    shared_redis: RedisServer, aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    async def crashes(*_args: Any) -> None:
        calls.append(1)
        raise KeyError("a bug")  # stands for any bug in the check's own code

    monkeypatch.setattr(job, "validate_inbox", crashes)
    settings = make_settings(shared_redis, max_tries=3)
    job_id = await enqueue_validation(aredis, request("buggy"), settings=settings)
    enqueued_ms = json.loads(await aredis.get(keys.job_key(job_id)))["et"]
    with capture_logs() as logs:
        worker = await burst(settings)
    crashes_logged = [(e["error"], e["last_try"]) for e in logs if e["event"] == "check_crashed"]
    assert crashes_logged == [("KeyError", False), ("KeyError", False), ("KeyError", True)]
    events = stream_events(shared_redis.client(), settings.events_stream)
    assert [e["type"] for e in events] == [FAILED]
    assert events[0]["id"] == job.event_id(job_id, enqueued_ms)  # the id a rerun would give it too
    assert events[0]["data"]["inbox_id"] == events[0]["subject"] == "buggy"
    data = events[0]["data"]
    assert (data["error_code"], data["reason"], data["attempts"]) == ("INTERNAL_ERROR", "KeyError", 3)
    assert len(calls) == settings.max_tries and worker.jobs_retried == settings.max_tries - 1
    assert json.loads(await aredis.get(keys.result_key(job_id)))["r"] == events[0]
