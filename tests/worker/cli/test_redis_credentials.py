"""A Redis that answers but refuses the credentials in INBOXCHECK_REDIS_URL is told apart from a
Redis that does not answer, by the commands and by the processes that keep reconnecting: the fix
is the URL (or Redis's ACL), not the network. No piece of the password shows in either."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until
from tests.worker.support import WorkerProcess, closed_port, run_cli, worker_env
from tests.worker.webhooks.support import webhook_settings, webhooks_process

SERVER_PASSWORD = "Hq4-server-Lp8"
WRONG_PASSWORD = "Zt4-wr0ng-Jm6"
# Pieces of both passwords, either way round: none may show in a message or a log line.
PASSWORD_PIECES = ("Hq4", "Lp8", "Zt4", "wr0ng", "Jm6", "4qH", "8pL", "4tZ", "gn0rw", "6mJ")
DEADLINE_S = 20.0
# A refused password stops a command as an unreachable Redis always did: 2, and 1 from `health`.
EXIT_COMMAND = 2
EXIT_UNHEALTHY = 1


@pytest.fixture(scope="module")
def guarded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server that takes only SERVER_PASSWORD (its default user's, as `requirepass`)."""
    server = RedisServer(Path(tmp_path_factory.mktemp("guarded-redis"))).start()
    admin = server.client()
    admin.config_set("requirepass", SERVER_PASSWORD)
    admin.close()
    try:
        yield server
    finally:
        server.stop()


def url_with(credentials: str, port: int) -> str:
    return f"redis://{credentials}127.0.0.1:{port}/0"


def command_env(url: str, tmp_path: Path) -> dict[str, str]:
    # A folder of its own for the development Redis's password file: none is looked up from the
    # user's, which could hold one for this port.
    return worker_env(url, "q:credentials", "ev:credentials", INBOXCHECK_LOCAL_REDIS_DIR=str(tmp_path))


def assert_no_password(text: str) -> None:
    assert not [piece for piece in PASSWORD_PIECES if piece in text], text


@pytest.mark.parametrize(
    "credentials",
    [f":{WRONG_PASSWORD}@", f"default:{WRONG_PASSWORD}@", f"nobody:{SERVER_PASSWORD}@", ""],
    ids=["wrong-password", "user-and-wrong-password", "unknown-user", "no-password"],
)
def test_a_command_says_redis_refused_the_credentials_not_that_it_cannot_reach_it(
    guarded_redis: RedisServer, tmp_path: Path, credentials: str
) -> None:
    where = f"127.0.0.1:{guarded_redis.port}"
    refused = run_cli("list", "--json", env=command_env(url_with(credentials, guarded_redis.port), tmp_path))
    assert refused.returncode == EXIT_COMMAND
    assert refused.stderr.startswith(
        f"inboxcheck: Redis at {where} refused the credentials in INBOXCHECK_REDIS_URL"
    )
    assert "cannot reach" not in refused.stderr and "Traceback" not in refused.stderr
    assert refused.stdout == ""
    assert_no_password(refused.stderr)


def test_health_says_redis_refused_the_credentials_and_exits_unhealthy(
    guarded_redis: RedisServer, tmp_path: Path
) -> None:
    env = command_env(url_with(f":{WRONG_PASSWORD}@", guarded_redis.port), tmp_path)
    refused = run_cli("health", env=env)
    assert refused.returncode == EXIT_UNHEALTHY
    assert refused.stderr.startswith(
        f"inboxcheck: unhealthy: Redis at 127.0.0.1:{guarded_redis.port} refused the credentials"
    )
    assert "cannot reach" not in refused.stderr
    assert_no_password(refused.stderr)


def test_an_unreachable_redis_still_says_cannot_reach(tmp_path: Path) -> None:
    port = closed_port()
    env = command_env(url_with(f":{WRONG_PASSWORD}@", port), tmp_path)
    listed = run_cli("list", "--json", env=env)
    assert listed.returncode == EXIT_COMMAND
    assert listed.stderr.startswith(
        f"inboxcheck: cannot reach Redis at 127.0.0.1:{port} (INBOXCHECK_REDIS_URL)"
    )
    health = run_cli("health", env=env)
    assert health.returncode == EXIT_UNHEALTHY
    assert health.stderr == f"inboxcheck: unhealthy: cannot reach Redis at 127.0.0.1:{port}\n"
    for answer in (listed, health):
        assert "credentials" not in answer.stderr
        assert_no_password(answer.stderr)


def log_events(log_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]


def wait_for_refusals(log_file: Path, count: int, running: Any) -> list[dict[str, Any]]:
    """The process's `redis_credentials_refused` lines, once it logged `count` (it keeps
    retrying, as it does while Redis is down)."""

    def logged() -> bool:
        assert running(), log_file.read_text()[-3000:]
        return len([e for e in log_events(log_file) if e["event"] == "redis_credentials_refused"]) >= count

    wait_until(logged, timeout=DEADLINE_S, what=f"{count} redis_credentials_refused lines")
    return [e for e in log_events(log_file) if e["event"] == "redis_credentials_refused"]


def assert_refusals_logged(log_file: Path, port: int, refusals: list[dict[str, Any]]) -> None:
    assert {e["redis"] for e in refusals} == {f"127.0.0.1:{port}"}
    assert all("INBOXCHECK_REDIS_URL" in e["note"] for e in refusals)
    assert not [e for e in log_events(log_file) if e["event"] == "redis_unreachable"]
    assert_no_password(log_file.read_text())


def test_the_worker_logs_refused_credentials_and_keeps_retrying(
    guarded_redis: RedisServer, tmp_path: Path
) -> None:
    url = url_with(f":{WRONG_PASSWORD}@", guarded_redis.port)
    worker = WorkerProcess(worker_env(url, "q:credentials", "ev:credentials"), tmp_path / "worker.log")
    try:
        refusals = wait_for_refusals(worker.log_file, 2, worker.alive)
        worker.signal(signal.SIGTERM)
        assert worker.wait(DEADLINE_S) == 0
    finally:
        worker.kill()
    assert_refusals_logged(worker.log_file, guarded_redis.port, refusals)


def test_the_webhooks_process_logs_refused_credentials_and_keeps_retrying(
    guarded_redis: RedisServer, tmp_path: Path
) -> None:
    url = url_with(f":{WRONG_PASSWORD}@", guarded_redis.port)
    settings = webhook_settings(guarded_redis, redis_url=url)
    log_file = tmp_path / "webhooks.log"
    process: subprocess.Popen[bytes] = webhooks_process(
        settings, log_file, INBOXCHECK_WEBHOOK_HEARTBEAT_FILE=str(tmp_path / "webhooks.heartbeat")
    )
    try:
        refusals = wait_for_refusals(log_file, 2, lambda: process.poll() is None)
        process.send_signal(signal.SIGTERM)
        assert process.wait(DEADLINE_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert_refusals_logged(log_file, guarded_redis.port, refusals)
