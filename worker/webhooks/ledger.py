"""What is owed to whom: the deliveries in progress, in Redis, so a restart loses none.

An event read from the stream is fanned out in one script (scripts.WEBHOOK_FAN_OUT): a delivery
hash keeps its body (the stream may be trimmed during a day of retries) and one ref per subscribed
endpoint goes into that endpoint's due zset, scored by when to try next. A process claims due refs
of an endpoint by pushing their score one lease ahead (scripts.CLAIM_DUE): if it dies mid-POST,
the ref comes due again and another process sends it (at least once). Settling an attempt
(scripts.WEBHOOK_SETTLE) reschedules it, or marks that endpoint done (a dead letter when it gave
up); the last endpoint done acknowledges the stream entry.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from pydantic import BaseModel
from redis.asyncio import Redis

from jobs.time_units import MS_PER_S
from worker.messages import keys, scripts
from worker.webhooks.endpoints import as_text

REPLAY_REF_PREFIX = "replay:"
# A claim that takes everything queued, due or not (draining an endpoint that is gone).
_EVERYTHING_MS = 2**52


class DeadLetter(BaseModel):
    """A delivery that was given up, as `webhook replay` reads it back. `event` is the body."""

    endpoint_id: str
    event_id: str
    type: str
    event: str
    attempts: int
    reason: str
    failed_at_ms: int
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """One delivery this process now holds (until its lease runs out)."""

    ref: str
    endpoint_id: str
    event_id: str
    body: bytes
    type: str
    created_ms: int
    attempts: int  # made before this one


def event_id_of(body: str | bytes) -> str | None:
    """The CloudEvents id of a stream entry's event (its webhook-id), or None if it has none."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    value = parsed.get("id") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) and value else None


class Ledger:
    def __init__(self, redis: Redis, *, stream: str, group: str, queue_max: int, dead_max: int) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.queue_max = queue_max
        self.dead_max = dead_max
        self._scripts = scripts.of(redis)

    async def fan_out(
        self, ref: str, entry_id: str, body: str, event_type: str, event_id: str, endpoint_ids: list[str]
    ) -> int:
        """Queue the event for each endpoint; -1 when it already was (by this or another process)."""
        return int(
            await self._scripts.webhook_fan_out(
                keys=[
                    keys.webhook_delivery_key(ref),
                    self.stream,
                    keys.WEBHOOK_DEAD_KEY,
                    *(keys.webhook_due_key(e) for e in endpoint_ids),
                ],
                args=[
                    int(time.time() * MS_PER_S),
                    ref,
                    entry_id,
                    self.group,
                    body,
                    event_type,
                    event_id,
                    self.queue_max,
                    self.dead_max,
                    *endpoint_ids,
                ],
            )
        )

    async def claim(
        self, endpoint_id: str, limit: int, lease_s: float, *, everything: bool = False
    ) -> list[Claimed]:
        """Up to `limit` due deliveries of the endpoint, each leased for `lease_s`."""
        now_ms = _EVERYTHING_MS if everything else int(time.time() * MS_PER_S)
        due = await self._scripts.claim_due(
            keys=[keys.webhook_due_key(endpoint_id)], args=[now_ms, int(lease_s * MS_PER_S), limit]
        )
        refs = [as_text(ref) for ref in due[::2]]
        if not refs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.hmget(keys.webhook_delivery_key(ref), ["event", "type", "created", f"ep:{endpoint_id}"])
            rows = await pipe.execute()
        claimed, orphans = [], []
        for ref, (body, event_type, created, attempts) in zip(refs, rows, strict=True):
            if body is None or attempts is None:
                orphans.append(ref)  # settled meanwhile: nothing left to send
                continue
            claimed.append(
                Claimed(
                    ref=ref,
                    endpoint_id=endpoint_id,
                    event_id=event_id_of(body) or ref,
                    body=body if isinstance(body, bytes) else body.encode(),
                    type=as_text(event_type),
                    created_ms=int(created or 0),
                    attempts=int(attempts),
                )
            )
        if orphans:
            await self.redis.zrem(keys.webhook_due_key(endpoint_id), *orphans)
        return claimed

    async def _settle(self, item: Claimed, outcome: str, due_ms: int = 0, letter: str = "") -> int:
        return int(
            await self._scripts.webhook_settle(
                keys=[
                    keys.webhook_delivery_key(item.ref),
                    keys.webhook_due_key(item.endpoint_id),
                    self.stream,
                    keys.WEBHOOK_DEAD_KEY,
                ],
                args=[item.ref, item.endpoint_id, outcome, due_ms, self.group, letter, self.dead_max],
            )
        )

    async def delivered(self, item: Claimed) -> int:
        return await self._settle(item, "done")

    async def dropped(self, item: Claimed) -> int:
        """Done without a dead letter: its endpoint was removed."""
        return await self._settle(item, "done")

    async def retry_at(self, item: Claimed, due_s: float) -> int:
        return await self._settle(item, "retry", due_ms=int(due_s * MS_PER_S))

    async def give_up(self, item: Claimed, reason: str, status: int | None) -> int:
        letter = DeadLetter(
            endpoint_id=item.endpoint_id,
            event_id=item.event_id,
            type=item.type,
            event=item.body.decode(),
            attempts=item.attempts + 1,
            reason=reason,
            failed_at_ms=int(time.time() * MS_PER_S),
            status=status,
        )
        return await self._settle(item, "dead", letter=letter.model_dump_json())

    async def dead_letters(self) -> list[tuple[bytes, DeadLetter]]:
        raws = await cast(Awaitable[list[bytes]], self.redis.lrange(keys.WEBHOOK_DEAD_KEY, 0, -1))
        return [(raw, DeadLetter.model_validate_json(raw)) for raw in raws]

    async def replay(self, raw: bytes, letter: DeadLetter) -> None:
        """Queue a dead letter again (same event id, so a receiver that has it can tell)."""
        ref = REPLAY_REF_PREFIX + uuid.uuid4().hex
        await self.fan_out(ref, "", letter.event, letter.type, letter.event_id, [letter.endpoint_id])
        await cast(Awaitable[int], self.redis.lrem(keys.WEBHOOK_DEAD_KEY, 1, raw))  # type: ignore[arg-type]

    async def queued(self, endpoint_id: str) -> int:
        return int(await self.redis.zcard(keys.webhook_due_key(endpoint_id)))
