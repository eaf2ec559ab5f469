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
from redis.asyncio import Redis

from jobs.request import parse_request
from jobs.token_step import obtain_token
from tests.jobs.checks import options
from tests.servers.dovecot import Dovecot
from tests.servers.oauth import OAuthAccount, TokenEndpoint
from tests.servers.redis import RedisServer
from tests.servers.smtp import SmtpServer
from tests.worker.support import KEY, burst, make_settings, scan_for, stream_events
from worker.messages import keys
from worker.messages.events import COMPLETED
from worker.messages.payload import request_fields
from worker.messages.producer import enqueue_validation
from worker.messages.sealing import USE_REGISTRY, USE_ROTATED, Sealer, destination_digest
from worker.rechecks.registry import Registry
from worker.runtime.token_cache import RedisTokens

CONCURRENT_CHECKS = 8
RECHECK_EVERY_S = 60.0


def oauth_request(user: OAuthAccount, provider: TokenEndpoint, inbox_id: str, **fields: Any) -> Any:
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
            },
            "smtp_host": "127.0.0.1",
            "imap_host": "127.0.0.1",
            **fields,
        }
    )


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
    cache_id = source.cache_id(request)
    ttl_ms = await aredis.pttl(keys.oauth2_token_key(cache_id))
    assert 0 < ttl_ms <= (oauth_provider.expires_in - 60) * 1000  # gone a minute before the token
    assert not await aredis.exists(keys.oauth2_lock_key(cache_id))  # released
    await source.discard(request)  # a kept token the mail server refused
    assert not await aredis.exists(keys.oauth2_token_key(cache_id))


async def test_a_one_off_job_hands_the_rotated_refresh_token_back_sealed(
    shared_redis: RedisServer,
    aredis: Redis,
    smtp_server: Callable[..., SmtpServer],
    oauth_dovecot: Dovecot,
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    smtp = smtp_server(mode="starttls", auth_mechanisms=["XOAUTH2"], oauth=oauth_provider)
    settings = make_settings(shared_redis, tls_ca_file=ca_file, max_tries=1)
    request = oauth_request(
        oauth_user,
        oauth_provider,
        "rotating-one-off",
        smtp_port=smtp.port,
        smtp_security="starttls",
        imap_port=oauth_dovecot.imaps_port,
    )
    await enqueue_validation(aredis, request, settings=settings)
    await burst(settings)
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    data = event["data"]
    assert data["status"] == "valid", (data["smtp"]["detail"], data["imap"]["detail"])
    # What the README tells a producer to do: open it with the shared key, keep the new token.
    destination = destination_digest(request_fields(request))
    opened = Sealer(KEY).open(
        data["oauth2_refresh_token_sealed"], "rotating-one-off", destination, use=USE_ROTATED
    )
    rotated = opened["oauth2_refresh_token"]
    assert rotated != oauth_user.refresh_token
    async with httpx.AsyncClient() as http:
        refreshed = await http.post(
            oauth_provider.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": rotated,
                "client_id": oauth_user.client_id,
                "client_secret": oauth_user.client_secret,
            },
        )
    assert refreshed.status_code == 200  # the new one works (the old one was revoked)
    leaks = scan_for(shared_redis.client(), secrets_of(oauth_user, oauth_provider, rotated))
    assert leaks == []


async def test_a_registered_inbox_keeps_its_rotated_refresh_token_for_the_next_recheck(
    redis_server: RedisServer,
    smtp_server: Callable[..., SmtpServer],
    oauth_dovecot: Dovecot,
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    smtp = smtp_server(mode="starttls", auth_mechanisms=["XOAUTH2"], oauth=oauth_provider)
    settings = make_settings(redis_server, tls_ca_file=ca_file, max_tries=1, check_timeout=3, step_timeout=2)
    client = Redis.from_url(redis_server.url)
    registry = Registry(client, queue_name=settings.queue_name, sealer=Sealer(KEY))
    request = oauth_request(
        oauth_user,
        oauth_provider,
        "rotating-registered",
        smtp_port=smtp.port,
        smtp_security="starttls",
        imap_port=oauth_dovecot.imaps_port,
    )
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
    smtp_server: Callable[..., SmtpServer],
    oauth_dovecot: Dovecot,
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    app_id, app_secret = f"app-only-{oauth_user.client_id}", "app-only-secret-value"
    oauth_provider.add_client(app_id, app_secret, app_mailbox=oauth_user.email)
    smtp = smtp_server(mode="starttls", auth_mechanisms=["XOAUTH2"], oauth=oauth_provider)
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
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_security": "starttls",
            "imap_host": "127.0.0.1",
            "imap_port": oauth_dovecot.imaps_port,
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
