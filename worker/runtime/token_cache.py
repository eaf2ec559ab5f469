"""The worker's OAuth2 access tokens: kept in Redis per inbox and app, sealed, until a minute
before they expire, and refreshed by one check at a time per inbox and app.

Concurrent jobs and rechecks of one inbox would otherwise each ask the token endpoint (and, at
Microsoft, each rotate the refresh token, leaving all but one holding a dead one). The refresh
holds a short lock (SET NX PX); the others wait for the token it leaves in the cache, within the
token step's own time limit. Without a key nothing is kept: a token is never in Redis in clear.
"""

from __future__ import annotations

import asyncio
import hashlib
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
        """What names the request's token and refresh lock in Redis (keys.oauth2_*_key)."""
        return self._binding(request)[2]

    async def get(self, request: ValidationRequest, fetch: Fetch) -> FetchedToken:
        inbox_id, destination, cache_id = self._binding(request)
        lock_key, owner = keys.oauth2_lock_key(cache_id), secrets.token_hex(16)
        while True:
            kept = await self._read(cache_id, inbox_id, destination)
            if kept is not None:
                return kept
            if await self.redis.set(lock_key, owner, nx=True, px=self.lock_ttl_ms):
                break
            await asyncio.sleep(WAIT_POLL_S)  # another check is refreshing; the step's limit bounds this
        try:
            kept = await self._read(cache_id, inbox_id, destination)  # it may have just finished
            if kept is not None:
                return kept
            token = await fetch()
            self.rotated_refresh_token = token.refresh_token
            await self._store(cache_id, inbox_id, destination, token)
            return token
        finally:
            await scripts.of(self.redis).release_lock(keys=[lock_key], args=[owner])

    async def discard(self, request: ValidationRequest) -> None:
        await self.redis.delete(keys.oauth2_token_key(self.cache_id(request)))
        log.info("oauth2_token_discarded")

    async def _read(self, cache_id: str, inbox_id: str, destination: str) -> FetchedToken | None:
        key = keys.oauth2_token_key(cache_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, ttl_ms = await pipe.execute()
        if raw is None:
            return None
        try:
            opened = self.sealer.open(
                raw.decode() if isinstance(raw, bytes) else raw, inbox_id, destination, use=USE_TOKEN_CACHE
            )
        except SealError:
            return None  # sealed with a key no longer configured: fetched again and replaced
        token = opened.get(_CACHED)
        if not token:
            return None
        return FetchedToken(token, expires_in_s=max(ttl_ms, 0) / MS_PER_S + EXPIRY_MARGIN_S, from_cache=True)

    async def _store(self, cache_id: str, inbox_id: str, destination: str, token: FetchedToken) -> None:
        if token.expires_in_s is None or token.expires_in_s <= EXPIRY_MARGIN_S:
            return  # no lifetime given, or too short to be worth keeping
        sealed = self.sealer.seal({_CACHED: token.access_token}, inbox_id, destination, use=USE_TOKEN_CACHE)
        ttl_ms = int((token.expires_in_s - EXPIRY_MARGIN_S) * MS_PER_S)
        await self.redis.set(keys.oauth2_token_key(cache_id), sealed, px=ttl_ms)
