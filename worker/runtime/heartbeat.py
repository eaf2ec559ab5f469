"""The heartbeat of a long-running process (the worker, the webhooks process): a file whose
modification time its event loop renews.

Liveness asks "is this process's loop still turning?", which needs no Redis: a process riding out
a Redis outage is alive and must not be restarted for it (Redis reachability is readiness, checked
by `inboxcheck health`). `inboxcheck health --liveness [--process webhooks]` reads this file's age.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from worker.settings import ENV_PREFIX, Settings, SettingsError

# A heartbeat older than this many intervals means the loop stopped: one slow turn is not death.
STALE_AFTER_INTERVALS = 3
PRIVATE_FILE_MODE = 0o600
Process = Literal["worker", "webhooks"]
PROCESSES: tuple[Process, ...] = ("worker", "webhooks")


# Each process kind's own setting, so a worker and a webhooks process never share one file.
_SETTING: dict[Process, str] = {"worker": "heartbeat_file", "webhooks": "webhook_heartbeat_file"}


def setting_name(process: Process) -> str:
    return f"{ENV_PREFIX}{_SETTING[process].upper()}"


def heartbeat_path(settings: Settings, process: Process = "worker") -> Path:
    """The process kind's heartbeat setting (INBOXCHECK_HEARTBEAT_FILE for the worker,
    INBOXCHECK_WEBHOOK_HEARTBEAT_FILE for the webhooks process), else a per-user file per kind in
    the runtime or temporary folder."""
    configured = getattr(settings, _SETTING[process])
    if configured:
        return Path(configured)
    folder = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(folder) / f"inboxcheck-{process}-{os.getuid()}.heartbeat"


def beat(path: Path) -> None:
    # O_NOFOLLOW: in a shared folder such as /tmp, a planted symlink must not redirect the write.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        os.utime(fd)
    finally:
        os.close(fd)


def check_writable(settings: Settings, process: Process = "worker") -> None:
    """Beat once, at start-up, so an unwritable path stops the process with a clear message."""
    path = heartbeat_path(settings, process)
    try:
        beat(path)
    except OSError as exc:
        raise SettingsError(
            f"{setting_name(process)}: cannot write the heartbeat {path}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None


@contextlib.asynccontextmanager
async def beating(settings: Settings, process: Process) -> AsyncIterator[None]:
    """The process's heartbeat renewed every health-check interval while the block runs."""
    task = asyncio.ensure_future(
        _beat_forever(heartbeat_path(settings, process), settings.health_check_interval)
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _beat_forever(path: Path, every_s: float) -> None:
    while True:
        beat(path)  # a local file's time: microseconds, not worth a thread
        await asyncio.sleep(every_s)


def age_s(path: Path) -> float | None:
    """Seconds since the last beat, or None when there has been none."""
    try:
        return max(time.time() - path.stat().st_mtime, 0.0)
    except OSError:
        return None


def is_fresh(age: float | None, settings: Settings) -> bool:
    """A heartbeat `age` seconds old (None: none yet) shows a loop that still turns."""
    return age is not None and age <= settings.health_check_interval * STALE_AFTER_INTERVALS
