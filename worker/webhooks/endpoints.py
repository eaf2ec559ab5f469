"""Webhook endpoints: where events go, which types each wants, and its signing secret.

Per endpoint a Redis hash (keys.webhook_endpoint_key) and its id in a set
(keys.WEBHOOK_ENDPOINTS_KEY). The signing secret is sealed with INBOXCHECK_SECRET_KEY (Fernet, as
queued credentials are) and bound to the endpoint's id and URL: whoever can write to Redis can
neither read a secret nor make one sign events for another URL (the seal no longer opens). A
rotated secret's previous value is kept, sealed, until the time it is honoured to, so receivers
can switch over without refusing a delivery.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import cast, get_args
from urllib.parse import urlsplit

from pydantic import SecretStr
from redis.asyncio import Redis

from jobs.destinations import DestinationPolicy
from jobs.errors import InboxcheckError
from jobs.hosts import is_loopback_host
from jobs.time_units import MS_PER_S
from worker.messages import events, keys
from worker.messages.redis_text import as_text
from worker.messages.sealing import USE_WEBHOOK, Sealer, SealError, sealer_for
from worker.webhooks.signing import SigningSecret

ID_PREFIX = "ep_"
ID_HEX_CHARS = 12
MAX_URL_CHARS = 2048
# Every type the stream carries, from the Event union itself.
EVENT_TYPES: tuple[str, ...] = tuple(
    model.model_fields["type"].default for model in get_args(get_args(events.Event)[0])
)

# Hash fields.
_URL, _EVENTS, _SECRET, _PREVIOUS, _PREVIOUS_UNTIL, _CREATED, _DISABLED = (
    "url",
    "events",
    "secret",
    "previous_secret",
    "previous_until_ms",
    "created_at",
    "disabled",
)
_SEALED_FIELD = "secret"
UNUSABLE_SECRET = (
    "its signing secret does not open with this INBOXCHECK_SECRET_KEY for its URL "
    "(another key, or the URL was changed in Redis)"
)


class WebhookError(InboxcheckError):
    """A webhook command's input or set-up that cannot be used; names the field, never a secret."""


def check_url(url: str, policy: DestinationPolicy) -> str:
    """`url` if webhooks may be sent there, else WebhookError naming URL and the problem. Names are
    judged again on every connection (jobs.http_client), once resolved."""
    if len(url) > MAX_URL_CHARS:
        raise WebhookError(f"URL: longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise WebhookError("URL: contains spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        raise WebhookError("URL: not a URL (a bad port or address?)") from None
    if parts.scheme not in ("https", "http") or not host:
        raise WebhookError("URL: must be https://host/path")
    if parts.username is not None or parts.password is not None:
        raise WebhookError("URL: must not carry a user name or password (the signature authenticates)")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise WebhookError("URL: must be https:// (plain http:// only to loopback, for development)")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return url
    if not policy.permits(str(literal)):
        raise WebhookError(
            f"URL: {host} is not a public address; webhooks go there only inside "
            "INBOXCHECK_ALLOW_NETWORKS (cloud metadata addresses never)"
        )
    return url


def parse_event_types(text: str | None) -> tuple[str, ...]:
    """`--events TYPE,...`: known types only; none or empty means every type."""
    if not text:
        return ()
    wanted = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in wanted if name not in EVENT_TYPES]
    if unknown:
        raise WebhookError(
            f"--events: unknown event type {unknown[0]!r:.80}; known: {', '.join(EVENT_TYPES)}"
        )
    return wanted


