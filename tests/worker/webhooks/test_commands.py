"""`inboxcheck webhook ...` as a person runs it: the secret shown once, clear errors for bad
input, a test POST, a rotated secret, replayed dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from jobs.destinations import DestinationPolicy, parse_networks
from tests.jobs.checks import LOOPBACK_NETWORKS
from tests.servers.redis import RedisServer
from tests.servers.webhook_receiver import WebhookReceiver
from tests.worker.support import cli_env, run_cli
from tests.worker.webhooks.support import add_endpoint, append, failed_event, webhook_settings
from worker.messages import keys
from worker.webhooks.dispatcher import ledger_for
from worker.webhooks.endpoints import WebhookError, check_url, parse_event_types

PUBLIC = DestinationPolicy()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example/x", "must be https://"),
        ("http://hooks.example/x", "must be https://"),
        ("https://user:pw@hooks.example/x", "user name or password"),
        ("https://10.0.0.7/x", "not a public address"),
        ("https://[::1]/x", "not a public address"),
        ("https://hooks.example:99999/x", "not a URL"),
        ("https://hooks.example/a b", "spaces"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str, problem: str) -> None:
    with pytest.raises(WebhookError, match=problem) as caught:
        check_url(url, PUBLIC)
    assert str(caught.value).startswith("URL: ")


def test_metadata_addresses_stay_refused_inside_allowed_networks() -> None:
    policy = DestinationPolicy(allowed_networks=parse_networks("169.254.0.0/16"))
    with pytest.raises(WebhookError, match="not a public address"):
        check_url("https://169.254.169.254/latest", policy)
    assert check_url("https://169.254.10.10/hook", policy)


def test_loopback_may_be_plain_http_for_development() -> None:
    policy = DestinationPolicy(allowed_networks=parse_networks(LOOPBACK_NETWORKS))
    for url in ("http://127.0.0.1:8000/hook", "http://localhost:8000/hook", "http://[::1]:8000/hook"):
        assert check_url(url, policy) == url


def test_unknown_event_types_are_named() -> None:
    assert parse_event_types("inbox.health.changed, inbox.validation.failed") == (
        "inbox.health.changed",
        "inbox.validation.failed",
    )
    with pytest.raises(WebhookError, match=r"^--events: unknown event type 'inbox\.nope'"):
        parse_event_types("inbox.health.changed,inbox.nope")


async def test_add_prints_the_secret_once_and_test_posts_a_signed_event(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis)
    env = {**cli_env(settings), "INBOXCHECK_ALLOW_NETWORKS": LOOPBACK_NETWORKS}
    hook = receiver()
    added = run_cli("webhook", "add", hook.url, "--events", "inbox.health.changed", "--json", env=env)
    assert added.returncode == 0, added.stderr
    endpoint = json.loads(added.stdout)
    hook.secret = endpoint["secret"]
    assert hook.secret.startswith("whsec_") and endpoint["events"] == ["inbox.health.changed"]

    listed = run_cli("webhook", "list", "--json", env=env)
    [row] = json.loads(listed.stdout)
    assert row["id"] == endpoint["id"] and row["url"] == hook.url and "secret" not in row
    assert hook.secret not in listed.stdout + listed.stderr

    tested = run_cli("webhook", "test", endpoint["id"], env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "delivered: HTTP 200" in tested.stdout
    [request] = hook.received
    assert request.verified and json.loads(request.body)["type"] == "inboxcheck.webhook.test"


async def test_a_rotated_secret_signs_and_the_previous_one_still_verifies_for_a_while(
    redis: Redis, shared_redis: RedisServer, receiver: Callable[..., WebhookReceiver]
) -> None:
    settings = webhook_settings(shared_redis)
    env = {**cli_env(settings), "INBOXCHECK_ALLOW_NETWORKS": LOOPBACK_NETWORKS}
    hook = receiver()
    endpoint, old = await add_endpoint(redis, settings, hook.url)
    rotated = run_cli("webhook", "rotate-secret", endpoint.id, "--json", env=env)
    new = json.loads(rotated.stdout)["secret"]
    assert new != old
    for secret in (new, old):
        hook.secret = secret
        assert run_cli("webhook", "test", endpoint.id, env=env).returncode == 0
        assert hook.received[-1].verified


async def test_bad_input_gets_one_line_naming_the_field(shared_redis: RedisServer, redis: Redis) -> None:
    settings = webhook_settings(shared_redis)
    env = cli_env(settings)
    bad_url = run_cli("webhook", "add", "http://hooks.example/x", env=env)
    bad_type = run_cli("webhook", "add", "https://hooks.example/x", "--events", "inbox.nope", env=env)
    no_key = run_cli("webhook", "add", "https://hooks.example/x", env={**env, "INBOXCHECK_SECRET_KEY": ""})
    unknown = run_cli("webhook", "remove", "ep_nope", env=env)
    for result, text in (
        (bad_url, "inboxcheck: URL: must be https://"),
        (bad_type, "inboxcheck: --events: unknown event type 'inbox.nope'"),
        (no_key, "inboxcheck: INBOXCHECK_SECRET_KEY: needed"),
        (unknown, "inboxcheck: ID: no webhook endpoint 'ep_nope'"),
    ):
        assert result.returncode == 2 and result.stderr.startswith(text), result.stderr
        assert "Traceback" not in result.stderr
    assert await redis.scard(keys.WEBHOOK_ENDPOINTS_KEY) == 0


async def test_replay_queues_the_dead_letters_again_and_remove_drops_the_queue(
    redis: Redis, shared_redis: RedisServer
) -> None:
    settings = webhook_settings(shared_redis)
    env = cli_env(settings)
    endpoint, _ = await add_endpoint(redis, settings, "https://hooks.example/x")
    ledger = ledger_for(redis, settings)
    [event_id] = await append(redis, settings, failed_event())
    [(entry_id, fields)] = (
        await redis.xreadgroup(settings.webhook_group, "c", {settings.events_stream: ">"})
    )[0][1]
    await ledger.fan_out(entry_id, entry_id, fields["event"], fields["type"], event_id, [endpoint.id])
    [claimed] = await ledger.claim(endpoint.id, 1, 10)
    await ledger.give_up(claimed, "not retried: HTTP 404", 404)
    assert await redis.xpending(settings.events_stream, settings.webhook_group) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }

    replayed = run_cli("webhook", "replay", env=env)
    assert replayed.returncode == 0 and "replayed 1 dead letter" in replayed.stdout
    assert await ledger.dead_letters() == [] and await ledger.queued(endpoint.id) == 1
    [again] = await ledger.claim(endpoint.id, 1, 10)
    assert (again.event_id, again.body.decode()) == (event_id, fields["event"])

    removed = run_cli("webhook", "remove", endpoint.id, env=env)
    assert removed.returncode == 0 and "1 queued deliveries dropped" in removed.stdout
    assert await ledger.queued(endpoint.id) == 0
    assert [k async for k in redis.scan_iter(keys.WEBHOOK_DELIVERY_PREFIX + "*")] == []
