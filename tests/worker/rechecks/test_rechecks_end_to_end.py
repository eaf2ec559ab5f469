"""Rechecks end to end: a real worker subprocess, real redis-server, aiosmtpd and Dovecot, with
counting proxies in front of the mail servers to see the load they actually get."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from jobs.request import parse_request
from tests.servers.ports import LOOPBACK
from tests.servers.tcp import ThreadedTcpServer
from tests.worker.support import ConnectionCounter, WorkerProcess, counting_proxy, worker_env
from worker.messages import events, keys
from worker.messages.sealing import Sealer, generate_key
from worker.rechecks.inbox_health import Health
from worker.rechecks.pacing import Pacer, PacingPolicy
from worker.rechecks.registry import Registry

QUEUE = "e2e:queue"
STREAM = "e2e:events"
POLL_S = 0.02
DEADLINE_S = 30.0
HOST_CAP = 5
INBOXES = 100
LONG_EVERY_S = 3_600.0
# Shorter than the cron's tick (INBOXCHECK_RECHECK_TICK=1 s, arq cron's finest step): the inbox
# is due again at every tick, so each recheck costs one tick, not an interval plus a tick; and a
# failing inbox's backoff (this interval, doubled per failure) stays below a tick for a while.
SHORT_EVERY_S = 0.2


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
def mail(smtp_server: Callable[..., Any], dovecot: Any, imap_user: Any) -> Iterator[dict[str, Any]]:
    email, password = imap_user
    smtp = smtp_server(users={email: password})
    counter = ConnectionCounter()
    smtp_proxy, smtp_switch = counting_proxy(smtp.port, counter)
    imap_proxy, _ = counting_proxy(dovecot.imaps_port, counter)
    yield {
        "email": email,
        "password": password,
        "smtp": smtp,
        "dovecot": dovecot,
        "counter": counter,
        "smtp_port": smtp_proxy.port,
        "imap_port": imap_proxy.port,
        "smtp_switch": smtp_switch,
    }
    smtp_proxy.stop()
    imap_proxy.stop()


def request(mail: dict[str, Any], inbox_id: str) -> Any:
    return parse_request(
        {
            "inbox_id": inbox_id,
            "inbox_type": "CUSTOM_SMTP",
            "email": mail["email"],
            "smtp_host": LOOPBACK,
            "smtp_port": mail["smtp_port"],
            "imap_host": LOOPBACK,
            "imap_port": mail["imap_port"],
            "smtp_password": mail["password"],
        }
    )


def start_worker(redis_server: Any, tmp_path: Path, key: str, ca_file: str, **extra: str) -> WorkerProcess:
    settings = {
        "INBOXCHECK_SECRET_KEY": key,
        "INBOXCHECK_TLS_CA_FILE": ca_file,
        "INBOXCHECK_RECHECK_TICK": "1",
        "INBOXCHECK_MAX_TRIES": "1",
        "INBOXCHECK_STEP_TIMEOUT": "5",
        "INBOXCHECK_CHECK_TIMEOUT": "5",
        "INBOXCHECK_JOB_TIMEOUT": "30",
        "INBOXCHECK_METRICS_PORT": "0",
        "INBOXCHECK_HOST_LIMITS": json.dumps({LOOPBACK: HOST_CAP}),
        **extra,
    }
    env = worker_env(redis_server.url, QUEUE, STREAM, **settings)
    return WorkerProcess(env, tmp_path / f"worker-{time.monotonic_ns()}.log")


async def stream(client: Redis) -> list[dict[str, Any]]:
    return [json.loads(fields[b"event"]) for _, fields in await client.xrange(STREAM)]


async def wait_for(
    probe: Callable[[], Awaitable[Any]], what: str, worker: WorkerProcess, deadline_s: float = DEADLINE_S
) -> Any:
    """Poll `probe` (on the test's one client) without blocking the loop, up to a deadline."""
    deadline = time.monotonic() + deadline_s
    while not (found := await probe()):
        assert worker.alive(), (
            f"the worker died while waiting for {what}:\n{worker.log_file.read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, f"no {what} within {deadline_s} s"
        await asyncio.sleep(POLL_S)
    return found


def of_type(items: list[dict[str, Any]], kind: str, inbox_id: str) -> list[dict[str, Any]]:
    return [e for e in items if e["type"] == kind and e.get("subject") == inbox_id]


async def registry(redis_server: Any, key: str) -> tuple[Redis, Registry]:
    client = Redis.from_url(redis_server.url)
    return client, Registry(client, queue_name=QUEUE, sealer=Sealer(key))


async def test_rechecks_and_one_health_change_per_password_change(
    redis_server: Any, tmp_path: Path, key: str, ca_file: str, mail: dict[str, Any]
) -> None:
    client, reg = await registry(redis_server, key)
    await reg.register(request(mail, "inbox-a"), SHORT_EVERY_S, spread_s=0)
    worker = start_worker(redis_server, tmp_path, key, ca_file)
    try:

        async def completed() -> list[dict[str, Any]]:
            return of_type(await stream(client), events.COMPLETED, "inbox-a")

        async def more_than(n: int) -> bool:
            return len(await completed()) > n

        async def an_invalid() -> bool:
            return any(e["data"]["status"] == "invalid" for e in await completed())

        await wait_for(lambda: more_than(1), "two rechecks", worker)
        assert all(e["data"]["status"] == "valid" for e in await completed())

        mail["smtp"].users[mail["email"]] = "changed-password"
        mail["dovecot"].set_user(mail["email"], "changed-password")
        await wait_for(an_invalid, "a failed recheck", worker)
        failed_at = len(await completed())
        # failing inboxes back off (0.2 s, 0.4 s, ...): wait for one more recheck after the change
        await wait_for(lambda: more_than(failed_at), "another recheck", worker)
        changes = of_type(await stream(client), events.HEALTH_CHANGED, "inbox-a")
        assert [(c["data"]["previous"]["health"], c["data"]["current"]["health"]) for c in changes] == [
            ("pending", "healthy"),
            ("healthy", "failing"),
        ]
        assert changes[1]["data"]["current"]["error_code"] == "AUTH_FAILED"
        assert (await reg.get("inbox-a")).health == Health.FAILING

        # the same CLI a person uses: the table's JSON form
        raw = (await reg.list_inboxes())[0].as_dict()
        assert raw["error_code"] == "AUTH_FAILED" and raw["last_checked_at"] is not None
        dump = json.dumps(await stream(client))
        assert mail["password"] not in dump and "changed-password" not in dump
    finally:
        worker.kill()
        await client.aclose()


async def test_one_transient_failure_degrades_but_does_not_fail(
    redis_server: Any, tmp_path: Path, key: str, ca_file: str, mail: dict[str, Any]
) -> None:
    client, reg = await registry(redis_server, key)
    await reg.register(request(mail, "inbox-t"), SHORT_EVERY_S, spread_s=0)
    worker = start_worker(redis_server, tmp_path, key, ca_file)
    try:

        async def completed() -> list[dict[str, Any]]:
            return of_type(await stream(client), events.COMPLETED, "inbox-t")

        async def an_invalid() -> bool:
            return any(e["data"]["status"] == "invalid" for e in await completed())

        async def recovered() -> bool:
            # the health change follows the completed event (written after it): wait for it
            changes = of_type(await stream(client), events.HEALTH_CHANGED, "inbox-t")
            return any(c["data"]["current"]["health"] == "healthy" for c in changes[1:])

        await wait_for(completed, "the first check", worker)
        mail["smtp_switch"]["drop"] = True  # the network drops SMTP connections for one check
        await wait_for(an_invalid, "a transient failure", worker)
        mail["smtp_switch"]["drop"] = False
        failure = next(e for e in await completed() if e["data"]["status"] == "invalid")["data"]
        assert failure["retryable"] and failure["error_code"] in ("CONNECTION_FAILED", "TIMEOUT")

        async def degraded() -> bool:
            # the health update follows the completed event (written after it): wait for it
            changes = of_type(await stream(client), events.HEALTH_CHANGED, "inbox-t")
            return any(c["data"]["current"]["health"] == "degraded" for c in changes)

        await wait_for(degraded, "the degraded health", worker)
        await wait_for(recovered, "a recovery", worker)
        healths = [
            (c["data"]["current"]["health"])
            for c in of_type(await stream(client), events.HEALTH_CHANGED, "inbox-t")
        ]
        assert healths == ["healthy", "degraded", "healthy"]
    finally:
        worker.kill()
        await client.aclose()


async def test_hundred_inboxes_on_one_host_never_exceed_the_cap_at_the_server(
    redis_server: Any, tmp_path: Path, key: str, ca_file: str, mail: dict[str, Any]
) -> None:
    client, reg = await registry(redis_server, key)
    for n in range(INBOXES):
        await reg.register(request(mail, f"inbox-{n:03}"), LONG_EVERY_S, spread_s=0)
    worker = start_worker(redis_server, tmp_path, key, ca_file, INBOXCHECK_PACING_WAIT="25")
    try:

        async def done() -> list[dict[str, Any]]:
            return [e for e in await stream(client) if e["type"] == events.COMPLETED]

        async def all_done() -> bool:
            return len(await done()) >= INBOXES

        await wait_for(all_done, f"{INBOXES} checks", worker, deadline_s=60)
        assert all(e["data"]["status"] == "valid" for e in await done())
        counter = mail["counter"]
        # every check holds two connections to the host (SMTP and IMAP): 2 checks at a time
        assert 2 <= counter.peak <= HOST_CAP and counter.total >= 2 * INBOXES
        assert (await reg.health_counts())["healthy"] == INBOXES
    finally:
        worker.kill()
        await client.aclose()


async def _silent(reader: Any, writer: Any) -> None:
    await reader.read()  # accepts and never greets: the check holds its slots until its deadline


async def test_a_killed_workers_slots_are_released(
    redis_server: Any, tmp_path: Path, key: str, ca_file: str
) -> None:
    client, reg = await registry(redis_server, key)
    silent = ThreadedTcpServer(_silent, name="silent").start()
    job_timeout_s = 3.5  # the lease's life: what the test waits for after the kill
    try:
        await reg.register(
            parse_request(
                {
                    "inbox_id": "inbox-k",
                    "inbox_type": "CUSTOM_SMTP",
                    "email": "k@example.test",
                    "smtp_host": LOOPBACK,
                    "smtp_port": silent.port,
                    "imap_host": LOOPBACK,
                    "imap_port": silent.port,
                    "smtp_password": "pw-k",
                }
            ),
            LONG_EVERY_S,
            spread_s=0,
        )
        worker = start_worker(
            redis_server,
            tmp_path,
            key,
            ca_file,
            INBOXCHECK_CHECK_TIMEOUT="1",
            INBOXCHECK_STEP_TIMEOUT="1",
            INBOXCHECK_JOB_TIMEOUT=str(job_timeout_s),
        )
        slots = keys.pacing_slots_key(LOOPBACK)
        try:
            await wait_for(lambda: client.zcard(slots), "a held slot", worker)
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait()
        finally:
            worker.kill()
        held = await client.zcard(slots)
        assert held > 0  # the dead worker's leases are still there
        # Another worker asks for every slot of the host: refused while the dead worker's leases
        # live, granted within their lifetime (the job timeout) once they expire, with nobody
        # cleaning up.
        pacer = Pacer(client, PacingPolicy(host_limits={LOOPBACK: HOST_CAP}, lease_s=job_timeout_s))
        assert (await pacer.try_acquire(LOOPBACK, HOST_CAP))[0] is None
        # acquire() raises HostBusy when the wait passes with no slot: getting one is the proof.
        lease = await pacer.acquire(LOOPBACK, HOST_CAP, wait_s=job_timeout_s + 1.0)
        await pacer.release(LOOPBACK, lease, HOST_CAP)
    finally:
        silent.stop()
        await client.aclose()
