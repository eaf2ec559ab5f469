"""Workers as real subprocesses against real redis-server, SMTP (aiosmtpd) and IMAP (Dovecot)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from jobs.request import parse_request
from tests.servers.certs import PKI
from tests.servers.dovecot import Dovecot
from tests.worker_support import (
    RedisServer, SmtpServer, WorkerProcess, closed_port, scan_for, silent_server, stream_events,
    wait_for_events, worker_env,
)
from worker.producer import enqueue_validation
from worker.sealing import generate_key
from worker.settings import Settings

EMAIL = "owner@example.com"
PASSWORD = "Corr3ct-Horse-Battery"
WRONG = "Wr0ng-Password-Guess"
KEY = generate_key()
EVENT_DEADLINE_S = 30.0
EXIT_DEADLINE_S = 15.0


class Servers:
    def __init__(self, tmp: Path) -> None:
        self.pki = PKI(tmp / "pki")
        self.redis = RedisServer(tmp / "redis").start()
        self.smtp = SmtpServer(self.pki.valid.ssl_context, {EMAIL: PASSWORD}).start()
        self.imap = Dovecot(tmp / "dovecot", self.pki.valid)
        self.imap.set_user(EMAIL, PASSWORD)
        self.imap.start()
        self.silent = silent_server().start()
        self.closed = closed_port()

    def stop(self) -> None:
        for stop in (self.silent.stop, self.imap.stop, self.smtp.stop, self.redis.stop):
            stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    running = Servers(tmp_path_factory.mktemp("worker-procs"))
    yield running
    running.stop()


KINDS = {
    "valid": (None, "valid"),
    "wrong_password": ("AUTH_FAILED", "invalid"),
    "closed": ("CONNECTION_FAILED", "invalid"),
    "silent": ("TIMEOUT", "invalid"),
}


def fields(servers: Servers, kind: str, inbox_id: str) -> dict[str, Any]:
    smtp_port, imap_port = servers.smtp.port, servers.imap.imaps_port
    if kind == "closed":
        smtp_port = imap_port = servers.closed
    elif kind == "silent":
        smtp_port = imap_port = servers.silent.port
    return {"inbox_id": inbox_id, "inbox_type": "CUSTOM_SMTP", "email": EMAIL,
            "smtp_host": "127.0.0.1", "smtp_port": smtp_port, "imap_host": "127.0.0.1",
            "imap_port": imap_port, "smtp_password": WRONG if kind == "wrong_password" else PASSWORD}


class Run:
    """One test's queue and stream, its workers, and the producer settings for them."""

    def __init__(self, servers: Servers, tmp: Path, **env: str) -> None:
        name = uuid.uuid4().hex[:8]
        self.servers, self.tmp = servers, tmp
        self.queue, self.stream = f"q:{name}", f"ev:{name}"
        self.env = worker_env(servers.redis.url, self.queue, self.stream, INBOXCHECK_SECRET_KEY=KEY,
                              INBOXCHECK_TLS_CA_FILE=str(servers.pki.ca_file), **env)
        self.settings = Settings(redis_url=servers.redis.url, queue_name=self.queue,
                                 events_stream=self.stream, secret_key=KEY)
        self.workers: list[WorkerProcess] = []
        self.client = servers.redis.client()

    def worker(self) -> WorkerProcess:
        process = WorkerProcess(self.env, self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(process)
        return process

    def enqueue(self, kinds: list[str], prefix: str = "inbox") -> dict[str, str]:
        async def go() -> dict[str, str]:
            client = Redis.from_url(self.servers.redis.url)
            try:
                expected = {}
                for n, kind in enumerate(kinds):
                    inbox_id = f"{prefix}-{n}-{kind}"
                    await enqueue_validation(client, parse_request(fields(self.servers, kind, inbox_id)),
                                             settings=self.settings)
                    expected[inbox_id] = kind
                return expected
            finally:
                await client.aclose()

        return asyncio.run(go())

    def wait(self, count: int, timeout: float = EVENT_DEADLINE_S) -> list[dict[str, Any]]:
        return wait_for_events(self.client, self.stream, count, timeout,
                               alive=lambda: any(w.alive() for w in self.workers))

    def stop_all(self) -> None:
        for process in self.workers:
            process.kill()


@pytest.fixture
def run_factory(servers: Servers, tmp_path: Path) -> Any:
    runs: list[Run] = []

    def make(**env: str) -> Run:
        runs.append(Run(servers, tmp_path, **env))
        return runs[-1]

    yield make
    for run in runs:
        run.stop_all()


def assert_exactly_once(events: list[dict[str, Any]], expected: dict[str, str]) -> None:
    subjects = Counter(e["subject"] for e in events)
    assert set(subjects) == set(expected)
    assert max(subjects.values()) == 1, [s for s, c in subjects.items() if c > 1]
    for event in events:
        code, status = KINDS[expected[event["subject"]]]
        assert (event["data"]["error_code"], event["data"]["status"]) == (code, status), event["subject"]


def test_mixed_batch_two_workers_exactly_once_and_no_password_anywhere(run_factory) -> None:
    run = run_factory(INBOXCHECK_MAX_JOBS="50")
    kinds = ["valid"] * 80 + ["wrong_password"] * 40 + ["closed"] * 40 + ["silent"] * 40
    expected = run.enqueue(kinds)
    workers = [run.worker(), run.worker()]
    events = run.wait(len(kinds))
    assert_exactly_once(events, expected)
    retried = [e for e in events if expected[e["subject"]] in ("closed", "silent")]
    assert {e["data"]["attempts"] for e in retried} == {2}  # INBOXCHECK_MAX_TRIES
    assert {e["data"]["attempts"] for e in events if expected[e["subject"]] == "wrong_password"} == {1}
    for process in workers:
        process.signal(signal.SIGTERM)
        assert process.wait(EXIT_DEADLINE_S) == 0
    needles = [PASSWORD.encode(), WRONG.encode()]
    assert scan_for(run.client, needles) == []
    for process in workers:
        text = process.log_file.read_bytes()
        assert not any(n in text for n in needles)
        assert b"Traceback" not in text


def test_sigkill_mid_batch_then_restart_every_job_once(run_factory) -> None:
    run = run_factory(INBOXCHECK_MAX_JOBS="10")
    expected = run.enqueue(["silent"] * 20 + ["closed"] * 20)
    first = run.worker()
    run.wait(5)
    first.proc.send_signal(signal.SIGKILL)
    first.wait(EXIT_DEADLINE_S)
    assert run.client.xlen(run.stream) < len(expected)  # it really died mid-batch
    run.worker()
    assert_exactly_once(run.wait(len(expected)), expected)


@pytest.mark.xfail(reason="handed-back jobs are not picked up by the next worker since the pacing "
                          "integration; under investigation", strict=False)
def test_sigterm_hands_back_in_flight_jobs(run_factory) -> None:
    run = run_factory(INBOXCHECK_MAX_JOBS="5", INBOXCHECK_SHUTDOWN_GRACE="0.2")
    expected = run.enqueue(["silent"] * 15)
    first = run.worker()
    deadline = time.monotonic() + EVENT_DEADLINE_S
    while not list(run.client.scan_iter("arq:in-progress:*")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.signal(signal.SIGTERM)
    assert first.wait(EXIT_DEADLINE_S) == 0
    assert first.log_has("worker_stopped")
    assert run.client.xlen(run.stream) < len(expected)
    run.worker()
    assert_exactly_once(run.wait(len(expected)), expected)


def test_worker_survives_redis_restart(run_factory, servers) -> None:
    run = run_factory()
    worker = run.worker()
    before = run.enqueue(["closed"] * 3, prefix="before")
    run.wait(3)
    servers.redis.stop()
    deadline = time.monotonic() + EVENT_DEADLINE_S
    while not (worker.log_has("redis_connection_lost") or worker.log_has("redis_unreachable")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    servers.redis.start()
    after = run.enqueue(["closed"] * 3 + ["valid"], prefix="after")
    events = run.wait(7)
    assert worker.alive()
    assert_exactly_once(events, {**before, **after})
