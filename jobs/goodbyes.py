"""Goodbyes said after the verdict: QUIT or LOGOUT, then the close, in the background.

A check knows its verdict once AUTH (SMTP) or EXAMINE (IMAP) has answered. Waiting for the
answer to QUIT or LOGOUT as well would add a round trip to every check for nothing the verdict
needs, so the check hands its session over here and returns. The goodbye then runs in a task
that ends within its bound whatever the server does: past it the socket is aborted.

asyncio keeps only weak references to tasks, so every goodbye is kept here until it ends (a task
collected while pending is lost half way, and asyncio complains about it). A caller that wants
its connections closed before it goes on waits for its own `Goodbyes` (the worker's job does,
before it gives back its host slots: a slot counts a connection until it is closed); `drain`
waits for, then ends, every goodbye of the running loop (the worker's shutdown, `inboxcheck
validate` before it exits).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

log = structlog.get_logger("inboxcheck.check")

# Every goodbye still running, in any loop (each task knows its own).
_pending: set[asyncio.Task[None]] = set()


async def _see_off(
    protocol: str,
    say: Callable[[], Awaitable[object]],
    closed: asyncio.Future[Any],
    close: Callable[[], None],
    abort: Callable[[], None],
    within_s: float,
) -> None:
    answered = False
    try:
        async with asyncio.timeout(within_s):
            # Whatever the server answers (or an error) changes nothing: the verdict is out.
            with contextlib.suppress(Exception):
                await say()
                answered = True
            close()
            # Only once the transport says so is the socket closed (a TLS close waits for the
            # server's close_notify). A wait, not an await: the future is the protocol's.
            await asyncio.wait({closed})
    except TimeoutError:
        log.debug("goodbye_cut_short", protocol=protocol, answered=answered, bound_s=within_s)
    finally:
        if not closed.done():
            abort()


class Goodbyes:
    """The goodbyes of one caller's checks, so that it can wait until their connections are closed."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def see_off(
        self,
        protocol: str,
        say: Callable[[], Awaitable[object]],
        closed: asyncio.Future[Any],
        close: Callable[[], None],
        abort: Callable[[], None],
        within_s: float,
    ) -> None:
        """Say goodbye in the background: `say()` (QUIT or LOGOUT and its answer), then `close()`
        and wait for `closed`; `abort()` when that has not happened within `within_s`."""
        task = asyncio.get_running_loop().create_task(
            _see_off(protocol, say, closed, close, abort, within_s), name=f"inboxcheck-{protocol}-goodbye"
        )
        for tasks in (self._tasks, _pending):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def closed(self, within_s: float | None = None) -> None:
        """Wait until every goodbye has ended (each within its own bound); past `within_s`, end
        the rest now."""
        await _wait(self._tasks, within_s)


def pending() -> int:
    """Goodbyes still running in this loop."""
    return len(_of_this_loop())


async def drain(within_s: float | None = None) -> None:
    """Wait for every goodbye of this loop to end; past `within_s`, end the rest now."""
    await _wait(_of_this_loop(), within_s)


def _of_this_loop() -> set[asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    return {task for task in _pending if task.get_loop() is loop}


async def _wait(tasks: Iterable[asyncio.Task[None]], within_s: float | None) -> None:
    waiting = set(tasks)
    if not waiting:
        return
    _, late = await asyncio.wait(waiting, timeout=within_s)
    for task in late:
        task.cancel()  # its finally aborts the socket
    if late:
        await asyncio.wait(late)
