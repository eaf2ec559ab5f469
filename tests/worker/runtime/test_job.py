"""The job in a real arq worker (burst mode) against a real redis-server: retries, exactly one
event, and the payloads a hostile producer could write."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from jobs.time_units import MS_PER_S, SECONDS_PER_DAY
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript
from tests.worker.support import (
    KEY,
    LOOPBACK_PAUSE,
    PASSWORD,
    burst,
    make_settings,
    raw_job,
    request,
    scan_for,
    stream_events,
    write_raw,
)
from worker.messages import envelope, keys, payload
from worker.messages.events import COMPLETED, FAILED, REJECTED
from worker.messages.producer import JOB_EXPIRES_MS, enqueue_validation
from worker.messages.sealing import Sealer, generate_key
from worker.rechecks.pacing import TriesUsedUp
from worker.runtime.arq_settings import check_settings
from worker.runtime.job import TRIES_USED_UP, AttemptCounter, event_id, retry_defer
from worker.settings import SettingsError


async def test_retryable_outcome_retried_then_one_event_with_attempts(shared_redis, aredis) -> None:
    settings = make_settings(shared_redis)
    job_id = await enqueue_validation(aredis, request(), settings=settings)
    enqueued_ms = json.loads(await aredis.get(keys.job_key(job_id)))["et"]
    with capture_logs() as logs:
        await burst(settings)
    assert [(e["error_code"], e["reason"], e["retry_in_s"]) for e in logs if e["event"] == "check_retry"] == [
        ("CONNECTION_FAILED", "CONNECTION_REFUSED", retry_defer(settings, n)) for n in (1, 2)
    ]
    events = stream_events(shared_redis.client(), settings.events_stream)
    assert len(events) == 1
    assert events[0]["id"] == event_id(job_id, enqueued_ms)  # the id a rerun would give it too
    data = events[0]["data"]
    assert (events[0]["type"], data["error_code"], data["reason"]) == (
        COMPLETED,
        "CONNECTION_FAILED",
        "CONNECTION_REFUSED",
    )
    assert data["attempts"] == settings.max_tries
    # The attempts are remembered as long as the job may wait in the queue, and its result after it.
    ttl_ms = await aredis.pttl(keys.attempts_key(events[0]["id"]))
    assert JOB_EXPIRES_MS < ttl_ms <= JOB_EXPIRES_MS + settings.keep_result * MS_PER_S
    # The arq result is the same event.
    result = json.loads(await aredis.get(keys.result_key(job_id)))
    assert result["r"] == events[0]
    assert result["a"] == []  # the credentials are not kept with the result


async def test_every_line_of_a_job_names_the_job_its_attempt_and_the_inbox(shared_redis, aredis) -> None:
    settings = make_settings(shared_redis)
    job_id = await enqueue_validation(aredis, request(inbox_id="inbox-7"), settings=settings)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await burst(settings)
    checked = [line for line in logs if line["event"] == "protocol_checked"]
    # Two protocols a try, one try per attempt.
    assert [(line["job_id"], line["attempt"], line["inbox_id"]) for line in checked] == [
        (job_id, attempt, "inbox-7") for attempt in range(1, settings.max_tries + 1) for _ in range(2)
    ]
    retried = [line for line in logs if line["event"] == "check_retry"]
    assert [(line["job_id"], line["attempt"], line["inbox_id"]) for line in retried] == [
        (job_id, attempt, "inbox-7") for attempt in range(1, settings.max_tries)
    ]


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


async def test_a_rerun_of_a_recorded_job_hands_back_its_event_without_checking_again(
    shared_redis, aredis
) -> None:
    settings = make_settings(shared_redis, max_tries=1)
    job_id = await enqueue_validation(aredis, request(), settings=settings)
    raw = await aredis.get(keys.job_key(job_id))
    await burst(settings)
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    # As if the worker had died after the XADD but before arq recorded the result.
    await aredis.delete(keys.result_key(job_id))
    await aredis.set(keys.job_key(job_id), raw)
    await aredis.zadd(settings.queue_name, {job_id: 1})
    with capture_logs() as logs:
        await burst(settings)
    # No second check (it would find its tries used up and log an error): the stored event, logged once.
    assert [
        (e["event"], e.get("event_id"), e.get("inbox_id"))
        for e in logs
        if e["event"].startswith(("job_", "tries_", "check_"))
    ] == [("job_already_done", event["id"], event["subject"])]
    assert json.loads(await aredis.get(keys.result_key(job_id)))["r"] == event
    assert stream_events(shared_redis.client(), settings.events_stream) == [event]


async def test_a_rejected_job_keeps_its_event_id_and_counts_one_attempt(shared_redis, aredis) -> None:
    settings = make_settings(shared_redis)
    good = payload.encode(request("victim"), Sealer(KEY))
    enqueued_ms = int(time.time() * MS_PER_S)
    bad = {**good, "request": {**good["request"], "account_age_days": ["many"]}}
    await write_raw(aredis, settings, "rejected-once", envelope.job_bytes(bad, enqueued_ms))
    with capture_logs() as logs:
        first = await burst(settings)
    rejected, finished = [e for e in logs if e["event"] in ("payload_rejected", "job_finished")]
    assert (rejected["inbox_id"], rejected["reason"]) == ("victim", "MALFORMED_PAYLOAD")
    duration_ms = finished.pop("duration_ms")
    assert isinstance(duration_ms, float) and 0 < duration_ms < settings.job_timeout * MS_PER_S
    assert duration_ms == round(duration_ms, 1)
    assert first.ctx["rechecks"].metrics.registry.get_sample_value(
        "inboxcheck_events_written_total", {"type": REJECTED}
    )
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    assert (event["type"], event["id"]) == (REJECTED, event_id("rejected-once", enqueued_ms))
    assert event["data"]["attempts"] == 1
    assert finished == {
        "event": "job_finished",
        "log_level": "info",
        "inbox_id": "victim",
        "event_id": event["id"],
        "type": REJECTED,
        "status": "rejected",
        "error_code": "INVALID_REQUEST",
        "reason": "MALFORMED_PAYLOAD",
        "attempts": 1,
    }
    # Run again after a crash before arq kept the result: the same event, not counted twice.
    await aredis.delete(keys.result_key("rejected-once"))
    await write_raw(aredis, settings, "rejected-once", envelope.job_bytes(bad, enqueued_ms))
    with capture_logs() as logs:
        worker = await burst(settings)
    assert [e["event"] for e in logs if e["event"].startswith("job_")] == ["job_already_done"]
    assert json.loads(await aredis.get(keys.result_key("rejected-once")))["r"] == event
    written = worker.ctx["rechecks"].metrics.registry.get_sample_value(
        "inboxcheck_events_written_total", {"type": REJECTED}
    )
    assert not written


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
    # A job that is not even an envelope says what is wrong with it, not with an empty payload.
    garbage = json.loads(await aredis.get(keys.result_key("hostile-garbage")))["r"]["data"]
    wrong_function = json.loads(await aredis.get(keys.result_key("hostile-wrong-function")))["r"]["data"]
    assert garbage["problems"][0] == "the job is not JSON"
    assert wrong_function["problems"][0] == "the job envelope's f (function) is not 'validate_inbox'"
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


# The fake servers' replies: SMTP accepts, so the IMAP login's reply is the whole verdict.
THROTTLED = "BAD Request is throttled. Suggested Backoff Time: {ms} milliseconds"
SMTP_OK = "235 2.7.0 Authentication successful"
INVALID = "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"


def fake_pair(
    fake_server: Callable[..., FakeServer], pki: PKI, imap: ImapScript
) -> tuple[SmtpScript, dict[str, Any]]:
    """A plain SMTP server that accepts the login and `imap` on implicit TLS, both on 127.0.0.1;
    the fields of a request for them."""
    smtp = SmtpScript(auth_reply=SMTP_OK)
    smtp_port = fake_server(smtp).port
    imap_port = fake_server(imap, ssl_context=pki.valid.ssl_context).port
    fields = dict(smtp_port=smtp_port, imap_port=imap_port, smtp_use_tls=False, allow_insecure_auth=True)
    return smtp, fields


@pytest.mark.parametrize(
    "suggested_ms",
    [
        "99999999999999",  # within Redis's range: paused the host for 3,000 years
        "9" * 20,  # past it: SET PX failed, and the job went round logging in again
        "9" * 5_000,  # past int(): the reply was taken for a protocol error
    ],
    ids=["centuries", "past-redis", "past-int"],
)
async def test_an_absurd_suggested_backoff_pauses_the_host_a_day_and_ends_in_one_event(
    shared_redis, aredis, fake_server, pki, ca_file, unpaused_loopback, suggested_ms: str
) -> None:
    imap = ImapScript(login_reply=THROTTLED.format(ms=suggested_ms))
    smtp, fields = fake_pair(fake_server, pki, imap)
    settings = make_settings(shared_redis, max_tries=1, tls_ca_file=ca_file, metrics_port=0)
    await enqueue_validation(aredis, request(**fields), settings=settings)
    # One run: it must end the job (nothing left queued) without a retry.
    worker = await burst(settings, max_burst_jobs=1)
    events = stream_events(shared_redis.client(), settings.events_stream)
    assert [e["type"] for e in events] == [COMPLETED]
    data = events[0]["data"]
    assert (data["reason"], data["attempts"]) == ("TOO_MANY_ATTEMPTS", 1)
    assert data["imap"]["retry_after_s"] == SECONDS_PER_DAY
    assert len(imap.logins) == len(smtp.logins) == settings.max_tries
    assert (worker.jobs_complete, worker.jobs_retried) == (1, 0)  # no Redis error sent it round
    assert await aredis.zcard(settings.queue_name) == 0
    assert 0 < await aredis.pttl(LOOPBACK_PAUSE) <= SECONDS_PER_DAY * MS_PER_S


async def test_tries_used_up_while_redis_refuses_the_event_end_in_one_failed_event(
    shared_redis, aredis, fake_server, pki, ca_file, unpaused_loopback
) -> None:
    # Each check's verdict is final (bad credentials), but its event cannot be written: the
    # stream's key holds a string, so the append's XADD fails after the check ran. Each run's
    # check counts before it starts, so when the tries are used up the next run logs in no more.
    imap = ImapScript(login_reply=INVALID)
    smtp, fields = fake_pair(fake_server, pki, imap)
    settings = make_settings(shared_redis, max_tries=2, tls_ca_file=ca_file, metrics_port=0)
    await aredis.set(settings.events_stream, "not a stream")
    job_id = await enqueue_validation(aredis, request(**fields), settings=settings)
    enqueued_ms = json.loads(await aredis.get(keys.job_key(job_id)))["et"]
    # The runs of both tries and one more, one by one: without the count, that one logs in a
    # third time.
    for _ in range(settings.max_tries + 1):
        worker = await burst(settings, max_burst_jobs=1)
        assert worker.jobs_retried == 1  # the event could not be written
    assert len(imap.logins) == len(smtp.logins) == settings.max_tries
    counted = await aredis.get(keys.attempts_key(event_id(job_id, enqueued_ms)))
    assert int(counted) == settings.max_tries

    await aredis.delete(settings.events_stream)  # Redis takes writes again
    with capture_logs() as logs:
        await burst(settings)
    assert [e["attempts"] for e in logs if e["event"] == "tries_used_up"] == [settings.max_tries]
    events = stream_events(shared_redis.client(), settings.events_stream)
    assert [e["type"] for e in events] == [FAILED]
    assert events[0]["id"] == event_id(job_id, enqueued_ms)  # the id a rerun would give it too
    assert events[0]["data"]["inbox_id"] == events[0]["subject"] == "inbox-1"
    assert (events[0]["data"]["reason"], events[0]["data"]["attempts"]) == (TRIES_USED_UP, settings.max_tries)
    assert len(imap.logins) == settings.max_tries
    assert json.loads(await aredis.get(keys.result_key(job_id)))["r"] == events[0]


class RevokingImap(ImapScript):
    """Throttles the login, and first takes away the worker's right to write host pauses (its
    Redis user's key patterns), so the pause the worker then writes is refused."""

    def __init__(self, revoke: Callable[[], None], **options: Any) -> None:
        super().__init__(**options)
        self._revoke = revoke

    async def _answer_login(self, reader: Any, writer: Any, tag: str) -> bool | None:
        self._revoke()
        return await super()._answer_login(reader, writer, tag)


