"""Which replies pause a host for every inbox: a throttle does; RFC 4954's temporary
authentication failure (454 4.7.0 without a word of rate) does not."""

from __future__ import annotations

import pytest

from tests.servers.fakes import ImapScript, SmtpScript
from tests.worker.runtime.test_job import LOOPBACK_PAUSE, unpaused_loopback
from tests.worker.support import burst, make_settings, request, stream_events
from worker.messages.producer import enqueue_validation

__all__ = ["unpaused_loopback"]  # a fixture, used by name


@pytest.mark.parametrize(
    ("reply", "reason", "pauses"),
    [
        (
            "454 4.7.0 Cannot authenticate due to temporary system problem. Try again later.",
            "TEMPORARY_AUTH_FAILURE",
            False,
        ),
        ("454 4.7.0 Too many login attempts, please try again later.", "TOO_MANY_ATTEMPTS", True),
    ],
    ids=["temporary", "throttle"],
)
async def test_only_a_throttle_pauses_the_host(
    shared_redis, aredis, fake_server, pki, ca_file, unpaused_loopback, reply: str, reason: str, pauses: bool
) -> None:
    smtp_port = fake_server(SmtpScript(auth_reply=reply)).port
    imap_port = fake_server(ImapScript(login_reply="OK Logged in"), ssl_context=pki.valid.ssl_context).port
    fields = dict(smtp_port=smtp_port, imap_port=imap_port, smtp_use_tls=False, allow_insecure_auth=True)
    settings = make_settings(shared_redis, max_tries=1, tls_ca_file=ca_file, metrics_port=0)
    await enqueue_validation(aredis, request(**fields), settings=settings)
    await burst(settings, max_burst_jobs=1)
    (event,) = stream_events(shared_redis.client(), settings.events_stream)
    assert (event["data"]["reason"], event["data"]["retryable"]) == (reason, True)
    assert (await aredis.pttl(LOOPBACK_PAUSE) > 0) is pauses
