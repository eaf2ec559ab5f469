"""Pacing and health as a running worker applies them (a real arq worker in burst mode, a real
redis-server, fake and real mail servers on loopback): "try again later" pauses the host for
every inbox on it, "too many connections" pauses only that inbox, and a certificate near its
expiry gets one `inbox.certificate.expiring` event."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from jobs.time_units import MS_PER_S
from tests.servers.certs import PKI, expiring_cert
from tests.servers.dovecot import Account, Dovecot
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript
from tests.servers.redis import RedisServer
from tests.servers.smtp import SmtpServer
from tests.worker.support import LOOPBACK_PAUSE, burst, make_settings, request, stream_events
from worker.messages import keys
from worker.messages.events import CERT_EXPIRING, COMPLETED, HEALTH_CHANGED
from worker.messages.producer import enqueue_validation
from worker.messages.sealing import sealer_for
from worker.rechecks.registry import Registry
from worker.settings import Settings

LOOPBACK = "127.0.0.1"
HOST_BACKOFF_S = 60.0
SMTP_OK = "235 2.7.0 Authentication successful"
IMAP_OK = "OK Logged in"
EXPIRES_IN_DAYS = 5
WARNING_DAYS = 14
EVERY_S = 60.0


class Mailbox:
    """A plain SMTP script and an IMAP script on implicit TLS, both on 127.0.0.1."""

    def __init__(self, fake_server: Callable[..., FakeServer], pki: PKI, smtp: SmtpScript, imap: ImapScript):
        self.smtp, self.imap = smtp, imap
        self.fields = dict(
            smtp_port=fake_server(smtp).port,
            imap_port=fake_server(imap, ssl_context=pki.valid.ssl_context).port,
            smtp_use_tls=False,
            allow_insecure_auth=True,
        )

    def logins(self) -> int:
        return len(self.smtp.logins) + len(self.imap.logins)


def worker_settings(shared_redis: RedisServer, ca_file: str) -> Settings:
    # A retry is never due before the test makes it so: each burst runs the job the test means.
    return make_settings(
        shared_redis,
        max_tries=2,
        retry_backoff=HOST_BACKOFF_S,
        tls_ca_file=ca_file,
        metrics_port=0,
        host_backoff=HOST_BACKOFF_S,
    )


async def run_once(settings: Settings, aredis: Redis, job_id: str) -> None:
    """Make the job due now and run the worker for that one job."""
    await aredis.zadd(settings.queue_name, {job_id: int(time.time() * MS_PER_S)})
    await burst(settings, max_burst_jobs=1)


async def held_back(aredis: Redis, settings: Settings, job_id: str) -> float:
    score = await aredis.zscore(settings.queue_name, job_id)
    assert score is not None
    return score / MS_PER_S - time.time()


async def test_try_again_later_pauses_the_host_for_every_inbox_on_it(
    shared_redis: RedisServer,
    aredis: Redis,
    fake_server: Any,
    pki: PKI,
    ca_file: str,
    unpaused_loopback: None,
) -> None:
    settings = worker_settings(shared_redis, ca_file)
    throttled = Mailbox(
        fake_server,
        pki,
        SmtpScript(auth_reply="454 4.7.0 Too many login attempts, please try again later."),
        ImapScript(login_reply=IMAP_OK),
    )
    first = await enqueue_validation(aredis, request("throttled", **throttled.fields), settings=settings)
    await run_once(settings, aredis, first)
    assert HOST_BACKOFF_S - 5 < await aredis.pttl(LOOPBACK_PAUSE) / MS_PER_S <= HOST_BACKOFF_S
    # Another inbox on the same host waits out the pause without logging in.
    other = Mailbox(fake_server, pki, SmtpScript(auth_reply=SMTP_OK), ImapScript(login_reply=IMAP_OK))
    second = await enqueue_validation(aredis, request("neighbour", **other.fields), settings=settings)
    await run_once(settings, aredis, second)
    assert other.logins() == 0
    assert await held_back(aredis, settings, second) > 0
    assert await aredis.xlen(settings.events_stream) == 0


@pytest.mark.parametrize(
    ("smtp_script", "imap_reply"),
    [
        ({"auth_reply": SMTP_OK}, "NO [ALERT] Too many simultaneous connections. (Failure)"),
        ({"greeting": "421 4.7.0 Too many concurrent SMTP connections; please try again later."}, IMAP_OK),
    ],
    ids=["imap", "smtp"],
)
async def test_too_many_connections_pauses_only_that_inbox(
    shared_redis: RedisServer,
    aredis: Redis,
    fake_server: Any,
    pki: PKI,
    ca_file: str,
    unpaused_loopback: None,
    smtp_script: dict[str, str],
    imap_reply: str,
) -> None:
    settings = worker_settings(shared_redis, ca_file)
    crowded = Mailbox(fake_server, pki, SmtpScript(**smtp_script), ImapScript(login_reply=imap_reply))
    inbox = f"crowded-{settings.queue_name}"
    job_id = await enqueue_validation(aredis, request(inbox, **crowded.fields), settings=settings)
    try:
        await run_once(settings, aredis, job_id)
        assert HOST_BACKOFF_S - 5 < await aredis.pttl(keys.inbox_backoff_key(inbox)) / MS_PER_S
        assert not await aredis.exists(LOOPBACK_PAUSE)
        logins = crowded.logins()
        # The host's other inboxes go on...
        other = Mailbox(fake_server, pki, SmtpScript(auth_reply=SMTP_OK), ImapScript(login_reply=IMAP_OK))
        neighbour = await enqueue_validation(aredis, request("neighbour", **other.fields), settings=settings)
        await run_once(settings, aredis, neighbour)
        [event] = stream_events(shared_redis.client(), settings.events_stream)
        assert (event["subject"], event["data"]["status"]) == ("neighbour", "valid")
        # ...while the crowded inbox's retry waits, sending nothing.
        await run_once(settings, aredis, job_id)
        assert crowded.logins() == logins
        assert await held_back(aredis, settings, job_id) > 0
    finally:
        await aredis.delete(keys.inbox_backoff_key(inbox))


async def test_a_certificate_near_expiry_gets_one_warning_event(
    shared_redis: RedisServer,
    redis: Redis,
    aredis: Redis,
    smtp_server: Callable[..., SmtpServer],
    pki: PKI,
    ca_file: str,
    dovecot: Dovecot,
    imap_user: Account,
) -> None:
    # `redis` flushes the server first: the registry's keys are not per queue.
    settings = make_settings(
        shared_redis, max_tries=1, tls_ca_file=ca_file, metrics_port=0, cert_warning_days=WARNING_DAYS
    )
    smtp = smtp_server(users={imap_user.email: imap_user.password}, cert=expiring_cert(pki, EXPIRES_IN_DAYS))
    fields = dict(
        email=imap_user.email,
        smtp_password=imap_user.password,
        smtp_port=smtp.port,
        smtp_security="starttls",
        imap_port=dovecot.imaps_port,
    )
    registry = Registry(aredis, queue_name=settings.queue_name, sealer=sealer_for(settings.secret_key))
    await registry.register(request("expiring", **fields), EVERY_S, spread_s=0)
    for recheck in range(2):  # the warning is for the certificate, not for every recheck
        later = time.time() + (recheck + 1) * (EVERY_S + 1)
        assert await registry.enqueue_due(claim_ttl_s=60, batch=10, now=later)
        await burst(settings)
    events = stream_events(shared_redis.client(), settings.events_stream)
    assert [e["data"]["status"] for e in events if e["type"] == COMPLETED] == ["valid", "valid"]
    assert [e["type"] for e in events].count(HEALTH_CHANGED) == 1  # pending -> healthy
    [warning_event] = [e for e in events if e["type"] == CERT_EXPIRING]
    assert warning_event["subject"] == "expiring"
    [warning] = warning_event["data"]["warnings"]
    assert (warning["protocol"], warning["host"]) == ("smtp", LOOPBACK)
    assert EXPIRES_IN_DAYS - 1 <= warning["days_left"] <= EXPIRES_IN_DAYS