async def test_a_refused_host_pause_keeps_the_checks_verdict(
    shared_redis, aredis, fake_server, pki, ca_file, unpaused_loopback
) -> None:
    user, password = f"worker-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    settings = make_settings(
        shared_redis,
        max_tries=1,
        tls_ca_file=ca_file,
        metrics_port=0,
        redis_url=f"redis://{user}:{password}@{shared_redis.host}:{shared_redis.port}/0",
    )
    # Everything the worker writes, host pauses (keys.PACING_BACKOFF_PREFIX) excepted.
    writable = [
        "arq:*",
        settings.queue_name + "*",
        settings.events_stream,
        *(
            prefix + "*"
            for prefix in (
                keys.DONE_KEY_PREFIX,
                keys.ATTEMPTS_KEY_PREFIX,
                keys.WORKER_ALIVE_PREFIX,
                keys.INBOX_KEY_PREFIX,
                keys.INBOXES_DUE_KEY,
                keys.INBOXES_COUNTS_KEY,
                keys.PACING_SLOTS_PREFIX,
                keys.INBOX_LOCK_PREFIX,
                keys.INBOX_BACKOFF_PREFIX,
            )
        ),
    ]
    admin = shared_redis.client()
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])

    def revoke() -> None:
        admin.acl_setuser(user, reset_keys=True, keys=writable)

    imap = RevokingImap(revoke, login_reply=THROTTLED.format(ms=1_500))
    _, fields = fake_pair(fake_server, pki, imap)
    try:
        await enqueue_validation(aredis, request(**fields), settings=settings)
        worker = await burst(settings, max_burst_jobs=1)
    finally:
        admin.acl_deluser(user)
    events = stream_events(admin, settings.events_stream)
    assert [e["type"] for e in events] == [COMPLETED]
    assert (events[0]["data"]["reason"], events[0]["data"]["attempts"]) == ("TOO_MANY_ATTEMPTS", 1)
    assert (worker.jobs_complete, worker.jobs_retried) == (1, 0)
    assert await aredis.zcard(settings.queue_name) == 0
    assert len(imap.logins) == 1
    assert not await aredis.exists(LOOPBACK_PAUSE)  # the pause was refused


async def test_the_attempt_counter_refuses_a_check_past_max_tries(redis) -> None:
    # The count a check that waited for its host slots (or ran without pacing) starts with.
    counter = AttemptCounter(redis, "test:attempts", ttl_s=60, fallback=0)
    for counted in (1, 2):
        await counter.start(max_tries=2)
        assert counter.value == counted
    with pytest.raises(TriesUsedUp) as raised:
        await counter.start(max_tries=2)
    assert raised.value.attempts == 2 and counter.value == 2
    assert int(await redis.get("test:attempts")) == 2  # nothing counted for a check not made
