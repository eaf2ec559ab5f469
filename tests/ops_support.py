"""Fixtures shared by the recheck, pacing, registry and metrics tests: one redis-server per
session (tests.servers.redis), flushed before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.servers.redis import RedisServer


@pytest.fixture(scope="session")
def ops_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("ops-redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis(ops_redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(ops_redis_server.url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
