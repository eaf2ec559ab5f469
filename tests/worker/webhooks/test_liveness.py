"""The webhooks process's liveness is its own loop turning, as the worker's is: alive while Redis
is away (it only waits to reconnect), not alive once its loop stops, and never the worker's file."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.servers.redis import RedisServer
from tests.worker.support import POLL_S, closed_port, run_cli, worker_env
from tests.worker.webhooks.support import webhook_settings, webhooks_process

DEADLINE_S = 15.0


def test_alive_without_redis_and_not_alive_once_frozen(shared_redis: RedisServer, tmp_path: Path) -> None:
    heartbeat = tmp_path / "webhooks.heartbeat"
    nobody_listens = f"redis://127.0.0.1:{closed_port()}/0"
    settings = webhook_settings(shared_redis).model_copy(update={"redis_url": nobody_listens})
    beat_every_1_s = {
        "INBOXCHECK_HEALTH_CHECK_INTERVAL": "1",
        "INBOXCHECK_WEBHOOK_HEARTBEAT_FILE": str(heartbeat),
    }
    env = worker_env(nobody_listens, settings.queue_name, settings.events_stream, **beat_every_1_s)
    process = webhooks_process(settings, tmp_path / "webhooks.log", **beat_every_1_s)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not heartbeat.exists():
            assert time.monotonic() < deadline and process.poll() is None, "no heartbeat"
            time.sleep(POLL_S)
        alive = run_cli("health", "--liveness", "--process", "webhooks", env=env)
        assert alive.returncode == 0, alive.stderr
        process.send_signal(signal.SIGSTOP)  # the loop stops turning; the process is still there
        deadline = time.monotonic() + DEADLINE_S
        while (frozen := run_cli("health", "--liveness", "--process", "webhooks", env=env)).returncode == 0:
            assert time.monotonic() < deadline, "a frozen webhooks process still counts as alive"
        assert frozen.returncode == 1 and "last heartbeat" in frozen.stderr
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()


def test_the_worker_and_the_webhooks_process_never_share_a_file(tmp_path: Path) -> None:
    """Neither by default nor when one settings file gives the worker's: a live worker's beat
    must not vouch for a dead webhooks process."""
    default = worker_env(closed_url(), "q", "ev", XDG_RUNTIME_DIR=str(tmp_path))
    (tmp_path / f"inboxcheck-worker-{os.getuid()}.heartbeat").touch()  # a live worker's beat
    worker_file = tmp_path / "shared.heartbeat"
    worker_file.touch()
    shared = {**default, "INBOXCHECK_HEARTBEAT_FILE": str(worker_file)}
    for env in (default, shared):
        worker = run_cli("health", "--liveness", env=env)
        webhooks = run_cli("health", "--liveness", "--process", "webhooks", env=env)
        assert worker.returncode == 0, worker.stderr
        assert webhooks.returncode == 1 and "no heartbeat yet" in webhooks.stderr


def closed_url() -> str:
    return f"redis://127.0.0.1:{closed_port()}/0"


def test_process_without_liveness_is_a_usage_error() -> None:
    env = worker_env(closed_url(), "q", "ev")
    answer = run_cli("health", "--process", "webhooks", env=env)
    assert answer.returncode == 2 and "--process" in answer.stderr
