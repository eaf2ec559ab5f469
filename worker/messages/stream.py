"""Appending a job's terminal event to the stream exactly once.

The check of the job's "done" mark, the XADD and the mark itself are one Lua script, which Redis
runs atomically: a job that runs again after a crash (or two runs racing after a lock expired)
finds the mark and returns the event already written instead of appending a second one. (It was
WATCH / GET / MULTI XADD SET EXEC: three round trips per job where one does.)
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from jobs.time_units import MS_PER_S
from worker.messages.events import TerminalEvent, parse_terminal_event

# Stream entry fields; consumers filter on type and inbox_id without parsing the event.
FIELD_EVENT = "event"
FIELD_TYPE = "type"
FIELD_INBOX_ID = "inbox_id"

# KEYS[1] done mark, KEYS[2] stream, then optionally KEYS[3] the check's inbox lock and its host
# lease zsets (pacing.Held: the check's end rides on this round trip instead of its own).
# ARGV: maxlen, mark TTL ms, event JSON, n, then the stream entry's n field/value values, then
# (with KEYS[3]) the lock token and one lease count per zset.
# Returns the event already written, or nothing when this call appended it. The lock and leases
# are released either way (only our own lock: pacing's FINISH).
# MAXLEN ~ (approximate) trims whole macro nodes, far cheaper than exact.
_APPEND_ONCE = """
local n = tonumber(ARGV[4])
if #KEYS >= 3 then
  local token = ARGV[5 + n]
  for i = 4, #KEYS do
    for j = 1, tonumber(ARGV[2 + n + i]) do
      redis.call('ZREM', KEYS[i], token .. ':' .. j)
    end
  end
  if redis.call('GET', KEYS[3]) == token then redis.call('DEL', KEYS[3]) end
end
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 5, 4 + n))
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return false
"""


async def recorded(redis: Redis, done_key: str) -> TerminalEvent | None:
    """The event this job already appended, if it did."""
    raw = await redis.get(done_key)
    return parse_terminal_event(raw) if raw else None


async def append_once(
    redis: Redis,
    *,
    stream: str,
    maxlen: int,
    done_key: str,
    done_ttl_s: float,
    event: TerminalEvent,
    release: tuple[list[str], list[Any]] | None = None,
) -> TerminalEvent:
    """Append `event` unless this job already appended one; return the event on the stream.
    `release`: a check's lock and leases (pacing.Held.pending), released in the same script."""
    event_json = event.model_dump_json()
    fields = [FIELD_EVENT, event_json, FIELD_TYPE, event.type, FIELD_INBOX_ID, event.subject or ""]
    held_keys, held_args = release or ([], [])
    existing = await redis.eval(
        _APPEND_ONCE,
        2 + len(held_keys),
        done_key,
        stream,
        *held_keys,
        maxlen,
        int(done_ttl_s * MS_PER_S),
        event_json,
        len(fields),
        *fields,
        *held_args,
    )
    return parse_terminal_event(existing) if existing else event
