"""Appending a job's terminal event to the stream exactly once.

The XADD and the job's "done" mark are one MULTI/EXEC transaction, guarded by WATCH on the mark:
a job that runs again after a crash (or two runs racing after a lock expired) finds the mark and
returns the event already written instead of appending a second one.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from worker.events import Event

# Stream entry fields; consumers filter on type and inbox_id without parsing the event.
FIELD_EVENT = "event"
FIELD_TYPE = "type"
FIELD_INBOX_ID = "inbox_id"
MS_PER_S = 1000


async def recorded(redis: Redis, done_key: str) -> dict[str, Any] | None:
    """The event this job already appended, if it did."""
    raw = await redis.get(done_key)
    return json.loads(raw) if raw else None


async def append_once(
    redis: Redis, *, stream: str, maxlen: int, done_key: str, done_ttl_s: float, event: Event
) -> dict[str, Any]:
    """Append `event` unless this job already appended one; return the event on the stream."""
    event_json = event.model_dump_json()
    fields = {FIELD_EVENT: event_json, FIELD_TYPE: event.type, FIELD_INBOX_ID: event.subject or ""}
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(done_key)
                existing = await pipe.get(done_key)
                if existing:
                    return json.loads(existing)
                pipe.multi()
                # approximate=True: MAXLEN ~ trims whole macro nodes, far cheaper than exact.
                pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
                pipe.set(done_key, event_json, px=int(done_ttl_s * MS_PER_S))
                await pipe.execute()
                return json.loads(event_json)
            except WatchError:
                continue  # another run wrote it between WATCH and EXEC: read theirs
