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
from tests.servers.fakes import FakeServer, silent
from tests.servers.redis import RedisServer
from tests.servers.smtp import SmtpServer
from tests.worker.support import WORKER_MAX_TRIES as MAX_TRIES
from tests.worker.support import WorkerProcess, closed_port, scan_for, wait_for_events, worker_env
from worker.messages import keys
from worker.messages.producer import enqueue_validation
from worker.messages.sealing import generate_key
from worker.runtime.job import TRIES_USED_UP
from worker.settings import Settings

EMAIL = "owner@example.com"
PASSWORD = "Corr3ct-Horse-Battery"
WRONG = "Wr0ng-Password-Guess"
KEY = generate_key()
EVENT_DEADLINE_S = 30.0
EXIT_DEADLINE_S = 15.0
POLL_S = 0.02
# For batches of only silent and closed-port jobs (no TLS, no login to be slowed by a busy CI
# machine): short deadlines, so a killed worker's in-progress lock (job timeout + 2 s) and the
# silent server's timeouts cost little. The check's deadline stays below the job timeout by more
# than the margin worker.runtime.arq_settings.check_settings demands.
FAST_TIMEOUTS = {
    "INBOXCHECK_STEP_TIMEOUT": "0.5",
    "INBOXCHECK_CHECK_TIMEOUT": "1",
    "INBOXCHECK_JOB_TIMEOUT": "3.5",
}
# Every job here goes to 127.0.0.1 and holds two slots there (SMTP and IMAP): the default cap of
# 10 would run 5 checks at a time however many workers there are. Pacing has its own tests
# (tests/worker/rechecks); these are about exactly-once.
HOST_LIMIT = {"INBOXCHECK_DEFAULT_HOST_LIMIT": "60"}


class Servers:
    def __init__(self, tmp: Path) -> None:
        self.pki = PKI(tmp / "pki")
        # Append-only, so queued jobs survive the Redis restart test.
        self.redis = RedisServer(tmp / "redis", persistent=True).start()
        self.smtp = SmtpServer(users={EMAIL: PASSWORD}, cert=self.pki.valid).start()
        self.imap = Dovecot(tmp / "dovecot", self.pki.valid)
        self.imap.set_user(EMAIL, PASSWORD)
        self.imap.start()
        self.silent = FakeServer(silent).start()
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
    return {
        "inbox_id": inbox_id,
        "inbox_type": "CUSTOM_SMTP",
        "email": EMAIL,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port,
        "imap_host": "127.0.0.1",
        "imap_port": imap_port,
        "smtp_password": WRONG if kind == "wrong_password" else PASSWORD,
    }