def _url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint as stored. `keys` (opened secrets, newest first) only when asked for."""

    id: str
    url: str
    events: tuple[str, ...]  # empty: every type
    created_at: float
    disabled: str  # why it no longer gets events ("" while it does)
    # Asked for and still empty: the secret does not open here (UNUSABLE_SECRET).
    keys: tuple[SigningSecret, ...] = field(default=(), repr=False, compare=False)

    @property
    def active(self) -> bool:
        return not self.disabled

    def wants(self, event_type: str) -> bool:
        return self.active and (not self.events or event_type in self.events)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events) or "all",
            "created_at": self.created_at,
            "disabled": self.disabled or None,
        }


class EndpointRegistry:
    """The endpoints in Redis; secrets sealed and opened with `sealer`."""

    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        self.redis = redis
        self.sealer = sealer

    def _seal(self, endpoint_id: str, url: str, secret: SigningSecret) -> str:
        return self.sealer.seal(
            {_SEALED_FIELD: secret.reveal()}, endpoint_id, _url_digest(url), use=USE_WEBHOOK
        )

    def _open(self, endpoint_id: str, url: str, token: str) -> SigningSecret:
        opened = self.sealer.open(token, endpoint_id, _url_digest(url), use=USE_WEBHOOK)
        return SigningSecret.parse(opened[_SEALED_FIELD])

    async def add(self, url: str, event_types: Sequence[str]) -> tuple[Endpoint, SigningSecret]:
        endpoint_id = ID_PREFIX + secrets.token_hex(ID_HEX_CHARS // 2)
        secret = SigningSecret.generate()
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.webhook_endpoint_key(endpoint_id),
                mapping={
                    _URL: url,
                    _EVENTS: ",".join(event_types),
                    _SECRET: self._seal(endpoint_id, url, secret),
                    _CREATED: repr(now),
                    _DISABLED: "",
                },
            )
            pipe.sadd(keys.WEBHOOK_ENDPOINTS_KEY, endpoint_id)
            await pipe.execute()
        return Endpoint(endpoint_id, url, tuple(event_types), now, "", (secret,)), secret

    async def get(self, endpoint_id: str, *, with_keys: bool = False) -> Endpoint | None:
        raw = await cast(
            Awaitable[dict[bytes, bytes]], self.redis.hgetall(keys.webhook_endpoint_key(endpoint_id))
        )
        return self._endpoint(endpoint_id, raw, with_keys) if raw else None

    async def all(self, *, with_keys: bool = False) -> list[Endpoint]:
        ids = sorted(
            as_text(i)
            for i in await cast(Awaitable[set[bytes]], self.redis.smembers(keys.WEBHOOK_ENDPOINTS_KEY))
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for endpoint_id in ids:
                pipe.hgetall(keys.webhook_endpoint_key(endpoint_id))
            raws = await pipe.execute()
        return [self._endpoint(i, raw, with_keys) for i, raw in zip(ids, raws, strict=True) if raw]

    def _endpoint(self, endpoint_id: str, raw: dict[bytes, bytes], with_keys: bool) -> Endpoint:
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        url = fields.get(_URL, "")
        disabled = fields.get(_DISABLED, "")
        secrets_: tuple[SigningSecret, ...] = ()
        if with_keys and not disabled:
            try:
                secrets_ = (self._open(endpoint_id, url, fields.get(_SECRET, "")),)
                until_ms = int(fields.get(_PREVIOUS_UNTIL) or 0)
                if fields.get(_PREVIOUS) and until_ms > time.time() * MS_PER_S:
                    secrets_ += (self._open(endpoint_id, url, fields[_PREVIOUS]),)
            except (SealError, ValueError):
                # Sealed with another key, or the URL was rewritten in Redis: never sign with it,
                # and leave its deliveries to a process that can (no keys: see UNUSABLE_SECRET).
                secrets_ = ()
        return Endpoint(
            id=endpoint_id,
            url=url,
            events=tuple(t for t in fields.get(_EVENTS, "").split(",") if t),
            created_at=float(fields.get(_CREATED) or 0),
            disabled=disabled,
            keys=secrets_,
        )

    async def remove(self, endpoint_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.WEBHOOK_ENDPOINTS_KEY, endpoint_id)
            pipe.delete(keys.webhook_endpoint_key(endpoint_id))
            removed, _ = await pipe.execute()
        return bool(removed)

    async def rotate(self, endpoint: Endpoint, keep_previous_s: float) -> SigningSecret:
        """A new secret for `endpoint`; the current one still signs for `keep_previous_s`."""
        key = keys.webhook_endpoint_key(endpoint.id)
        current = as_text(await cast(Awaitable[bytes | None], self.redis.hget(key, _SECRET)))
        secret = SigningSecret.generate()
        until_ms = int((time.time() + keep_previous_s) * MS_PER_S)
        await cast(
            Awaitable[int],
            self.redis.hset(
                key,
                mapping={
                    _SECRET: self._seal(endpoint.id, endpoint.url, secret),
                    _PREVIOUS: current if keep_previous_s > 0 else "",
                    _PREVIOUS_UNTIL: str(until_ms),
                },
            ),
        )
        return secret

    async def disable(self, endpoint_id: str, why: str) -> None:
        key = keys.webhook_endpoint_key(endpoint_id)
        # Only an endpoint that still exists: a removed one must not come back as a bare hash.
        if await self.redis.exists(key):
            await cast(Awaitable[int], self.redis.hset(key, _DISABLED, why))

    async def enable(self, endpoint_id: str) -> bool:
        key = keys.webhook_endpoint_key(endpoint_id)
        if not await self.redis.exists(key):
            return False
        await cast(Awaitable[int], self.redis.hset(key, _DISABLED, ""))
        return True


def sealer_required(secret_key: SecretStr | None) -> Sealer:
    """The sealer of the settings' key; WebhookError when there is none."""
    sealer = sealer_for(secret_key)
    if sealer is None:
        raise WebhookError(
            "INBOXCHECK_SECRET_KEY: needed to seal the endpoints' signing secrets; "
            "make one with `inboxcheck keygen`"
        )
    return sealer


def registry_for(redis: Redis, secret_key: SecretStr | None) -> EndpointRegistry:
    return EndpointRegistry(redis, sealer_required(secret_key))
