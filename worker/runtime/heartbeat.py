"""The heartbeat of a long-running process (the worker, the webhooks process): a file whose
modification time its event loop renews.

Liveness asks "is this process's loop still turning?", which needs no Redis: a process riding out
a Redis outage is alive and must not be restarted for it (Redis reachability is readiness, checked
by `inboxcheck health`). `inboxcheck health --liveness [--process webhooks]` reads this file's age.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

from worker.settings import Settings, SettingsError

# A heartbeat older than this many intervals means the loop stopped: one slow turn is not death.
STALE_AFTER_INTERVALS = 3
PRIVATE_FILE_MODE = 0o600
Process = Literal["worker", "webhooks"]
PROCESSES: tuple[Process, ...] = ("worker", "webhooks")


def heartbeat_path(settings: Settings, process: Process = "worker") -> Path:
    """INBOXCHECK_HEARTBEAT_FILE, else a per-user file per process kind in the runtime or
    temporary folder, so a worker and a webhooks process on one machine do not share one."""
    if settings.heartbeat_file:
        return Path(settings.heartbeat_file)
    folder = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(folder) / f"inboxcheck-{process}-{os.getuid()}.heartbeat"


def beat(path: Path) -> None:
    # O_NOFOLLOW: in a shared folder such as /tmp, a planted symlink must not redirect the write.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        os.utime(fd)
    finally:
        os.close(fd)


def check_writable(path: Path) -> None:
    """Beat once, at start-up, so an unwritable path stops the worker with a clear message."""
    try:
        beat(path)
    except OSError as exc:
        raise SettingsError(
            f"INBOXCHECK_HEARTBEAT_FILE: cannot write the heartbeat {path}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None


async def beat_forever(path: Path, every_s: float) -> None:
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
