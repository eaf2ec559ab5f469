"""The worker's OAuth2 access tokens: kept in Redis per inbox, app and credentials, sealed, until a
minute before they expire, and refreshed by one check at a time per inbox and app.

Concurrent jobs and rechecks of one inbox would otherwise each ask the token endpoint (and, at
Microsoft, each rotate the refresh token, leaving all but one holding a dead one). The refresh
holds a short lock (SET NX PX); the others wait for the token it leaves in the cache, within the
token step's own time limit. Without a key nothing is kept: a token is never in Redis in clear.

A check proves the credentials it was given: a kept token serves only a request with the same
grant secrets and scopes (a keyed digest of them names it), so a job carrying a wrong or revoked
refresh token or client secret asks the endpoint itself, however fresh another job's token is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from typing import Any

import structlog

from jobs.request import ValidationRequest
from jobs.time_units import MS_PER_S
from jobs.token_fetch import FetchedToken
from jobs.token_step import Fetch
from worker.messages import keys, scripts
from worker.messages.payload import request_fields
from worker.messages.sealing import USE_TOKEN_CACHE, Sealer, SealError, destination_digest

log = structlog.get_logger("inboxcheck.worker")

# Kept until this long before the token expires: a check that starts with it must finish first.
EXPIRY_MARGIN_S = 60.0
# How often a check waiting for another's refresh looks for its token.
WAIT_POLL_S = 0.05
_CACHED = "oauth2_access_token"


class RedisTokens:
    """A TokenSource (jobs.token_step) over Redis, for one job."""

    def __init__(self, redis: Any, sealer: Sealer, lock_ttl_s: float) -> None:
        self.redis = redis
        self.sealer = sealer
        self.lock_ttl_ms = int(lock_ttl_s * MS_PER_S)
        self.rotated_refresh_token: str | None = None

    @staticmethod
    def _binding(request: ValidationRequest) -> tuple[str, str, str]:
        """(inbox id, destination digest, cache id): the token belongs to this inbox, app and
        token endpoint, and opens for nothing else."""
        assert request.inbox_id is not None
        destination = destination_digest(request_fields(request))
        cache_id = hashlib.sha256(f"{request.inbox_id}\n{destination}".encode()).hexdigest()
        return request.inbox_id, destination, cache_id

    def cache_id(self, request: ValidationRequest) -> str:
        """What names the request's refresh lock in Redis (keys.oauth2_lock_key)."""
        return self._binding(request)[2]

    def credentials_id(self, request: ValidationRequest) -> str:
        """A keyed digest of what the request's grant proves: its refresh token, client secret or
        service account key (the whole key: its id alone would let a file with another private
        key borrow the token), and the scopes asked for."""
        oauth2 = request.oauth2
        assert oauth2 is not None
        grant_secrets = {
            name: value.get_secret_value() if value is not None else None
            for name, value in (
                ("refresh_token", oauth2.refresh_token),
                ("client_secret", oauth2.client_secret),
                ("service_account_key", oauth2.service_account_key),
            )
        }
        return self.sealer.secret_digest(json.dumps({**grant_secrets, "scopes": oauth2.scopes}).encode())

    def token_key(self, request: ValidationRequest) -> str:
        """Where the token kept for this request's inbox, app and credentials is (keys.oauth2_token_key)."""
        return keys.oauth2_token_key(self.cache_id(request), self.credentials_id(request))

    async def get(self, request: ValidationRequest, fetch: Fetch) -> FetchedToken:
        inbox_id, destination, cache_id = self._binding(request)
        # Kept under the credentials that obtained it: the endpoint accepted exactly those, so for
        # the token's life it is the endpoint's answer to them and to nothing else. After a
        # refresh rotated the refresh token, a one-off job still carrying the old one (its
        # producer has not stored the new one from the event yet) is served from here, as it
        # would have been a moment before the rotation, instead of refreshing with a token the
        # provider may already have retired and failing an inbox that is fine. A check given the
        # new refresh token asks the endpoint once, which proves that one.
        credentials = self.credentials_id(request)
        key = keys.oauth2_token_key(cache_id, credentials)
        # Sealed for them too: one copied under another's key by someone who can write to Redis
        # does not open.
        bound = f"{destination}:{credentials}"
        lock_key, owner = keys.oauth2_lock_key(cache_id), secrets.token_hex(16)
        while True:
            kept = await self._read(key, inbox_id, bound)
            if kept is not None:
                return kept
            if await self.redis.set(lock_key, owner, nx=True, px=self.lock_ttl_ms):
                break
            await asyncio.sleep(WAIT_POLL_S)  # another check is refreshing; the step's limit bounds this
        try:
            kept = await self._read(key, inbox_id, bound)  # it may have just finished
            if kept is not None:
                return kept
            token = await fetch()
            self.rotated_refresh_token = token.refresh_token
            await self._store(key, inbox_id, bound, token)
            return token
        finally:
            await scripts.of(self.redis).release_lock(keys=[lock_key], args=[owner])

    async def discard(self, request: ValidationRequest) -> None:
        await self.redis.delete(self.token_key(request))
        log.info("oauth2_token_discarded")

    async def _read(self, key: str, inbox_id: str, bound: str) -> FetchedToken | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, ttl_ms = await pipe.execute()
        if raw is None:
            return None
        try:
            opened = self.sealer.open(
                raw.decode() if isinstance(raw, bytes) else raw, inbox_id, bound, use=USE_TOKEN_CACHE
            )
        except SealError:
            return None  # sealed with a key no longer configured: fetched again and replaced
        token = opened.get(_CACHED)
        if not token:
            return None
        return FetchedToken(token, expires_in_s=max(ttl_ms, 0) / MS_PER_S + EXPIRY_MARGIN_S, from_cache=True)

    async def _store(self, key: str, inbox_id: str, bound: str, token: FetchedToken) -> None:
        if token.expires_in_s is None or token.expires_in_s <= EXPIRY_MARGIN_S:
            return  # no lifetime given, or too short to be worth keeping
        sealed = self.sealer.seal({_CACHED: token.access_token}, inbox_id, bound, use=USE_TOKEN_CACHE)
        ttl_ms = int((token.expires_in_s - EXPIRY_MARGIN_S) * MS_PER_S)
        await self.redis.set(key, sealed, px=ttl_ms)
