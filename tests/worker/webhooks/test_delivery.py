"""One POST against a real receiver on loopback: signatures, what each answer means, the bounds
on time and on what is read, and where a webhook may not go."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest
from standardwebhooks import Webhook

from jobs.options import CheckOptions
from tests.jobs.checks import ALLOW_LOOPBACK
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, close_on_accept
from tests.servers.webhook_receiver import Answer, WebhookReceiver
from worker.webhooks import delivery, signing
from worker.webhooks.delivery import Outcome
from worker.webhooks.endpoints import Endpoint
from worker.webhooks.signing import SigningSecret

BODY = b'{"id":"evt-1","type":"inbox.validation.failed"}'
TIMEOUT_S = 2.0
SHORT_TIMEOUT_S = 0.3
LOOPBACK_OPTIONS = CheckOptions(destinations=ALLOW_LOOPBACK)


def endpoint(url: str, *keys: SigningSecret) -> Endpoint:
    return Endpoint("ep_test", url, (), 0.0, "", keys or (SigningSecret.generate(),))


async def post(
    url: str, *keys: SigningSecret, options: CheckOptions = LOOPBACK_OPTIONS, timeout_s: float = TIMEOUT_S
) -> delivery.Attempt:
    async with delivery.client(options, timeout_s=timeout_s, max_connections=1) as client:
        return await delivery.post(client, endpoint(url, *keys), "evt-1", BODY, timeout_s)


def test_the_signature_verifies_with_the_standardwebhooks_library() -> None:
    secret = SigningSecret.generate()
    headers = signing.headers("evt-1", int(time.time()), BODY, [secret])
    assert Webhook(secret.reveal()).verify(BODY, headers) == {
        "id": "evt-1",
        "type": "inbox.validation.failed",
    }
    assert secret.reveal() not in repr(secret) and secret.reveal() not in str(secret)


def test_while_a_rotated_secret_overlaps_either_one_verifies() -> None:
    new, old = SigningSecret.generate(), SigningSecret.generate()
    headers = signing.headers("evt-1", int(time.time()), BODY, [new, old])
    for secret in (new, old):
        Webhook(secret.reveal()).verify(BODY, headers)


async def test_a_2xx_is_delivered_with_the_event_as_body_and_its_id(
    receiver: Callable[..., WebhookReceiver],
) -> None:
    secret = SigningSecret.generate()
    hook = receiver(secret.reveal())
    hook.default = Answer(204)
    attempt = await post(hook.url, secret)
    assert attempt.outcome is Outcome.DELIVERED and attempt.status == 204
    [request] = hook.received
    assert request.verified and request.body == BODY and request.event_id == "evt-1"
    assert request.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (410, Outcome.GONE),
        (404, Outcome.FAILED),
        (400, Outcome.FAILED),
        (301, Outcome.FAILED),
    ],
)
async def test_what_each_answer_means(
    status: int, outcome: Outcome, receiver: Callable[..., WebhookReceiver]
) -> None:
    hook = receiver()
    hook.default = Answer(status, headers={"location": "http://127.0.0.1:1/elsewhere"})
    attempt = await post(hook.url)
    assert (attempt.outcome, attempt.status) == (outcome, status)
    assert len(hook.received) == 1  # a redirect is not followed


async def test_retry_after_is_read_in_seconds_or_as_a_date(receiver: Callable[..., WebhookReceiver]) -> None:
    hook = receiver()
    hook.plan(
        Answer(429, headers={"retry-after": "7"}),
        Answer(503, headers={"retry-after": formatdate(time.time() + 60, usegmt=True)}),
    )
    assert (await post(hook.url)).retry_after_s == 7
    later = (await post(hook.url)).retry_after_s
    assert later is not None and 55 <= later <= 60


@pytest.mark.parametrize("header", ["\u00b2", "Mon, 01 Jan 99999999999 00:00:00 GMT"])
async def test_a_retry_after_that_is_no_number_or_date_is_ignored_not_a_crash(
    receiver: Callable[..., WebhookReceiver], header: str
) -> None:
    # A superscript two passes str.isdigit() and fails float(); a year past datetime's range
    # overflows. Either escaping post() would leave the delivery unsettled, sent again forever.
    hook = receiver()
    hook.default = Answer(429, headers={"retry-after": header})
    attempt = await post(hook.url)
    assert (attempt.outcome, attempt.retry_after_s) == (Outcome.RETRY, None)


def test_backoff_doubles_with_jitter_up_to_the_cap_and_retry_after_wins_up_to_the_cap() -> None:
    rng = random.Random(1)
    delays = [delivery.next_delay_s(n, 1.0, 30.0, None, rng) for n in range(1, 9)]
    for n, delay in enumerate(delays, start=1):
        assert min(30.0, 2 ** (n - 1)) * delivery.JITTER_FLOOR <= delay <= min(30.0, 2 ** (n - 1))
    assert delivery.next_delay_s(1, 1.0, 30.0, 20.0, rng) == 20.0
    assert delivery.next_delay_s(1, 1.0, 30.0, 86_400.0, rng) == 30.0


async def test_no_answer_is_retried_after_the_timeout(receiver: Callable[..., WebhookReceiver]) -> None:
    hook = receiver()
    hook.default = hook.hang()
    attempt = await post(hook.url, timeout_s=SHORT_TIMEOUT_S)
    assert attempt.outcome is Outcome.RETRY and attempt.status is None
    assert SHORT_TIMEOUT_S <= attempt.seconds < SHORT_TIMEOUT_S + 1


async def test_a_refused_connection_is_retried(receiver: Callable[..., WebhookReceiver]) -> None:
    from tests.jobs.checks import CLOSED_PORT

    attempt = await post(f"http://127.0.0.1:{CLOSED_PORT}/hook")
    assert attempt.outcome is Outcome.RETRY and attempt.detail.startswith("connection failed")


async def test_an_endless_response_body_is_read_only_up_to_the_bound(
    receiver: Callable[..., WebhookReceiver],
) -> None:
    hook = receiver()
    hook.default = Answer(200, endless=True)
    attempt = await post(hook.url)
    assert attempt.outcome is Outcome.DELIVERED
    # Read entirely, it would run until the timeout; the client hung up after a few KiB, and the
    # receiver managed to write only what the socket buffers took.
    assert attempt.seconds < TIMEOUT_S / 2
    assert hook.sent_body_bytes < 32 * 1024 * 1024, hook.sent_body_bytes


async def test_a_name_resolving_to_loopback_is_refused_at_connect_unless_allowed(
    receiver: Callable[..., WebhookReceiver],
) -> None:
    hook = receiver()
    url = hook.url.replace("127.0.0.1", "localhost")
    attempt = await post(url, options=CheckOptions())
    assert attempt.outcome is Outcome.FAILED and "localhost" in attempt.detail
    assert hook.received == []  # nothing reached it
    assert (await post(url)).outcome is Outcome.DELIVERED  # allowed: INBOXCHECK_ALLOW_NETWORKS


async def test_a_name_is_resolved_as_the_checks_resolve_it(receiver: Callable[..., WebhookReceiver]) -> None:
    hook = receiver()
    url = hook.url.replace("127.0.0.1", "hooks.inboxcheck.test")  # a name no DNS knows
    pins = {("hooks.inboxcheck.test", urlsplit(url).port or 0): ("127.0.0.1",)}  # INBOXCHECK_RESOLVE
    assert (
        await post(url, options=CheckOptions(destinations=ALLOW_LOOPBACK, pins=pins))
    ).outcome is Outcome.DELIVERED
    assert len(hook.received) == 1


async def test_https_connects_to_the_judged_address_and_verifies_the_name(
    receiver: Callable[..., WebhookReceiver], pki: PKI
) -> None:
    good = receiver(ssl_context=pki.valid.ssl_context)
    wrong = receiver(ssl_context=pki.wrong_host.ssl_context)
    for hook, outcome in ((good, Outcome.DELIVERED), (wrong, Outcome.RETRY)):
        url = hook.url.replace("127.0.0.1", "localhost")  # resolved, judged, then TLS to the name
        options = CheckOptions(destinations=ALLOW_LOOPBACK, ca_file=str(pki.ca_file))
        async with delivery.client(options, timeout_s=TIMEOUT_S, max_connections=1) as client:
            attempt = await delivery.post(client, endpoint(url), "evt-1", BODY, TIMEOUT_S)
        assert attempt.outcome is outcome, attempt
    assert len(good.received) == 1 and wrong.received == []


async def test_a_proxy_named_in_the_environment_is_not_used(
    receiver: Callable[..., WebhookReceiver],
    fake_server: Callable[..., FakeServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = fake_server(close_on_accept)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    secret = SigningSecret.generate()
    hook = receiver(secret.reveal())
    hook.default = Answer(204)
    attempt = await post(hook.url, secret)
    assert attempt.outcome is Outcome.DELIVERED and len(hook.received) == 1
    assert proxy.connections == 0
