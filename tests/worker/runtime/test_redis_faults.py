"""Redis refusing writes (maxmemory with noeviction, a read-only replica after a failover) and
Redis slow: every job still ends in exactly one event, none lost, none doubled, and the worker
says so once, not once per job. A redis-server of the test's own, which the test turns."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis as redis_py
import structlog
from redis.asyncio import Redis

from jobs.time_units import MS_PER_S
from tests.jobs.checks import TIMEOUT_SLACK_S
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript
from tests.servers.ports import free_port
from tests.servers.proxy import delay_forwarder
from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until_async
from tests.worker.support import burst, make_settings, request, stream_events
from worker.messages import keys
from worker.messages.events import COMPLETED
from worker.messages.producer import enqueue_validation

JOBS = 3
INVALID = "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
WAIT_S = 10.0


def _refuse_by_maxmemory(admin: redis_py.Redis) -> Callable[[], None]:
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # any write is now over the limit
    return lambda: admin.config_set("maxmemory", "0")


def _refuse_as_replica(admin: redis_py.Redis) -> Callable[[], None]:
    # A failover turned this server into a replica (of a master that is not there yet).
    admin.replicaof("127.0.0.1", free_port())
    return lambda: admin.replicaof("NO", "ONE")


class RefusingImap(ImapScript):
    """Answers LOGIN, but first makes Redis refuse writes (once): the checks have their verdicts,
    and their events cannot be written."""

    def __init__(self, refuse: Callable[[], Callable[[], None]], **options: Any) -> None:
        super().__init__(**options)
        self._refuse = refuse
        self.accept: Callable[[], None] | None = None

    async def _answer_login(self, reader: Any, writer: Any, tag: str) -> bool | None:
        if self.accept is None:
            self.accept = self._refuse()
        return await super()._answer_login(reader, writer, tag)


@pytest.mark.parametrize("valid", [False, True], ids=["refused-login", "valid-login"])
@pytest.mark.parametrize(
    ("refuse", "appended_meanwhile"),
    [
        # At maxmemory Redis still lets a script that has written (the append's lease release)
        # go on: the events are appended once, and arq's bookkeeping after each job waits.
        (_refuse_by_maxmemory, JOBS),
        (_refuse_as_replica, 0),
    ],
    ids=["oom", "read-only"],
)
async def test_jobs_redis_refuses_to_finish_wait_and_end_in_exactly_one_event_each_logged_once(
    redis_server: RedisServer,
    fake_server: Callable[..., FakeServer],
    pki: PKI,
    ca_file: str,
    refuse: Callable[[redis_py.Redis], Callable[[], None]],
    appended_meanwhile: int,
    valid: bool,
) -> None:
    admin = redis_server.client()
    if valid:
        # Logged in, and neither server answers QUIT or LOGOUT: the goodbyes still hold the
        # connections when the event is first appended, so that try cannot give back the slots
        # in the append's script, which is what lets it through at maxmemory (worker.runtime.job).
        imap = RefusingImap(lambda: refuse(admin), login_reply="OK Logged in", silent_after_logout=True)
        smtp = SmtpScript(auth_reply="235 2.7.0 Authentication successful", silent_after_quit=True)
    else:
        # Both refuse the login: no goodbye is going on at the append.
        imap = RefusingImap(lambda: refuse(admin), login_reply=INVALID)
        smtp = SmtpScript()
    fields = dict(
        smtp_port=fake_server(smtp).port,
        imap_port=fake_server(imap, ssl_context=pki.valid.ssl_context).port,
        smtp_use_tls=False,
        allow_insecure_auth=True,
    )
    settings = make_settings(
        redis_server, max_tries=2, tls_ca_file=ca_file, metrics_port=0, health_check_interval=3600
    )
    client = Redis.from_url(redis_server.url)
    try:
        job_ids = [
            await enqueue_validation(client, request(f"inbox-{n}", **fields), settings=settings)
            for n in range(JOBS)
        ]
        with structlog.testing.capture_logs() as logs:
            worker = asyncio.create_task(burst(settings))

            def said(name: str) -> list[dict[str, Any]]:
                return [entry for entry in logs if entry["event"] == name]

            async def all_refused() -> bool:
                appended = await client.xlen(settings.events_stream)
                return (
                    len(imap.logins) == JOBS
                    and bool(said("redis_refusing_writes"))
                    and (appended == appended_meanwhile)
                )

            await wait_until_async(
                all_refused, limit_s=WAIT_S, what="every check ran and Redis refused its event"
            )
            # Refused: no job finished, every one still queued, no event written twice.
            assert await client.xlen(settings.events_stream) == appended_meanwhile
            for job_id in job_ids:
                assert await client.zscore(settings.queue_name, job_id) is not None
                assert not await client.exists(keys.result_key(job_id))
            assert imap.accept is not None
            imap.accept()
            await asyncio.wait_for(worker, WAIT_S)
        events = stream_events(admin, settings.events_stream)
        assert sorted(e["data"]["inbox_id"] for e in events) == [f"inbox-{n}" for n in range(JOBS)]
        assert {(e["type"], e["data"]["status"], e["data"]["attempts"]) for e in events} == {
            (COMPLETED, "valid" if valid else "invalid", 1)
        }
        for job_id in job_ids:
            result = json.loads(await client.get(keys.result_key(job_id)))
            assert result["r"] in events
        assert await client.zcard(settings.queue_name) == 0
        assert len(imap.logins) == JOBS  # the verdicts were kept: no second login
        # Once for the worker, not once per job; no job's own warning either.
        told = [entry["event"] for entry in logs if entry["event"].startswith(("redis_", "event_write"))]
        assert told == ["redis_refusing_writes", "redis_accepting_writes"]
    finally:
        await client.aclose()


REDIS_DELAY_S = 0.05  # each way: every Redis command takes at least 100 ms


async def test_a_slow_redis_neither_doubles_an_event_nor_stretches_a_check(
    redis_server: RedisServer, fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    slow = fake_server(delay_forwarder(redis_server.port, REDIS_DELAY_S))
    # IMAP says nothing after its greeting's TLS: each check ends at its step limit.
    imap = ImapScript(hang_after_login=True)
    fields = dict(
        smtp_port=fake_server(SmtpScript(auth_reply="235 2.7.0 Authentication successful")).port,
        imap_port=fake_server(imap, ssl_context=pki.valid.ssl_context).port,
        smtp_use_tls=False,
        allow_insecure_auth=True,
    )
    settings = make_settings(
        redis_server,
        redis_url=f"redis://127.0.0.1:{slow.port}/0",
        max_tries=1,
        tls_ca_file=ca_file,
        metrics_port=0,
        health_check_interval=3600,
    )
    client = Redis.from_url(redis_server.url)
    try:
        job_ids = [
            await enqueue_validation(client, request(f"slow-{n}", **fields), settings=settings)
            for n in range(JOBS)
        ]
        await asyncio.wait_for(burst(settings), WAIT_S)
        events = stream_events(redis_server.client(), settings.events_stream)
        assert sorted(e["data"]["inbox_id"] for e in events) == [f"slow-{n}" for n in range(JOBS)]
        for event in events:
            imap_result = event["data"]["imap"]
            assert (imap_result["error_code"], imap_result["failed_step"]) == ("TIMEOUT", "login")
            # The check's own time: its step limit, however slow Redis is around it.
            assert imap_result["duration_ms"] < (settings.step_timeout + TIMEOUT_SLACK_S) * MS_PER_S
        assert await client.zcard(settings.queue_name) == 0
        assert all([await client.exists(keys.result_key(job_id)) for job_id in job_ids])
    finally:
        await client.aclose()


async def test_a_worker_starting_while_redis_refuses_writes_waits_then_runs_each_job_once(
    redis_server: RedisServer, fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    admin = redis_server.client()
    imap = ImapScript(login_reply=INVALID)
    fields = dict(
        smtp_port=fake_server(SmtpScript(auth_reply="235 2.7.0 Authentication successful")).port,
        imap_port=fake_server(imap, ssl_context=pki.valid.ssl_context).port,
        smtp_use_tls=False,
        allow_insecure_auth=True,
    )
    settings = make_settings(redis_server, max_tries=2, tls_ca_file=ca_file, metrics_port=0)
    client = Redis.from_url(redis_server.url)
    try:
        for n in range(JOBS):
            await enqueue_validation(client, request(f"late-{n}", **fields), settings=settings)
        accept = _refuse_as_replica(admin)
        with structlog.testing.capture_logs() as logs:
            worker = asyncio.create_task(burst(settings))

            async def refused() -> bool:
                return any(entry["event"] == "redis_refusing_writes" for entry in logs)

            await wait_until_async(refused, limit_s=WAIT_S, what="the worker's claims were refused")
            # Nothing claimed, nothing checked: the jobs wait in the queue.
            assert imap.logins == [] and await client.zcard(settings.queue_name) == JOBS
            assert not worker.done()
            accept()
            await asyncio.wait_for(worker, WAIT_S)
        events = stream_events(admin, settings.events_stream)
        assert sorted(e["data"]["inbox_id"] for e in events) == [f"late-{n}" for n in range(JOBS)]
        assert len(imap.logins) == JOBS
        said = [entry["event"] for entry in logs if entry["event"].startswith("redis_")]
        assert said == ["redis_refusing_writes", "redis_accepting_writes"]
    finally:
        await client.aclose()
