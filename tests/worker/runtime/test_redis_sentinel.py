"""Redis behind Sentinel for the worker, the producer and the commands: real redis-server
processes on loopback (a master, its replica, sentinels), and a failover in the middle of a batch
that a real `inboxcheck worker` is working through."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.worker import func
from redis.asyncio.sentinel import SentinelManagedSSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from jobs.request import parse_request
from jobs.time_units import MS_PER_S
from tests.servers.certs import PKI
from tests.servers.dovecot import Account, Dovecot
from tests.servers.proxy import Gate, gated_forwarder
from tests.servers.redis import RedisServer, TlsRedisServer
from tests.servers.sentinel import MASTER_NAME, SentinelServer, SentinelSet, role
from tests.servers.smtp import SmtpServer
from tests.servers.tcp import ThreadedTcpServer
from tests.servers.wait import wait_until
from tests.worker.support import (
    KEY,
    REPO,
    WorkerProcess,
    burst,
    cli_env,
    closed_port,
    in_process_worker,
    make_settings,
    request,
    run_cli,
    stream_events,
    worker_env,
)
from worker.messages import envelope, keys
from worker.messages.producer import enqueue_validation
from worker.runtime import redis_pool, redis_target
from worker.runtime.arq_settings import ARQ_MAX_TRIES_BACKSTOP
from worker.runtime.job import validate_inbox_job
from worker.settings import Settings

BATCH = 16
MAX_JOBS = 4
# Checks let through before the failover (one round); the gate holds every later one until the
# worker has moved to the new master, and the rest of the batch waits queued.
PASSED = MAX_JOBS
HOST_LIMIT = 60
EVENT_DEADLINE_S = 30.0
# A held check waits at most this for the gate (the failover and the worker's move); its SMTP
# step may take that long too, and the job's limits are set above it.
HOLD_LIMIT_S = 20.0
HELD_STEP_TIMEOUT_S = HOLD_LIMIT_S + 5
HELD_JOB_TIMEOUT_S = HELD_STEP_TIMEOUT_S + 5
SENTINEL_PASSWORD = "sentinel-Pa55-w0rd"
SENTINEL_AUTH = {"redis_sentinel_password": SENTINEL_PASSWORD, "max_tries": 1, "metrics_port": 0}
# The master's own ACL user, with a password holding every character that splits a URL.
APP_USER = "app"
APP_PASSWORD = "Xq7/Zk9:Wm3@Vb5"
PASSWORD_PIECES = ("Xq7", "Zk9", "Wm3", "Vb5", "7qX", "9kZ", "3mW", "5bV")  # either way round


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelSet]:
    """A fresh master, replica and two sentinels: a failover changes them for good."""
    servers = SentinelSet(tmp_path / "sentinel", sentinels=2).start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """One sentinel with its own password; no failover here, so shared by the module."""
    servers = SentinelSet(tmp_path_factory.mktemp("sentinel-pw"), sentinel_password=SENTINEL_PASSWORD)
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


def guarded_settings(servers: SentinelSet) -> Settings:
    return make_settings(servers, **SENTINEL_AUTH)


def never_demoted(server: RedisServer) -> None:
    """The sentinels can no longer turn `server` into a replica: as in a network split that cuts
    them off from an old master its clients still reach, it takes writes for as long as the test
    runs (about ten seconds otherwise), and a client that waited for READONLY would stay on it."""
    client = server.client(socket_timeout=1)
    try:
        client.execute_command("ACL", "SETUSER", "default", "-replicaof", "-slaveof")
    finally:
        client.close()


def test_a_batch_survives_a_failover_with_one_event_per_job(
    cluster: SentinelSet,
    smtp_server: Callable[..., SmtpServer],
    dovecot: Dovecot,
    imap_user: Account,
    pki: PKI,
    tmp_path: Path,
) -> None:
    smtp = smtp_server(users={imap_user.email: imap_user.password})
    gate = Gate(passes=PASSED, limit_s=HOLD_LIMIT_S)
    gated_smtp = ThreadedTcpServer(gated_forwarder(smtp.port, gate), name="gated-smtp").start()
    settings = make_settings(cluster)
    worker = WorkerProcess(
        worker_env(
            cluster.url,
            settings.queue_name,
            settings.events_stream,
            INBOXCHECK_SECRET_KEY=KEY,
            INBOXCHECK_TLS_CA_FILE=str(pki.ca_file),
            INBOXCHECK_MAX_JOBS=str(MAX_JOBS),
            # Pacing has its own tests; here a check's slots must not hold up the others.
            INBOXCHECK_DEFAULT_HOST_LIMIT=str(HOST_LIMIT),
            INBOXCHECK_STEP_TIMEOUT=f"{HELD_STEP_TIMEOUT_S:g}",
            INBOXCHECK_CHECK_TIMEOUT=f"{HELD_STEP_TIMEOUT_S:g}",
            INBOXCHECK_JOB_TIMEOUT=f"{HELD_JOB_TIMEOUT_S:g}",
            # With every slot held the worker sends Redis nothing but its health record, and a
            # client meets the new master at its next command: here within a second or so.
            INBOXCHECK_HEALTH_CHECK_INTERVAL="1",
        ),
        tmp_path / "worker.log",
    )

    def produce(inbox_ids: list[str]) -> None:
        async def go() -> None:
            client = redis_target.client(settings)  # the producer, through Sentinel
            try:
                for inbox_id in inbox_ids:
                    fields = {
                        "inbox_id": inbox_id,
                        "inbox_type": "CUSTOM_SMTP",
                        "email": imap_user.email,
                        "smtp_password": imap_user.password,
                        "smtp_host": "127.0.0.1",
                        "smtp_port": gated_smtp.port,
                        "imap_host": "127.0.0.1",
                        "imap_port": dovecot.imaps_port,
                    }
                    await enqueue_validation(client, parse_request(fields), settings=settings)
            finally:
                await client.aclose()

        asyncio.run(go())

    def progress() -> str:
        reader = cluster.current_master().client(socket_timeout=1)
        try:
            done = Counter(event["subject"] for event in stream_events(reader, settings.events_stream))
            left = reader.zrange(settings.queue_name, 0, -1, withscores=True)
        finally:
            reader.close()
        return f"held {gate.held}, events {dict(done)}, queued {left}\n{worker.log_file.read_text()[-3000:]}"

    def running() -> None:
        assert worker.alive(), worker.log_file.read_text()[-3000:]

    def moved_to(port: int) -> bool:
        running()
        lines = worker.log_file.read_text().splitlines()
        return any(
            entry.get("event") == "redis_master_moved" and entry.get("master") == f"127.0.0.1:{port}"
            for entry in (json.loads(line) for line in lines if line.startswith("{") and line.endswith("}"))
        )

    try:
        batch = [f"{settings.queue_name}-inbox-{n}" for n in range(BATCH)]
        produce(batch)
        # What Sentinel cannot promise: a write the master acknowledged but had not yet sent to
        # the replica is lost in a failover (README). The batch is on the replica before it starts.
        cluster.wait_replicated()

        def slots_held() -> bool:
            running()
            return gate.held >= MAX_JOBS

        # Every slot now holds a check the gate stopped: the first PASSED jobs are over (event and
        # finish), the rest wait in the queue, and the held ones write nothing until it opens.
        wait_until(slots_held, timeout=EVENT_DEADLINE_S, what="the gate holding every slot", details=progress)
        cluster.wait_replicated()  # the held jobs' claims too
        never_demoted(cluster.current_master())
        old = cluster.start_failover()
        new = cluster.wait_for_new_master(old)
        # The worker follows the sentinels (the old master never answers READONLY here) before
        # any held check goes on and writes its event.
        wait_until(
            lambda: moved_to(new.port), timeout=EVENT_DEADLINE_S, what="the worker's move", details=progress
        )
        gate.open()
        after = f"{settings.queue_name}-after-failover"
        produce([after])  # queued on the new master by a producer that follows the sentinels too

        survivor = new.client()

        def all_done() -> bool:
            running()
            queue_empty = survivor.zcard(settings.queue_name) == 0
            return queue_empty and survivor.xlen(settings.events_stream) >= BATCH + 1

        wait_until(all_done, timeout=EVENT_DEADLINE_S, what="every job's event", details=progress)
        events = stream_events(survivor, settings.events_stream)
        survivor.close()
        subjects = Counter(event["subject"] for event in events)
        assert subjects == Counter([*batch, after]), {s: n for s, n in subjects.items() if n != 1}
        assert {event["data"]["status"] for event in events} == {"valid"}
        assert role(old) == "master", "the old master was demoted: the worker could have followed READONLY"
    finally:
        gate.open()
        worker.kill()
        gated_smtp.stop()


def test_the_producer_and_commands_reach_the_master_through_a_guarded_sentinel(guarded: SentinelSet) -> None:
    settings = guarded_settings(guarded)

    async def produce() -> str:
        client = redis_target.client(settings)
        try:
            return await enqueue_validation(client, request("sentinel-cli-1"), settings=settings)
        finally:
            await client.aclose()

    job_id = asyncio.run(produce())
    master = guarded.current_master().client()
    assert master.zscore(settings.queue_name, job_id) is not None
    master.close()

    env = {**cli_env(settings), "INBOXCHECK_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD}
    listed = run_cli("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []

    del env["INBOXCHECK_REDIS_SENTINEL_PASSWORD"]
    refused = run_cli("list", "--json", env=env)
    assert refused.returncode == 2
    assert f"cannot reach Redis at master '{MASTER_NAME}' of the sentinels at 127.0.0.1:" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_malformed_sentinel_url_is_one_line_naming_the_setting(guarded: SentinelSet) -> None:
    env = cli_env(guarded_settings(guarded))
    env["INBOXCHECK_REDIS_URL"] = (
        f"redis+sentinel://:{SENTINEL_PASSWORD}@127.0.0.1:{guarded.sentinels[0].port}"
    )
    bad = run_cli("list", "--json", env=env)
    assert bad.returncode == 2
    assert "INBOXCHECK_REDIS_URL" in bad.stderr and "no master name" in bad.stderr
    assert SENTINEL_PASSWORD not in bad.stderr and "Traceback" not in bad.stderr


async def test_a_master_password_with_url_separators_works_as_written(guarded: SentinelSet) -> None:
    master = guarded.current_master().client()
    master.execute_command("ACL", "SETUSER", APP_USER, "on", f">{APP_PASSWORD}", "~*", "&*", "+@all")
    sentinel = guarded.sentinels[0]
    where = f"{sentinel.host}:{sentinel.port}/{MASTER_NAME}/0"
    settings = guarded_settings(guarded)
    try:
        url = f"redis+sentinel://{APP_USER}:{APP_PASSWORD}@{where}"
        client = await redis_pool.connect(make_settings(guarded, redis_url=url, **SENTINEL_AUTH))
        try:
            assert await client.execute_command("ACL", "WHOAMI") == APP_USER.encode()
        finally:
            await client.aclose(close_connection_pool=True)

        env = {**cli_env(settings), "INBOXCHECK_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD}
        env["INBOXCHECK_REDIS_URL"] = f"redis+sentinel://{APP_USER}:{APP_PASSWORD[::-1]}@{where}"
        refused = await asyncio.to_thread(run_cli, "list", "--json", env=env)
        assert refused.returncode == 2
        master_at = f"master '{MASTER_NAME}' of the sentinels at {sentinel.host}:{sentinel.port}"
        assert f"Redis at {master_at} refused the credentials in INBOXCHECK_REDIS_URL" in refused.stderr
        assert "cannot reach" not in refused.stderr
        assert not [piece for piece in PASSWORD_PIECES if piece in refused.stderr], refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        master.execute_command("ACL", "DELUSER", APP_USER)
        master.close()


async def test_a_sentinel_that_is_down_is_skipped_for_the_next(guarded: SentinelSet) -> None:
    live = guarded.sentinels[0]
    url = f"redis+sentinel://127.0.0.1:{closed_port()},{live.host}:{live.port}/{MASTER_NAME}/0"
    client = await redis_pool.connect(guarded_settings(guarded).model_copy(update={"redis_url": url}))
    try:
        assert await client.ping()
    finally:
        await client.aclose(close_connection_pool=True)


async def test_the_workers_pool_behind_sentinel_is_the_concurrent_one(guarded: SentinelSet) -> None:
    client = await redis_pool.connect(guarded_settings(guarded))
    try:
        assert type(client.connection_pool) is redis_pool.ConcurrentSentinelConnectionPool
        assert await client.ping()
    finally:
        await client.aclose(close_connection_pool=True)


def test_arqs_own_command_works_a_job_through_sentinel(guarded: SentinelSet, tmp_path: Path) -> None:
    settings = guarded_settings(guarded)

    async def produce() -> None:
        client = redis_target.client(settings)
        try:
            await enqueue_validation(client, request("sentinel-arq-1"), settings=settings)
        finally:
            await client.aclose()

    asyncio.run(produce())
    env = worker_env(
        guarded.url,
        settings.queue_name,
        settings.events_stream,
        INBOXCHECK_SECRET_KEY=KEY,
        INBOXCHECK_REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
        INBOXCHECK_MAX_TRIES="1",
    )
    ran = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "arq"),
            "--burst",
            "worker.runtime.arq_settings.WorkerSettings",
        ],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    # It works, and says what it lacks behind Sentinel (README).
    assert "arq_worker_behind_sentinel" in ran.stdout + ran.stderr
    master = guarded.current_master().client()
    [event] = stream_events(master, settings.events_stream)
    master.close()
    assert event["subject"] == "sentinel-arq-1"
    assert event["data"]["error_code"] == "CONNECTION_FAILED"


@pytest.mark.parametrize("event_here", [True, False])
async def test_behind_sentinel_a_job_leaves_the_queue_only_where_its_event_is(
    guarded: SentinelSet, event_here: bool
) -> None:
    # In a failover a job's event may be appended on the old master after the promotion (and be
    # lost) while arq's finish reaches the new one: that job must stay queued and run again.
    settings = guarded_settings(guarded)
    worker = await in_process_worker(settings)
    master = guarded.current_master().client()
    job_id, done = f"{settings.queue_name}-job", f"{settings.queue_name}-done"
    try:
        master.set(keys.job_key(job_id), b"job")
        master.zadd(settings.queue_name, {job_id: 1})
        master.set(keys.in_progress_key(job_id), b"1")
        if event_here:
            master.set(done, b"event")
        worker.ctx["recorded"][job_id] = done
        await worker.finish_job(job_id, True, b"result", 60.0, False, None, None)
        assert (master.zscore(settings.queue_name, job_id) is None) is event_here
        assert master.exists(keys.job_key(job_id)) == (not event_here)
        assert master.exists(keys.result_key(job_id)) == event_here
        assert not master.exists(keys.in_progress_key(job_id))  # no wait for its lock either way
        assert job_id not in worker.ctx["recorded"]
    finally:
        master.close()
        await worker.pool.aclose(close_connection_pool=True)


async def test_behind_sentinel_a_job_whose_event_is_lost_runs_again(guarded: SentinelSet) -> None:
    # The job itself notes where its event is: here the event is gone from the master by the
    # time arq finishes the job (appended on an old master, lost in the promotion).
    settings = guarded_settings(guarded)
    client = redis_target.client(settings)
    try:
        job_id = await enqueue_validation(client, request("sentinel-lost-1"), settings=settings)

        async def loses_its_event(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
            result = await validate_inbox_job(ctx, *args, **kwargs)
            enqueue_ms = round(ctx["enqueue_time"].timestamp() * MS_PER_S)
            await ctx["redis"].delete(keys.done_key(ctx["job_id"], enqueue_ms))
            return result

        lost = func(loses_its_event, name=envelope.FUNCTION_NAME, max_tries=ARQ_MAX_TRIES_BACKSTOP)
        with capture_logs() as logs:
            await burst(settings, functions=[lost], max_burst_jobs=1)
        assert [line["job_id"] for line in logs if line["event"] == "event_lost_in_failover"] == [job_id]
        assert await client.zscore(settings.queue_name, job_id) is not None
        assert not await client.exists(keys.result_key(job_id))
    finally:
        await client.delete(settings.queue_name, keys.job_key(job_id))
        await client.aclose()


@pytest.fixture(scope="module")
def tls_sentinel(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[SentinelServer]:
    """A TLS-only master and a TLS-only sentinel watching it over TLS."""
    workdir = tmp_path_factory.mktemp("sentinel-tls")
    master = TlsRedisServer(workdir / "master", pki).start()
    sentinel = SentinelServer(workdir / "sentinel", master, pki=pki)
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()
        master.stop()


@pytest.mark.parametrize("trusted", [True, False])
async def test_tls_reaches_the_sentinels_and_the_master_with_the_ca_file(
    tls_sentinel: SentinelServer, pki: PKI, trusted: bool
) -> None:
    url = f"rediss+sentinel://{tls_sentinel.host}:{tls_sentinel.port}/{MASTER_NAME}/0"
    ca_file = pki.ca_file if trusted else pki.rogue_ca_file
    settings = Settings(redis_url=url, redis_ca_file=ca_file, queue_name=f"q:tls-{trusted}")
    if not trusted:
        with pytest.raises(RedisConnectionError, match="certificate verify failed"):
            await redis_pool.connect(settings)
        return
    client = await redis_pool.connect(settings)
    try:
        await client.set(settings.queue_name, b"over TLS")
        connection = client.connection_pool.get_available_connection()
        try:
            await client.connection_pool.ensure_connection(connection)
            assert isinstance(connection, SentinelManagedSSLConnection)
            assert connection.port == tls_sentinel.master.port  # the master, as the sentinel named it
        finally:
            await client.connection_pool.release(connection)
    finally:
        await client.aclose(close_connection_pool=True)
    assert tls_sentinel.master.client().get(settings.queue_name) == b"over TLS"
