"""An OAuth2 inbox checked through the worker: a real arq worker (burst mode) and Redis, Dovecot
verifying the token, aiosmtpd taking XOAUTH2; the token sealed on the queue and nowhere in clear,
and not kept at all by a worker without a key."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from jobs.request import parse_request
from tests.servers.oauth import OAuthAccount, TokenEndpoint
from tests.servers.redis import RedisServer
from tests.worker.support import burst, make_settings, scan_for, stream_events
from worker.messages import keys
from worker.messages.producer import enqueue_validation

TOKEN_CHARS = 2_800


async def test_an_oauth2_inbox_is_valid_through_the_worker_and_its_token_never_in_clear(
    shared_redis: RedisServer,
    aredis: Redis,
    oauth_mail: dict[str, Any],
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email, size=TOKEN_CHARS)
    settings = make_settings(shared_redis, tls_ca_file=ca_file, max_tries=1)
    request = parse_request(
        {
            "inbox_id": "oauth-inbox",
            "inbox_type": "CUSTOM_SMTP",
            "email": oauth_user.email,
            "auth": "oauth2",
            "oauth2": {"access_token": token},
            **oauth_mail,
        }
    )
    await enqueue_validation(aredis, request, settings=settings)
    assert scan_for(shared_redis.client(), [token.encode()]) == []  # sealed on the queue
    await burst(settings)
    [event] = stream_events(shared_redis.client(), settings.events_stream)
    data = event["data"]
    assert data["status"] == "valid", (data["smtp"]["detail"], data["imap"]["detail"])
    assert (data["smtp"]["auth_mechanism"], data["imap"]["auth_mechanism"]) == ("XOAUTH2", "XOAUTH2")
    assert scan_for(shared_redis.client(), [token.encode()]) == []


async def test_without_a_secret_key_a_fetched_token_is_not_kept(
    shared_redis: RedisServer,
    aredis: Redis,
    oauth_mail: dict[str, Any],
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    # Development: no key, plaintext credentials allowed. A token kept in Redis could not be sealed.
    settings = make_settings(
        shared_redis, tls_ca_file=ca_file, max_tries=1, secret_key=None, allow_plaintext_credentials=True
    )
    oauth2 = {
        "refresh_token": oauth_user.refresh_token,
        "client_id": oauth_user.client_id,
        "client_secret": oauth_user.client_secret,
        "token_url": oauth_provider.token_url,
    }
    request = parse_request(
        {
            "inbox_id": "oauth-no-key",
            "inbox_type": "CUSTOM_SMTP",
            "email": oauth_user.email,
            "auth": "oauth2",
            "oauth2": oauth2,
            **oauth_mail,
        }
    )
    client = shared_redis.client()
    kept_before = set(client.scan_iter(match=keys.OAUTH2_TOKEN_PREFIX + "*"))
    issued_before = len(oauth_provider.issued_access_tokens)
    await enqueue_validation(aredis, request, settings=settings)
    await burst(settings)
    [event] = stream_events(client, settings.events_stream)
    assert event["data"]["status"] == "valid", (
        event["data"]["smtp"]["detail"],
        event["data"]["imap"]["detail"],
    )
    fetched = oauth_provider.issued_access_tokens[issued_before:]
    assert fetched  # the check did fetch one
    assert set(client.scan_iter(match=keys.OAUTH2_TOKEN_PREFIX + "*")) == kept_before
    assert scan_for(client, [token.encode() for token in fetched]) == []
