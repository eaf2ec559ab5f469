"""Helpers for the worker tests: a restartable redis-server, an SMTP server, worker processes.

(Written here because tests/servers had no redis/smtp fixture yet when these tests were made.)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.servers.ports import LOOPBACK, free_port
from tests.servers.tcp import ThreadedTcpServer
from tests.servers.wait import wait_until

START_TIMEOUT_S = 10.0
POLL_S = 0.05
REPO = Path(__file__).resolve().parent.parent


class RedisServer:
    """redis-server on 127.0.0.1:<free port>, append-only so queued jobs survive stop/start."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed: apt-get install redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("redis-server exited")
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                return False

        wait_until(up, timeout=START_TIMEOUT_S, what="redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=START_TIMEOUT_S)
        self.proc = None


class SmtpServer:
    """aiosmtpd with STARTTLS and AUTH PLAIN/LOGIN against a dict of users."""

    def __init__(self, tls_context: Any, users: dict[str, str]) -> None:
        self.users = users
        self.port = free_port()

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and \
                self.users.get(auth_data.login.decode()) == auth_data.password.decode()
            return AuthResult(success=ok, handled=False)

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                return "250 OK"

        outer = self

        class _Controller(Controller):
            def factory(self) -> SMTP:
                return SMTP(Handler(), hostname="localhost", tls_context=tls_context, require_starttls=True,
                            auth_require_tls=True, authenticator=authenticator,
                            auth_exclude_mechanism=["CRAM-MD5"])

        self.controller = _Controller(Handler(), hostname=LOOPBACK, port=outer.port, ready_timeout=START_TIMEOUT_S)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Accepts, then says nothing: the client's greeting timeout must fire.
    await reader.read()
    writer.close()


def silent_server() -> ThreadedTcpServer:
    return ThreadedTcpServer(_silent, name="silent")


def closed_port() -> int:
    return free_port()


class WorkerProcess:
    """`python -m worker worker` as a real subprocess, its log in a file."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.log_file = log_file
        self._log = open(log_file, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "worker"], env=env, cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT)

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
        return any(json.loads(line).get("event") == event
                   for line in self.log_file.read_text().splitlines() if line.startswith("{"))


def worker_env(redis_url: str, queue: str, stream: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXCHECK_")}
    env.update({
        "INBOXCHECK_REDIS_URL": redis_url, "INBOXCHECK_QUEUE_NAME": queue,
        "INBOXCHECK_EVENTS_STREAM": stream, "INBOXCHECK_START_LOCAL_REDIS": "false",
        "INBOXCHECK_LOG_FORMAT": "json", "INBOXCHECK_STEP_TIMEOUT": "1", "INBOXCHECK_CHECK_TIMEOUT": "2",
        "INBOXCHECK_JOB_TIMEOUT": "5", "INBOXCHECK_MAX_TRIES": "2", "INBOXCHECK_RETRY_BACKOFF": "0.1",
        "INBOXCHECK_RECONNECT_DELAY": "0.1", "INBOXCHECK_RECONNECT_MAX_DELAY": "0.5",
        "INBOXCHECK_EHLO_HOSTNAME": "worker.test",
    })
    env.update(extra)
    return env


def stream_events(client: redis.Redis, stream: str) -> list[dict[str, Any]]:
    return [json.loads(fields[b"event"]) for _, fields in client.xrange(stream)]


def wait_for_events(client: redis.Redis, stream: str, count: int, timeout: float,
                    alive: Callable[[], bool] = lambda: True) -> list[dict[str, Any]]:
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


def free_tcp_port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((LOOPBACK, port)) != 0
