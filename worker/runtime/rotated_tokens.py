"""A refresh token the provider rotated during a check must never be lost (Microsoft issues a new
one on every refresh): a registered inbox keeps it in the registry, sealed; a one-off job hands it
to its producer, sealed, in the event that ends it (`oauth2_refresh_token_sealed`: completed, or
failed).

Between the refresh and the event an attempt may end in a retry, so a one-off job's rotated token
waits in Redis (sealed, keyed by the event) for the event that ends the job.
"""

from __future__ import annotations

from typing import Any

import structlog

from jobs.request import ValidationRequest
from jobs.time_units import MS_PER_S
from worker.messages import keys
from worker.messages.payload import request_fields
from worker.messages.sealing import USE_ROTATED, Sealer, destination_digest
from worker.rechecks.registry import Registry

log = structlog.get_logger("inboxcheck.worker")

SECRET_NAME = "oauth2_refresh_token"


def seal_rotated(sealer: Sealer, request: ValidationRequest, rotated: str) -> str:
    """What the event carries: {"oauth2_refresh_token": ...} sealed for this inbox and destination,
    with use "rotated" (so it is never taken as a job's credentials)."""
    assert request.inbox_id is not None
    destination = destination_digest(request_fields(request))
    return sealer.seal({SECRET_NAME: rotated}, request.inbox_id, destination, use=USE_ROTATED)


async def keep_rotated(
    redis: Any,
    sealer: Sealer | None,
    request: ValidationRequest,
    rotated: str,
    *,
    registry: Registry | None,
    event_id: str,
    ttl_s: float,
) -> None:
    """Keep `rotated`: in the registry for a recheck (`registry` given), else for the event."""
    assert request.inbox_id is not None and request.oauth2 is not None
    used = request.oauth2.refresh_token
    if registry is not None and used is not None:
        await registry.keep_refresh_token(request.inbox_id, used.get_secret_value(), rotated)
        return
    if sealer is None:  # development without a key: never in Redis or an event in clear
        log.warning("rotated_refresh_token_not_kept", why="no INBOXCHECK_SECRET_KEY to seal it")
        return
    await redis.set(
        keys.oauth2_rotated_key(event_id), seal_rotated(sealer, request, rotated), px=int(ttl_s * MS_PER_S)
    )


async def rotated_sealed(redis: Any, event_id: str) -> str | None:
    """The sealed refresh token kept for the event `event_id`, if any: its completed event carries
    it, and so does a failed one (a bug, or TriesUsedUp), since the job ends there either way."""
    sealed = await redis.get(keys.oauth2_rotated_key(event_id))
    return sealed.decode() if isinstance(sealed, bytes) else sealed
