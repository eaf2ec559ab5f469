"""`inboxcheck worker` and arq's own CLI as an operator runs them: real subprocesses, a real
redis-server (the worker's own, when none answers), and the `inboxcheck` commands beside them."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from arq.constants import retry_key_prefix

from jobs.time_units import MS_PER_S
from tests.servers.fakes import FakeServer, silent
from tests.servers.ports import free_port
from tests.servers.redis import RedisServer
from tests.worker.support import (
    KEY,
    POLL_S,
    REPO,
    WorkerProcess,
    closed_port,
    request,
    request_fields,
    run_cli,
    stream_events,
    wait_for_events,
    worker_env,
)
from worker.messages import envelope, keys, payload
from worker.messages.events import COMPLETED
from worker.messages.producer import JOB_EXPIRES_MS
from worker.messages.sealing import Sealer
from worker.runtime import local_redis

DEADLINE_S = 20.0
# The checks a stopping worker lets finish.
IN_FLIGHT = 3
GRACE_S = 10.0
FAST_TIMEOUTS = {
    "INBOXCHECK_STEP_TIMEOUT": "0.5",
    "INBOXCHECK_CHECK_TIMEOUT": "1",
    "INBOXCHECK_JOB_TIMEOUT": "3.5",
}
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.1, 0.4


def wait_until(condition: Callable[[], Any], what: str, worker: WorkerProcess) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while not (found := condition()):
        assert worker.alive(), f"the worker died waiting for {what}:\n{worker.log_file.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE_S} s"
        time.sleep(POLL_S)
    return found


def log_lines(worker: WorkerProcess, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in worker.log_file.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def enqueue(client: redis.Redis, queue: str, inbox_id: str, port: int) -> str:
    """A sealed job to 127.0.0.1:port, written from a sync test with the two writes a producer
    makes (PSETEX the job, ZADD its id)."""
    req = request(inbox_id, port=port)
    sealer = Sealer(KEY)
    job_id = payload.job_id_for(req, sealer, queue)
    now_ms = int(time.time() * MS_PER_S)
    client.psetex(
        keys.job_key(job_id), JOB_EXPIRES_MS, envelope.job_bytes(payload.encode(req, sealer), now_ms)
    )
    client.zadd(queue, {job_id: now_ms})
    return job_id


def stop_left_over(url: str) -> None:
    """A worker killed before it could stop its redis-server leaves it running: shut it down."""
    if local_redis.answers(url, refused_counts=False):
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(url).shutdown(nosave=True)


def test_with_no_redis_the_worker_starts_its_own_and_the_commands_find_it(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    folder = tmp_path / "own-redis"
    env = worker_env(
        url,
        "q:own",
        "ev:own",
        INBOXCHECK_START_LOCAL_REDIS="true",
        INBOXCHECK_LOCAL_REDIS_DIR=str(folder),
        INBOXCHECK_SECRET_KEY=KEY,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: worker.log_has("worker_started"), "a started worker", worker)
        [started] = log_lines(worker, "local_redis_started")
        assert started["dir"] == str(folder)
        authed = local_redis.with_local_password(url, str(folder))
        assert authed != url and local_redis.answers(authed, refused_counts=False)
        # The commands read the password from the same folder: nobody passes it around.
        req = tmp_path / "req.json"
        req.write_text(json.dumps(request_fields("own-redis")))
        waited = run_cli("enqueue", "--request", str(req), "--wait", str(DEADLINE_S), "--json", env=env)
        assert waited.returncode == 1, waited.stderr  # the closed port: invalid, not a client error
        assert json.loads(waited.stdout)["data"]["error_code"] == "CONNECTION_FAILED"
        assert run_cli("health", env=env).returncode == 0
        assert run_cli("health", "--any", env=env).returncode == 0
        worker.signal(signal.SIGTERM)
        assert worker.wait(DEADLINE_S) == 0
    finally:
        worker.kill()
        left_running = local_redis.answers(url)
        stop_left_over(local_redis.with_local_password(url, str(folder)))
    # It stopped with the worker: the port answers no more, and the worker is not ready.
    assert not left_running
    assert run_cli("health", env=env).returncode == 1


def test_sigterm_lets_the_checks_in_flight_finish_and_starts_no_other(
    shared_redis: RedisServer, tmp_path: Path, fake_server: Callable[..., FakeServer]
) -> None:
    name = f"grace-{time.monotonic_ns()}"
    queue, stream = f"q:{name}", f"ev:{name}"
    env = worker_env(
        shared_redis.url,
        queue,
        stream,
        INBOXCHECK_SECRET_KEY=KEY,
        INBOXCHECK_MAX_TRIES="1",
        INBOXCHECK_MAX_JOBS=str(IN_FLIGHT),
        INBOXCHECK_SHUTDOWN_GRACE=str(GRACE_S),
        **FAST_TIMEOUTS,
    )
    client = shared_redis.client()
    # One check runs to its deadline (1 s); the others end as soon as their server goes away,
    # freeing their slots while the worker still waits for the first.
    slow, quick = fake_server(silent), fake_server(silent)
    ports = [slow.port] + [quick.port] * (IN_FLIGHT - 1)
    running = [enqueue(client, queue, f"{name}-{n}", port) for n, port in enumerate(ports)]
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_until(
            lambda: all(client.exists(keys.in_progress_key(j)) for j in running), "every job running", worker
        )
        assert client.xlen(stream) == 0  # all still in flight
        # Queued behind them (every slot is taken): a stopping worker must start none of these.
        waiting = [enqueue(client, queue, f"{name}-waiting-{n}", quick.port) for n in range(2)]
        stopped_at = time.monotonic()
        worker.signal(signal.SIGTERM)
        quick.stop()
        assert worker.wait(GRACE_S + DEADLINE_S) == 0
        assert time.monotonic() - stopped_at < GRACE_S
    finally:
        worker.kill()
    events = {e["subject"]: e for e in stream_events(client, stream)}
    assert sorted(events) == sorted(f"{name}-{n}" for n in range(IN_FLIGHT))  # every one finished
    assert {e["type"] for e in events.values()} == {COMPLETED}
    assert events[f"{name}-0"]["data"]["error_code"] == "TIMEOUT"  # ran to its end, not cut short
    assert not worker.log_has("handing_back_jobs")
    # Never started (arq counts a try the moment it starts a job), not started and handed back.
    assert {m.decode() for m in client.zrange(queue, 0, -1)} == set(waiting)
    assert not any(client.exists(retry_key_prefix + job_id) for job_id in waiting)


def test_the_worker_reconnects_with_a_doubling_backoff(tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.stop()
    name = f"reconnect-{time.monotonic_ns()}"
    env = worker_env(
        redis_server.url,
        f"q:{name}",
        f"ev:{name}",
        INBOXCHECK_SECRET_KEY=KEY,
        INBOXCHECK_RECONNECT_DELAY=str(RECONNECT_FIRST_S),
        INBOXCHECK_RECONNECT_MAX_DELAY=str(RECONNECT_MAX_S),
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:

        def waits() -> list[float]:
            return [line["retry_in_s"] for line in log_lines(worker, "redis_unreachable")]

        wait_until(lambda: len(waits()) >= 5, "five failed connections", worker)
        assert waits()[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
        redis_server.start()  # on the same port: the worker finds it and takes jobs
        client = redis_server.client()
        enqueue(client, f"q:{name}", name, closed_port())
        [event] = wait_for_events(client, f"ev:{name}", 1, DEADLINE_S, alive=worker.alive)
        assert event["type"] == COMPLETED
        worker.signal(signal.SIGTERM)
        assert worker.wait(DEADLINE_S) == 0
    finally:
        worker.kill()
    # Redis answers, but no worker of this host serves the queue any more: not ready.
    unready = run_cli("health", env=env)
    assert unready.returncode == 1 and "no live worker" in unready.stderr


def test_arqs_own_cli_runs_the_settings_module(shared_redis: RedisServer) -> None:
    name = f"arq-{time.monotonic_ns()}"
    env = worker_env(shared_redis.url, f"q:{name}", f"ev:{name}", INBOXCHECK_SECRET_KEY=KEY)
    client = shared_redis.client()
    enqueue(client, f"q:{name}", name, closed_port())
    ran = subprocess.run(
        [sys.executable, "-m", "arq", "worker.runtime.arq_settings.WorkerSettings", "--burst"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    [event] = stream_events(client, f"ev:{name}")
    assert (event["type"], event["subject"], event["data"]["error_code"]) == (
        COMPLETED,
        name,
        "CONNECTION_FAILED",
    )
