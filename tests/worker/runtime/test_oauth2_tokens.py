"""OAuth2 tokens in the worker: one refresh per inbox however many checks ask at once, the token
kept sealed, a rotated refresh token reaching the producer (one-off job) or the registry
(registered inbox), and no token, refresh token or client secret in Redis in clear."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from jobs import validate
from jobs.errors import Reason
from jobs.request import parse_request
from jobs.time_units import MS_PER_S, SECONDS_PER_DAY
from jobs.token_step import obtain_token
from tests.jobs.checks import options
from tests.servers.oauth import OAuthAccount, TokenEndpoint, json_reply
from tests.servers.redis import RedisServer
from tests.worker.support import KEY, burst, closed_port, make_settings, scan_for, stream_events
from worker.messages import keys
from worker.messages.events import COMPLETED, FAILED
from worker.messages.payload import request_destination
from worker.messages.producer import enqueue_validation
from worker.messages.sealing import USE_REGISTRY, USE_ROTATED, Sealer, destination_digest
from worker.rechecks.registry import Registry
from worker.runtime.job import TRIES_USED_UP
from worker.runtime.token_cache import RedisTokens

CONCURRENT_CHECKS = 8
HTTP_OK = 200
RECHECK_EVERY_S = 60.0


def oauth_request(
    user: OAuthAccount,
    provider: TokenEndpoint,
    inbox_id: str,
    oauth2: dict[str, Any] | None = None,
    **fields: Any,
) -> Any:
    return parse_request(
        {
            "inbox_id": inbox_id,
            "inbox_type": "CUSTOM_SMTP",
            "email": user.email,
            "auth": "oauth2",
            "oauth2": {
                "refresh_token": user.refresh_token,
                "client_id": user.client_id,
                "client_secret": user.client_secret,
                "token_url": provider.token_url,
                **(oauth2 or {}),
            },
            "smtp_host": "127.0.0.1",
            "imap_host": "127.0.0.1",
            **fields,
        }
    )


async def refreshes(provider: TokenEndpoint, user: OAuthAccount, refresh_token: str) -> bool:
    """Whether the endpoint takes `refresh_token`, as the producer's next request would send it."""
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            provider.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": user.client_id,
                "client_secret": user.client_secret,
            },
        )
    return answer.status_code == HTTP_OK


def secrets_of(user: OAuthAccount, provider: TokenEndpoint, *more: str) -> list[bytes]:
    values = [user.refresh_token, user.client_secret, *provider.issued_access_tokens, *more]
    return [value.encode() for value in values]


async def test_concurrent_checks_of_one_inbox_ask_the_token_endpoint_once(
    aredis: Redis, oauth_provider: TokenEndpoint, oauth_user: OAuthAccount, ca_file: str
) -> None:
    request = oauth_request(oauth_user, oauth_provider, "single-flight", smtp_port=1, imap_port=1)
    before = len(oauth_provider.token_requests)
    outcomes = await asyncio.gather(
        *(
            obtain_token(request, options(ca_file), RedisTokens(aredis, Sealer(KEY), lock_ttl_s=5))
            for _ in range(CONCURRENT_CHECKS)
        )
    )
    assert len(oauth_provider.token_requests) == before + 1
    tokens = {o.token.access_token for o in outcomes if o.token is not None}
    assert len(tokens) == 1 and sum(1 for o in outcomes if o.token and not o.token.from_cache) == 1
    later = await obtain_token(request, options(ca_file), RedisTokens(aredis, Sealer(KEY), lock_ttl_s=5))
    assert later.token is not None and later.token.from_cache and later.token.access_token in tokens
    assert len(oauth_provider.token_requests) == before + 1
    source = RedisTokens(aredis, Sealer(KEY), lock_ttl_s=5)
    ttl_ms = await aredis.pttl(source.token_key(request))
    assert 0 < ttl_ms <= (oauth_provider.expires_in - 60) * 1000  # gone a minute before the token
    assert not await aredis.exists(keys.oauth2_lock_key(source.cache_id(request)))  # released
    await source.discard(request)  # a kept token the mail server refused
    assert not await aredis.exists(source.token_key(request))


