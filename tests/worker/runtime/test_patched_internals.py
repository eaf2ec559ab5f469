"""The third-party internals inboxcheck changes, pinned: when arq, redis-py, aioimaplib, aiosmtplib
or asyncio change the code a patch was written against, these fail and say what to re-check before
the pins move.

Each patch lives in one place: worker/runtime/inbox_worker.py (arq's job claim and finish),
worker/runtime/redis_pool.py (redis-py's pool checkout), jobs/tls.py (asyncio's TLS read buffer),
jobs/imap_session.py (aioimaplib's reading, fed a line at a time and bounded; its greeting and
pipelined LOGIN+EXAMINE), jobs/smtp_check.py (aiosmtplib's connection loss, for the goodbye).
"""

from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from aioimaplib.aioimaplib import Command, IMAP4ClientProtocol
from aiosmtplib import SMTP
from arq.utils import poll
from arq.worker import Worker
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection

from tests.servers.redis import RedisServer
from tests.worker.support import REPO, make_settings
from worker.runtime import redis_pool

# What each patched function's source hashed to when its patch was written (first 16 hex digits
# of the SHA-256 of inspect.getsource), and what to re-check if it changes.
PATCHED: list[tuple[Callable[..., Any], str, str]] = [
    (
        Worker.start_jobs,
        "b45797cfa40bed7f",
        "InboxWorker.start_jobs and CLAIM_JOB in worker/runtime/inbox_worker.py repeat arq's claim "
        "(in-progress key, queue score, semaphore and job counter bookkeeping)",
    ),
    (
        Worker._release_sem_dec_counter_on_complete,
        "0ed101482e942c33",
        "InboxWorker.start_jobs relies on this callback to undo its job counter and semaphore",
    ),
    (
        Worker._poll_iteration,
        "f8d39d823a0a59f2",
        "InboxWorker._poll_iteration runs it and then waits for a wake-up (keys.wake_key)",
    ),
    (
        Worker.main,
        "45ca1591c9717466",
        "InboxWorker sets poll_delay_s to 0 so that main's poll loop never sleeps: its wait is "
        "in _poll_iteration",
    ),
    (
        poll,
        "d8cc8542a1ab2bc3",
        "InboxWorker relies on arq's poll sleeping poll_delay_s minus the iteration's time (0 here)",
    ),
    (
        ConnectionPool.get_connection,
        "4876bc7de473dbc8",
        "ConcurrentConnectionPool.get_connection in worker/runtime/redis_pool.py replaces it; "
        "check whether redis-py still locks across ensure_connection (redis/redis-py#3692)",
    ),
    (
        ConnectionPool.get_available_connection,
        "5b55e7823cc6806d",
        "ConcurrentConnectionPool relies on it taking a connection synchronously",
    ),
    (
        ConnectionPool.ensure_connection,
        "e2790e7163da5032",
        "ConcurrentConnectionPool calls it outside any lock",
    ),
    (
        SentinelConnectionPool.get_master_address,
        "1fa6d36ea8f70aa3",
        "ConcurrentSentinelConnectionPool.get_connection calls it to follow a new master: check it "
        "still records master_address and closes the idle connections when the master moved",
    ),
    (
        SentinelManagedConnection._connect_retry,
        "62b751ba11735f9d",
        "ConcurrentSentinelConnectionPool relies on a new connection asking the sentinels where "
        "the master is",
    ),
    (
        SentinelManagedConnection.read_response,
        "843a8258ad0dddfd",
        "a demoted master's READONLY closes the connection and is raised as a ConnectionError "
        "(README, Redis behind Sentinel): the worker retries the job rather than wait for writes",
    ),
    (
        Worker.finish_job,
        "903f09c92830d3fd",
        "InboxWorker.finish_job in worker/runtime/inbox_worker.py retries it whole while Redis "
        "refuses writes: check it is still one transaction, safe to run again; and behind Sentinel "
        "InboxWorker._finish_where_recorded repeats its finish=True writes: keep them the same",
    ),
    (
        IMAP4ClientProtocol.data_received,
        "f4e4f02478babbeb",
        "_Protocol.data_received in jobs/imap_session.py feeds it a line at a time and bounds "
        "incomplete_line; check it still keeps a partial line and a literal across calls",
    ),
    (
        IMAP4ClientProtocol._handle_responses,
        "b85f6640b4ca5fe6",
        "_Protocol.data_received feeds it one line per call because it recurses once per line",
    ),
    (
        IMAP4ClientProtocol.welcome,
        "84f3266a6516457b",
        "_Protocol._take_announced in jobs/imap_session.py copies its reading of a greeting that "
        "announces capabilities (state, capabilities, imap_version): keep the two the same",
    ),
    (
        IMAP4ClientProtocol._response_done,
        "69c9091728111730",
        "_Leading.close in jobs/imap_session.py relies on it clearing pending_sync_command before "
        "it calls the command's close(), which then puts the pipelined EXAMINE in its place",
    ),
    (
        Command.close,
        "768d47d8c7fc7786",
        "_Leading.close and _StartTls.close in jobs/imap_session.py extend it: check it still "
        "records the answer and wakes the waiter",
    ),
    (
        SMTP._on_connection_lost,
        "dc5d4d5724c76503",
        "_Smtp._on_connection_lost in jobs/smtp_check.py extends it to say the connection is gone: "
        "check aiosmtplib still calls it when the connection closes, or every SMTP goodbye takes "
        "its whole bound while holding the host's slots",
    ),
]


