"""INBOXCHECK_MAX_JOBS is how many checks one worker runs at once: with more jobs queued than
that, the mail server never sees more of its connections at a time, and sees that many."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from tests.servers.fakes import FakeServer
from tests.servers.redis import RedisServer
from tests.worker.support import CLOSED_PORT, burst, make_settings, request, stream_events
from worker.messages.producer import enqueue_validation

MAX_JOBS = 2
JOBS = MAX_JOBS + 1


class GreetsThenHolds:
    """Greets, then answers nothing until the client hangs up (its EHLO step times out)."""

    def __init__(self) -> None:
        self.open = 0
        self.most_open = 0
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.connections += 1
        self.most_open = max(self.most_open, self.open)
        try:
            writer.write(b"220 holds.test ESMTP\r\n")
            await writer.drain()
            while await reader.read(1024):
                pass
        finally:
            self.open -= 1


async def test_a_worker_runs_at_most_max_jobs_checks_at_once(
    shared_redis: RedisServer, aredis: Redis, fake_server: Callable[..., FakeServer]
) -> None:
    server = GreetsThenHolds()
    smtp = fake_server(server)
    settings = make_settings(shared_redis, max_jobs=MAX_JOBS, max_tries=1)
    for n in range(JOBS):
        # Only SMTP reaches the server: IMAP is refused at once, so one connection is one check.
        held = request(f"held-{n}", port=CLOSED_PORT, smtp_port=smtp.port, smtp_security="none")
        await enqueue_validation(aredis, held, settings=settings)
    await burst(settings)
    assert len(stream_events(shared_redis.client(), settings.events_stream)) == JOBS
    assert server.connections == JOBS
    assert server.most_open == MAX_JOBS
