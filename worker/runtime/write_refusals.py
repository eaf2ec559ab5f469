"""Redis refusing writes, as one condition of the whole worker.

Redis at maxmemory with noeviction answers every write with OOM; a replica after a failover with
READONLY; a failed snapshot with stop-writes-on-bgsave-error with MISCONF. Every job finishing
meanwhile meets the same refusal, so it is logged when it starts and when it ends, once per
worker, never once per job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError, ResponseError

log = structlog.get_logger("inboxcheck.worker")

T = TypeVar("T")

# While Redis refuses writes, a write is tried again after these waits (doubling).
FIRST_WAIT_S = 0.1
MAX_WAIT_S = 2.0
# Replies by which Redis refuses a write it would otherwise take (its error codes).
_REFUSAL_CODES = ("OOM", "READONLY", "MISCONF", "NOREPLICAS")


def refusal(exc: RedisError) -> str | None:
    """The error code when `exc` is Redis refusing a write, else None."""
    if isinstance(exc, OutOfMemoryError):
        return "OOM"
    if isinstance(exc, ReadOnlyError):
        return "READONLY"
    if isinstance(exc, ResponseError):
        # Inside a Lua script the refusal comes wrapped: "... OOM command not allowed ...".
        text = str(exc)
        return next((code for code in _REFUSAL_CODES if text.startswith(code) or f" {code} " in text), None)
    return None


class WriteRefusals:
    """Whether Redis is refusing this worker's writes, logged on each change only."""

    def __init__(self) -> None:
        self.code: str | None = None
        self.since: float = 0.0

    def refused(self, code: str) -> None:
        if self.code is None:
            self.code, self.since = code, time.monotonic()
            log.error("redis_refusing_writes", code=code, note="finished jobs wait to write their events")

    def accepted(self) -> None:
        if self.code is not None:
            log.warning(
                "redis_accepting_writes",
                code=self.code,
                refused_for_s=round(time.monotonic() - self.since, 1),
            )
            self.code = None


async def retried_while_refused(
    write: Callable[[], Awaitable[T]],
    writes: WriteRefusals,
    budget_s: float,
    *,
    shows_accepting: Callable[[], bool] = lambda: True,
) -> T:
    """`write()`, tried again while Redis refuses writes, for up to `budget_s`; the refusal and its
    end are logged through `writes`. Any other error, or a refusal past the budget, is raised.
    `shows_accepting()`: whether the write that got through says Redis takes writes again."""
    deadline = time.monotonic() + budget_s
    wait = FIRST_WAIT_S
    refused = False
    while True:
        try:
            result = await write()
        except RedisError as exc:
            code = refusal(exc)
            if code is None:
                raise
            writes.refused(code)
            refused = True
            if time.monotonic() + wait > deadline:
                raise
            await asyncio.sleep(wait)
            wait = min(2 * wait, MAX_WAIT_S)
            continue
        # Only a write refused before says Redis takes writes again: at maxmemory Redis still
        # lets a script through once it has written (the event's append), not a plain command.
        if refused and shows_accepting():
            writes.accepted()
        return result