class Run:
    """One test's queue and stream, its workers, and the producer settings for them."""

    def __init__(self, servers: Servers, tmp: Path, **env: str) -> None:
        self.name = name = uuid.uuid4().hex[:8]
        self.servers, self.tmp = servers, tmp
        self.queue, self.stream = f"q:{name}", f"ev:{name}"
        self.env = worker_env(
            servers.redis.url,
            self.queue,
            self.stream,
            INBOXCHECK_SECRET_KEY=KEY,
            INBOXCHECK_TLS_CA_FILE=str(servers.pki.ca_file),
            **env,
        )
        self.settings = Settings(
            redis_url=servers.redis.url, queue_name=self.queue, events_stream=self.stream, secret_key=KEY
        )
        self.workers: list[WorkerProcess] = []
        self.client = servers.redis.client()
        self.job_ids: list[str] = []

    def worker(self) -> WorkerProcess:
        process = WorkerProcess(self.env, self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(process)
        return process

    def enqueue(self, kinds: list[str], prefix: str = "inbox") -> dict[str, str]:
        """Enqueue one job per kind; inbox ids are unique to this run.

        Job ids are derived from the request, and arq's job and result keys are not per queue:
        a request identical to an earlier test's (same inbox id, same servers) would be that
        job again, and add nothing to this run's queue.
        """

        async def go() -> dict[str, str]:
            client = Redis.from_url(self.servers.redis.url)
            try:
                expected = {}
                for n, kind in enumerate(kinds):
                    inbox_id = f"{self.name}-{prefix}-{n}-{kind}"
                    self.job_ids.append(
                        await enqueue_validation(
                            client,
                            parse_request(fields(self.servers, kind, inbox_id)),
                            settings=self.settings,
                        )
                    )
                    expected[inbox_id] = kind
                return expected
            finally:
                await client.aclose()

        queued = self.client.zcard(self.queue)
        expected = asyncio.run(go())
        assert self.client.zcard(self.queue) == queued + len(kinds), "jobs were not enqueued as new"
        return expected

    def in_progress(self) -> list[str]:
        """This run's jobs that a worker holds right now (arq's in-progress lock)."""
        held = self.client.exists  # one EXISTS per job: the lock keys are not per queue either
        return [job_id for job_id in self.job_ids if held(keys.in_progress_key(job_id))]

    def wait(self, count: int, timeout: float = EVENT_DEADLINE_S) -> list[dict[str, Any]]:
        return wait_for_events(
            self.client, self.stream, count, timeout, alive=lambda: any(w.alive() for w in self.workers)
        )

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


def assert_exactly_once(
    events: list[dict[str, Any]], expected: dict[str, str], *, killed_mid_check: bool = False
) -> None:
    subjects = Counter(e["subject"] for e in events)
    assert set(subjects) == set(expected)
    assert max(subjects.values()) == 1, [s for s, c in subjects.items() if c > 1]
    for event in events:
        data = event["data"]
        if killed_mid_check and data["status"] == "failed":
            # Its last try was under way in the killed worker: that login counted, so the rerun
            # may not log in again, and the job ends saying its tries were used up.
            assert (data["reason"], data["attempts"]) == (TRIES_USED_UP, MAX_TRIES), event["subject"]
            continue
        code, status = KINDS[expected[event["subject"]]]
        assert (data["error_code"], data["status"]) == (code, status), event["subject"]


def test_mixed_batch_two_workers_exactly_once_and_no_password_anywhere(run_factory) -> None:
    run = run_factory(INBOXCHECK_MAX_JOBS="50", **HOST_LIMIT)
    kinds = ["valid"] * 80 + ["wrong_password"] * 40 + ["closed"] * 40 + ["silent"] * 40
    expected = run.enqueue(kinds)
    workers = [run.worker(), run.worker()]
    events = run.wait(len(kinds))
    assert_exactly_once(events, expected)
    retried = [e for e in events if expected[e["subject"]] in ("closed", "silent")]
    assert {e["data"]["attempts"] for e in retried} == {MAX_TRIES}
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
    run = run_factory(INBOXCHECK_MAX_JOBS="10", **FAST_TIMEOUTS, **HOST_LIMIT)
    expected = run.enqueue(["silent"] * 20 + ["closed"] * 20)
    first = run.worker()
    run.wait(5)
    first.proc.send_signal(signal.SIGKILL)
    first.wait(EXIT_DEADLINE_S)
    assert run.client.xlen(run.stream) < len(expected)  # it really died mid-batch
    run.worker()
    assert_exactly_once(run.wait(len(expected)), expected, killed_mid_check=True)


def test_sigterm_hands_back_in_flight_jobs(run_factory) -> None:
    run = run_factory(INBOXCHECK_MAX_JOBS="5", INBOXCHECK_SHUTDOWN_GRACE="0.2", **FAST_TIMEOUTS)
    expected = run.enqueue(["silent"] * 15)
    first = run.worker()
    deadline = time.monotonic() + EVENT_DEADLINE_S
    while not run.in_progress():  # checks of this run's jobs are under way (silent: 1 s each)
        assert time.monotonic() < deadline, "the worker never started a job"
        time.sleep(POLL_S)
    first.signal(signal.SIGTERM)
    assert first.wait(EXIT_DEADLINE_S) == 0
    assert first.log_has("worker_stopped") and first.log_has("handing_back_jobs")
    assert run.client.xlen(run.stream) < len(expected)
    # Handed back, not held: no lock of the stopped worker keeps its jobs from the next one.
    assert run.in_progress() == []
    queued = {m.decode() for m in run.client.zrange(run.queue, 0, -1)} & set(run.job_ids)
    assert len(queued) == len(expected) - run.client.xlen(run.stream)
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
        time.sleep(POLL_S)
    servers.redis.start()
    after = run.enqueue(["closed"] * 3 + ["valid"], prefix="after")
    events = run.wait(7)
    assert worker.alive()
    assert_exactly_once(events, {**before, **after})
