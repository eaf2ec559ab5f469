"""Helpers for the worker tests: settings, requests, a burst worker, worker and CLI subprocesses,
counting proxies in front of the mail servers, and reading Redis.

The servers themselves (redis-server, aiosmtpd, Dovecot, fakes) are the shared ones in tests/servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import redis
from redis.asyncio import Redis

from jobs.request import ValidationRequest, parse_request
from jobs.time_units import MS_PER_S
from tests.jobs.checks import CLOSED_PORT, LOOPBACK_NETWORKS
from tests.servers.ports import LOOPBACK
from tests.servers.tcp import ThreadedTcpServer
from worker.messages import envelope, keys
from worker.messages.sealing import generate_key
from worker.runtime import redis_pool
from worker.runtime.arq_settings import worker_kwargs
from worker.runtime.inbox_worker import InboxWorker
from worker.settings import Settings

PASSWORD = "unit-s3cret-Pa55"
# Every test server is on 127.0.0.1: the pause a throttled reply sets there (the unpaused_loopback
# fixture lifts it).
LOOPBACK_PAUSE = keys.pacing_backoff_key("127.0.0.1")
# INBOXCHECK_MAX_TRIES of the worker subprocesses (worker_env).
WORKER_MAX_TRIES = 2
KEY = generate_key()
PIPE_CHUNK = 65_536
POLL_S = 0.05
REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    return CLOSED_PORT


class WorkerProcess:
    """`python -m worker worker` as a real subprocess, its log (and heartbeat) beside it."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.log_file = log_file
        self._log = open(log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "worker"],
            env={"INBOXCHECK_HEARTBEAT_FILE": str(log_file.with_suffix(".heartbeat")), **env},
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
            "INBOXCHECK_MAX_TRIES": str(WORKER_MAX_TRIES),
            "INBOXCHECK_RETRY_BACKOFF": "0.1",
            "INBOXCHECK_RECONNECT_DELAY": "0.1",
            "INBOXCHECK_RECONNECT_MAX_DELAY": "0.5",
            "INBOXCHECK_EHLO_HOSTNAME": "worker.test",
            # The test servers are on loopback, which a worker refuses unless allowed.
            "INBOXCHECK_ALLOW_NETWORKS": LOOPBACK_NETWORKS,
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


class HasUrl(Protocol):
    """A test Redis (tests.servers.redis) or a Sentinel set (tests.servers.sentinel)."""

    @property
    def url(self) -> str: ...


def make_settings(redis_server: HasUrl, **changes: Any) -> Settings:
    name = uuid.uuid4().hex[:8]
    base: dict[str, Any] = dict(
        redis_url=redis_server.url,
        queue_name=f"q:{name}",
        events_stream=f"ev:{name}",
        step_timeout=1,
        check_timeout=1,
        job_timeout=5,
        max_tries=3,
        retry_backoff=0.01,
        secret_key=KEY,
        allow_plaintext_credentials=False,
        start_local_redis=False,
        poll_delay=0.01,
        allow_networks=LOOPBACK_NETWORKS,
    )
    base.update(changes)
    return Settings(**base)


def request_fields(inbox_id: str = "inbox-1", port: int | None = None, **extra: Any) -> dict[str, Any]:
    port = port or closed_port()
    return {
        "inbox_id": inbox_id,
        "inbox_type": "CUSTOM_SMTP",
        "email": "u@example.com",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "imap_host": "127.0.0.1",
        "imap_port": port,
        "smtp_password": PASSWORD,
        **extra,
    }


def request(inbox_id: str = "inbox-1", port: int | None = None, **extra: Any) -> ValidationRequest:
    return parse_request(request_fields(inbox_id, port, **extra))


async def in_process_worker(settings: Settings, **options: Any) -> InboxWorker:
    """The worker `inboxcheck worker` runs (its pool, its settings), built in this process;
    `options` override its keyword arguments."""
    kwargs = {**worker_kwargs(settings), "handle_signals": False, **options}
    return InboxWorker(**kwargs, redis_pool=await redis_pool.connect(settings))


async def burst(settings: Settings, **options: Any) -> InboxWorker:
    """Run a worker until the queue is empty: arq's burst mode, no sleeps needed. Options go to
    the worker (`max_burst_jobs=n`: stop after n runs, retries included); returns it, for its
    counts of jobs completed and retried. No recheck cron unless asked for (`cron_jobs=`): the
    registry's keys are not per queue, and a tick would claim other tests' inboxes."""
    worker = await in_process_worker(settings, burst=True, **{"cron_jobs": [], **options})
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


async def write_raw(aredis: Redis, settings: Settings, job_id: str, raw: bytes) -> None:
    await aredis.set(keys.job_key(job_id), raw)
    await aredis.zadd(settings.queue_name, {job_id: int(time.time() * 1000)})


def raw_job(job_payload: Any) -> bytes:
    return envelope.job_bytes(job_payload, int(time.time() * MS_PER_S))


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
    )


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXCHECK_")}
    env.update(
        {
            "INBOXCHECK_REDIS_URL": settings.redis_url,
            "INBOXCHECK_QUEUE_NAME": settings.queue_name,
            "INBOXCHECK_EVENTS_STREAM": settings.events_stream,
            "INBOXCHECK_SECRET_KEY": KEY,
        }
    )
    return env


class ConnectionCounter:
    """Open connections through every proxy sharing it: the load the host actually sees."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.peak = 0
        self.total = 0

    def enter(self) -> None:
        with self.lock:
            self.open += 1
            self.total += 1
            self.peak = max(self.peak, self.open)

    def leave(self) -> None:
        with self.lock:
            self.open -= 1


def counting_proxy(
    upstream_port: int, counter: ConnectionCounter
) -> tuple[ThreadedTcpServer, dict[str, bool]]:
    """A TCP forwarder to 127.0.0.1:upstream_port that counts open connections; set
    switch["drop"] to close new connections at once (a flaky network, for transient failures)."""
    switch = {"drop": False}

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counter.enter()
        try:
            if switch["drop"]:
                return
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, upstream_port)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.transport.abort()
        finally:
            counter.leave()

    return ThreadedTcpServer(forward, name=f"counting-proxy-{upstream_port}").start(), switch


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(PIPE_CHUNK):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.transport.abort()  # one side closed: the whole conversation is over
