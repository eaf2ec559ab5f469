"""The worker refuses non-public destinations unless its settings allow them: end to end through a
real arq worker (burst mode) and redis-server, against a mail server on loopback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.servers.fakes import FakeServer, SmtpScript
from tests.worker.support import burst, make_settings, request, stream_events
from worker.messages.events import COMPLETED
from worker.messages.producer import enqueue_validation
from worker.settings import Settings


async def test_a_job_to_loopback_is_refused_by_default_and_nothing_reaches_it(
    shared_redis, aredis, fake_server: Callable[..., FakeServer]
) -> None:
    server = fake_server(SmtpScript(ehlo_extensions=["AUTH PLAIN"]))
    settings = make_settings(shared_redis, allow_networks="")  # as INBOXCHECK_ALLOW_NETWORKS unset
    await enqueue_validation(aredis, request(port=server.port), settings=settings)
    await burst(settings)
    events = stream_events(shared_redis.client(), settings.events_stream)
    assert len(events) == 1
    data = events[0]["data"]
    assert (events[0]["type"], data["status"], data["error_code"], data["reason"]) == (
        COMPLETED,
        "invalid",
        "CONNECTION_FAILED",
        "DESTINATION_REFUSED",
    )
    assert (data["smtp"]["reason"], data["imap"]["reason"]) == ("DESTINATION_REFUSED", "DESTINATION_REFUSED")
    # Not a passing fault: one attempt, no retry.
    assert (data["retryable"], data["attempts"]) == (False, 1)
    assert "INBOXCHECK_ALLOW_NETWORKS" in data["resolution"]
    assert server.connections == 0


async def test_a_job_to_an_allowed_network_goes_through(
    shared_redis, aredis, fake_server: Callable[..., FakeServer]
) -> None:
    server = fake_server(SmtpScript(ehlo_extensions=["AUTH PLAIN"]))
    settings = make_settings(shared_redis, allow_networks="127.0.0.0/8")
    await enqueue_validation(aredis, request(port=server.port), settings=settings)
    await burst(settings)
    (event,) = stream_events(shared_redis.client(), settings.events_stream)
    # A real conversation: the server was reached and found to offer no STARTTLS.
    assert event["data"]["smtp"]["reason"] == "STARTTLS_UNAVAILABLE"
    assert server.connections >= 1


def test_allowed_networks_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOXCHECK_ALLOW_NETWORKS", "10.0.0.0/8, fd00::/8")
    policy = Settings().check_options().destinations
    assert policy.public_only
    assert policy.permits("10.1.2.3") and policy.permits("fd00::25")
    assert not policy.permits("127.0.0.1") and not policy.permits("192.168.0.1")
    monkeypatch.delenv("INBOXCHECK_ALLOW_NETWORKS")
    assert not Settings().check_options().destinations.permits("10.1.2.3")
