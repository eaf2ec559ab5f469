"""Helpers for the worker tests: worker subprocesses, their settings, and reading Redis.

The servers themselves (redis-server, aiosmtpd, Dovecot, fakes) are the shared ones in tests/servers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.checks import CLOSED_PORT

POLL_S = 0.05
REPO = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    return CLOSED_PORT


class WorkerProcess:
    """`python -m worker worker` as a real subprocess, its log in a file."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.log_file = log_file
        self._log = open(log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "worker"],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def log_has(self, event: str) -> bool:
        return any(
            json.loads(line).get("event") == event
            for line in self.log_file.read_text().splitlines()
            if line.startswith("{")
        )


def worker_env(redis_url: str, queue: str, stream: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXCHECK_")}
    env.update(
        {
            "INBOXCHECK_REDIS_URL": redis_url,
            "INBOXCHECK_QUEUE_NAME": queue,
            "INBOXCHECK_EVENTS_STREAM": stream,
            "INBOXCHECK_START_LOCAL_REDIS": "false",
            "INBOXCHECK_LOG_FORMAT": "json",
            "INBOXCHECK_STEP_TIMEOUT": "1",
            "INBOXCHECK_CHECK_TIMEOUT": "2",
            "INBOXCHECK_JOB_TIMEOUT": "5",
            "INBOXCHECK_MAX_TRIES": "2",
            "INBOXCHECK_RETRY_BACKOFF": "0.1",
            "INBOXCHECK_RECONNECT_DELAY": "0.1",
            "INBOXCHECK_RECONNECT_MAX_DELAY": "0.5",
            "INBOXCHECK_EHLO_HOSTNAME": "worker.test",
            # No metrics endpoint: workers of concurrent test runs would fight over the default port.
            "INBOXCHECK_METRICS_PORT": "0",
        }
    )
    env.update(extra)
    return env


def stream_events(client: redis.Redis, stream: str) -> list[dict[str, Any]]:
    return [json.loads(fields[b"event"]) for _, fields in client.xrange(stream)]


def wait_for_events(
    client: redis.Redis, stream: str, count: int, timeout: float, alive: Callable[[], bool] = lambda: True
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while client.xlen(stream) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{client.xlen(stream)} of {count} events after {timeout} s")
        if not alive():
            raise RuntimeError("the worker died")
        time.sleep(POLL_S)
    return stream_events(client, stream)


def scan_for(client: redis.Redis, needles: list[bytes]) -> list[str]:
    """Every key (all types, stream entries included) whose content holds one of the needles."""
    hits = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            blobs = [client.get(key) or b""]
        elif kind == "zset":
            blobs = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "list":
            blobs = client.lrange(key, 0, -1)
        elif kind == "set":
            blobs = list(client.smembers(key))
        elif kind == "hash":
            blobs = [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == "stream":
            blobs = [b"".join(k + v for k, v in fields.items()) for _, fields in client.xrange(key)]
        else:
            blobs = []
        blobs.append(key)
        if any(needle in blob for blob in blobs for needle in needles):
            hits.append(key.decode(errors="replace"))
    return hits
