"""A pinned host is paced by its name, not by the address it is pinned to (README, "Pinning a
host"): the address being at its cap holds no check of the name back, and the name being at its
cap holds one back, whatever room the address has. A real arq worker in burst mode pinning the
name through INBOXCHECK_RESOLVE, a real redis-server, scripted mail servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript
from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until_async
from tests.worker.support import burst, make_settings, request, stream_events
from worker.messages import keys
from worker.messages.producer import enqueue_validation
from worker.rechecks.pacing import Pacer, PacingPolicy

LOOPBACK = "127.0.0.1"
NAME = "mail.pinned.test"
INBOX = "pinned-1"
STEP_S = 2.0
WAIT_S = 10.0


async def test_a_pinned_host_waits_for_its_names_slots_not_its_addresses(
    shared_redis: RedisServer,
    aredis: Redis,
    fake_server: Callable[..., FakeServer],
    pki: PKI,
    ca_file: str,
) -> None:
    smtp = SmtpScript(auth_reply="235 2.7.0 Authentication successful")
    imap = ImapScript(login_reply="OK Logged in")
    smtp_port = fake_server(smtp).port
    imap_port = fake_server(imap, ssl_context=pki.server_cert("pinned", NAME).ssl_context).port
    settings = make_settings(
        shared_redis,
        resolve=f"{NAME}:{smtp_port}:{LOOPBACK},{NAME}:{imap_port}:{LOOPBACK}",
        tls_ca_file=ca_file,
        step_timeout=STEP_S,
        check_timeout=STEP_S,
        # Time enough to wait for the name's slots within the job (hooks.slot_wait_s).
        job_timeout=4 * WAIT_S,
        metrics_port=0,
    )
    cap = settings.default_host_limit
    pacer = Pacer(aredis, PacingPolicy(default_limit=cap))
    # The address at its cap (checks of inboxes that name 127.0.0.1 itself), the name one slot
    # short of the two this check needs (SMTP and IMAP both on it).
    address_slots = cap - await pacer.in_use(LOOPBACK)
    address_lease, _ = await pacer.try_acquire(LOOPBACK, address_slots)
    name_lease, _ = await pacer.try_acquire(NAME, cap - 1)
    assert address_lease is not None and name_lease is not None
    pinned = request(
        INBOX,
        smtp_host=NAME,
        smtp_port=smtp_port,
        imap_host=NAME,
        imap_port=imap_port,
        smtp_use_tls=False,
        allow_insecure_auth=True,
    )
    await enqueue_validation(aredis, pinned, settings=settings)
    worker = asyncio.create_task(burst(settings))
    try:

        async def waiting() -> bool:  # the job holds the inbox's lock and waits for slots
            return bool(await aredis.exists(keys.inbox_lock_key(INBOX)))

        await wait_until_async(waiting, limit_s=WAIT_S, what="the job waiting for the full name")
        assert smtp.logins == [] and imap.logins == []
        await pacer.release(NAME, name_lease, cap - 1)

        async def appended() -> bool:
            return bool(await aredis.xlen(settings.events_stream))

        # The address is still full: only the name's slots let the check in.
        await wait_until_async(appended, limit_s=WAIT_S, what="the event, once the name had room")
        assert await pacer.in_use(LOOPBACK) == cap
        await asyncio.wait_for(worker, WAIT_S)
    finally:
        if not worker.done():
            worker.cancel()
        await pacer.release(LOOPBACK, address_lease, address_slots)
        await pacer.release(NAME, name_lease, cap - 1)
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    assert (event["data"]["status"], event["data"]["attempts"]) == ("valid", 1)
    assert (len(smtp.logins), len(imap.logins)) == (1, 1)
    assert await pacer.in_use(NAME) == 0
