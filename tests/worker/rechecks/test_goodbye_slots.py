"""A host's connection cap counts a connection until it is closed: the event of a check goes out
before its QUIT and LOGOUT are answered, and its host slots (and the inbox lock) are given back
only once the goodbyes end, within their bound. A real arq worker in burst mode, a real
redis-server, scripted mail servers on loopback that never answer QUIT or LOGOUT."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from jobs.options import GOODBYE_TIMEOUT_S
from tests.jobs.checks import TIMEOUT_SLACK_S
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript
from tests.servers.redis import RedisServer
from tests.worker.support import burst, make_settings, request, stream_events
from worker.messages import keys
from worker.messages.producer import enqueue_validation
from worker.rechecks.pacing import Pacer, PacingPolicy

LOOPBACK = "127.0.0.1"
STEP_S = 2.0
BOUND_S = min(STEP_S, GOODBYE_TIMEOUT_S)
WAIT_S = 10.0


async def _until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S}s: {what}"
        await asyncio.sleep(0.01)


async def test_slots_are_held_until_the_goodbyes_end_and_the_event_does_not_wait_for_them(
    shared_redis: RedisServer,
    aredis: Redis,
    fake_server: Callable[..., FakeServer],
    pki: PKI,
    ca_file: str,
    unpaused_loopback: None,
) -> None:
    smtp = SmtpScript(auth_reply="235 2.7.0 Authentication successful", silent_after_quit=True)
    imap = ImapScript(login_reply="OK Logged in", silent_after_logout=True)
    fields = dict(
        smtp_port=fake_server(smtp).port,
        imap_port=fake_server(imap, ssl_context=pki.valid.ssl_context).port,
        smtp_use_tls=False,
        allow_insecure_auth=True,
    )
    settings = make_settings(
        shared_redis, step_timeout=STEP_S, check_timeout=STEP_S, tls_ca_file=ca_file, metrics_port=0
    )
    pacer = Pacer(aredis, PacingPolicy())
    before = await pacer.in_use(LOOPBACK)
    await enqueue_validation(aredis, request("goodbye-1", **fields), settings=settings)
    worker = asyncio.create_task(burst(settings))
    try:

        async def appended() -> bool:
            return bool(await aredis.xlen(settings.events_stream))

        await _until(appended, "the event")
        event_at = time.monotonic()
        # The verdict is out while both servers still owe their goodbye's answer, and both
        # connections still count against the host's cap, under the inbox's lock.
        assert not (smtp.gone.is_set() or imap.gone.is_set())
        assert await pacer.in_use(LOOPBACK) == before + 2
        assert await aredis.exists(keys.inbox_lock_key("goodbye-1"))
        await asyncio.wait_for(worker, WAIT_S)
    finally:
        if not worker.done():
            worker.cancel()
    assert time.monotonic() - event_at < BOUND_S + TIMEOUT_SLACK_S
    assert smtp.quit_received.is_set() and imap.logout_received.is_set()
    assert await asyncio.to_thread(smtp.gone.wait, TIMEOUT_SLACK_S)
    assert await asyncio.to_thread(imap.gone.wait, TIMEOUT_SLACK_S)
    assert await pacer.in_use(LOOPBACK) == before
    assert not await aredis.exists(keys.inbox_lock_key("goodbye-1"))
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    assert event["data"]["status"] == "valid"


async def test_a_check_that_waited_for_a_full_host_closes_its_connections_before_its_slots_go(
    shared_redis: RedisServer,
    aredis: Redis,
    fake_server: Callable[..., FakeServer],
    pki: PKI,
    ca_file: str,
    unpaused_loopback: None,
) -> None:
    # Pacing's slower way in (the host was full, the slots waited for) gives them back as soon
    # as the check returns, not with the event: there the verdict waits for the goodbyes.
    smtp = SmtpScript(auth_reply="235 2.7.0 Authentication successful", silent_after_quit=True)
    imap = ImapScript(login_reply="OK Logged in", silent_after_logout=True)
    fields = dict(
        smtp_port=fake_server(smtp).port,
        imap_port=fake_server(imap, ssl_context=pki.valid.ssl_context).port,
        smtp_use_tls=False,
        allow_insecure_auth=True,
    )
    # Time enough to wait for the slots within the job (hooks.slot_wait_s), rather than retry.
    settings = make_settings(
        shared_redis,
        step_timeout=STEP_S,
        check_timeout=STEP_S,
        job_timeout=4 * WAIT_S,
        tls_ca_file=ca_file,
        metrics_port=0,
    )
    pacer = Pacer(aredis, PacingPolicy(default_limit=settings.default_host_limit))
    before = await pacer.in_use(LOOPBACK)
    others = settings.default_host_limit - before - 1  # one slot left: the check needs two
    lease, _ = await pacer.try_acquire(LOOPBACK, others)
    assert lease is not None
    await enqueue_validation(aredis, request("goodbye-2", **fields), settings=settings)
    worker = asyncio.create_task(burst(settings))
    try:

        async def waiting() -> bool:  # the job holds the inbox's lock and waits for slots
            return bool(await aredis.exists(keys.inbox_lock_key("goodbye-2")))

        await _until(waiting, "the job waiting for the full host")
        await pacer.release(LOOPBACK, lease, others)

        async def appended() -> bool:
            return bool(await aredis.xlen(settings.events_stream))

        await _until(appended, "the event")
        assert smtp.gone.is_set() and imap.gone.is_set()
        await asyncio.wait_for(worker, WAIT_S)
        [event] = stream_events(shared_redis.client(), settings.events_stream)
        assert (event["data"]["status"], event["data"]["attempts"]) == ("valid", 1)  # not retried
    finally:
        if not worker.done():
            worker.cancel()
    assert await pacer.in_use(LOOPBACK) == before
