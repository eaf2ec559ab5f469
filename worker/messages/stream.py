"""Appending a job's terminal event to the stream exactly once.

The check of the job's "done" mark, the XADD and the mark itself are one Lua script
(scripts.APPEND_ONCE), which Redis runs atomically: a job that runs again after a crash (or two
runs racing after a lock expired) finds the mark and returns the event already written instead of
appending a second one.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from jobs.time_units import MS_PER_S
from worker.messages import scripts
from worker.messages.events import TerminalEvent, parse_terminal_event

# Stream entry fields; consumers filter on type and inbox_id without parsing the event.
FIELD_EVENT = "event"
FIELD_TYPE = "type"
FIELD_INBOX_ID = "inbox_id"


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
    existing = await scripts.of(redis).append_once(
        keys=[done_key, stream, *held_keys],
        args=[maxlen, int(done_ttl_s * MS_PER_S), event_json, len(fields), *fields, *held_args],
    )
    return parse_terminal_event(existing) if existing else event
