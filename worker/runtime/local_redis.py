"""Development convenience: start Debian's redis-server when nothing answers at a loopback URL."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import redis
import structlog

log = structlog.get_logger("inboxcheck.worker")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
DEFAULT_REDIS_PORT = 6379
PROBE_TIMEOUT_S = 1.0
START_TIMEOUT_S = 10.0
START_POLL_S = 0.05
DEFAULT_DIR = Path.home() / ".local" / "state" / "inboxcheck" / "redis"


def reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start_if_needed(url: str, directory: str | None) -> subprocess.Popen[bytes] | None:
    """Start redis-server for `url` when it is a loopback URL nobody answers; None otherwise."""
    if reachable(url):
        return None
    parsed = urlparse(url)
    if parsed.scheme != "redis" or parsed.hostname not in LOOPBACK_HOSTS:
        log.warning(
            "redis_unreachable",
            redis_url_host=parsed.hostname,
            note="not a local URL, so no local redis-server is started; waiting for it",
        )
        return None
    binary = shutil.which("redis-server")
    if binary is None:
        log.error(
            "redis_server_missing",
            note="no Redis answers and redis-server is not installed: apt-get install redis-server",
        )
        return None
    port = parsed.port or DEFAULT_REDIS_PORT
    data_dir = Path(directory) if directory else DEFAULT_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    # Append-only file: queued jobs survive a restart of this development Redis too.
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not reachable(url):
        if process.poll() is not None or time.monotonic() > deadline:
            log.error("local_redis_failed", port=port, exit_code=process.poll())
            process.kill()
            return None
        time.sleep(START_POLL_S)
    log.warning(
        "local_redis_started",
        port=port,
        pid=process.pid,
        dir=str(data_dir),
        note="no Redis answered at INBOXCHECK_REDIS_URL, so this worker started a local "
        "redis-server; it stops with the worker. Set INBOXCHECK_REDIS_URL for a real one.",
    )
    return process