@pytest.mark.parametrize("expires_in", [10**30, "9" * 5_000], ids=["past-redis", "past-int"])
async def test_a_lifetime_past_a_day_keeps_the_token_a_day(
    aredis: Redis, token_endpoint: Callable[..., TokenEndpoint], ca_file: str, expires_in: Any
) -> None:
    # An endpoint's number is outside input: 10**30 s made Redis refuse the SET, 5,000 digits
    # made int() raise, and every attempt refreshed (and rotated) again.
    endpoint = token_endpoint()
    endpoint.fail_with(json_reply(HTTP_OK, {"access_token": "a" * 2_000, "expires_in": expires_in}))
    account = OAuthAccount("ann@inboxcheck.test", "unused", "app-1", "app-secret", "refresh-token")
    request = oauth_request(account, endpoint, "long-lived", smtp_port=1, imap_port=1)
    source = RedisTokens(aredis, Sealer(KEY), lock_ttl_s=5)
    outcome = await obtain_token(request, options(ca_file), source)
    assert outcome.token is not None, outcome.error
    assert 0 < await aredis.pttl(source.token_key(request)) <= SECONDS_PER_DAY * MS_PER_S


async def test_a_kept_token_serves_only_the_credentials_that_obtained_it(
    aredis: Redis, oauth_provider: TokenEndpoint, oauth_user: OAuthAccount, ca_file: str
) -> None:
    def check(**oauth2: str) -> Any:
        request = oauth_request(
            oauth_user, oauth_provider, "per-credentials", oauth2, smtp_port=1, imap_port=1
        )
        return obtain_token(request, options(ca_file), RedisTokens(aredis, Sealer(KEY), lock_ttl_s=5))

    first = await check()
    assert first.token is not None and not first.token.from_cache
    rotated = first.token.refresh_token  # the stand-in rotates, and revokes the one sent
    assert rotated is not None
    asked = len(oauth_provider.token_requests)
    # The same inbox and app with another refresh token or client secret: the endpoint decides.
    wrong_token = await check(refresh_token="revoked-or-never-issued")
    assert wrong_token.error is not None and wrong_token.error.reason is Reason.OAUTH_REAUTH_REQUIRED
    wrong_secret = await check(client_secret="not-the-apps-secret")
    assert wrong_secret.error is not None and wrong_secret.error.reason is Reason.OAUTH_APP_MISCONFIGURED
    assert len(oauth_provider.token_requests) == asked + 2
    # A producer that has not stored the rotated refresh token yet sends the old one: the token
    # obtained with it still serves it, with no refresh the provider would refuse.
    old = await check()
    assert (
        old.token is not None and old.token.from_cache and old.token.access_token == first.token.access_token
    )
    assert len(oauth_provider.token_requests) == asked + 2
    # The rotated one is proved by a refresh of its own.
    new = await check(refresh_token=rotated)
    assert new.token is not None and not new.token.from_cache
    assert len(oauth_provider.token_requests) == asked + 3


