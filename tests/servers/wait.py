"""Polling with a deadline: the only way the fixtures wait for readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Short enough to add little latency to a start-up, long enough not to spin.
_POLL_INTERVAL = 0.02


class NotReady(Exception):
    """A probe raises this (or OSError) to say "not yet"."""


def wait_until(
    probe: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    details: Callable[[], str] = lambda: "",
) -> None:
    """Call ``probe`` until it returns True; raise TimeoutError after ``timeout`` s.

    ``probe`` may also raise OSError/NotReady to mean "not yet", and should raise
    any other exception to abort at once (e.g. the server process died).
    ``details`` is called only on failure, to put e.g. a log tail in the error.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if probe():
                return
        except (OSError, NotReady) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            msg = f"{what} not ready after {timeout:.1f}s"
            if last_error is not None:
                msg += f" (last error: {last_error!r})"
            extra = details()
            if extra:
                msg += "\n" + extra
            raise TimeoutError(msg)
        time.sleep(_POLL_INTERVAL)


async def wait_until_async(condition: Callable[[], Awaitable[object]], *, limit_s: float, what: str) -> None:
    """Await ``condition()`` (on the caller's loop, e.g. a Redis read) until it is true; raise
    TimeoutError after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not await condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not within {limit_s:.1f}s")
        await asyncio.sleep(_POLL_INTERVAL)