@pytest.mark.parametrize("function, digest, recheck", PATCHED, ids=lambda v: getattr(v, "__qualname__", ""))
def test_patched_functions_are_the_ones_the_patches_were_written_against(
    function: Callable[..., Any], digest: str, recheck: str
) -> None:
    found = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
    assert found == digest, (
        f"{function.__module__}.{function.__qualname__} changed upstream: {recheck}; "
        f"then update its digest here to {found} and the pins in pyproject.toml"
    )


async def test_arq_worker_still_has_the_state_inbox_worker_keeps() -> None:
    async def job(ctx: dict[str, Any]) -> None: ...

    worker = Worker(functions=[job], redis_pool=object(), handle_signals=False)  # type: ignore[arg-type]
    for name in ("sem", "job_counter", "tasks", "in_progress_timeout_s", "queue_name", "_last_health_check"):
        assert hasattr(worker, name), f"arq's Worker has no {name}: re-check InboxWorker"
    assert list(inspect.signature(Worker.run_job).parameters) == ["self", "job_id", "score"], (
        "arq's Worker.run_job changed its signature: re-check InboxWorker.start_jobs"
    )


def test_the_sentinel_pool_has_no_checkout_of_its_own() -> None:
    # ConcurrentSentinelConnectionPool replaces ConnectionPool's checkout; one of redis-py's own
    # in SentinelConnectionPool would be overridden unseen.
    assert "get_connection" not in SentinelConnectionPool.__dict__


async def test_the_workers_pool_is_built_concurrent(shared_redis: RedisServer) -> None:
    client = await redis_pool.connect(make_settings(shared_redis))
    try:
        assert type(client.connection_pool) is redis_pool.ConcurrentConnectionPool
        assert await client.ping()
    finally:
        await client.aclose(close_connection_pool=True)


def test_importing_the_engine_leaves_asyncio_alone_and_starting_sets_the_buffer() -> None:
    code = (
        "import asyncio.sslproto as p, jobs.validate, worker.runtime.job, worker.cli.main as m\n"
        "before = p.SSLProtocol.max_size\n"
        "from jobs.tls import use_small_tls_read_buffers, TLS_READ_BUFFER\n"
        "use_small_tls_read_buffers()\n"
        "print(before, p.SSLProtocol.max_size, TLS_READ_BUFFER)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    before, after, wanted = map(int, out.stdout.split())
    # Importing changed nothing; a smaller default (or none) would mean asyncio changed underneath.
    assert before > wanted, (
        "asyncio's SSLProtocol.max_size is gone, small, or set on import: re-check jobs/tls.py"
    )
    assert after == wanted