async def test_a_one_off_job_hands_the_rotated_refresh_token_back_sealed(
    shared_redis: RedisServer,
    aredis: Redis,
    oauth_mail: dict[str, Any],
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    settings = make_settings(shared_redis, tls_ca_file=ca_file, max_tries=1)
    request = oauth_request(oauth_user, oauth_provider, "rotating-one-off", **oauth_mail)
    await enqueue_validation(aredis, request, settings=settings)
    await burst(settings)
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    data = event["data"]
    assert data["status"] == "valid", (data["smtp"]["detail"], data["imap"]["detail"])
    # What the README tells a producer to do: open it with the shared key, keep the new token.
    opened = Sealer(KEY).open(
        data["oauth2_refresh_token_sealed"], "rotating-one-off", request_destination(request), use=USE_ROTATED
    )
    rotated = opened["oauth2_refresh_token"]
    assert rotated != oauth_user.refresh_token
    assert await refreshes(oauth_provider, oauth_user, rotated)  # the new one works (the old one was revoked)
    # The worker keeps the access token it obtained (sealed) for the inbox's next check.
    assert await aredis.exists(RedisTokens(aredis, Sealer(KEY), lock_ttl_s=5).token_key(request))
    leaks = scan_for(shared_redis.client(), secrets_of(oauth_user, oauth_provider, rotated))
    assert leaks == []


class CheckBug(Exception):
    """A bug in the worker that shows only after the token step."""


def crash(*args: Any, **kwargs: Any) -> Any:
    raise CheckBug


@pytest.mark.parametrize("ending", ["bug", "tries-used-up"])
async def test_a_job_that_ends_failed_still_hands_back_the_rotated_refresh_token(
    shared_redis: RedisServer,
    aredis: Redis,
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
) -> None:
    port = closed_port()  # the mail servers are beside the point: the refresh is what matters
    request = oauth_request(
        oauth_user, oauth_provider, f"rotated-then-{ending}", smtp_port=port, imap_port=port
    )
    if ending == "bug":
        # Every attempt crashes after its token step; the first one refreshed (and rotated).
        monkeypatch.setattr(validate, "summarise", crash)
        settings = make_settings(shared_redis, tls_ca_file=ca_file, max_tries=2)
        await enqueue_validation(aredis, request, settings=settings)
        await burst(settings)
    else:
        # The one attempt refreshed, then its event could not be written (the stream's key holds
        # a string); the run after it finds the tries used up.
        settings = make_settings(shared_redis, tls_ca_file=ca_file, max_tries=1)
        await aredis.set(settings.events_stream, "not a stream")
        await enqueue_validation(aredis, request, settings=settings)
        await burst(settings, max_burst_jobs=1)
        await aredis.delete(settings.events_stream)
        await burst(settings)
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    assert (event["type"], event["data"]["reason"]) == (
        FAILED,
        "CheckBug" if ending == "bug" else TRIES_USED_UP,
    )
    opened = Sealer(KEY).open(
        event["data"]["oauth2_refresh_token_sealed"],
        request.inbox_id,
        request_destination(request),
        use=USE_ROTATED,
    )
    # The refresh token sent was revoked by the rotation: this one is the inbox's only way in.
    assert not await refreshes(oauth_provider, oauth_user, oauth_user.refresh_token)
    assert await refreshes(oauth_provider, oauth_user, opened["oauth2_refresh_token"])


async def test_a_registered_inbox_keeps_its_rotated_refresh_token_for_the_next_recheck(
    redis_server: RedisServer,
    oauth_mail: dict[str, Any],
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    settings = make_settings(redis_server, tls_ca_file=ca_file, max_tries=1, check_timeout=3, step_timeout=2)
    client = Redis.from_url(redis_server.url)
    registry = Registry(client, queue_name=settings.queue_name, sealer=Sealer(KEY))
    request = oauth_request(oauth_user, oauth_provider, "rotating-registered", **oauth_mail)
    try:
        await registry.register(request, every_s=RECHECK_EVERY_S, spread_s=0)
        for round_ in range(2):
            await registry.enqueue_due(
                claim_ttl_s=60, batch=10, now=time.time() + RECHECK_EVERY_S * 2 * round_ + 1
            )
            await burst(settings)
            # As if the kept access token had expired: the next recheck must refresh again.
            await client.delete(
                *[k async for k in client.scan_iter(f"{keys.OAUTH2_TOKEN_PREFIX}*")] or ["none"]
            )
        statuses = [
            e["data"]["status"]
            for e in stream_events(redis_server.client(), settings.events_stream)
            if e["type"] == COMPLETED
        ]
        # The stand-in revokes a refresh token once it is used: the second recheck refreshed with
        # the one the first one kept.
        assert statuses.count("valid") == 2, statuses
        assert (
            len([r for r in oauth_provider.token_requests if r.form.get("client_id") == oauth_user.client_id])
            >= 2
        )
        stored = json.loads(await client.hget(keys.inbox_key("rotating-registered"), "payload"))
        secrets = Sealer(KEY).open(
            stored["credentials"]["sealed"],
            "rotating-registered",
            destination_digest(stored["request"]),
            use=USE_REGISTRY,
        )
        assert secrets["oauth2_refresh_token"] != oauth_user.refresh_token
        assert (
            scan_for(
                redis_server.client(), secrets_of(oauth_user, oauth_provider, secrets["oauth2_refresh_token"])
            )
            == []
        )
    finally:
        await client.aclose()


async def test_app_only_access_is_checked_through_the_worker(
    shared_redis: RedisServer,
    aredis: Redis,
    oauth_mail: dict[str, Any],
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    app_id, app_secret = f"app-only-{oauth_user.client_id}", "app-only-secret-value"
    oauth_provider.add_client(app_id, app_secret, app_mailbox=oauth_user.email)
    settings = make_settings(shared_redis, tls_ca_file=ca_file, max_tries=1)
    request = parse_request(
        {
            "inbox_id": "app-only",
            "inbox_type": "CUSTOM_SMTP",
            "email": oauth_user.email,
            "auth": "oauth2",
            "oauth2": {
                "grant": "client_credentials",
                "client_id": app_id,
                "client_secret": app_secret,
                "token_url": oauth_provider.token_url,
                "scopes": ["mail.default"],
            },
            **oauth_mail,
        }
    )
    await enqueue_validation(aredis, request, settings=settings)
    await burst(settings)
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    assert event["data"]["status"] == "valid", (
        event["data"]["smtp"]["detail"],
        event["data"]["imap"]["detail"],
    )
    assert event["data"]["oauth2_refresh_token_sealed"] is None  # nothing to rotate
    assert scan_for(shared_redis.client(), secrets_of(oauth_user, oauth_provider, app_secret)) == []
