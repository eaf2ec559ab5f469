"""Fixtures of the worker tests: one redis-server for the session (tests.servers.redis), and
clients of it; `redis` flushes it before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.worker.support import LOOPBACK_PAUSE


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("shared-redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis(shared_redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(shared_redis.url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def aredis(shared_redis: RedisServer) -> AsyncIterator[Redis]:
    """A bytes client of the shared redis-server, nothing flushed (tests use their own names)."""
    client = Redis.from_url(shared_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def unpaused_loopback(aredis: Redis) -> AsyncIterator[None]:
    """Every fake server is on 127.0.0.1: a pause a test leaves there would hold up the session's
    other jobs for a day."""
    await aredis.delete(LOOPBACK_PAUSE)
    yield
    await aredis.delete(LOOPBACK_PAUSE)
