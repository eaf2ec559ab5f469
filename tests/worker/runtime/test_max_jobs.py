"""INBOXCHECK_MAX_JOBS is how many checks one worker runs at once: with more jobs queued than
that, the mail server never sees more of its connections at a time, and sees that many."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from redis.asyncio import Redis

from tests.servers.fakes import FakeServer
from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until_async
from tests.worker.support import CLOSED_PORT, burst, make_settings, request, stream_events
from worker.messages import keys
from worker.messages.producer import enqueue_validation

MAX_JOBS = 2
JOBS = MAX_JOBS + 1
# Far beyond what the checks need: the server, not a step limit, decides when a check ends.
HOLD_S = 30.0
WAIT_S = 10.0


class GreetsThenHolds:
    """Greets, reads EHLO, then answers nothing until the test lets go; then hangs up itself
    (the check fails at EHLO). A connection stops counting before the server hangs up, so the
    next check's connection can never be counted alongside it."""

    def __init__(self) -> None:
        self.open = 0
        self.most_open = 0
        self.connections = 0
        self.let_go = threading.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.connections += 1
        self.most_open = max(self.most_open, self.open)
        try:
            writer.write(b"220 holds.test ESMTP\r\n")
            await writer.drain()
            await reader.readline()
            await asyncio.to_thread(self.let_go.wait, HOLD_S)
        finally:
            self.open -= 1


async def test_a_worker_runs_at_most_max_jobs_checks_at_once(
    shared_redis: RedisServer, aredis: Redis, fake_server: Callable[..., FakeServer]
) -> None:
    server = GreetsThenHolds()
    smtp = fake_server(server)
    settings = make_settings(
        shared_redis,
        max_jobs=MAX_JOBS,
        max_tries=1,
        step_timeout=HOLD_S,
        check_timeout=HOLD_S,
        job_timeout=2 * HOLD_S,
    )
    job_ids = []
    for n in range(JOBS):
        # Only SMTP reaches the server: IMAP is refused at once, so one connection is one check.
        held = request(f"held-{n}", port=CLOSED_PORT, smtp_port=smtp.port, smtp_security="none")
        job_ids.append(await enqueue_validation(aredis, held, settings=settings))
    worker = asyncio.create_task(burst(settings))
    try:

        async def full() -> bool:
            return server.open >= MAX_JOBS

        await wait_until_async(full, limit_s=WAIT_S, what=f"{MAX_JOBS} checks connected")
        # A worker that claimed more would have claimed them together, before any connected.
        claimed = [await aredis.exists(keys.in_progress_key(job_id)) for job_id in job_ids]
        assert (sum(claimed), server.connections) == (MAX_JOBS, MAX_JOBS)
        server.let_go.set()
        await asyncio.wait_for(worker, WAIT_S)
    finally:
        server.let_go.set()
        if not worker.done():
            worker.cancel()
    assert len(stream_events(shared_redis.client(), settings.events_stream)) == JOBS
    assert server.connections == JOBS
    assert server.most_open == MAX_JOBS
