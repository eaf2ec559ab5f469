"""An OAuth2 inbox checked through the worker: a real arq worker (burst mode) and Redis, Dovecot
verifying the token, aiosmtpd taking XOAUTH2; the token sealed on the queue and nowhere in clear."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from jobs.request import parse_request
from tests.servers.oauth import OAuthAccount, TokenEndpoint
from tests.servers.redis import RedisServer
from tests.worker.support import burst, make_settings, scan_for, stream_events
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
