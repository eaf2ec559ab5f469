"""Appending a job's terminal event to the stream exactly once.

The check of the job's "done" mark, the XADD and the mark itself are one Lua script, which Redis
runs atomically: a job that runs again after a crash (or two runs racing after a lock expired)
finds the mark and returns the event already written instead of appending a second one. (It was
WATCH / GET / MULTI XADD SET EXEC: three round trips per job where one does.)
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from worker.events import Event
from worker.units import MS_PER_S

# Stream entry fields; consumers filter on type and inbox_id without parsing the event.
FIELD_EVENT = "event"
FIELD_TYPE = "type"
FIELD_INBOX_ID = "inbox_id"

# KEYS[1] done mark, KEYS[2] stream. ARGV: maxlen, mark TTL ms, event JSON, then the stream
# entry's field/value pairs.
# Returns the event already written, or nothing when this call appended it.
# MAXLEN ~ (approximate) trims whole macro nodes, far cheaper than exact.
_APPEND_ONCE = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 4))
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return false
"""


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
    existing = await redis.eval(_APPEND_ONCE, 2, done_key, stream, maxlen, int(done_ttl_s * MS_PER_S),
                                event_json, *(x for pair in fields.items() for x in pair))
    return json.loads(existing or event_json)
