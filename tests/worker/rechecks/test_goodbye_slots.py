"""A host's connection cap counts a connection until it is closed: the event of a check goes out
before its QUIT and LOGOUT are answered, and its host slots (and the inbox lock) are given back
only once the goodbyes end, within their bound. A real arq worker in burst mode, a real
redis-server, scripted mail servers on loopback that never answer QUIT or LOGOUT."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis

from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript
from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until_async
from tests.worker.support import burst, make_settings, request, stream_events
from worker.messages import keys
from worker.messages.producer import enqueue_validation
from worker.rechecks.pacing import Pacer, PacingPolicy
from worker.settings import Settings

LOOPBACK = "127.0.0.1"
STEP_S = 2.0
# Far beyond the goodbyes' bound (STEP_S here): the silent servers would hold on for ever.
WAIT_S = 10.0


@dataclass(frozen=True)
class Silent:
    """Mail servers that let the check in, then never answer QUIT or LOGOUT."""

    smtp: SmtpScript
    imap: ImapScript
    fields: dict[str, Any]
    ca_file: str

    def settings(self, redis_server: RedisServer, **changes: Any) -> Settings:
        return make_settings(
            redis_server,
            step_timeout=STEP_S,
            check_timeout=STEP_S,
            tls_ca_file=self.ca_file,
            metrics_port=0,
            **changes,
        )

    async def all_gone(self) -> bool:
        """Both connections closed by the worker (the servers never close them)."""
        waits = [asyncio.to_thread(server.gone.wait, WAIT_S) for server in (self.smtp, self.imap)]
        return all(await asyncio.gather(*waits))


@pytest.fixture
def silent(fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str) -> Silent:
    smtp = SmtpScript(auth_reply="235 2.7.0 Authentication successful", silent_after_quit=True)
    imap = ImapScript(login_reply="OK Logged in", silent_after_logout=True)
    fields = dict(
        smtp_port=fake_server(smtp).port,
        imap_port=fake_server(imap, ssl_context=pki.valid.ssl_context).port,
        smtp_use_tls=False,
        allow_insecure_auth=True,
    )
    return Silent(smtp, imap, fields, ca_file)


def _appended(aredis: Redis, settings: Settings) -> Callable[[], Any]:
    async def appended() -> bool:
        return bool(await aredis.xlen(settings.events_stream))

    return appended


async def test_slots_are_held_until_the_goodbyes_end_and_the_event_does_not_wait_for_them(
    shared_redis: RedisServer, aredis: Redis, silent: Silent, unpaused_loopback: None
) -> None:
    settings = silent.settings(shared_redis)
    pacer = Pacer(aredis, PacingPolicy())
    before = await pacer.in_use(LOOPBACK)
    await enqueue_validation(aredis, request("goodbye-1", **silent.fields), settings=settings)
    worker = asyncio.create_task(burst(settings))
    try:
        await wait_until_async(_appended(aredis, settings), limit_s=WAIT_S, what="the event")
        # The verdict is out while both servers still owe their goodbye's answer, and both
        # connections still count against the host's cap, under the inbox's lock.
        assert not (silent.smtp.gone.is_set() or silent.imap.gone.is_set())
        assert await pacer.in_use(LOOPBACK) == before + 2
        assert await aredis.exists(keys.inbox_lock_key("goodbye-1"))
        # The worker ends the goodbyes itself, at their bound: the servers never would.
        assert await silent.all_gone()
        await asyncio.wait_for(worker, WAIT_S)
    finally:
        if not worker.done():
            worker.cancel()
    assert silent.smtp.quit_received.is_set() and silent.imap.logout_received.is_set()
    assert await pacer.in_use(LOOPBACK) == before
    assert not await aredis.exists(keys.inbox_lock_key("goodbye-1"))
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    assert event["data"]["status"] == "valid"


async def test_a_check_that_waited_for_a_full_host_closes_its_connections_before_its_slots_go(
    shared_redis: RedisServer, aredis: Redis, silent: Silent, unpaused_loopback: None
) -> None:
    # Pacing's slower way in (the host was full, the slots waited for) gives them back as soon
    # as the check returns, not with the event: there the verdict waits for the goodbyes.
    # Time enough to wait for the slots within the job (hooks.slot_wait_s), rather than retry.
    settings = silent.settings(shared_redis, job_timeout=4 * WAIT_S)
    pacer = Pacer(aredis, PacingPolicy(default_limit=settings.default_host_limit))
    before = await pacer.in_use(LOOPBACK)
    others = settings.default_host_limit - before - 1  # one slot left: the check needs two
    lease, _ = await pacer.try_acquire(LOOPBACK, others)
    assert lease is not None
    await enqueue_validation(aredis, request("goodbye-2", **silent.fields), settings=settings)
    worker = asyncio.create_task(burst(settings))
    try:

        async def waiting() -> bool:  # the job holds the inbox's lock and waits for slots
            return bool(await aredis.exists(keys.inbox_lock_key("goodbye-2")))

        await wait_until_async(waiting, limit_s=WAIT_S, what="the job waiting for the full host")
        await pacer.release(LOOPBACK, lease, others)
        await wait_until_async(_appended(aredis, settings), limit_s=WAIT_S, what="the event")
        assert silent.smtp.gone.is_set() and silent.imap.gone.is_set()
        await asyncio.wait_for(worker, WAIT_S)
        [event] = stream_events(shared_redis.client(), settings.events_stream)
        assert (event["data"]["status"], event["data"]["attempts"]) == ("valid", 1)  # not retried
    finally:
        if not worker.done():
            worker.cancel()
    assert await pacer.in_use(LOOPBACK) == before


async def test_a_release_failing_after_the_event_is_written_leaves_the_job_finished(
    shared_redis: RedisServer, aredis: Redis, silent: Silent, unpaused_loopback: None
) -> None:
    settings = silent.settings(shared_redis)
    lock = keys.inbox_lock_key("goodbye-3")
    await enqueue_validation(aredis, request("goodbye-3", **silent.fields), settings=settings)
    try:
        with structlog.testing.capture_logs() as logs:
            worker = asyncio.create_task(burst(settings))
            try:
                await wait_until_async(_appended(aredis, settings), limit_s=WAIT_S, what="the event")
                # While the goodbyes still hold the slots, the lock turns into something the
                # release cannot read: it fails (WRONGTYPE) after the event is written.
                async with aredis.pipeline(transaction=True) as pipe:
                    pipe.get(lock).delete(lock).hset(lock, "held", "elsewhere")
                    token, *_ = await pipe.execute()
                assert token is not None, "released before the test could spoil the lock"
                done = await asyncio.wait_for(worker, WAIT_S)
            finally:
                if not worker.done():
                    worker.cancel()
        # The job ended with its event: not sent back to the queue, no second run.
        assert (done.jobs_complete, done.jobs_retried) == (1, 0)
        assert await aredis.zcard(settings.queue_name) == 0
        assert [e["event"] for e in logs if e["event"] == "release_failed"] == ["release_failed"]
        [event] = stream_events(shared_redis.client(), settings.events_stream)
        assert (event["data"]["status"], event["data"]["attempts"]) == ("valid", 1)
        assert (len(silent.smtp.logins), len(silent.imap.logins)) == (1, 1)
    finally:
        await aredis.delete(lock)
