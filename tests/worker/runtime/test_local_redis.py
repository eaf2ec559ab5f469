"""The development Redis the worker starts when none answers: private to its user, password
protected, bound to the URL's loopback address, started without the worker's environment."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers.ports import free_port
from tests.worker.support import run_cli
from worker.runtime import local_redis

SECRET_KEY_VALUE = "a-secret-key-the-child-must-not-see"


@pytest.fixture
def started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path, local_redis.LocalRedis]]:
    monkeypatch.setenv("INBOXCHECK_SECRET_KEY", SECRET_KEY_VALUE)
    url = f"redis://127.0.0.1:{free_port()}/0"
    folder = tmp_path / "redis"
    local = local_redis.start_if_needed(url, str(folder))
    assert local is not None
    try:
        yield url, folder, local
    finally:
        local.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_its_folder_and_files_are_the_users_only(started: tuple[str, Path, local_redis.LocalRedis]) -> None:
    _, folder, _ = started
    assert mode(folder) == 0o700
    assert [p.name for p in folder.iterdir() if mode(p) & 0o077] == []


def test_it_wants_a_password_that_only_the_worker_and_cli_read(
    started: tuple[str, Path, local_redis.LocalRedis],
) -> None:
    url, folder, local = started
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url).ping()
    assert local_redis.answers(url)  # the port is taken: no second server would start there
    assert redis.Redis.from_url(local_redis.with_local_password(url, str(folder))).ping()
    password = local_redis.password_file(str(folder), url).read_text().strip()
    cmdline = Path(f"/proc/{local.process.pid}/cmdline").read_bytes()
    assert password.encode() not in cmdline  # `ps` shows a command line to every user


def test_it_starts_without_the_workers_environment(started: tuple[str, Path, local_redis.LocalRedis]) -> None:
    _, _, local = started
    environ = Path(f"/proc/{local.process.pid}/environ").read_bytes()
    assert SECRET_KEY_VALUE.encode() not in environ and b"INBOXCHECK_" not in environ


def test_an_ipv6_loopback_url_gets_an_ipv6_loopback_server(tmp_path: Path) -> None:
    port = free_port()
    local = local_redis.start_if_needed(f"redis://[::1]:{port}/0", str(tmp_path / "r6"))
    assert local is not None
    try:
        assert redis.Redis.from_url(local.url).ping()
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        local.stop()


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {
        "PATH": "/usr/bin:/bin",
        "INBOXCHECK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "INBOXCHECK_LOCAL_REDIS_DIR": str(blocker / "redis"),
        "INBOXCHECK_METRICS_PORT": "0",
    }
    result = run_cli("worker", env=env)
    assert result.returncode == 2, result.stderr
    assert "INBOXCHECK_LOCAL_REDIS_DIR: cannot create the local Redis folder" in result.stderr
    assert "Traceback" not in result.stderr
