"""Development convenience: start Debian's redis-server when nothing answers at a loopback URL.

That Redis holds sealed credentials (plaintext ones in development mode), so it is private to the
user running the worker: its folder and every file in it are created under umask 077, it requires
a random password kept in a 0600 file there (never on a command line, where `ps` shows it, and
read by the worker and the CLI through `with_local_password`), it binds only the loopback address
of the URL, and it starts with a minimal environment, never the worker's (which holds
INBOXCHECK_SECRET_KEY).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

import redis
import structlog

from worker.runtime import redis_target
from worker.settings import SettingsError

log = structlog.get_logger("inboxcheck.worker")

# The address redis-server binds for each loopback host a URL may name.
LOOPBACK_BIND = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1"}
DEFAULT_REDIS_PORT = 6379
PROBE_TIMEOUT_S = 1.0
START_TIMEOUT_S = 10.0
START_POLL_S = 0.05
DEFAULT_DIR = Path.home() / ".local" / "state" / "inboxcheck" / "redis"
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PASSWORD_BYTES = 32
# What redis-server needs of an environment: nothing of the worker's.
_CHILD_ENV_KEYS = ("PATH", "LANG", "TZ")


class LocalRedisError(SettingsError):
    """The local Redis cannot be set up where INBOXCHECK_LOCAL_REDIS_DIR says."""


@dataclass(frozen=True, slots=True)
class LocalRedis:
    process: subprocess.Popen[bytes]
    url: str  # the URL with the password: what the worker connects with

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def data_dir(directory: str | None) -> Path:
    return Path(directory) if directory else DEFAULT_DIR


def _port(url: str) -> int:
    return urlparse(url).port or DEFAULT_REDIS_PORT


def password_file(directory: str | None, url: str) -> Path:
    return data_dir(directory) / f"redis-{_port(url)}.password"


def _is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme == "redis" and parsed.hostname in LOOPBACK_BIND


def _with_password(url: str, password: str) -> str:
    parsed = urlparse(url)
    host = f"[{parsed.hostname}]" if parsed.hostname and ":" in parsed.hostname else parsed.hostname
    netloc = f":{quote(password, safe='')}@{host}:{_port(url)}"
    return urlunparse(parsed._replace(netloc=netloc))


def with_local_password(url: str, directory: str | None) -> str:
    """`url` with the password of the Redis this module started for it, when the URL names a
    loopback Redis without a password and that password file exists; else `url` unchanged."""
    if not _is_local(url) or urlparse(url).password:
        return url
    try:
        password = password_file(directory, url).read_text(encoding="ascii").strip()
    except OSError:
        return url
    return _with_password(url, password) if password else url


def answers(url: str, *, refused_counts: bool = True) -> bool:
    """Something speaks Redis at `url`. By default a refused password still counts (the port is
    taken, no second server may start there); `refused_counts=False` asks for a usable server."""
    client = redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S)
    try:
        return bool(client.ping())
    except (redis.AuthenticationError, redis.ResponseError):
        return refused_counts
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    path.chmod(PRIVATE_FILE_MODE)  # an older file keeps its mode through O_TRUNC


def _private_dir(directory: str | None) -> Path:
    path = data_dir(directory)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        path.chmod(PRIVATE_DIR_MODE)  # a folder made by an older version may be open to others
    except OSError as exc:
        raise LocalRedisError(
            f"INBOXCHECK_LOCAL_REDIS_DIR: cannot create the local Redis folder {path}: "
            f"{exc.strerror or type(exc).__name__} (set another folder, or "
            "INBOXCHECK_START_LOCAL_REDIS=false and INBOXCHECK_REDIS_URL for a real Redis)"
        ) from None
    return path


def start_if_needed(url: str, directory: str | None) -> LocalRedis | None:
    """Start a private redis-server for `url` when it is a loopback URL nobody answers; None
    otherwise. Raises LocalRedisError when its folder cannot be made."""
    if redis_target.parse_sentinel_url(url) is not None:
        return None  # sentinels and their master are a deployment's, never this worker's to start
    if answers(url):
        return None
    parsed = urlparse(url)
    if not _is_local(url):
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
    port = _port(url)
    folder = _private_dir(directory)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    config = folder / f"redis-{port}.conf"
    # Append-only file: queued jobs survive a restart of this development Redis too.
    _write_private(
        config,
        f"port {port}\nbind {LOOPBACK_BIND[parsed.hostname or '']}\nprotected-mode yes\n"
        f'dir "{folder}"\nappendonly yes\nsave ""\nrequirepass "{password}"\n',
    )
    _write_private(password_file(directory, url), password + "\n")
    authed = _with_password(url, password)
    process = subprocess.Popen(
        [binary, str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={key: os.environ[key] for key in _CHILD_ENV_KEYS if key in os.environ},
        umask=PRIVATE_UMASK,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(authed, refused_counts=False):
        if process.poll() is not None or time.monotonic() > deadline:
            log.error("local_redis_failed", port=port, exit_code=process.poll(), dir=str(folder))
            process.kill()
            process.wait()
            return None
        time.sleep(START_POLL_S)
    log.warning(
        "local_redis_started",
        port=port,
        pid=process.pid,
        dir=str(folder),
        note="no Redis answered at INBOXCHECK_REDIS_URL, so this worker started a private local "
        "redis-server (password in its folder); it stops with the worker. Set INBOXCHECK_REDIS_URL "
        "for a real one.",
    )
    return LocalRedis(process, authed)
