"""Liveness is the worker's own loop turning, not Redis answering: a worker riding out a Redis
outage stays alive (and unready); a frozen worker stops being alive."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.servers.ports import free_port
from tests.worker.support import POLL_S, WorkerProcess, run_cli, worker_env

DEADLINE_S = 15.0


def test_a_worker_without_redis_is_alive_and_unready_and_a_frozen_one_is_not_alive(tmp_path: Path) -> None:
    heartbeat = tmp_path / "worker.heartbeat"
    nobody_listens = f"redis://127.0.0.1:{free_port()}/0"
    env = worker_env(
        nobody_listens,
        "q:liveness",
        "ev:liveness",
        INBOXCHECK_HEALTH_CHECK_INTERVAL="1",
        INBOXCHECK_HEARTBEAT_FILE=str(heartbeat),
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not heartbeat.exists():
            assert time.monotonic() < deadline and worker.alive(), "no heartbeat"
            time.sleep(POLL_S)
        alive = run_cli("health", "--liveness", env=env)
        assert alive.returncode == 0, alive.stderr
        ready = run_cli("health", env=env)
        assert ready.returncode == 1 and "cannot reach Redis" in ready.stderr
        worker.signal(signal.SIGSTOP)  # the loop stops turning; the process is still there
        deadline = time.monotonic() + DEADLINE_S
        while (frozen := run_cli("health", "--liveness", env=env)).returncode == 0:
            assert time.monotonic() < deadline, "a frozen worker still counts as alive"
        assert frozen.returncode == 1 and "last heartbeat" in frozen.stderr
    finally:
        worker.signal(signal.SIGCONT)
        worker.kill()
